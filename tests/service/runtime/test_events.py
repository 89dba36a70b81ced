"""The transactional outbox and its relay: what commits is published, in order per aggregate, in
batches, however many relays run; a crash between publishing and marking is harmless; published rows
are pruned after the retention; a Redis outage is waited out."""

import asyncio
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from loyalty.profile.v1 import events_pb2
from loyalty_runtime.consumers import EventHandlers, StreamConsumer
from loyalty_runtime.events import Envelope, OutboxRelay, RedisStreamsBroker, Subscription
from loyalty_runtime.uow import UnitsOfWork, trace_parent
from tests.proxy import TcpProxy
from tests.service.runtime.conftest import as_tenant, eventually

TENANT = "t-events"


def updated(seq: int) -> events_pb2.CustomerUpdated:
    return events_pb2.CustomerUpdated(customer_id="c", fields=[str(seq)])


async def commit(units: UnitsOfWork, events: list[tuple[str, int]], *, tenant: str = TENANT) -> None:
    """One transaction recording CustomerUpdated(seq) for each (key, seq)."""
    with as_tenant(tenant):
        async with units.change() as uow:
            for key, seq in events:
                uow.record(updated(seq), key=key)


def relay(database, schema, redis, stream, **options) -> OutboxRelay:
    return OutboxRelay(database, schema, RedisStreamsBroker(redis), stream, **options)


async def published(redis, stream) -> list[tuple[Envelope, int]]:
    entries = await redis.xrange(stream)
    envelopes = [Envelope.from_fields(fields) for _, fields in entries]
    return [(e, int(events_pb2.CustomerUpdated.FromString(e.payload).fields[0])) for e in envelopes]


async def stream_holds(redis, stream: str, count: int) -> bool:
    return await redis.xlen(stream) >= count


class CountingBroker(RedisStreamsBroker):
    def __init__(self, redis) -> None:
        super().__init__(redis)
        self.batches: list[int] = []

    async def publish(self, stream, events) -> None:
        self.batches.append(len(events))
        await super().publish(stream, events)


async def test_what_commits_is_published_in_order_and_what_rolls_back_never(
    units, database, schema, redis, stream
):
    await commit(units, [("k1", 0), ("k2", 0), ("k1", 1)])
    with as_tenant(TENANT), pytest.raises(RuntimeError):
        async with units.change() as uow:
            uow.record(updated(99), key="never")
            raise RuntimeError("the use case failed")
    outbox_relay = relay(database, schema, redis, stream)

    assert await outbox_relay.publish_pending() == 3
    assert await outbox_relay.publish_pending() == 0
    events = await published(redis, stream)
    assert [(e.key, seq) for e, seq in events] == [("k1", 0), ("k2", 0), ("k1", 1)]
    assert {e.tenant_id for e, _ in events} == {TENANT}
    assert {e.event_type for e, _ in events} == {"customer.updated"}
    assert len({e.event_id for e, _ in events}) == 3


async def test_a_backlog_is_published_in_batches_of_one_round_trip_each(
    units, database, schema, redis, stream
):
    await commit(units, [(f"k{n}", n) for n in range(1200)])
    broker = CountingBroker(redis)
    outbox_relay = OutboxRelay(database, schema, broker, stream)

    while await outbox_relay.publish_pending():
        pass
    assert broker.batches == [500, 500, 200]
    assert await redis.xlen(stream) == 1200


async def test_two_relay_replicas_keep_each_aggregates_commit_order(database, schema, redis, stream):
    """Eight writers each commit 30 events of their own key, one transaction after another, while
    two relays (two replicas of one service, small batches so they contend) publish concurrently."""
    wakeups = [asyncio.Event(), asyncio.Event()]
    units = UnitsOfWork(database, schema, on_events=lambda: [w.set() for w in wakeups])
    relays = [relay(database, schema, redis, stream, batch_size=7) for _ in wakeups]
    stopping = asyncio.Event()
    running = [asyncio.create_task(r.run(w, stopping)) for r, w in zip(relays, wakeups, strict=True)]

    async def writer(key: str) -> None:
        for seq in range(30):
            await commit(units, [(key, seq)])

    await asyncio.gather(*(writer(f"k{n}") for n in range(8)))
    await eventually(lambda: stream_holds(redis, stream, 240))
    stopping.set()
    await asyncio.gather(*running)

    events = await published(redis, stream)
    assert len(events) == 240  # none lost, none twice
    for n in range(8):
        assert [seq for e, seq in events if e.key == f"k{n}"] == list(range(30))


async def test_a_crash_between_publishing_and_committing_publishes_again_and_is_handled_once(
    units, database, schema, redis, stream, effects
):
    class CrashAfterPublishing(RedisStreamsBroker):
        async def publish(self, stream, events) -> None:
            await super().publish(stream, events)
            raise ConnectionError("the process died before it committed the batch")

    await commit(units, [("k1", 0), ("k2", 0)])
    crashing = OutboxRelay(database, schema, CrashAfterPublishing(redis), stream)
    with pytest.raises(ConnectionError):
        await crashing.publish_pending()
    assert await relay(database, schema, redis, stream).publish_pending() == 2
    assert await redis.xlen(stream) == 4  # each event twice on the stream

    async def handle(uow, event):
        await effects.count(uow, event.customer_id)

    handlers = EventHandlers("svc", units, schema, [Subscription(stream, events_pb2.CustomerUpdated, handle)])
    consumer = StreamConsumer(redis, stream, handlers, block_seconds=0.05)
    assert await consumer.lead()
    await consumer.step()

    assert (await effects.read(database))[(TENANT, "c")][0] == 2  # two events, each handled once
    assert (await redis.xpending(stream, "svc"))["pending"] == 0


async def test_the_outbox_keeps_only_what_is_still_to_be_published(units, database, schema, redis, stream):
    """Published rows are deleted with the batch, so the relay never scans what it already sent."""
    await commit(units, [(f"k{n}", 0) for n in range(30)])
    outbox_relay = relay(database, schema, redis, stream, batch_size=20)
    assert await outbox_relay.publish_pending() == 20
    async with database.connection() as connection:
        assert await connection.fetchval(f"SELECT count(*) FROM {schema}.outbox") == 10
        assert await outbox_relay.publish_pending() == 10
        assert await connection.fetchval(f"SELECT count(*) FROM {schema}.outbox") == 0
    assert await outbox_relay.publish_pending() == 0
    assert await redis.xlen(stream) == 30


async def test_an_event_carries_the_trace_context_of_the_change_that_recorded_it(
    units, database, schema, redis, stream
):
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("enrol") as span:
        expected = trace_parent()
        await commit(units, [("k", 0)])
    await relay(database, schema, redis, stream).publish_pending()

    [(envelope, _)] = await published(redis, stream)
    assert envelope.trace_parent == expected
    assert f"{span.get_span_context().trace_id:032x}" in envelope.trace_parent


async def test_the_relay_waits_out_a_redis_outage_logging_it_once_then_drains(
    units, database, schema, redis_url, redis, stream, caplog
):
    proxy = await TcpProxy.to(redis_url).start(cut=True)
    from loyalty_runtime.cache import connect_redis

    behind_proxy = connect_redis(proxy.url_for(redis_url))  # down: nothing listens yet
    outbox_relay = relay(database, schema, behind_proxy, stream)
    wakeup, stopping = asyncio.Event(), asyncio.Event()
    caplog.set_level(logging.WARNING, logger="loyalty.events")
    running = asyncio.create_task(outbox_relay.run(wakeup, stopping))
    try:
        await commit(units, [(f"k{n}", n) for n in range(1000)])
        wakeup.set()
        await asyncio.sleep(2.0)  # several attempts fail meanwhile
        assert await redis.xlen(stream) == 0
        warnings = [r for r in caplog.records if r.name == "loyalty.events"]
        assert len(warnings) == 1
        assert warnings[0].fields["error_type"] == "ConnectionError"
        assert "127.0.0.1" not in warnings[0].getMessage()

        await proxy.restore()
        await eventually(lambda: stream_holds(redis, stream, 1000))
    finally:
        stopping.set()
        await running
        await proxy.close()
        await behind_proxy.aclose()
    assert not running.exception()
