"""Promotion: the trigger engine fed by events. `purchase.committed` events are put on gateway.events
as the gateway's relay would; the promotion server (a process of its own, configured like
production) handles them through its consumer against 100 enabled triggers of one tenant, and the
ledger server (another process) posts the points rewards from `reward.granted`. A benchmark, never
a timed test.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/loyalty_bench REDIS_URL=redis://127.0.0.1:6379/3 \\
        python bench/promotion/bench_triggers.py [--customers 2000] [--events 2000] [--seconds 10]

Give it a Redis database of its own: the run moves the promotion and ledger groups of the streams in
it to their ends, so that only this run's events are handled.

The triggers: 1 "every purchase: +10 points" (the reward whose lag is measured), 39 "the 3rd purchase
over N in a calendar month", 30 achievements (a rolling 30-day SUM of net_total, DISTINCT
categories, a COUNT), 30 on other events (reviews, tier changes, enrolment) that purchases do not
match. Backlog: `--events` published at once; events/s from the first publish until the last is
handled, and promotion CPU per event. Paced: events at half that rate for `--seconds`; the lag from
publishing to the grant (promotion's transaction) and to the points posted (the ledger's journal
entry), p50 / p99 / max.
"""

import argparse
import asyncio
import os
import platform
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import uvloop
from google.protobuf.duration_pb2 import Duration
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.ledger.v1 import ledger_pb2, ledger_service_pb2 as ledger_api, ledger_service_pb2_grpc
from loyalty.promotion.v1 import (
    campaign_pb2,
    promotion_service_pb2 as api,
    promotion_service_pb2_grpc,
    reward_pb2,
    trigger_pb2 as t,
)
from loyalty_devstack.benchkit import scratch_database, service_process
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.events import Envelope, RedisStreamsBroker
from loyalty_runtime.protobuf import timestamp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from bench_runtime import METADATA, TENANT, TOKEN

STREAM = "gateway.events"
GROUPS = {"gateway.events": "promotion", "promotion.events": "ledger"}
CATEGORIES = ["dairy", "bakery", "produce", "drinks", "frozen", "toys", "garden"]
DAY = 86_400


def points(amount: int) -> reward_pb2.Reward:
    return reward_pb2.Reward(points=reward_pb2.PointsReward(points=amount))


def at_least(amount: int) -> t.PropertyFilter:
    return t.PropertyFilter(
        property="net_total",
        operator=t.PROPERTY_OPERATOR_GREATER_THAN_OR_EQUALS,
        value=t.PropertyValue(int_value=amount),
    )


def triggers(campaign_id: str, rng: random.Random) -> list[t.Trigger]:
    def trigger(name: str, event_type: str = "purchase.committed", **fields) -> t.Trigger:
        return t.Trigger(campaign_id=campaign_id, display_name=name, event_type=event_type, **fields)

    found = [trigger("Every purchase", reward=points(10))]
    monthly = t.OccurrenceRule(nth=3, period=t.OCCURRENCE_PERIOD_CALENDAR_MONTH)
    for n in range(39):
        found.append(
            trigger(
                f"3rd big purchase {n}",
                property_filters=[at_least(rng.randint(5000, 9000))],
                occurrence=monthly,
                reward=points(50),
            )
        )
    rules = [
        t.AchievementRule(
            measure=t.ACHIEVEMENT_MEASURE_SUM,
            property="net_total",
            target=50_000,
            window=Duration(seconds=30 * DAY),
        ),
        t.AchievementRule(measure=t.ACHIEVEMENT_MEASURE_DISTINCT, property="categories", target=5),
        t.AchievementRule(measure=t.ACHIEVEMENT_MEASURE_COUNT, target=10),
    ]
    for n in range(30):
        found.append(trigger(f"Achievement {n}", achievement=rules[n % 3], reward=points(100)))
    for n, event_type in enumerate(["review.written", "tier.changed", "customer.created"] * 10):
        found.append(trigger(f"Other {n}", event_type, reward=points(5)))
    return found


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
            customer = f"c{self.random.randrange(self.customers):06d}"
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
        "SELECT count(*) FROM promotion.processed_events WHERE consumer = 'promotion' AND event_id LIKE $1",
        prefix + "%",
    )


async def until_handled(
    connection: asyncpg.Connection, prefix: str, count: int, limit: float = 600.0
) -> None:
    started = time.perf_counter()
    while await handled(connection, prefix) < count:
        if time.perf_counter() - started > limit:
            raise RuntimeError(
                f"only {await handled(connection, prefix)} of {count} events handled in {limit:.0f}s"
            )
        await asyncio.sleep(0.05)


async def skip_old_events(redis: Redis) -> None:
    """Only this run's events: the groups start at the streams' ends."""
    for stream, group in GROUPS.items():
        try:
            await redis.xgroup_create(stream, group, id="$", mkstream=True)
        except ResponseError as error:
            if not str(error).startswith("BUSYGROUP"):
                raise
            await redis.xgroup_setid(stream, group, id="$")


async def backlog(broker, connection, server, events: Events, count: int, label: str = "backlog") -> float:
    before, started = server.cpu_seconds(), time.perf_counter()
    for start in range(0, count, 500):
        await broker.publish(STREAM, events.make(min(500, count - start)))
    await until_handled(connection, events.run + "-", count)
    seconds = time.perf_counter() - started
    rate = count / seconds
    cpu = (server.cpu_seconds() - before) / count * 1e6
    print(
        f"{label}: {count} events in {seconds:.1f}s: {rate:.0f} events/s, {cpu:.0f} us promotion CPU per event"
    )
    return rate


def quantiles(lags: list[float]) -> str:
    lags = sorted(lags)

    def at(q: float) -> float:
        return lags[min(len(lags) - 1, int(q * len(lags)))]

    return f"p50 {at(0.5):.1f} ms, p99 {at(0.99):.1f} ms, max {lags[-1]:.1f} ms"


async def paced(broker, connection, events: Events, every_purchase: str, rate: float, seconds: float) -> None:
    first = len(events.sent)
    tick, started, due = 0.02, time.perf_counter(), 0.0
    while (elapsed := time.perf_counter() - started) < seconds:
        due += rate * tick
        if (batch := int(due) - (len(events.sent) - first)) > 0:
            await broker.publish(STREAM, events.make(batch))
        await asyncio.sleep(max(0.0, tick - (time.perf_counter() - started - elapsed)))
    ids = list(events.sent)[first:]
    await until_handled(connection, events.run + "-", len(events.sent))
    query = """
        SELECT g.source_event_id, extract(epoch FROM g.created_at) AS granted,
               extract(epoch FROM e.created_at) AS posted
        FROM promotion.reward_grants g
        LEFT JOIN ledger.journal_entries e ON e.tenant_id = g.tenant_id AND e.source_ref = g.grant_id::text
        WHERE g.tenant_id = $1 AND g.trigger_id = $2 AND g.source_event_id = ANY($3::varchar[])"""
    deadline = time.perf_counter() + 120
    while True:
        rows = await connection.fetch(query, TENANT, every_purchase, ids)
        done = len(rows) == len(ids) and all(row["posted"] is not None for row in rows)
        if done or time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.1)
    granted = [(float(row["granted"]) - events.sent[row["source_event_id"]]) * 1000 for row in rows]
    posted = [(float(r["posted"]) - events.sent[r["source_event_id"]]) * 1000 for r in rows if r["posted"]]
    missing = len(ids) - len(posted)
    print(f"paced at {rate:.0f} events/s for {seconds:.0f}s ({len(ids)} events):")
    if missing:
        print(f"  {missing} of {len(ids)} rewards not posted within 120 s of the last event's handling")
    print(f"  purchase.committed -> reward granted (promotion): {quantiles(granted)}")
    print(f"  purchase.committed -> points posted (ledger):     {quantiles(posted)}")


async def setup(promotion, ledger, rng: random.Random) -> str:
    """The programme, the event campaign and its 100 triggers; the id of the every-purchase one."""
    ledger_stub = ledger_service_pb2_grpc.LedgerServiceStub(await ledger.channel())
    program = await ledger_stub.CreateProgram(
        ledger_api.CreateProgramRequest(
            idempotency_key=uuid.uuid4().hex,
            program=ledger_pb2.Program(display_name="Bench", asset_kind=ledger_pb2.ASSET_KIND_POINTS),
        ),
        metadata=METADATA,
        timeout=30,
    )
    stub = promotion_service_pb2_grpc.PromotionServiceStub(await promotion.channel())
    campaign = await stub.CreateCampaign(
        api.CreateCampaignRequest(
            idempotency_key=uuid.uuid4().hex,
            campaign=campaign_pb2.Campaign(
                display_name="Triggers",
                type=campaign_pb2.CAMPAIGN_TYPE_EVENT,
                program_id=program.program.program_id,
            ),
        ),
        metadata=METADATA,
        timeout=30,
    )
    campaign_id = campaign.campaign.campaign_id
    await stub.ActivateCampaign(
        api.ActivateCampaignRequest(idempotency_key=uuid.uuid4().hex, campaign_id=campaign_id),
        metadata=METADATA,
        timeout=30,
    )
    created = []
    for trigger in triggers(campaign_id, rng):
        response = await stub.CreateTrigger(
            api.CreateTriggerRequest(idempotency_key=uuid.uuid4().hex, trigger=trigger),
            metadata=METADATA,
            timeout=30,
        )
        created.append(response.trigger.trigger_id)
    return created[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the paced phase")
    args = parser.parse_args()
    async with scratch_database() as (url, redis_url):
        redis = Redis.from_url(redis_url)
        await skip_old_events(redis)
        quiet = {"DELAY_SWEEP_SECONDS": "0", "BIRTHDAY_CHECK_SECONDS": "0", "RESERVATION_SWEEP_SECONDS": "0"}
        promotion = service_process("promotion", url, redis_url, internal_token=TOKEN, settings=quiet)
        ledger = service_process("ledger", url, redis_url, internal_token=TOKEN)
        connection = await asyncpg.connect(asyncpg_dsn(url))
        try:
            print(f"Python {platform.python_version()}; {os.cpu_count()} CPUs; servers on uvloop")
            every_purchase = await setup(promotion, ledger, random.Random(3))
            print(f"100 enabled triggers, {args.customers} customers")
            broker, events = RedisStreamsBroker(redis), Events(args.customers)
            await backlog(broker, connection, promotion, events, 200, "warm-up")
            rate = await backlog(broker, connection, promotion, events, args.events)
            await paced(broker, connection, events, every_purchase, rate / 2, args.seconds)
        finally:
            await connection.close()
            promotion.stop()
            ledger.stop()
            await redis.aclose()


if __name__ == "__main__":
    uvloop.run(main())
