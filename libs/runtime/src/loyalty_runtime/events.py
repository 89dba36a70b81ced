"""Domain events: the transactional outbox and its relay to a stream broker.

A use case records events with `uow.record(...)` (uow.py): protobuf messages written into the
service's own `outbox` table in the same transaction as the change. `OutboxRelay` publishes them in
id order, in batches (per batch of up to `BATCH_SIZE`: one statement that takes the relay lock and
deletes the batch returning it, one pipelined broker round trip, COMMIT); a crash after publishing
and before the commit publishes the batch again, so delivery is at-least-once and consumers remember
what they handled (consumers.py).

The outbox holds only what is still to be published. Marking rows published and deleting them after
a retention (as this relay once did) costs every event two more index writes and leaves dead entries
in the index the relay scans, so its polls slow down as events pile up between vacuums. What was
published is kept where consumers read it: the stream, trimmed only once every consumer group has
read it (streams.py).

Order: one relay per service publishes at a time (a PostgreSQL advisory lock held by the batch's
transaction; the other replicas' relays find it taken and stand by), so a batch is read only after
the previous one is gone from the outbox, and every aggregate's events reach the stream in the order they
committed, however many replicas run. (Outbox ids follow commit order for one aggregate because its
changes are serialised by the aggregate's row lock and the outbox row is written last; events of
different aggregates may interleave differently, which no consumer relies on.)

Cost: the relay sleeps while there is nothing to publish, polls with one untraced `SELECT EXISTS`
every `IDLE_SECONDS`, and wakes at once when its own process commits events (other replicas' events
wait at most `IDLE_SECONDS`). While the broker is down it backs off (loops.py) and then drains the
backlog batch after batch without sleeping.

The broker sits behind `EventBroker`, so Redis Streams can be replaced (Kafka, NATS); consumers.py
is the Redis Streams consumer and streams.py its retention.
"""

import asyncio
import logging
import re
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf.message import Message
from opentelemetry.trace import SpanKind, Tracer
from redis.asyncio import Redis

from loyalty_runtime.db import Database
from loyalty_runtime.loops import Backoff, pause, traced
from loyalty_runtime.telemetry import untraced

log = logging.getLogger("loyalty.events")

IDLE_SECONDS = 1.0
COALESCE_SECONDS = 0.01
BATCH_SIZE = 500
# Redis Streams keep at most about this many entries per stream (XADD MAXLEN ~): a safety net for a
# consumer group that stopped reading; streams.py trims what every group has read long before.
STREAM_MAX_LENGTH = 1_000_000


class MalformedEvent(ValueError):
    """A stream entry that is not an event envelope: nothing can ever handle it."""


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
        try:
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
        except (KeyError, ValueError) as error:  # UnicodeDecodeError is a ValueError
            raise MalformedEvent(f"not an event envelope: {type(error).__name__}") from None


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
        batch_size: int = BATCH_SIZE,
        tracer: Tracer | None = None,
    ) -> None:
        self.database = database
        self.tracer = tracer
        self.broker = broker
        self.stream = stream
        self.batch_size = batch_size
        self.lock_key = zlib.crc32(f"{schema}.outbox".encode())
        self._any_pending = f"SELECT EXISTS (SELECT 1 FROM {schema}.outbox)"
        # Take the relay lock and, if this replica got it, delete the next batch returning it: one
        # statement; the rows come back if publishing fails (the transaction rolls back). The lock
        # may come free only as the previous holder commits, after this statement's snapshot: then
        # the rows that holder deleted are skipped (PostgreSQL finds them gone), never sent twice.
        self._take_batch = f"""
            WITH leader AS (SELECT pg_try_advisory_xact_lock($2) AS held)
            DELETE FROM {schema}.outbox
            WHERE id IN (SELECT id FROM {schema}.outbox WHERE (SELECT held FROM leader) ORDER BY id LIMIT $1)
            RETURNING id, tenant_id, event_type, key, payload, trace_parent, created_at"""

    async def publish_pending(self) -> int:
        """Publish one batch if any is pending and this relay holds the lock; returns how many."""
        with untraced():
            async with self.database.connection() as connection:
                if not await connection.fetchval(self._any_pending):
                    return 0
        return await self.publish_batch()

    async def publish_batch(self) -> int:
        """Publish up to `batch_size` pending events and delete them, in one transaction that holds the
        relay lock; 0 if another replica's relay holds it (or nothing is pending)."""
        with untraced():
            async with self.database.transaction() as connection:
                rows = sorted(
                    await connection.fetch(self._take_batch, self.batch_size, self.lock_key),
                    key=lambda row: row["id"],
                )
                if not rows:
                    return 0
                attributes = {
                    "messaging.destination.name": self.stream,
                    "messaging.batch.message_count": len(rows),
                }
                with traced(self.tracer, "outbox publish", kind=SpanKind.PRODUCER, attributes=attributes):
                    await self.broker.publish(self.stream, [self._envelope(row) for row in rows])
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

    async def run(self, wakeup: asyncio.Event, stopping: asyncio.Event) -> None:
        """Publish until `stopping` is set: batch after batch while full ones come, else sleep."""
        backoff = Backoff(log, "outbox relay", cap=5 * IDLE_SECONDS)
        published = 0
        woken = False
        while not stopping.is_set():
            wakeup.clear()
            try:
                # After a full batch, or woken by this process's own commit, events are waiting:
                # skip the "anything pending?" poll.
                busy = woken or published >= self.batch_size
                published = await (self.publish_batch() if busy else self.publish_pending())
                backoff.succeeded()
            except Exception as error:
                published, woken = 0, False
                await pause(backoff.failed(error), stopping)
                continue
            if published < self.batch_size:
                await pause(IDLE_SECONDS, wakeup, stopping)
                woken = wakeup.is_set()
                if woken:
                    # The commits of the next moment join this batch: under load a batch carries
                    # many events instead of one, at the cost of this much delivery latency.
                    await pause(COALESCE_SECONDS, stopping)


def relay_loop(stream: str) -> Callable[..., Awaitable[None]]:
    """The background loop that relays a definition's outbox to `stream` (wiring.py runs it)."""

    async def relay(resources, stopping: asyncio.Event) -> None:
        provider = resources.tracer_provider
        await OutboxRelay(
            resources.database,
            resources.definition.schema,
            RedisStreamsBroker(resources.redis),
            stream,
            tracer=provider.get_tracer(__name__) if provider else None,
        ).run(resources.relay_wakeup, stopping)

    return relay


# Activity types: what apps report through the gateway's RecordEvent ("review.written") and triggers
# listen to. The platform's own event namespaces are reserved, so no app can pass off an activity
# as a purchase, a tier change or a reward.
ACTIVITY_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
MAX_ACTIVITY_TYPE_LENGTH = 100
PLATFORM_EVENT_PREFIXES = (
    "purchase.",
    "checkout.",
    "customer.",
    "segment.",
    "promotion.",
    "ledger.",
    "fraud.",
    "notification.",
    "referral.",
    "reward.",
    "redemptions.",
    "tier.",
    "points.",
    "activity.",
    "campaign.",
)


def is_activity_type(name: str) -> bool:
    """A well-formed name outside the platform's own namespaces."""
    return (
        len(name) <= MAX_ACTIVITY_TYPE_LENGTH
        and ACTIVITY_TYPE.fullmatch(name) is not None
        and not name.startswith(PLATFORM_EVENT_PREFIXES)
    )


@dataclass(frozen=True)
class Subscription:
    """Handle another service's `event` messages from `stream` ("profile.events"): `handle(uow,
    event)` runs once per event, in a unit of work bound to the event's tenant (consumers.py);
    `uow.call.event_id` and `uow.call.event_time` say which event and when it happened."""

    stream: str
    event: type[Message]
    handle: Callable[..., Awaitable[None]]  # async (uow, event message) -> None
