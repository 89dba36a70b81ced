"""Ledger throughput: postings/second for earn and for hold+capture, many accounts vs one hot
account, at several client concurrencies, beside a bare PostgreSQL single-row insert loop (asyncpg)
measured in the same run. A benchmark, never a timed test.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/loyalty_bench REDIS_URL=redis://127.0.0.1:6379/0 \\
        python bench/ledger/bench_ledger.py [--calls 400] [--concurrency 1 8 32]

DATABASE_URL names the PostgreSQL server (and a prefix): each run creates a database of its own there,
migrates it with the service's own `migrate` command and drops it at the end.
The ledger server runs in a process of its own (`python -m loyalty_ledger serve`: uvloop, production
interceptors, outbox relay to Redis), started with the interpreter running this script, so the
client's CPU does not hide the server's; "server CPU" is that process's CPU time per operation. The
programme is a realistic one: points expire 12 months after earning and three tiers are
recomputed on every earn. Each earn writes 2 postings; each hold+capture writes 2 (a burn entry);
each hold+settle (a checkout: the hold at reserve time, then SettleCheckout capturing it and posting
the basket's earn in one call) writes 4. Set-up calls go at most 8 at a time: the server refuses what
exceeds its limit of calls in flight (RESOURCE_EXHAUSTED) rather than queueing it.
"""

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import grpc
import uvloop

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api, ledger_service_pb2_grpc
from loyalty_devstack.benchkit import ServerProcess, service_process
from loyalty_devstack.infra import Infra, create_database, drop_database, plain_url
from loyalty_runtime.context import AUTHORIZATION_HEADER, PRINCIPAL_HEADER, TENANT_HEADER

INTERNAL_TOKEN = "bench-internal-token"
MANY_ACCOUNTS = 200
TIERS = [
    pb.Tier(code="SILVER", display_name="Silver", qualifying_points=1_000, earn_multiplier_bps=11_000),
    pb.Tier(code="GOLD", display_name="Gold", qualifying_points=10_000, earn_multiplier_bps=12_500),
    pb.Tier(code="PLATINUM", display_name="Platinum", qualifying_points=100_000, earn_multiplier_bps=15_000),
]


@dataclass
class Result:
    ops_per_second: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float | None  # per operation


async def measure(
    concurrency: int, calls: int, one_call: Callable[[int], Awaitable[None]], server: ServerProcess | None
) -> Result:
    queue = iter(range(calls))
    latencies: list[float] = []

    async def worker() -> None:
        for i in queue:
            started = time.perf_counter()
            await one_call(i)
            latencies.append(time.perf_counter() - started)

    cpu_before = server.cpu_seconds() if server else None
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu_after = server.cpu_seconds() if server else None
    latencies.sort()
    return Result(
        ops_per_second=calls / elapsed,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        server_cpu_ms=(cpu_after - cpu_before) / calls * 1000 if cpu_before is not None else None,
    )


async def bare_postgres(url: str, concurrency: int, calls: int) -> Result:
    pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency)
    table = "bench_rows"
    await pool.execute(f"CREATE TABLE {table} (id bigserial primary key, v bigint)")

    async def insert(i: int) -> None:
        await pool.execute(f"INSERT INTO {table} (v) VALUES ($1)", i)

    try:
        return await measure(concurrency, calls, insert, None)
    finally:
        await pool.execute(f"DROP TABLE {table}")
        await pool.close()


class LedgerClient:
    """One tenant's calls, as an internal caller (the gateway) makes them."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = ledger_service_pb2_grpc.LedgerServiceStub(channel)
        self.metadata = (
            (AUTHORIZATION_HEADER, f"Bearer {INTERNAL_TOKEN}"),
            (TENANT_HEADER, f"bench-{uuid.uuid4().hex[:8]}"),
            (PRINCIPAL_HEADER, "bench"),
        )

    async def program(self) -> str:
        program = pb.Program(
            display_name="Bench club",
            asset_kind=pb.ASSET_KIND_POINTS,
            expiry_policy=pb.ExpiryPolicy(rule=pb.EXPIRY_RULE_MONTHS_AFTER_EARN, months=12),
            tiers=TIERS,
        )
        request = api.CreateProgramRequest(program=program, idempotency_key=uuid.uuid4().hex)
        return (await self.stub.CreateProgram(request, metadata=self.metadata)).program.program_id

    async def funded_account(self, program_id: str) -> str:
        opened = await self.stub.OpenAccount(
            api.OpenAccountRequest(
                program_id=program_id, customer_id=uuid.uuid4().hex, idempotency_key=uuid.uuid4().hex
            ),
            metadata=self.metadata,
        )
        await self.earn(opened.account.account_id, 10**9)
        return opened.account.account_id

    async def earn(self, account_id: str, amount: int = 10) -> None:
        request = api.EarnPointsRequest(
            account_id=account_id, amount=amount, idempotency_key=uuid.uuid4().hex
        )
        await self.stub.EarnPoints(request, metadata=self.metadata, timeout=60)

    async def hold_and_settle(self, account_id: str) -> None:
        request = api.HoldPointsRequest(account_id=account_id, amount=10, idempotency_key=uuid.uuid4().hex)
        hold = await self.stub.HoldPoints(request, metadata=self.metadata, timeout=60)
        settle = api.SettleCheckoutRequest(
            account_id=account_id,
            checkout_id=uuid.uuid4().hex,
            hold_id=hold.hold.hold_id,
            lines=[
                pb.CheckoutLine(line_id="1", quantity=2, earn_points=20, burn_points=6),
                pb.CheckoutLine(line_id="2", quantity=1, earn_points=5, burn_points=4),
            ],
            idempotency_key=uuid.uuid4().hex,
        )
        await self.stub.SettleCheckout(settle, metadata=self.metadata, timeout=60)

    async def hold_and_capture(self, account_id: str) -> None:
        request = api.HoldPointsRequest(account_id=account_id, amount=10, idempotency_key=uuid.uuid4().hex)
        hold = await self.stub.HoldPoints(request, metadata=self.metadata, timeout=60)
        capture = api.CaptureHoldRequest(hold_id=hold.hold.hold_id, idempotency_key=uuid.uuid4().hex)
        await self.stub.CaptureHold(capture, metadata=self.metadata, timeout=60)


def describe_machine() -> str:
    return (
        f"interpreter: {os.path.realpath(sys.executable)} (Python {platform.python_version()}, "
        f"{platform.python_compiler()}); server and client each on uvloop; {os.cpu_count()} CPUs"
    )


def _row(operation: str, accounts: str, concurrency: int, result: Result, postings_per_op: int = 2) -> str:
    cpu = f"{result.server_cpu_ms:.2f}" if result.server_cpu_ms is not None else "-"
    return (
        f"{operation:<14}{accounts:<9}{concurrency:>5}{result.ops_per_second:>9.0f}"
        f"{result.ops_per_second * postings_per_op:>12.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}{cpu:>12}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="operations per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/loyalty_bench")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

    # A database of its own on that server, so every run starts from the same empty tables.
    infra = Infra(postgres_url=database_url, redis_url=redis_url)
    scratch = f"{database_url.rpartition('/')[2].split('?')[0]}_{uuid.uuid4().hex[:8]}"
    await create_database(infra, scratch)
    server = service_process(
        "ledger",
        infra.database_url(scratch),
        redis_url,
        internal_token=INTERNAL_TOKEN,
        settings={"EXPIRY_INTERVAL_SECONDS": "0", "TIER_INTERVAL_SECONDS": "0"},
    )
    try:
        channel = await server.channel()
        client = LedgerClient(channel)
        program_id = await client.program()
        setting_up = asyncio.Semaphore(8)

        async def funded() -> str:
            async with setting_up:
                return await client.funded_account(program_id)

        many = list(await asyncio.gather(*(funded() for _ in range(MANY_ACCOUNTS))))
        hot = await client.funded_account(program_id)

        print(describe_machine())
        print(
            f"{'operation':<14}{'accounts':<9}{'conc':>5}{'ops/s':>9}{'postings/s':>12}"
            f"{'p50 ms':>9}{'p99 ms':>9}{'server CPU':>12}"
        )
        print(f"{'':<62}{'ms/op':>12}")
        scenarios = (
            ("earn", client.earn),
            ("hold+capture", client.hold_and_capture),
            ("hold+settle", client.hold_and_settle),
        )
        for concurrency in args.concurrency:
            bare = await bare_postgres(plain_url(database_url, scratch), concurrency, args.calls * 2)
            print(_row("bare INSERT", "-", concurrency, bare, postings_per_op=1))
            for name, operation in scenarios:
                for label, target in (("many", lambda i: many[i % len(many)]), ("one hot", lambda i: hot)):
                    result = await measure(
                        concurrency, args.calls, lambda i, op=operation, t=target: op(t(i)), server
                    )
                    print(
                        _row(name, label, concurrency, result, 4 if name == "hold+settle" else 2), flush=True
                    )
        await channel.close()
    finally:
        server.stop()
        await drop_database(infra, scratch)


if __name__ == "__main__":
    uvloop.run(main())
