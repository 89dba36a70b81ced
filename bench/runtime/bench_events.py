"""What the runtime's event and job machinery costs: how fast the outbox relay drains a backlog that
built up while Redis was down, and how much CPU the background loops use while there is nothing to
do. A benchmark, never a timed test: compare figures within one run.

    make bench BENCH=bench/runtime/bench_events.py
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/loyalty_bench REDIS_URL=redis://127.0.0.1:6379/0 \\
        python bench/runtime/bench_events.py [--events 20000] [--rounds 3] [--idle-seconds 10]

Each measurement runs on tables of its own (see `in_fresh_schema`).

Drain: `--events` events are committed (100 per transaction, as use cases would) while the relay's
broker fails as Redis does during an outage; then Redis "comes back" and the relay publishes them.
Reported: how long the relay takes to notice (its backoff), then the drain rate and the CPU this
process spent per 1,000 events (the relay is all it runs). Median of `--rounds`.

Consume: the same number of events handled by one consumer (the group's leader) with a handler of
one statement: the throughput of one service's subscription to one stream.

Idle: the relay alone, then every loop a service with events, a subscription, jobs and schedules
runs (relay, stream monitor, consumer, job worker, scheduler), for `--idle-seconds` each on uvloop;
reported as milliseconds of CPU per second of wall time. The issue measured 70-120 events/s of
drain and 14-20 ms/s of idle relay CPU before this runtime.
"""

import argparse
import asyncio
import logging
import os
import statistics
import time
import types
import uuid

import uvloop
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from loyalty.profile.v1 import events_pb2
from loyalty.testing.v1 import echo_pb2
from loyalty_runtime.cache import connect_redis
from loyalty_runtime.consumers import EventHandlers, StreamConsumer
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.db import Database
from loyalty_runtime.events import OutboxRelay, RedisStreamsBroker, Subscription
from loyalty_runtime.jobs import Job, JobWorker, Scheduler
from loyalty_runtime.migrations import sqlalchemy_url
from loyalty_runtime.server import ServiceDefinition
from loyalty_runtime.settings import ServiceSettings
from loyalty_runtime.streams import StreamRetention
from loyalty_runtime.tables import add_runtime_tables
from loyalty_runtime.uow import UnitsOfWork
from loyalty_runtime.wiring import housekeeping

PER_TRANSACTION = 100


class OutageBroker(RedisStreamsBroker):
    """Redis Streams that fail like an unreachable Redis until `outage` is cleared."""

    def __init__(self, redis) -> None:
        super().__init__(redis)
        self.outage = True
        self.first_publish: float | None = None

    async def publish(self, stream, events) -> None:
        if self.outage:
            raise ConnectionError("Redis is down")
        if self.first_publish is None:
            self.first_publish = time.perf_counter()
        await super().publish(stream, events)


async def create_schema(database_url: str) -> str:
    schema = f"bench_events_{uuid.uuid4().hex[:8]}"
    metadata = MetaData(schema=schema)
    add_runtime_tables(metadata)
    engine = create_async_engine(sqlalchemy_url(database_url))
    async with engine.begin() as connection:
        await connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        await connection.run_sync(metadata.create_all)
    await engine.dispose()
    return schema


async def queue_events(units: UnitsOfWork, count: int) -> None:
    token = bind_call(CallContext(tenant_id="bench", principal="bench"))
    try:
        for start in range(0, count, PER_TRANSACTION):
            async with units.change() as uow:
                for n in range(start, min(count, start + PER_TRANSACTION)):
                    uow.record(
                        events_pb2.CustomerUpdated(customer_id=f"c{n % 500}", fields=["given_name"]),
                        key=f"c{n % 500}",
                    )
    finally:
        unbind_call(token)


async def drain_round(database: Database, schema: str, redis, events: int) -> tuple[float, float]:
    """(seconds until the relay publishes after Redis returns, seconds it then takes to drain)."""
    stream = f"bench-{uuid.uuid4().hex[:6]}.events"
    units = UnitsOfWork(database, schema)
    broker = OutageBroker(redis)
    relay = OutboxRelay(database, schema, broker, stream)
    wakeup, stopping = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(relay.run(wakeup, stopping))
    await queue_events(units, events)
    await asyncio.sleep(3.0)  # the relay keeps failing and backs off
    back = time.perf_counter()
    broker.outage = False
    while True:  # Redis notifies nobody: poll the stream's length
        if await redis.xlen(stream) >= events:
            break
        await asyncio.sleep(0.005)
    drained = time.perf_counter()
    stopping.set()
    await running
    await redis.delete(stream)
    return broker.first_publish - back, drained - broker.first_publish


async def drain_cpu(database: Database, schema: str, redis, events: int) -> tuple[float, float]:
    """Drain seconds and CPU ms per 1,000 events, with Redis up from the start (no backoff wait)."""
    stream = f"bench-{uuid.uuid4().hex[:6]}.events"
    await queue_events(UnitsOfWork(database, schema), events)
    relay = OutboxRelay(database, schema, RedisStreamsBroker(redis), stream)
    started, cpu = time.perf_counter(), time.process_time()
    while await relay.publish_batch() == relay.batch_size:  # what `run` does while batches come full
        pass
    seconds, cpu_ms = time.perf_counter() - started, (time.process_time() - cpu) * 1000
    await redis.delete(stream)
    return seconds, cpu_ms / events * 1000


async def consume_round(database: Database, schema: str, redis, events: int) -> float:
    """Events per second one consumer (the group's leader) handles, each in its own transaction with
    the dedupe insert and one statement of the handler's, in stream order."""
    stream = f"bench-{uuid.uuid4().hex[:6]}.events"
    units = UnitsOfWork(database, schema)
    await queue_events(units, events)
    relay = OutboxRelay(database, schema, RedisStreamsBroker(redis), stream)
    while await relay.publish_batch() == relay.batch_size:
        pass

    async def handle(uow, event) -> None:
        await uow.connection.execute(f"UPDATE {schema}.outbox SET key = key WHERE id = 0")

    handlers = EventHandlers(
        "bench", units, schema, [Subscription(stream, events_pb2.CustomerUpdated, handle)]
    )
    consumer = StreamConsumer(redis, stream, handlers, block_seconds=0.05)
    stopping = asyncio.Event()
    started = time.perf_counter()
    running = asyncio.create_task(consumer.run(stopping))
    while True:  # Redis notifies nobody: poll the group
        groups = await redis.xinfo_groups(stream)
        if groups and groups[0]["lag"] == 0 and groups[0]["pending"] == 0:
            break
        await asyncio.sleep(0.01)
    seconds = time.perf_counter() - started
    stopping.set()
    await running
    await redis.delete(stream, f"{stream}.lease.bench")
    return events / seconds


async def idle_cpu(loops, seconds: float) -> float:
    """CPU ms per wall second while `loops` (coroutine factories taking the stop event) idle."""
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(loop(stopping)) for loop in loops]
    await asyncio.sleep(1.0)  # start-up: leases, group creation, schedule rows
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    used, wall = time.process_time() - cpu, time.perf_counter() - started
    stopping.set()
    await asyncio.gather(*tasks)
    return used / wall * 1000


def all_loops(database: Database, schema: str, redis) -> list:
    units = UnitsOfWork(database, schema)
    stream = f"bench-{uuid.uuid4().hex[:6]}.events"

    async def nothing(uow, payload) -> None:
        pass

    definition = ServiceDefinition(
        name="bench",
        settings=ServiceSettings,
        apis=[],
        schema=schema,
        events=stream,
        subscriptions=[Subscription(stream, events_pb2.CustomerUpdated, nothing)],
        jobs=[Job("nothing", echo_pb2.EchoRequest, nothing)],
    )
    resources = types.SimpleNamespace(
        settings=ServiceSettings(), definition=definition, database=database, redis=redis
    )
    relay = OutboxRelay(database, schema, RedisStreamsBroker(redis), stream)
    handlers = EventHandlers("bench", units, schema, definition.subscriptions)
    return [
        lambda stopping: relay.run(asyncio.Event(), stopping),
        StreamRetention(redis, stream).monitor,
        StreamConsumer(redis, stream, handlers).run,
        JobWorker(units, schema, definition.jobs).run,
        Scheduler(database, schema, housekeeping(definition), resources).run,
    ]


async def in_fresh_schema(database_url: str, database: Database, measure):
    """Each round on new tables: published rows left by an earlier round (dead tuples until
    autovacuum runs) would slow the next one and make rounds incomparable."""
    schema = await create_schema(database_url)
    try:
        return await measure(schema)
    finally:
        async with database.connection() as connection:
            await connection.execute(f"DROP SCHEMA {schema} CASCADE")


async def main(args) -> None:
    logging.getLogger("loyalty").setLevel(logging.ERROR)  # the simulated outage's warnings
    database_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/loyalty_bench")
    redis = connect_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    database = Database(database_url, pool_size=5)
    await database.open()

    def fresh(measure):
        return in_fresh_schema(database_url, database, measure)

    try:
        rounds = [
            await fresh(lambda s: drain_round(database, s, redis, args.events)) for _ in range(args.rounds)
        ]
        cpu_rounds = [
            await fresh(lambda s: drain_cpu(database, s, redis, args.events)) for _ in range(args.rounds)
        ]
        consumed = [
            await fresh(lambda s: consume_round(database, s, redis, args.events)) for _ in range(args.rounds)
        ]

        async def idle_relay_cpu(schema: str) -> float:
            relay = OutboxRelay(database, schema, RedisStreamsBroker(redis), "bench-idle.events")
            return await idle_cpu([lambda stopping: relay.run(asyncio.Event(), stopping)], args.idle_seconds)

        idle_relay = await fresh(idle_relay_cpu)
        idle_all = await fresh(lambda s: idle_cpu(all_loops(database, s, redis), args.idle_seconds))
    finally:
        await database.close()
        await redis.aclose()

    notice = statistics.median(r[0] for r in rounds)
    drain = statistics.median(r[1] for r in rounds)
    clean_seconds = statistics.median(r[0] for r in cpu_rounds)
    cpu_per_thousand = statistics.median(r[1] for r in cpu_rounds)
    print(f"{args.events:,} events queued during a Redis outage (median of {args.rounds} rounds)")
    row("relay publishes again after (its backoff, <= 5 s)", f"{notice:.2f} s")
    row("relay drains them", f"{args.events / drain:,.0f} events/s")
    row("relay drains them, Redis up throughout", f"{args.events / clean_seconds:,.0f} events/s")
    row("relay CPU", f"{cpu_per_thousand:.1f} ms per 1,000 events")
    row("one consumer handles them (one statement each)", f"{statistics.median(consumed):,.0f} events/s")
    print(f"idle, CPU per second of wall time ({args.idle_seconds:g} s each)")
    row("outbox relay", f"{idle_relay:.2f} ms/s")
    row("relay, stream monitor, consumer, job worker, scheduler", f"{idle_all:.2f} ms/s")


def row(label: str, value: str) -> None:
    print(f"  {label:<56} {value:>18}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    uvloop.run(main(parser.parse_args()))
