"""Domain events: the transactional outbox and its relay to a stream broker.

A use case records events with `uow.record(...)` (uow.py): protobuf messages written into the
service's own `outbox` table in the same transaction as the change. `OutboxRelay` publishes them in
id order, in batches (one broker round trip per batch), and marks them published; a crash between the
two publishes a batch again, so delivery is at-least-once and consumers remember what they handled.

Order: one relay per service publishes at a time (a PostgreSQL advisory lock held by the batch's
transaction; the other replicas' relays stand by), so every aggregate's events reach the stream in
the order they committed, however many replicas run. The relay sleeps while there is nothing to
publish and wakes at once when its own process commits events (other replicas' events wait at most
`IDLE_SECONDS`). Published rows are deleted after the service's retention.

The broker sits behind `EventBroker`, so Redis Streams can be replaced (Kafka, NATS).
"""

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from opentelemetry.trace import Tracer
from redis.asyncio import Redis

from loyalty_runtime.db import Database
from loyalty_runtime.telemetry import untraced

if TYPE_CHECKING:
    from loyalty_runtime.server import Resources, ServiceDefinition

log = logging.getLogger("loyalty.events")

IDLE_SECONDS = 1.0
BATCH_SIZE = 500
PRUNE_EVERY_SECONDS = 60.0
# Redis Streams keep at most about this many entries per stream (XADD MAXLEN ~).
STREAM_MAX_LENGTH = 1_000_000


@dataclass(frozen=True)
class Envelope:
    """An event as it travels: the outbox row's facts around the protobuf payload."""

    event_id: str
    event_type: str
    tenant_id: str
    key: str
    payload: bytes
    occurred_at: datetime
    trace_parent: str | None

    def to_fields(self) -> dict[str, bytes | str]:
        fields: dict[str, bytes | str] = {
            "id": self.event_id,
            "type": self.event_type,
            "tenant": self.tenant_id,
            "key": self.key,
            "payload": self.payload,
            "at": self.occurred_at.astimezone(UTC).isoformat(),
        }
        if self.trace_parent:
            fields["traceparent"] = self.trace_parent
        return fields

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> "Envelope":
        parent = fields.get(b"traceparent")
        return cls(
            event_id=fields[b"id"].decode(),
            event_type=fields[b"type"].decode(),
            tenant_id=fields[b"tenant"].decode(),
            key=fields[b"key"].decode(),
            payload=fields[b"payload"],
            occurred_at=datetime.fromisoformat(fields[b"at"].decode()),
            trace_parent=parent.decode() if parent else None,
        )


class EventBroker(Protocol):
    async def publish(self, stream: str, events: Sequence[Envelope]) -> None: ...


class RedisStreamsBroker:
    """Streams named `<domain>.events`; a batch is one pipelined round trip."""

    def __init__(self, redis: Redis, *, max_length: int = STREAM_MAX_LENGTH) -> None:
        self.redis = redis
        self.max_length = max_length

    async def publish(self, stream: str, events: Sequence[Envelope]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(stream, event.to_fields(), maxlen=self.max_length, approximate=True)
            await pipe.execute()


class OutboxRelay:
    def __init__(
        self,
        database: Database,
        schema: str,
        broker: EventBroker,
        stream: str,
        *,
        retention_hours: float,
        batch_size: int = BATCH_SIZE,
        tracer: Tracer | None = None,
    ) -> None:
        self.database = database
        self.tracer = tracer
        self.broker = broker
        self.stream = stream
        self.batch_size = batch_size
        self.retention_hours = retention_hours
        self.lock_key = zlib.crc32(f"{schema}.outbox".encode())
        self._any_pending = f"SELECT EXISTS (SELECT 1 FROM {schema}.outbox WHERE published_at IS NULL)"
        self._pending = f"""
            SELECT id, tenant_id, event_type, key, payload, trace_parent, created_at FROM {schema}.outbox
            WHERE published_at IS NULL ORDER BY id LIMIT $1"""
        self._mark = f"UPDATE {schema}.outbox SET published_at = now() WHERE id = ANY($1::bigint[])"
        self._prune = f"""
            DELETE FROM {schema}.outbox WHERE id IN (
                SELECT id FROM {schema}.outbox
                WHERE published_at < now() - make_interval(secs => $1) LIMIT 10000)"""

    async def publish_pending(self) -> int:
        """Publish one batch if this relay holds the lock; returns how many it published."""
        with untraced():
            async with self.database.connection() as connection:
                if not await connection.fetchval(self._any_pending):
                    return 0
        if self.tracer is None:
            return await self._publish_batch()
        with self.tracer.start_as_current_span(
            "outbox publish", attributes={"messaging.destination.name": self.stream}
        ):
            return await self._publish_batch()

    async def _publish_batch(self) -> int:
        async with self.database.transaction() as connection:
            if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", self.lock_key):
                return 0  # another replica's relay is publishing
            rows = await connection.fetch(self._pending, self.batch_size)
            if rows:
                await self.broker.publish(self.stream, [self._envelope(row) for row in rows])
                await connection.execute(self._mark, [row["id"] for row in rows])
            return len(rows)

    def _envelope(self, row) -> Envelope:
        return Envelope(
            event_id=f"{self.stream}:{row['id']}",
            event_type=row["event_type"],
            tenant_id=row["tenant_id"],
            key=row["key"],
            payload=bytes(row["payload"]),
            occurred_at=row["created_at"],
            trace_parent=row["trace_parent"],
        )

    async def prune(self) -> int:
        with untraced():
            async with self.database.connection() as connection:
                status = await connection.execute(self._prune, self.retention_hours * 3600)
        return int(status.rsplit(" ", 1)[-1])

    async def run(self, wakeup: asyncio.Event, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + PRUNE_EVERY_SECONDS
        failures = 0
        while not stopping.is_set():
            wakeup.clear()
            try:
                published = await self.publish_pending()
                if loop.time() >= next_prune:
                    await self.prune()
                    next_prune = loop.time() + PRUNE_EVERY_SECONDS
                failures = 0
            except Exception as error:
                failures += 1
                published = 0
                if failures == 1:
                    log.warning(
                        "outbox relay failed; retrying",
                        extra={"fields": {"error_type": type(error).__name__}},
                    )
            if published < self.batch_size:
                await _sleep_until(wakeup, IDLE_SECONDS * min(failures + 1, 5))


async def _sleep_until(event: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass


def relay_loop(stream: str) -> Callable[["Resources", asyncio.Event], Awaitable[None]]:
    async def relay(resources: "Resources", stopping: asyncio.Event) -> None:
        await OutboxRelay(
            resources.database,
            resources.definition.schema,
            RedisStreamsBroker(resources.redis),
            stream,
            retention_hours=resources.settings.outbox_retention_hours,
            tracer=resources.tracer_provider.get_tracer(__name__) if resources.tracer_provider else None,
        ).run(resources.relay_wakeup, stopping)

    return relay


def runtime_loops(
    definition: "ServiceDefinition",
) -> list[Callable[["Resources", asyncio.Event], Awaitable[None]]]:
    """The background work the runtime runs for a definition: its outbox relay, for now."""
    return [relay_loop(definition.events)] if definition.events and definition.schema else []


@dataclass(frozen=True)
class Subscription:
    """Handle another service's `event` messages from `stream` ("profile.events"), each once, in a
    unit of work bound to the event's tenant (the runtime's consumer, consumers.py)."""

    stream: str
    event: type
    handle: Callable[..., Awaitable[None]]  # async (uow, event message) -> None
