"""Domain events: the transactional outbox, its relay to a stream broker, and idempotent consumers.

A service writes its events into its own `outbox` table in the same transaction as the change
(`record_event`). `OutboxRelay` publishes unpublished rows in order and marks them; a crash between
the two publishes a row again, so delivery is at-least-once and consumers remember what they handled
(`claim_event`, in the handler's own transaction). The broker sits behind `EventBroker`, so Redis
Streams can be replaced (Kafka, NATS) without touching a service.
"""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from opentelemetry import context as otel_context, propagate
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, func, insert, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from loyalty_runtime.context import current_tenant

log = logging.getLogger("loyalty.events")


@dataclass(frozen=True)
class Event:
    event_id: str
    event_type: str
    tenant_id: str
    key: str
    payload: dict
    occurred_at: str
    trace_context: dict

    def to_fields(self) -> dict[str, str]:
        return {
            "event_id": self.event_id,
            "type": self.event_type,
            "tenant_id": self.tenant_id,
            "key": self.key,
            "payload": json.dumps(self.payload, separators=(",", ":")),
            "occurred_at": self.occurred_at,
            "trace_context": json.dumps(self.trace_context),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> "Event":
        return cls(
            event_id=fields["event_id"],
            event_type=fields["type"],
            tenant_id=fields["tenant_id"],
            key=fields["key"],
            payload=json.loads(fields["payload"]),
            occurred_at=fields["occurred_at"],
            trace_context=json.loads(fields.get("trace_context") or "{}"),
        )


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("tenant_id", String(64), nullable=False),
        Column("event_type", String(100), nullable=False),
        Column("key", String(200), nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("trace_context", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), index=True),
    )


def processed_events_table(metadata: MetaData) -> Table:
    return Table(
        "processed_events",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", String(200), primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def record_event(
    session: AsyncSession, outbox: Table, event_type: str, key: str, payload: dict
) -> None:
    """Add an event to the outbox inside the caller's transaction, with the current trace context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    await session.execute(
        insert(outbox).values(
            tenant_id=current_tenant(), event_type=event_type, key=key, payload=payload, trace_context=carrier
        )
    )


async def claim_event(session: AsyncSession, processed: Table, consumer: str, event_id: str) -> bool:
    """True the first time `consumer` sees `event_id`; in the handler's transaction, so a rolled-back
    handling can be retried and a committed one is never repeated."""
    result = await session.execute(
        pg_insert(processed)
        .values(consumer=consumer, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(processed.c.event_id)
    )
    return result.first() is not None


class EventBroker(Protocol):
    async def publish(self, stream: str, event: Event) -> None: ...

    async def consume(
        self,
        stream: str,
        group: str,
        consumer: str,
        handler: Callable[[Event], Awaitable[None]],
        *,
        block_ms: int,
    ) -> int: ...


class RedisStreamsBroker:
    """Streams named `<domain>.events`, consumer groups, acknowledge after handling."""

    def __init__(self, redis: Redis, *, max_length: int = 1_000_000) -> None:
        self._redis = redis
        self._max_length = max_length

    async def publish(self, stream: str, event: Event) -> None:
        await self._redis.xadd(stream, event.to_fields(), maxlen=self._max_length, approximate=True)

    async def _ensure_group(self, stream: str, group: str) -> None:
        try:
            await self._redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def consume(self, stream, group, consumer, handler, *, block_ms: int = 1000) -> int:
        """Handle one batch: first this consumer's unacknowledged messages, then new ones.
        Returns how many were handled; a failing handler leaves its message pending for a retry."""
        await self._ensure_group(stream, group)
        handled = 0
        for start in ("0", ">"):
            batches = await self._redis.xreadgroup(
                group, consumer, {stream: start}, count=100, block=block_ms if start == ">" else None
            )
            for _, messages in batches or ():
                for message_id, fields in messages:
                    if not fields:  # pending entry whose message was trimmed away
                        await self._redis.xack(stream, group, message_id)
                        continue
                    event = Event.from_fields(fields)
                    token = otel_context.attach(propagate.extract(event.trace_context))
                    try:
                        await handler(event)
                    except Exception:
                        log.exception("event handler failed", extra={"fields": {"event_id": event.event_id}})
                        continue
                    finally:
                        otel_context.detach(token)
                    await self._redis.xack(stream, group, message_id)
                    handled += 1
        return handled


class OutboxRelay:
    """Moves outbox rows to the broker in id order. Several replicas may run it: SKIP LOCKED keeps
    them off each other's rows."""

    def __init__(self, sessions: async_sessionmaker, outbox: Table, broker: EventBroker, stream: str) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._broker = broker
        self._stream = stream

    async def publish_pending(self, batch_size: int = 200) -> int:
        outbox = self._outbox
        async with self._sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(outbox)
                    .where(outbox.c.published_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                await self._broker.publish(
                    self._stream,
                    Event(
                        event_id=f"{self._stream}:{row.id}",
                        event_type=row.event_type,
                        tenant_id=row.tenant_id,
                        key=row.key,
                        payload=row.payload,
                        occurred_at=row.created_at.astimezone(UTC).isoformat(),
                        trace_context=row.trace_context,
                    ),
                )
            if rows:
                await session.execute(
                    update(outbox)
                    .where(outbox.c.id.in_([row.id for row in rows]))
                    .values(published_at=datetime.now(UTC))
                )
            return len(rows)

    async def run(self, *, idle_seconds: float = 0.2) -> None:
        while True:
            try:
                published = await self.publish_pending()
            except Exception:
                log.exception("outbox relay failed; retrying")
                published = 0
            if not published:
                await asyncio.sleep(idle_seconds)
