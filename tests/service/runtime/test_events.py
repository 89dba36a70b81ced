"""Outbox -> relay -> Redis Streams -> consumer group, with redelivery made harmless."""

import uuid

import pytest
from sqlalchemy import MetaData, func, select, text

from loyalty_runtime.cache import connect_redis
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.db import Database
from loyalty_runtime.events import (
    Event,
    OutboxRelay,
    RedisStreamsBroker,
    claim_event,
    outbox_table,
    processed_events_table,
    record_event,
)

SCHEMA = "events_test"
metadata = MetaData(schema=SCHEMA)
outbox = outbox_table(metadata)
processed = processed_events_table(metadata)


@pytest.fixture
async def database(database_url):
    database = Database(database_url)
    async with database.engine.begin() as connection:
        await connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        await connection.run_sync(metadata.create_all)
    yield database
    await database.dispose()


@pytest.fixture
async def redis(redis_url):
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def tenant():
    token = bind_call(CallContext(tenant_id="t-events", principal="test"))
    yield "t-events"
    unbind_call(token)


async def test_events_committed_with_a_change_reach_consumers_once(database, redis, tenant):
    stream = f"test-{uuid.uuid4().hex[:6]}.events"
    async with database.transaction() as session:
        for number in range(3):
            await record_event(session, outbox, "thing.happened", f"k{number}", {"n": number})
    async with database.transaction() as session:
        await record_event(session, outbox, "thing.rolled_back", "never", {})
        await session.rollback()

    relay = OutboxRelay(database.sessions, outbox, RedisStreamsBroker(redis), stream)
    assert await relay.publish_pending() == 3
    assert await relay.publish_pending() == 0

    handled: list[Event] = []

    async def handle(event: Event) -> None:
        async with database.transaction() as session:
            if await claim_event(session, processed, "counter", event.event_id):
                handled.append(event)

    broker = RedisStreamsBroker(redis)
    assert await broker.consume(stream, "counter", "c1", handle, block_ms=100) == 3
    assert [e.payload["n"] for e in handled] == [0, 1, 2]
    assert {e.tenant_id for e in handled} == {"t-events"}

    # A crash after publishing but before marking the rows publishes them again: harmless.
    async with database.transaction() as session:
        await session.execute(outbox.update().values(published_at=None))
    await OutboxRelay(database.sessions, outbox, broker, stream).publish_pending()
    await broker.consume(stream, "counter", "c1", handle, block_ms=100)
    assert len(handled) == 3


async def test_a_failing_handler_leaves_the_event_pending_for_a_retry(database, redis, tenant):
    stream = f"test-{uuid.uuid4().hex[:6]}.events"
    async with database.transaction() as session:
        await record_event(session, outbox, "thing.happened", "k", {"n": 1})
    broker = RedisStreamsBroker(redis)
    await OutboxRelay(database.sessions, outbox, broker, stream).publish_pending()
    attempts: list[str] = []

    async def flaky(event: Event) -> None:
        attempts.append(event.event_id)
        if len(attempts) == 1:
            raise RuntimeError("downstream unavailable")

    assert await broker.consume(stream, "g", "c1", flaky, block_ms=100) == 0
    assert await broker.consume(stream, "g", "c1", flaky, block_ms=100) == 1
    assert len(attempts) == 2 and attempts[0] == attempts[1]
    pending = await redis.xpending(stream, "g")
    assert pending["pending"] == 0


async def test_outbox_rows_carry_the_trace_context(database, tenant):
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("purchase"):
        async with database.transaction() as session:
            await record_event(session, outbox, "traced.event", "k", {})
    async with database.transaction() as session:
        row = (
            await session.execute(select(outbox.c.trace_context).where(outbox.c.event_type == "traced.event"))
        ).one()
        count = (await session.execute(select(func.count()).select_from(outbox))).scalar_one()
    assert "traceparent" in row.trace_context
    assert count >= 1
