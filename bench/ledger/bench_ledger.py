"""Ledger throughput: postings/second for earn and for hold+capture, many accounts vs one hot
account, at client concurrencies 1/8/32, beside a bare PostgreSQL single-row insert loop (asyncpg)
measured in the same run. A benchmark, never a timed test.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/loyalty_bench REDIS_URL=redis://127.0.0.1:6379/0 \
        python bench/ledger/bench_ledger.py [--calls 400]

The database must exist; the script migrates the `ledger` schema into it and starts the real ledger
server (production interceptors) in-process on port 0, calling it through a real channel. Each earn
writes 2 postings; each hold+capture writes 2 postings (a burn entry).
"""

import argparse
import asyncio
import os
import time
import uuid

import asyncpg

from loyalty.ledger.v1 import ledger_pb2 as pb
from loyalty.ledger.v1 import ledger_service_pb2 as api
from loyalty.ledger.v1 import ledger_service_pb2_grpc
from loyalty_ledger.service import DEFINITION, LedgerSettings
from loyalty_runtime.migrations import migrate
from loyalty_runtime.testing import running_service


async def _run(concurrency: int, calls: int, one_call) -> float:
    queue = iter(range(calls))

    async def worker():
        for i in queue:
            await one_call(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - start)


async def bare_postgres(url: str, concurrency: int, calls: int) -> float:
    pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency)
    await pool.execute("CREATE TEMP TABLE IF NOT EXISTS bench_rows (id bigserial, v bigint)")
    await pool.execute("CREATE TABLE IF NOT EXISTS public.bench_rows (id bigserial primary key, v bigint)")

    async def insert(i):
        await pool.execute("INSERT INTO public.bench_rows (v) VALUES ($1)", i)

    rate = await _run(concurrency, calls, insert)
    await pool.execute("DROP TABLE public.bench_rows")
    await pool.close()
    return rate


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    plain = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    sa_url = plain.replace("postgresql://", "postgresql+asyncpg://", 1)
    await migrate(sa_url, DEFINITION.migrations, DEFINITION.schema)
    settings = LedgerSettings(
        database_url=sa_url,
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        expiry_interval_seconds=0,
        tier_interval_seconds=0,
        database_pool_size=32,
    )
    async with running_service(DEFINITION, settings) as service:
        stub = ledger_service_pb2_grpc.LedgerServiceStub(service.channel)
        md = service.metadata(f"bench-{uuid.uuid4().hex[:6]}")
        program = (
            await stub.CreateProgram(
                api.CreateProgramRequest(
                    program=pb.Program(asset_kind=pb.ASSET_KIND_POINTS), idempotency_key=uuid.uuid4().hex
                ),
                metadata=md,
            )
        ).program

        async def account() -> str:
            return (
                await stub.OpenAccount(
                    api.OpenAccountRequest(
                        program_id=program.program_id,
                        customer_id=uuid.uuid4().hex,
                        idempotency_key=uuid.uuid4().hex,
                    ),
                    metadata=md,
                )
            ).account.account_id

        many = [await account() for _ in range(200)]
        hot = await account()
        for a in [*many, hot]:
            await stub.EarnPoints(
                api.EarnPointsRequest(account_id=a, amount=10**9, idempotency_key=uuid.uuid4().hex),
                metadata=md,
            )

        def earn(target):
            async def call(i):
                await stub.EarnPoints(
                    api.EarnPointsRequest(account_id=target(i), amount=10, idempotency_key=uuid.uuid4().hex),
                    metadata=md,
                    timeout=60,
                )

            return call

        def burn(target):
            async def call(i):
                hold = await stub.HoldPoints(
                    api.HoldPointsRequest(account_id=target(i), amount=10, idempotency_key=uuid.uuid4().hex),
                    metadata=md,
                    timeout=60,
                )
                await stub.CaptureHold(
                    api.CaptureHoldRequest(hold_id=hold.hold.hold_id, idempotency_key=uuid.uuid4().hex),
                    metadata=md,
                    timeout=60,
                )

            return call

        print(f"{'operation':<16}{'accounts':<10}{'conc':>5}{'ops/s':>10}{'postings/s':>12}")
        for concurrency in (1, 8, 32):
            rate = await bare_postgres(plain, concurrency, args.calls * 2)
            print(f"{'bare INSERT':<16}{'-':<10}{concurrency:>5}{rate:>10.0f}{rate:>12.0f}")
            for name, make in (("earn", earn), ("hold+capture", burn)):
                for label, target in (("many", lambda i: many[i % len(many)]), ("one hot", lambda i: hot)):
                    rate = await _run(concurrency, args.calls, make(target))
                    print(f"{name:<16}{label:<10}{concurrency:>5}{rate:>10.0f}{rate * 2:>12.0f}")


if __name__ == "__main__":
    asyncio.run(main())
