"""Segmentation: bulk recompute of a rule segment over N synthetic customers (in the background: a
chain of slice jobs, one statement each for match, membership and outbox events; timed from the
call until the segment is READY), the time until the relay has drained those events to Redis, the
RFM scores of every customer (one statement), metrics
update throughput (RecordPurchase: a purchase plus incremental membership of every live rule
segment), and ListCustomerSegments server CPU per call with a warm cache next to a bare grpc.aio
echo. A benchmark, never a timed test.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/loyalty_bench REDIS_URL=redis://127.0.0.1:6379/0 \\
        python bench/segmentation/bench_segmentation.py [--customers 100000 1000000] [--records 2000]

Each run creates a database of its own, migrates it with `python -m loyalty_segmentation migrate`,
and drops it at the end. Customers and their purchases (3 per customer, over two years) are
generated set-based in SQL, not through the API; the rule is "VIP: spent over 50.00 in 365 days".
"""

import argparse
import asyncio
import os
import platform
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import uvloop
from google.protobuf import field_mask_pb2

from loyalty.common.v1 import money_pb2
from loyalty.segmentation.v1 import (
    condition_pb2 as c,
    segment_pb2 as pb,
    segmentation_service_pb2 as api,
    segmentation_service_pb2_grpc,
)
from loyalty.testing.v1 import echo_pb2, echo_pb2_grpc
from loyalty_devstack.benchkit import ServerProcess, scratch_database, service_process
from loyalty_devstack.infra import free_port
from loyalty_runtime.context import AUTHORIZATION_HEADER, PRINCIPAL_HEADER, TENANT_HEADER
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.protobuf import timestamp

TOKEN = "bench-internal-token"
TENANT = "bench"
METADATA = ((AUTHORIZATION_HEADER, f"Bearer {TOKEN}"), (TENANT_HEADER, TENANT), (PRINCIPAL_HEADER, "bench"))
RUNTIME_BENCH = Path(__file__).resolve().parent.parent / "runtime"


def spend_over(minor: int) -> c.Condition:
    return c.Condition(
        metric=c.MetricCondition(
            metric=c.CUSTOMER_METRIC_PURCHASE_SPEND,
            window=c.METRIC_WINDOW_LAST_365_DAYS,
            operator=c.COMPARISON_OPERATOR_GREATER_THAN,
            value=c.Value(money_value=money_pb2.Money(currency_code="EUR", amount_minor=minor)),
        )
    )


async def generate(dsn: str, start: int, count: int) -> None:
    """Customers start..start+count with 3 purchases each, spread over two years, set-based."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            """INSERT INTO segmentation.customers (tenant_id, customer_id, first_seen_at)
               SELECT $1, 'c' || lpad(g::text, 8, '0'), now() FROM generate_series($2::int, $3::int) g""",
            TENANT,
            start,
            start + count - 1,
        )
        await connection.execute(
            """INSERT INTO segmentation.purchases
                   (tenant_id, purchase_key, customer_id, purchased_at, net_total, currency_code)
               SELECT $1, 'p' || g || '-' || k, 'c' || lpad(g::text, 8, '0'),
                      now() - ((g * 7 + k * 131) % 730) * interval '1 day', (g * 37 + k * 11) % 5000, 'EUR'
               FROM generate_series($2::int, $3::int) g, generate_series(1, 3) k""",
            TENANT,
            start,
            start + count - 1,
        )
        await connection.execute("VACUUM ANALYZE segmentation.customers, segmentation.purchases")
    finally:
        await connection.close()


async def outbox_drained(dsn: str, limit: float) -> str:
    """Seconds until the relay has published every event (the outbox keeps only what is still to
    be published), or how many were left when `limit` ran out."""
    connection = await asyncpg.connect(dsn)
    started = time.perf_counter()
    try:
        while left := await connection.fetchval("SELECT count(*) FROM segmentation.outbox"):
            if time.perf_counter() - started > limit:
                return f">{limit:.0f}s ({left} left)"
            await asyncio.sleep(0.2)
    finally:
        await connection.close()
    return f"{time.perf_counter() - started:.1f}s"


async def until_ready(stub, segment_id: str) -> pb.Segment:
    while True:
        segment = (
            await stub.GetSegment(api.GetSegmentRequest(segment_id=segment_id), metadata=METADATA, timeout=10)
        ).segment
        if segment.membership_status == pb.MEMBERSHIP_STATUS_READY:
            return segment
        await asyncio.sleep(0.1)


async def recompute_rows(stub, dsn: str, sizes: list[int], drain_limit: float) -> None:
    print(
        f"{'customers':>10}{'create s':>10}{'members':>10}{'drained':>22}{'change s':>10}{'members':>10}{'drained':>22}"
    )
    generated = 0
    for size in sizes:
        await generate(dsn, generated, size - generated)
        generated = size
        started = time.perf_counter()
        created = await stub.CreateSegment(
            api.CreateSegmentRequest(
                idempotency_key=uuid.uuid4().hex,
                segment=pb.Segment(
                    display_name=f"vip-{size}", type=pb.SEGMENT_TYPE_RULE, rule=spend_over(5000)
                ),
            ),
            metadata=METADATA,
            timeout=60,
        )
        created = await until_ready(stub, created.segment.segment_id)
        create_seconds = time.perf_counter() - started
        drain_create = await outbox_drained(dsn, drain_limit)
        # A rule change: many enter, many leave, in the same one statement.
        started = time.perf_counter()
        changed = await stub.UpdateSegment(
            api.UpdateSegmentRequest(
                idempotency_key=uuid.uuid4().hex,
                segment=pb.Segment(segment_id=created.segment_id, rule=spend_over(8000)),
                update_mask=field_mask_pb2.FieldMask(paths=["rule"]),
            ),
            metadata=METADATA,
            timeout=60,
        )
        changed = await until_ready(stub, changed.segment.segment_id)
        change_seconds = time.perf_counter() - started
        drain_change = await outbox_drained(dsn, drain_limit)
        print(
            f"{size:>10}{create_seconds:>10.2f}{created.member_count:>10}{drain_create:>22}"
            f"{change_seconds:>10.2f}{changed.member_count:>10}{drain_change:>22}"
        )
        started = time.perf_counter()
        scored = await stub.RecomputeRfmScores(
            api.RecomputeRfmScoresRequest(idempotency_key=uuid.uuid4().hex), metadata=METADATA, timeout=120
        )
        print(f"{'':>10}RFM scores of {scored.scored_count} customers: {time.perf_counter() - started:.2f}s")


async def record_rate(stub, records: int, concurrency: int) -> float:
    """RecordPurchase calls/s over existing customers (each re-evaluates every live rule segment)."""
    queue = iter(range(records))

    async def worker() -> None:
        for n in queue:
            await stub.RecordPurchase(
                api.RecordPurchaseRequest(
                    idempotency_key=f"bench-{n}",
                    customer_id=f"c{n % 50000:08d}",
                    purchase_time=timestamp(datetime.now(UTC)),
                    net_total=money_pb2.Money(currency_code="EUR", amount_minor=1234),
                ),
                metadata=METADATA,
                timeout=30,
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records / (time.perf_counter() - started)


async def cpu_per_call(server: ServerProcess, call, calls: int) -> float:
    for _ in range(200):
        await call()
    before = server.cpu_seconds()
    for _ in range(calls):
        await call()
    return (server.cpu_seconds() - before) / calls * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--drain-limit", type=float, default=120.0, help="seconds to wait for the relay")
    args = parser.parse_args()
    async with scratch_database() as (url, redis_url):
        server = service_process(
            "segmentation", url, redis_url, internal_token=TOKEN, settings={"REFRESH_INTERVAL_SECONDS": "0"}
        )
        port = free_port()
        bare = ServerProcess(
            "bare-echo", [sys.executable, str(RUNTIME_BENCH / "servers.py"), "bare", str(port)], {}, port
        )
        try:
            print(f"Python {platform.python_version()}; {os.cpu_count()} CPUs; server on uvloop")
            stub = segmentation_service_pb2_grpc.SegmentationServiceStub(await server.channel())
            await recompute_rows(stub, asyncpg_dsn(url), sorted(args.customers), args.drain_limit)
            for concurrency in (1, 16):
                rate = await record_rate(stub, args.records, concurrency)
                print(
                    f"RecordPurchase (2 live rule segments), concurrency {concurrency}: {rate:.0f} records/s"
                )
            request = api.ListCustomerSegmentsRequest(customer_id="c00000042")
            segments_cpu = await cpu_per_call(
                server, lambda: stub.ListCustomerSegments(request, metadata=METADATA, timeout=10), args.calls
            )
            echo = echo_pb2_grpc.EchoServiceStub(await bare.channel())
            hello = echo_pb2.EchoRequest(text="hello")
            bare_cpu = await cpu_per_call(bare, lambda: echo.Echo(hello, timeout=10), args.calls)
            print(f"ListCustomerSegments, warm cache: {segments_cpu:.0f} us server CPU per call")
            print(
                f"bare grpc.aio echo:               {bare_cpu:.0f} us server CPU per call ({segments_cpu / bare_cpu:.1f}x)"
            )
        finally:
            server.stop()
            bare.stop()


if __name__ == "__main__":
    uvloop.run(main())
