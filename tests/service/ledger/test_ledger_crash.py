"""Kill the ledger (SIGKILL) after an earn committed but before its answer reached the caller; the
retry with the same key against the restarted process returns the first result, and exactly one
entry exists.

The server is the real `loyalty-ledger serve` process, unchanged: the test puts a small TCP proxy
between it and the client and, once the channel is up and the call is sent, stops passing the
server's bytes on. The earn commits and answers into the proxy; the test waits until the entry is
visible in the database, kills the server, and the client, whose connection the proxy then closes,
sees UNAVAILABLE.
"""

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import asyncpg
import grpc

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api, ledger_service_pb2_grpc
from loyalty_devstack.infra import free_port
from loyalty_ledger.service import LedgerSettings
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.testing import internal_metadata
from tests.proxy import TcpProxy


def _start(settings: LedgerSettings, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": settings.database_url,
        "LEDGER_REDIS_URL": settings.redis_url,
        "LEDGER_GRPC_HOST": "127.0.0.1",
        "LEDGER_GRPC_PORT": str(port),
        "LEDGER_METRICS_PORT": "0",
        "LEDGER_EXPIRY_INTERVAL_SECONDS": "0",
        "LEDGER_TIER_INTERVAL_SECONDS": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "loyalty_ledger", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _ready(port: int) -> tuple[grpc.aio.Channel, ledger_service_pb2_grpc.LedgerServiceStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await asyncio.wait_for(channel.channel_ready(), timeout=20)
    return channel, ledger_service_pb2_grpc.LedgerServiceStub(channel)


async def _entries(settings: LedgerSettings, tenant: str, key: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM ledger.journal_entries WHERE tenant_id = $1 AND idempotency_key = $2",
            tenant,
            key,
        )
    finally:
        await connection.close()


async def _wait_for_entry(settings: LedgerSettings, tenant: str, key: str) -> None:
    async with asyncio.timeout(20):
        while True:
            if await _entries(settings, tenant, key):
                return
            await asyncio.sleep(0.02)


async def test_killed_between_commit_and_answer_then_retried(ledger, ledger_settings):
    tenant = f"crash-{uuid.uuid4().hex[:6]}"
    md = internal_metadata(ledger_settings, tenant)
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

    port = free_port()
    process = _start(ledger_settings, port)
    proxy = await TcpProxy("127.0.0.1", port).start()
    try:
        direct, _ = await _ready(port)  # the server is up; now through the proxy
        await direct.close()
        channel, stub = await _ready(proxy.port)
        proxy.hold_replies()
        call = stub.EarnPoints(request, metadata=md, timeout=60)
        await _wait_for_entry(ledger_settings, tenant, "earn-1")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        try:
            await call
            raise AssertionError("the killed server's answer reached the client")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        await channel.close()
    finally:
        await proxy.close()
        if process.poll() is None:
            process.kill()
            process.wait(10)

    process = _start(ledger_settings, port)
    try:
        channel, stub = await _ready(port)
        retried = await stub.EarnPoints(request, metadata=md, timeout=20)
        await channel.close()
    finally:
        process.terminate()
        process.wait(15)
    assert retried.entry.idempotency_key == "earn-1" and retried.account.balance.posted == 123
    assert await _entries(ledger_settings, tenant, "earn-1") == 1
    statement = await ledger.stub.ListStatementLines(
        api.ListStatementLinesRequest(account_id=account), metadata=md
    )
    assert [line.amount for line in statement.lines] == [123]
