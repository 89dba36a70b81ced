"""Segmentation: metric updates from events. `purchase.committed` events are put on gateway.events
as the gateway's relay would, and the segmentation server (a process of its own, configured like
production) handles them through its consumer: the purchase and its categories recorded once, then
the incremental membership of every live rule segment for that customer (enter/leave events to the
outbox). A benchmark, never a timed test.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/loyalty_bench REDIS_URL=redis://127.0.0.1:6379/3 \\
        python bench/segmentation/bench_events.py [--customers 20000] [--events 3000] [--seconds 10]

Give it a Redis database of its own: the run moves the segmentation group of gateway.events in it
to the stream's end, so that only this run's events are handled.

Backlog: `--events` events published at once; events/s from the first publish until the last one
is handled, server CPU per event (and with the jobs they queued, once those are done too). Paced:
events published at half that rate (or `--rate`, to compare two builds at one rate) for `--seconds`;
the lag of each (published -> its handling transaction began, `processed_events.processed_at`) as
p50 / p99 / max. Rules: "VIP: spent over 50.00 in 365 days", "churn risk: 3+ purchases ever, none
in 90 days", "bought from 2+ categories in 90 days".
"""

import argparse
import asyncio
import os
import platform
import random
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import uvloop
from bench_segmentation import METADATA, TENANT, TOKEN, generate, spend_over, until_ready
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.segmentation.v1 import (
    condition_pb2 as c,
    segment_pb2 as pb,
    segmentation_service_pb2 as api,
    segmentation_service_pb2_grpc,
)
from loyalty_devstack.benchkit import scratch_database, service_process
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.events import Envelope, RedisStreamsBroker
from loyalty_runtime.protobuf import timestamp

STREAM, GROUP = "gateway.events", "segmentation"
NO_SCHEDULES = {"REFRESH_INTERVAL_SECONDS": "0", "RFM_INTERVAL_SECONDS": "0"}
CATEGORIES = ["dairy", "bakery", "produce", "drinks", "frozen"]


def counted(metric, op, value: int, window=c.METRIC_WINDOW_LIFETIME) -> c.Condition:
    return c.Condition(
        metric=c.MetricCondition(metric=metric, window=window, operator=op, value=c.Value(int_value=value))
    )


RULES = {
    "vip": spend_over(5000),
    "churn risk": c.Condition(
        all_of=c.ConditionList(
            conditions=[
                counted(c.CUSTOMER_METRIC_PURCHASE_COUNT, c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS, 3),
                counted(
                    c.CUSTOMER_METRIC_PURCHASE_COUNT,
                    c.COMPARISON_OPERATOR_EQUALS,
                    0,
                    c.METRIC_WINDOW_LAST_90_DAYS,
                ),
            ]
        )
    ),
    "explorers": counted(
        c.CUSTOMER_METRIC_CATEGORY_COUNT,
        c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS,
        2,
        c.METRIC_WINDOW_LAST_90_DAYS,
    ),
}


class Events:
    """purchase.committed envelopes of this run, each with a fresh id, remembered by send time."""

    def __init__(self, customers: int) -> None:
        self.customers, self.run = customers, uuid.uuid4().hex[:8]
        self.sent: dict[str, float] = {}
        self.random = random.Random(7)

    def make(self, count: int) -> list[Envelope]:
        envelopes = []
        for _ in range(count):
            event_id = f"{self.run}-{len(self.sent)}"
            customer = f"c{self.random.randrange(self.customers):08d}"
            now = datetime.now(UTC)
            lines = [
                basket_pb2.LineItem(line_id=str(i), categories=[name])
                for i, name in enumerate(self.random.sample(CATEGORIES, self.random.randint(1, 3)))
            ]
            event = gateway_events.PurchaseCommitted(
                checkout_id=event_id,
                customer_id=customer,
                net_total=money_pb2.Money(currency_code="EUR", amount_minor=self.random.randint(100, 9000)),
                basket=basket_pb2.Basket(currency_code="EUR", lines=lines),
                purchase_time=timestamp(now),
            )
            envelopes.append(
                Envelope(
                    event_id, "purchase.committed", TENANT, customer, event.SerializeToString(), now, None
                )
            )
            self.sent[event_id] = now.timestamp()
        return envelopes


async def handled(connection: asyncpg.Connection, prefix: str) -> int:
    return await connection.fetchval(
        "SELECT count(*) FROM segmentation.processed_events WHERE consumer = $1 AND event_id LIKE $2",
        GROUP,
        prefix + "%",
    )


async def until_handled(
    connection: asyncpg.Connection, prefix: str, count: int, limit: float = 300.0
) -> None:
    started = time.perf_counter()
    while await handled(connection, prefix) < count:
        if time.perf_counter() - started > limit:
            raise RuntimeError(
                f"only {await handled(connection, prefix)} of {count} events handled in {limit:.0f}s"
            )
        await asyncio.sleep(0.05)


async def skip_old_events(redis: Redis) -> None:
    """Only this run's events: the group starts at the stream's end."""
    try:
        await redis.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    except ResponseError as error:
        if not str(error).startswith("BUSYGROUP"):
            raise
        await redis.xgroup_setid(STREAM, GROUP, id="$")


async def backlog(broker, connection, server, events: Events, count: int, label: str = "backlog") -> float:
    before, started = server.cpu_seconds(), time.perf_counter()
    for start in range(0, count, 500):
        await broker.publish(STREAM, events.make(min(500, count - start)))
    await until_handled(connection, events.run + "-", count)
    seconds = time.perf_counter() - started
    rate = count / seconds
    cpu = (server.cpu_seconds() - before) / count * 1e6
    queued = "SELECT count(*) FROM segmentation.jobs WHERE state = 'queued'"
    while True:
        if not await connection.fetchval(queued):
            break
        await asyncio.sleep(0.05)
    jobs = time.perf_counter() - started
    with_jobs = (server.cpu_seconds() - before) / count * 1e6
    print(
        f"{label}: {count} events in {seconds:.1f}s: {rate:.0f} events/s, {cpu:.0f} us server CPU per event"
        f" ({with_jobs:.0f} us with the jobs they queued, all done after {jobs:.1f}s)"
    )
    return rate


async def paced(broker, connection, events: Events, rate: float, seconds: float) -> None:
    first = len(events.sent)
    tick, started, due = 0.02, time.perf_counter(), 0.0
    while (elapsed := time.perf_counter() - started) < seconds:
        due += rate * tick
        if (batch := int(due) - (len(events.sent) - first)) > 0:
            await broker.publish(STREAM, events.make(batch))
        await asyncio.sleep(max(0.0, tick - (time.perf_counter() - started - elapsed)))
    sent = len(events.sent) - first
    await until_handled(connection, events.run + "-", len(events.sent))
    ids = list(events.sent)[first:]
    rows = await connection.fetch(
        "SELECT event_id, extract(epoch FROM processed_at) AS at FROM segmentation.processed_events"
        " WHERE consumer = $1 AND event_id = ANY($2::varchar[])",
        GROUP,
        ids,
    )
    lags = sorted((float(row["at"]) - events.sent[row["event_id"]]) * 1000 for row in rows)

    def at(q: float) -> float:
        return lags[min(len(lags) - 1, int(q * len(lags)))]

    print(
        f"paced at {rate:.0f} events/s for {seconds:.0f}s ({sent} events): lag p50 {at(0.5):.1f} ms,"
        f" p99 {at(0.99):.1f} ms, max {lags[-1]:.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the paced phase")
    parser.add_argument(
        "--rate", type=float, help="events/s of the paced phase (default: half the backlog's)"
    )
    args = parser.parse_args()
    async with scratch_database() as (url, redis_url):
        dsn = asyncpg_dsn(url)
        redis = Redis.from_url(redis_url)
        await skip_old_events(redis)
        server = service_process("segmentation", url, redis_url, internal_token=TOKEN, settings=NO_SCHEDULES)
        connection = await asyncpg.connect(dsn)
        try:
            print(f"Python {platform.python_version()}; {os.cpu_count()} CPUs; server on uvloop")
            stub = segmentation_service_pb2_grpc.SegmentationServiceStub(await server.channel())
            await generate(dsn, 0, args.customers)
            for name, rule in RULES.items():
                created = await stub.CreateSegment(
                    api.CreateSegmentRequest(
                        idempotency_key=uuid.uuid4().hex,
                        segment=pb.Segment(display_name=name, type=pb.SEGMENT_TYPE_RULE, rule=rule),
                    ),
                    metadata=METADATA,
                    timeout=60,
                )
                await until_ready(stub, created.segment.segment_id)
            print(f"{args.customers} customers (3 purchases each), {len(RULES)} live rule segments")
            broker, events = RedisStreamsBroker(redis), Events(args.customers)
            await backlog(broker, connection, server, events, 200, "warm-up")
            rate = await backlog(broker, connection, server, events, args.events)
            await paced(broker, connection, events, args.rate or rate / 2, args.seconds)
        finally:
            await connection.close()
            server.stop()
            await redis.aclose()


if __name__ == "__main__":
    uvloop.run(main())
