"""The store's earn statistics row under concurrent AssessEarn: does one store's running total (the
`earn_stats` row the EARN_ABOVE_STORE_USUAL rule reads and every recorded earn adds to) serialise the
assessments of that store? Calls per second, p50/p99 and server CPU per call with every earn in one
store, next to the same load spread over 1,000 stores, at each concurrency; and PostgreSQL's lock waits
sampled during each run (backends waiting on a lock, mean) and the calls the server refused because
it found no database connection within its acquire timeout (REFUSED; counted, not retried). Then the
row's own ceiling without gRPC: single-statement upserts (autocommit, as the assessment records) from 6
connections into one row, into STORE_SHARDS rows (what a store is spread over) and into 1,000 rows.
A benchmark, never a timed test.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/loyalty_bench REDIS_URL=redis://127.0.0.1:6379/0 \\
        python bench/fraud/bench_store_hot_row.py [--calls 2000] [--rounds 3] [--concurrency 8 32]
"""

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import grpc
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))

from bench_fraud import measure, median_row
from bench_runtime import METADATA, TOKEN

from loyalty.fraud.v1 import (
    assessment_pb2 as apb,
    fraud_service_pb2 as api,
    fraud_service_pb2_grpc,
    rule_pb2 as rpb,
)
from loyalty_devstack.benchkit import scratch_database, service_process
from loyalty_fraud.repository import STORE_SHARDS
from loyalty_runtime.db import asyncpg_dsn

STORES = {"one store": 1, "1,000 stores": 1000}
# A call that waited longer than the server's acquire timeout for a database connection: all busy
# (RESOURCE_EXHAUSTED), or the pool could not open another in time (UNAVAILABLE).
REFUSED = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})


def earn(run: str, number: int, stores: int) -> api.AssessEarnRequest:
    return api.AssessEarnRequest(
        idempotency_key=f"{run}-{number}",
        customer_id=f"customer-{number % 5000}",
        program_id="club",
        points=50 + number % 7,
        source=api.EARN_SOURCE_PURCHASE,
        source_id=f"{run}-{number}",
        signals=apb.RiskSignals(store_id=f"store-{number % stores}", terminal_id=f"till-{number % 200}"),
    )


async def lock_waits(database_url: str, stop: asyncio.Event) -> list[int]:
    """Every 10 ms: backends waiting for a lock (a row lock of the hot row shows as transactionid/tuple)."""
    connection = await asyncpg.connect(database_url)
    samples = []
    try:
        while not stop.is_set():
            samples.append(
                await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            )
            await asyncio.sleep(0.01)
    finally:
        await connection.close()
    return samples


async def rows(args, database_url: str, redis_url: str) -> dict:
    server = service_process("fraud", database_url, redis_url, internal_token=TOKEN)
    found = {}
    try:
        channel = await server.channel()
        stub = fraud_service_pb2_grpc.FraudServiceStub(channel)
        for kind in (rpb.PATTERN_KIND_EARN_ABOVE_STORE_USUAL, rpb.PATTERN_KIND_EARN_ABOVE_CUSTOMER_USUAL):
            rule = rpb.Rule(
                display_name="usual", pattern=rpb.PatternRule(kind=kind, max_value=100_000), score=100
            )
            await stub.CreateRule(
                api.CreateRuleRequest(idempotency_key=uuid.uuid4().hex, rule=rule), metadata=METADATA
            )
        for concurrency in args.concurrency:
            for label, stores in STORES.items():
                measured = []
                for round_ in range(args.rounds + 1):  # the first round warms up
                    run = uuid.uuid4().hex[:8]

                    refused = [0]

                    async def assess(number: int, run=run, stores=stores, refused=refused) -> None:
                        try:
                            answer = await stub.AssessEarn(
                                earn(run, number, stores), metadata=METADATA, timeout=10
                            )
                        except grpc.aio.AioRpcError as error:
                            if error.code() not in REFUSED:
                                raise
                            refused[0] += 1  # no database connection within 0.5 s: counted, not retried
                            return
                        if answer.assessment.decision != apb.DECISION_ALLOW:
                            raise RuntimeError(f"unexpected assessment: {answer.assessment}")

                    stop = asyncio.Event()
                    sampler = asyncio.create_task(lock_waits(database_url, stop))
                    result = await measure(assess, args.calls if round_ else 200, concurrency, server)
                    stop.set()
                    samples = await sampler
                    if round_:
                        measured.append((*result, sum(samples) / max(len(samples), 1), refused[0]))
                found[(concurrency, label)] = median_row(measured)
        await channel.close()
        return found
    finally:
        server.stop()


async def upserts_per_second(database_url: str, rows: int, calls: int = 2000, connections: int = 6) -> float:
    pool = await asyncpg.create_pool(asyncpg_dsn(database_url), min_size=connections, max_size=connections)
    table = f"bench_hot_{uuid.uuid4().hex[:8]}"
    try:
        await pool.execute(f"CREATE TABLE {table} (k text PRIMARY KEY, n bigint)")
        numbers = iter(range(calls))

        async def worker() -> None:
            async with pool.acquire() as connection:
                for number in numbers:
                    await connection.execute(
                        f"INSERT INTO {table} VALUES ($1, 1) ON CONFLICT (k) DO UPDATE SET n = {table}.n + 1",
                        f"row-{number % rows}",
                    )

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return calls / (time.perf_counter() - started)
    finally:
        await pool.execute(f"DROP TABLE IF EXISTS {table}")
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    args = parser.parse_args()
    async with scratch_database() as (database_url, redis_url):
        found = await rows(args, database_url, redis_url)
        ceilings = {n: await upserts_per_second(database_url, n) for n in (1, STORE_SHARDS, 1000)}
    report(args, found)
    print(
        "upserts/s from 6 connections: " + ", ".join(f"{n} row(s) {rate:.0f}" for n, rate in ceilings.items())
    )


def report(args, found: dict) -> None:
    print(
        f"python {sys.version.split()[0]} at {os.path.realpath(sys.executable)}; {os.cpu_count()} CPUs; "
        f"AssessEarn with the store and customer usual-earn rules; {args.calls} calls x {args.rounds} rounds (medians)"
    )
    print(
        f"{'concurrency':>11}  {'stores':<14}{'calls/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'CPU us/call':>13}"
        f"{'lock waits':>12}{'refused':>9}"
    )
    for (concurrency, label), (rate, p50, p99, cpu, waits, refused) in found.items():
        print(
            f"{concurrency:>11}  {label:<14}{rate:>9.0f}{p50:>8.2f}{p99:>8.2f}{cpu:>13.0f}{waits:>12.2f}"
            f"{refused:>9.0f}"
        )


if __name__ == "__main__":
    uvloop.run(main())
