"""Kill the ledger (SIGKILL) after an earn committed but before it answered; the retry with the same
key against the restarted process returns the first result, and exactly one entry exists."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid

import grpc

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api, ledger_service_pb2_grpc
from loyalty_ledger.service import LedgerSettings
from loyalty_runtime.testing import internal_metadata


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(settings: LedgerSettings, port: int, pause_ms: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": settings.database_url,
        "LEDGER_REDIS_URL": settings.redis_url,
        "LEDGER_GRPC_HOST": "127.0.0.1",
        "LEDGER_GRPC_PORT": str(port),
        "LEDGER_METRICS_PORT": "0",
        "LEDGER_EXPIRY_INTERVAL_SECONDS": "0",
        "LEDGER_TIER_INTERVAL_SECONDS": "0",
        "LEDGER_TEST_PAUSE_AFTER_COMMIT_MS": str(pause_ms),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "loyalty_ledger", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _stub(port: int):
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await asyncio.wait_for(channel.channel_ready(), timeout=20)
    return channel, ledger_service_pb2_grpc.LedgerServiceStub(channel)


async def test_killed_between_commit_and_answer_then_retried(ledger, ledger_settings):
    md = internal_metadata(ledger_settings, f"crash-{uuid.uuid4().hex[:6]}")
    program = (
        await ledger.stub.CreateProgram(
            api.CreateProgramRequest(
                program=pb.Program(asset_kind=pb.ASSET_KIND_POINTS), idempotency_key="p"
            ),
            metadata=md,
        )
    ).program
    account = (
        await ledger.stub.OpenAccount(
            api.OpenAccountRequest(program_id=program.program_id, customer_id="c", idempotency_key="a"),
            metadata=md,
        )
    ).account.account_id
    request = api.EarnPointsRequest(
        account_id=account, amount=123, source_ref="chk-crash", idempotency_key="earn-1"
    )

    port = _free_port()
    process = _start(ledger_settings, port, pause_ms=30_000)
    try:
        channel, stub = await _stub(port)
        call = stub.EarnPoints(request, metadata=md, timeout=60)
        # Wait until the entry is committed (visible through the in-process server), then kill.
        for _ in range(200):
            await asyncio.sleep(0.05)
            try:
                await ledger.stub.GetEntry(api.GetEntryRequest(idempotency_key="earn-1"), metadata=md)
                break
            except grpc.aio.AioRpcError:
                continue
        else:
            raise AssertionError("the earn never committed")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        try:
            await call
            raise AssertionError("the killed server answered")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        await channel.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    process = _start(ledger_settings, port, pause_ms=0)
    try:
        channel, stub = await _stub(port)
        retried = await stub.EarnPoints(request, metadata=md, timeout=20)
        await channel.close()
    finally:
        process.terminate()
        process.wait(15)
    assert retried.entry.idempotency_key == "earn-1" and retried.account.balance.posted == 123
    statement = await ledger.stub.ListStatementLines(
        api.ListStatementLinesRequest(account_id=account), metadata=md
    )
    assert [line.amount for line in statement.lines] == [123]
