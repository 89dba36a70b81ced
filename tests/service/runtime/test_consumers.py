"""The event consumer against real Redis Streams and PostgreSQL: each event handled once, bound to its
tenant, in order per aggregate across retries, replicas and a crashed leader; failures retried then
dead-lettered; outages waited out without losing or dead-lettering anything; traces that follow the
event and polls that make none."""

import asyncio
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from loyalty.profile.v1 import events_pb2
from loyalty_runtime.cache import connect_redis
from loyalty_runtime.consumers import EventHandlers, StreamConsumer
from loyalty_runtime.db import Database
from loyalty_runtime.events import Envelope, OutboxRelay, RedisStreamsBroker, Subscription
from loyalty_runtime.streams import group_lag
from loyalty_runtime.telemetry import instrument, untraced
from loyalty_runtime.uow import UnitsOfWork
from tests.proxy import TcpProxy
from tests.service.runtime.conftest import as_tenant, eventually

GROUP = "svc"
FAST = {"block_seconds": 0.05, "lease_seconds": 0.5, "claim_idle_seconds": 0.3, "retry_seconds": 0.05}


def updated(key: str, seq: int) -> events_pb2.CustomerUpdated:
    return events_pb2.CustomerUpdated(customer_id=key, fields=[str(seq)])


async def publish(units, database, schema, redis, stream, events, *, tenant="t1") -> None:
    """Commit `events` ((key, message) pairs) in one transaction and relay them to `stream`."""
    with as_tenant(tenant):
        async with units.change() as uow:
            for key, event in events:
                uow.record(event, key=key)
    relay = OutboxRelay(database, schema, RedisStreamsBroker(redis), stream)
    while await relay.publish_pending():
        pass


def in_order(effects, violations=None):
    async def handle(uow, event: events_pb2.CustomerUpdated) -> None:
        try:
            await effects.apply_in_order(uow, event.customer_id, int(event.fields[0]))
        except AssertionError:
            if violations is not None:
                violations.append((event.customer_id, event.fields[0]))
            raise

    return handle


def consumer(redis, stream, units, schema, handle, *, group=GROUP, **options) -> StreamConsumer:
    handlers = EventHandlers(group, units, schema, [Subscription(stream, events_pb2.CustomerUpdated, handle)])
    return StreamConsumer(redis, stream, handlers, **{**FAST, **options})


async def run_until(condition, *consumers: StreamConsumer) -> None:
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stopping)) for c in consumers]
    try:
        await eventually(condition)
    finally:
        stopping.set()
        await asyncio.gather(*tasks)


def consumed(stream: str, outcome: str, event_type: str = "customer.updated", group: str = GROUP) -> float:
    labels = {"stream": stream, "group": group, "event_type": event_type, "outcome": outcome}
    return REGISTRY.get_sample_value("loyalty_events_consumed_total", labels) or 0.0


def handled_all(effects, database, expected: dict):
    async def check() -> bool:
        state = await effects.read(database)
        return all(state.get(k, (0, -1, ""))[:2] == v for k, v in expected.items())

    return check


async def test_each_event_is_handled_once_in_order_in_its_tenant(
    units, database, schema, redis, stream, effects
):
    await publish(
        units, database, schema, redis, stream, [("k1", updated("k1", n)) for n in range(5)], tenant="t-a"
    )
    await publish(
        units, database, schema, redis, stream, [("k1", updated("k1", n)) for n in range(3)], tenant="t-b"
    )

    await run_until(
        handled_all(effects, database, {("t-a", "k1"): (5, 4), ("t-b", "k1"): (3, 2)}),
        consumer(redis, stream, units, schema, in_order(effects)),
    )
    state = await effects.read(database)
    assert state[("t-a", "k1")] == (5, 4, "svc-consumer")
    assert (await redis.xpending(stream, GROUP))["pending"] == 0


async def test_a_redelivered_event_changes_nothing(units, database, schema, redis, stream, effects):
    await publish(units, database, schema, redis, stream, [("k", updated("k", 0))])
    [(_, fields)] = await redis.xrange(stream)
    await redis.xadd(stream, fields)  # the same event again (a relay that crashed before marking)

    await run_until(
        lambda: _no_pending(redis, stream),
        consumer(redis, stream, units, schema, lambda uow, e: effects.count(uow, "k")),
    )
    assert (await effects.read(database))[("t1", "k")][0] == 1
    assert consumed(stream, "duplicate") == 1


async def _no_pending(redis, stream, group=GROUP) -> bool:
    groups = {g["name"].decode(): g for g in await redis.xinfo_groups(stream)}
    return (
        group in groups
        and groups[group]["pending"] == 0
        and await group_lag(redis, stream, groups[group]) == 0
    )


async def test_an_entry_is_acknowledged_after_its_commit_and_a_dead_consumers_entries_are_taken_over(
    units, database, schema, redis, stream, effects
):
    """The first consumer commits its events and dies before XACK; a second one takes its entries
    over once they have been idle long enough, finds them handled, and acknowledges them."""
    await publish(units, database, schema, redis, stream, [(f"k{n}", updated(f"k{n}", 0)) for n in range(3)])
    first = consumer(redis, stream, units, schema, in_order(effects))

    async def die(done) -> None:
        if done:
            raise SystemExit("killed between COMMIT and XACK")

    first._acknowledge = die
    assert await first.lead()
    with pytest.raises(SystemExit):
        await first.step()
    assert (await redis.xpending(stream, GROUP))["pending"] == 3

    second = consumer(redis, stream, units, schema, in_order(effects))
    await run_until(lambda: _no_pending(redis, stream), second)
    assert all(count == 1 for count, _, _ in (await effects.read(database)).values())
    assert consumed(stream, "duplicate") == 3


async def test_events_nobody_subscribed_to_are_acknowledged_and_skipped(
    units, database, schema, redis, stream, effects
):
    await publish(
        units,
        database,
        schema,
        redis,
        stream,
        [("k", events_pb2.CustomerCreated(customer_id="k")), ("k", updated("k", 0))],
    )
    await run_until(
        lambda: _no_pending(redis, stream), consumer(redis, stream, units, schema, in_order(effects))
    )
    assert (await effects.read(database))[("t1", "k")][:2] == (1, 0)
    assert consumed(stream, "skipped", "customer.created") == 1


async def test_a_failing_handler_is_retried_with_backoff_and_holds_back_only_its_own_key(
    units, database, schema, redis, stream, effects
):
    attempts: list[tuple[str, int, float]] = []
    loop = asyncio.get_running_loop()

    async def flaky(uow, event) -> None:
        key, seq = event.customer_id, int(event.fields[0])
        attempts.append((key, seq, loop.time()))
        if (key, seq) == ("k1", 0) and len([a for a in attempts if a[:2] == ("k1", 0)]) <= 2:
            raise LookupError("what the event refers to is not there yet")
        await effects.apply_in_order(uow, key, seq)

    events = [("k1", updated("k1", 0)), ("k1", updated("k1", 1)), ("k2", updated("k2", 0))]
    await publish(units, database, schema, redis, stream, events)
    await run_until(
        handled_all(effects, database, {("t1", "k1"): (2, 1), ("t1", "k2"): (1, 0)}),
        consumer(redis, stream, units, schema, flaky, retry_seconds=0.1),
    )

    order = [(key, seq) for key, seq, _ in attempts]
    assert order == [("k1", 0), ("k2", 0), ("k1", 0), ("k1", 0), ("k1", 1)]
    first, second, third = [t for key, seq, t in attempts if (key, seq) == ("k1", 0)]
    assert second - first >= 0.05 and third - second >= 0.1  # 50-100% of 0.1 s, then of 0.2 s
    assert consumed(stream, "retried") == 2


async def test_an_event_that_keeps_failing_is_dead_lettered_and_logged_by_its_ids(
    units, database, schema, redis, stream, effects, caplog
):
    async def broken(uow, event) -> None:
        if event.fields[0] == "0":
            raise ValueError("jane.doe@example.com is not welcome here")
        await effects.count(uow, event.customer_id)

    await publish(units, database, schema, redis, stream, [("k", updated("k", 0)), ("k", updated("k", 1))])
    caplog.set_level(logging.INFO, logger="loyalty.consumers")
    await run_until(
        lambda: _no_pending(redis, stream), consumer(redis, stream, units, schema, broken, max_deliveries=3)
    )

    [(_, dead)] = await redis.xrange(f"{stream}.dead.{GROUP}")
    assert (dead[b"deliveries"], dead[b"error_type"]) == (b"3", b"ValueError")
    [(source_id, original)] = (await redis.xrange(stream))[:1]
    assert dead[b"source_id"] == source_id and dead[b"payload"] == original[b"payload"]
    assert (await effects.read(database))[("t1", "k")][0] == 1  # the next event of the key went on
    assert consumed(stream, "dead_lettered") == 1
    # Other suites' servers in this process dead-letter their own events meanwhile: keep to ours.
    [warning] = [
        r
        for r in caplog.records
        if r.getMessage() == "event dead-lettered" and r.fields.get("stream") == stream
    ]
    assert warning.fields["event_id"] == Envelope.from_fields(original).event_id
    assert "jane" not in caplog.text


async def test_an_entry_that_cannot_be_an_event_is_dead_lettered_at_once(
    units, database, schema, redis, stream
):
    handled = []

    async def handle(uow, event) -> None:
        handled.append(event)

    await publish(units, database, schema, redis, stream, [("k", updated("k", 0))])
    [(_, good)] = await redis.xrange(stream)
    await redis.xadd(stream, {"no": "envelope"})
    await redis.xadd(stream, {**good, b"id": b"x:1", b"payload": b"\xff\xff\xff"})
    await redis.xadd(stream, {**good, b"id": b"x:2", b"tenant": b"Not A Tenant"})

    await run_until(lambda: _no_pending(redis, stream), consumer(redis, stream, units, schema, handle))
    assert len(handled) == 1
    dead = await redis.xrange(f"{stream}.dead.{GROUP}")
    assert [(f[b"deliveries"], f[b"error_type"]) for _, f in dead] == [(b"1", b"MalformedEvent")] * 3


async def test_replicas_take_turns_and_a_crashed_leaders_successor_keeps_each_keys_order(
    units, database, schema, redis, stream, effects
):
    violations: list = []
    slow = in_order(effects, violations)

    async def handle(uow, event) -> None:
        await asyncio.sleep(0.002)
        await slow(uow, event)

    # The leader reads at most 10 entries ahead; its entries are taken over only after being idle
    # for longer than its lease lasts, so its successor leads while they still wait.
    options = {"batch_size": 5, "max_backlog": 10, "lease_seconds": 1.0, "claim_idle_seconds": 2.5}
    replicas = [consumer(redis, stream, units, schema, handle, **options) for _ in range(3)]
    stopping = asyncio.Event()
    tasks = {r: asyncio.create_task(r.run(stopping)) for r in replicas}
    keys = [f"k{n}" for n in range(6)]
    await publish(
        units, database, schema, redis, stream, [(k, updated(k, seq)) for seq in range(20) for k in keys]
    )
    try:

        async def some_handled() -> bool:
            return sum(c for c, _, _ in (await effects.read(database)).values()) >= 40

        await eventually(some_handled)
        [leader] = [r for r in replicas if r.leading]

        async def crash() -> None:  # no resign: its lease runs out, its entries stay pending
            pass

        leader.resign = crash
        tasks.pop(leader).cancel()
        await eventually(handled_all(effects, database, {("t1", k): (20, 19) for k in keys}))
    finally:
        stopping.set()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert violations == []
    assert consumed(stream, "retried") == 0


async def test_leaders_that_stall_past_their_lease_still_keep_each_keys_order(
    units, database, schema, redis, stream, effects
):
    """Handlers that stall longer than the lease hand leadership back and forth while events keep
    arriving: a stalled leader must not read entries from under its successor, and a successor must
    not handle a key's later entries while an earlier one is still another consumer's."""
    violations: list = []
    ordered = in_order(effects, violations)
    stalls = iter([0.5, 0, 0, 0, 0, 0, 0, 0.4, 0, 0, 0, 0, 0, 0, 0, 0, 0.6] * 20)

    async def handle(uow, event) -> None:
        await asyncio.sleep(next(stalls, 0))
        await ordered(uow, event)

    options = {"batch_size": 4, "max_backlog": 8, "lease_seconds": 0.2, "claim_idle_seconds": 0.25}
    replicas = [consumer(redis, stream, units, schema, handle, **options) for _ in range(3)]
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stopping)) for r in replicas]
    keys = [f"k{n}" for n in range(4)]
    try:
        for wave in range(6):
            events = [(k, updated(k, seq)) for seq in range(wave * 5, wave * 5 + 5) for k in keys]
            await publish(units, database, schema, redis, stream, events)
            await asyncio.sleep(0.3)
        await eventually(handled_all(effects, database, {("t1", k): (30, 29) for k in keys}), within=30)
    finally:
        stopping.set()
        await asyncio.gather(*tasks)
    assert violations == []
    assert (await redis.xpending(stream, GROUP))["pending"] == 0


async def test_a_database_outage_pauses_the_consumer_without_counting_deliveries(
    units, database, database_url, schema, redis, stream, effects, caplog
):
    proxy = await TcpProxy.to(database_url).start(cut=True)
    behind_proxy = Database(proxy.url_for(database_url), pool_size=2)
    await publish(units, database, schema, redis, stream, [("k", updated("k", n)) for n in range(3)])
    # One delivery allowed: a counted failure would dead-letter at once.
    paused = consumer(
        redis, stream, UnitsOfWork(behind_proxy, schema), schema, in_order(effects), max_deliveries=1
    )
    caplog.set_level(logging.WARNING, logger="loyalty.consumers")
    stopping = asyncio.Event()
    running = asyncio.create_task(paused.run(stopping))
    try:
        await asyncio.sleep(1.5)
        assert await effects.read(database) == {}
        # Only this consumer's: other suites' servers in the worker dead-letter their own events.
        ours = [r for r in caplog.records if getattr(r, "fields", {}).get("stream", stream) == stream]
        assert len([r for r in ours if r.name == "loyalty.consumers"]) == 1
        await proxy.restore()
        await eventually(handled_all(effects, database, {("t1", "k"): (3, 2)}))
    finally:
        stopping.set()
        await running
        await proxy.close()
        await behind_proxy.close()
    assert await redis.exists(f"{stream}.dead.{GROUP}") == 0


async def test_a_redis_outage_is_waited_out(units, database, schema, redis_url, redis, stream, effects):
    proxy = await TcpProxy.to(redis_url).start(cut=True)
    behind_proxy = connect_redis(proxy.url_for(redis_url))
    waiting = consumer(behind_proxy, stream, units, schema, in_order(effects))
    stopping = asyncio.Event()
    running = asyncio.create_task(waiting.run(stopping))
    try:
        await publish(units, database, schema, redis, stream, [("k", updated("k", 0))])
        await asyncio.sleep(1.0)
        await proxy.restore()
        await eventually(handled_all(effects, database, {("t1", "k"): (1, 0)}))
    finally:
        stopping.set()
        await running
        await proxy.close()
        await behind_proxy.aclose()


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(provider)  # database and Redis spans, as in production with an exporter
    yield provider, exporter
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    AsyncPGInstrumentor().uninstrument()
    RedisInstrumentor().uninstrument()


def ours(exporter) -> list:
    """The spans of this test's consumer. Instrumentation is process-wide, and the other servers of
    the worker (no tracer of their own) leave parentless client spans when their consumers handle
    events; this consumer's statements always nest under its handling span."""
    return [s for s in exporter.get_finished_spans() if not (s.parent is None and s.kind is SpanKind.CLIENT)]


async def test_handling_joins_the_producers_trace_and_idle_polls_make_no_spans(
    units, database, schema, redis, stream, effects, spans
):
    provider, exporter = spans
    handlers = EventHandlers(
        GROUP,
        units,
        schema,
        [Subscription(stream, events_pb2.CustomerUpdated, in_order(effects))],
        tracer=provider.get_tracer("test"),
    )
    traced_consumer = StreamConsumer(redis, stream, handlers, **FAST)
    stopping = asyncio.Event()
    running = asyncio.create_task(traced_consumer.run(stopping))
    try:
        await asyncio.sleep(0.5)  # idle: leases, reads, pending checks
        assert ours(exporter) == []
        with provider.get_tracer("test").start_as_current_span("enrol") as producer:
            await publish(units, database, schema, redis, stream, [("k", updated("k", 0))])
        async with asyncio.timeout(10):
            while True:
                with untraced():  # the test's own reads
                    if await handled_all(effects, database, {("t1", "k"): (1, 0)})():
                        break
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the acknowledgement and more idle rounds
    finally:
        stopping.set()
        await running

    finished = ours(exporter)
    [handling] = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert handling.name == "customer.updated process"
    assert handling.parent.span_id == producer.get_span_context().span_id
    assert {s.context.trace_id for s in finished} == {producer.get_span_context().trace_id}
    assert [
        s for s in finished if s.parent and s.parent.span_id == handling.context.span_id
    ]  # its statements
