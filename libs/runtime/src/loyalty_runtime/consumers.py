"""Handling other services' events: Redis Streams consumer groups, each event handled once, in order
per aggregate, with retries, dead letters, and the entries of a dead consumer taken over.

A service declares `Subscription(stream, EventMessage, handle)` in its definition; the runtime runs
one `StreamConsumer` per subscribed stream (wiring.py). What it guarantees:

- Once: each event is handled in `units.change()` with a CallContext bound to the event's tenant
  (principal `<service>-consumer`); the transaction first records the event id in the service's
  `processed_events`, so a redelivery (a relay that crashed before marking, a consumer that crashed
  before XACK) finds the id and does nothing. XACK follows the commit, never precedes it.
- Skipped: an entry whose type the service does not subscribe to is acknowledged and left alone.
- Retried, then dead-lettered: a handler that raises leaves its entry pending; it is retried with
  exponential backoff and jitter, and after `max_deliveries` deliveries (Redis's delivery count) it
  moves to the stream `<stream>.dead.<group>` (the entry's fields plus `source_id`, `deliveries`,
  `error_type`) with a warning that names ids only and the counter
  `loyalty_events_consumed_total{outcome="dead_lettered"}`. An entry that can never be handled (not
  an envelope, a payload that does not decode, an invalid tenant) goes there at once. UNAVAILABLE
  (the database, the pool, or a service the handler calls is down) is not the event's fault: it
  pauses the consumer (backoff) without counting a delivery, so an outage never dead-letters events.
- In order per aggregate, with any number of replicas: one consumer per group reads at a time. The
  replicas compete for a lease (`<stream>.lease.<group>` in Redis, renewed every third of
  `lease_seconds`); the holder reads, handles one event after another in stream order, and while an
  event waits for its retry, later events with the same key wait behind it (other keys go on). Only
  the lease's holder can read (the lease check and XREADGROUP are one script), so a leader stalled
  past its lease cannot take new entries from under its successor. A new leader first takes over
  the entries other consumers left pending (XCLAIM, once they have been idle `claim_idle_seconds`:
  see `_take_over` for why not XAUTOCLAIM), handles only what is older than the oldest entry it
  could not take yet, and reads nothing new until it has taken them all, so one key's events are
  handled in stream order across crashes and stalls too. One exception, a documented trade-off: a
  dead-lettered event no longer holds its key back. Once-handling holds throughout
  (processed_events). The price: one process per service handles a stream at a time
  (bench/runtime/bench_events.py measures it); beyond that the broker interface is where a
  partitioned broker (Kafka) goes.
- Traced: an event's traceparent becomes the parent of its handling span (and thereby of the
  handler's statements) when tracing is on; reads, acks and lease renewals make no spans.
- Bounded: reads block at most `block_seconds` (below the Redis client's socket timeout), the
  in-memory backlog holds at most `max_backlog` entries, and the loop stops within about a second.

A new group starts at the beginning of the stream (what is still retained, streams.py), so a service
deployed after events were published still sees them.
"""

import asyncio
import contextlib
import enum
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError, Message
from opentelemetry.trace import SpanKind, Tracer
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from loyalty_runtime.context import CallContext, bind_call, check_tenant, unbind_call
from loyalty_runtime.db import BACKGROUND_STATEMENT_SECONDS, Database, as_domain_error
from loyalty_runtime.errors import DomainError, ResourceExhausted, Unavailable
from loyalty_runtime.events import Envelope, MalformedEvent, Subscription
from loyalty_runtime.loops import Backoff, delete_in_chunks, jittered, pause, traced
from loyalty_runtime.streams import entry_order
from loyalty_runtime.telemetry import untraced
from loyalty_runtime.uow import UnitsOfWork, event_type_of

log = logging.getLogger("loyalty.consumers")

CONSUMED = Counter(
    "loyalty_events_consumed_total",
    "Stream entries a consumer group is done with (or retries), by outcome: handled, duplicate, "
    "skipped (not subscribed), retried, dead_lettered.",
    ["stream", "group", "event_type", "outcome"],
)

DEAD_LETTER_MAX_LENGTH = 100_000
FORGET_CHUNK = 10_000
# Takes the lease if free, renews it if held by this consumer: 1 if this consumer leads.
_LEAD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_RESIGN = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# Reads new entries only while this consumer holds the lease: {1, entries} with XREADGROUP's reply,
# {0, id of the stream's last entry} when there is nothing new (to block on), {-1} without the lease.
_READ_AS_LEADER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[2], '>')
if reply then return {1, reply[1][2]} end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
return {0, last[1] and last[1][1] or '0-0'}
"""


def consumer_name() -> str:
    """One name per process: the pod's host name, the pid and a nonce (a restarted process is new)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Paused(Exception):
    """UNAVAILABLE while handling: stop handling for a while, count no delivery."""


class EventHandlers:
    """What happens to one event, whatever the broker: decoded into its subscription's message and
    handled once, in a unit of work bound to the event's tenant."""

    def __init__(
        self,
        group: str,
        units: UnitsOfWork,
        schema: str,
        subscriptions: Sequence[Subscription],
        *,
        tracer: Tracer | None = None,
        budget_seconds: float = BACKGROUND_STATEMENT_SECONDS,
    ) -> None:
        self.group = group
        self.principal = f"{group}-consumer"
        self.units = units
        self.tracer = tracer
        self.budget_seconds = budget_seconds
        self.by_type: dict[str, Subscription] = {}
        for subscription in subscriptions:
            event_type = event_type_of(subscription.event.DESCRIPTOR)
            if event_type in self.by_type:
                raise ValueError(f"{group} subscribes to {event_type} twice")
            self.by_type[event_type] = subscription
        self._remember = f"""
            INSERT INTO {schema}.processed_events (consumer, event_id) VALUES ($1, $2)
            ON CONFLICT DO NOTHING RETURNING true"""

    def subscribed(self, envelope: Envelope) -> bool:
        return envelope.event_type in self.by_type

    def decode(self, envelope: Envelope) -> Message:
        try:
            check_tenant(envelope.tenant_id)
            return self.by_type[envelope.event_type].event.FromString(envelope.payload)
        except (DecodeError, DomainError) as error:
            raise MalformedEvent(f"undeliverable event: {type(error).__name__}") from None

    async def handle(self, envelope: Envelope) -> bool:
        """Handle the event unless this group did before; False for a redelivery. Raises
        MalformedEvent for an event nothing can handle, Paused while what it needs is unavailable."""
        event = self.decode(envelope)
        call = CallContext(
            envelope.tenant_id,
            self.principal,
            deadline=time.monotonic() + self.budget_seconds,
            event_id=envelope.event_id,
            event_time=envelope.occurred_at,
        )
        token = bind_call(call)
        attributes = {
            "messaging.system": "redis",
            "messaging.message.id": envelope.event_id,
            "messaging.consumer.group.name": self.group,
        }
        try:
            name = f"{envelope.event_type} process"
            with traced(
                self.tracer,
                name,
                trace_parent=envelope.trace_parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
            ):
                async with self.units.change() as uow:
                    if not await uow.connection.fetchval(self._remember, self.group, envelope.event_id):
                        return False
                    await self.by_type[envelope.event_type].handle(uow, event)
            return True
        except Exception as error:
            if isinstance(as_domain_error(error), Unavailable | ResourceExhausted):
                raise Paused(type(error).__name__) from error
            raise
        finally:
            unbind_call(token)


async def forget_processed_events(database: Database, schema: str, retention_hours: float) -> int:
    """Forget handled event ids older than the retention. While a service runs, a redelivery comes
    within minutes (a relay's retry, a pending entry taken over); only a consumer group stopped for
    longer than the retention could be handed an event it handled again."""
    statement = f"""
        DELETE FROM {schema}.processed_events WHERE (consumer, event_id) IN (
            SELECT consumer, event_id FROM {schema}.processed_events
            WHERE processed_at < now() - make_interval(secs => $1) LIMIT {FORGET_CHUNK})"""
    return await delete_in_chunks(database, statement, retention_hours * 3600, chunk=FORGET_CHUNK)


class Outcome(enum.Enum):
    DONE = "acknowledge it"  # handled, a duplicate, or not subscribed
    GONE = "nothing left to do"  # dead-lettered, or no longer pending
    WAIT = "retry later, holding its key"


@dataclass(eq=False)
class Pending:
    """An entry this consumer has been delivered and not yet acknowledged."""

    entry_id: str
    fields: dict[bytes, bytes]
    deliveries: int
    due: float = 0.0  # loop time of its next attempt
    failed: bool = False  # its last attempt raised (a retry counts a delivery first)
    envelope: Envelope | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        with contextlib.suppress(MalformedEvent):
            self.envelope = Envelope.from_fields(self.fields)

    @property
    def event_type(self) -> str:
        return self.envelope.event_type if self.envelope else "unknown"


class StreamConsumer:
    """One consumer group member reading one stream (see the module's docstring)."""

    def __init__(
        self,
        redis: Redis,
        stream: str,
        handlers: EventHandlers,
        *,
        consumer: str | None = None,
        batch_size: int = 100,
        block_seconds: float = 1.0,
        max_backlog: int = 1000,
        max_deliveries: int = 5,
        retry_seconds: float = 1.0,
        max_retry_seconds: float = 60.0,
        lease_seconds: float = 10.0,
        claim_idle_seconds: float = 30.0,
        recover_seconds: float = 10.0,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = handlers.group
        self.handlers = handlers
        self.consumer = consumer or consumer_name()
        self.batch_size = batch_size
        self.block_ms = int(block_seconds * 1000)
        self.max_backlog = max_backlog
        self.max_deliveries = max_deliveries
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.lease_seconds = lease_seconds
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self.recover_seconds = recover_seconds
        self.lease_key = f"{stream}.lease.{self.group}"
        self.dead_stream = f"{stream}.dead.{self.group}"
        self.backlog: list[Pending] = []
        self.leading = False
        self._lead = redis.register_script(_LEAD)
        self._resign = redis.register_script(_RESIGN)
        self._read_as_leader = redis.register_script(_READ_AS_LEADER)
        self._renew_at = 0.0
        self._recover_at = 0.0
        self._barrier: tuple[int, int] | None = None  # the oldest entry others hold that we could not take
        self._group_ready = False
        self._stopping = asyncio.Event()
        self._failures = Backoff(log, f"{self.group} handling {stream}")

    async def run(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        backoff = Backoff(log, f"{self.group} consuming {self.stream}")
        try:
            while not stopping.is_set():
                try:
                    wait = await self.step() if await self.lead() else self.lease_seconds / 3
                    backoff.succeeded()
                except Exception as error:
                    if isinstance(error, ResponseError) and str(error).startswith("NOGROUP"):
                        self._group_ready = False  # Redis lost the stream (restarted without persistence)
                    wait = backoff.failed(error.__cause__ if isinstance(error, Paused) else error)
                await pause(wait, stopping)
        finally:
            await self.resign()

    async def lead(self) -> bool:
        """Take or renew the group's lease (at most every third of its time); False: stand by."""
        now = self._now()
        if self.leading and now < self._renew_at:
            return True
        with untraced():
            leading = bool(
                await self._lead(keys=[self.lease_key], args=[self.consumer, int(self.lease_seconds * 1000)])
            )
        if leading and not self.leading:
            self._recover_at = 0.0  # a new leader first takes over what its predecessor left
        # A consumer that loses the lease keeps its backlog: those entries are still pending under
        # its name, and are handled (or found done) when it leads again, unless the leader takes them.
        self.leading = leading
        self._renew_at = now + self.lease_seconds / 3
        return leading

    async def resign(self) -> None:
        """Give up the lease at shutdown so a standby leads at once (bounded: Redis may be down)."""
        if not self.leading:
            return
        self.leading = False
        with contextlib.suppress(Exception):  # else the lease expires by itself
            async with asyncio.timeout(0.5):
                with untraced():
                    await self._resign(keys=[self.lease_key], args=[self.consumer])

    async def step(self) -> float:
        """One round as the leader: take over a predecessor's entries, handle what is due, read new
        entries (blocking until the next retry is due, at most `block_seconds`) and handle them.
        Returns how long the loop may sleep before the next round."""
        if not self._group_ready:
            await self._create_group()
        if self._now() >= self._recover_at:
            await self._take_over()
        await self._work()
        if self._barrier is not None or len(self.backlog) >= self.max_backlog:
            return max(0.0, min([self._recover_at, *self._retry_times()]) - self._now())
        if await self._read():
            await self._work()
        return 0.0

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _retry_times(self) -> list[float]:
        return [p.due for p in self.backlog if p.failed]

    async def _create_group(self) -> None:
        try:
            with untraced():
                await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as error:
            if not str(error).startswith("BUSYGROUP"):
                raise
        self._group_ready = True

    async def _take_over(self) -> None:
        """Claim what other consumers of the group left pending, in stream order, once idle
        `claim_idle_seconds`. The first entry that cannot be taken yet is the barrier: nothing from it
        on is handled, and nothing new is read, until it is taken (those entries come first in their
        keys' order).

        XPENDING + XCLAIM rather than XAUTOCLAIM: XAUTOCLAIM cannot leave out the claimer's own
        entries, and claiming those (held behind a retry, or waiting out a database outage) would
        count deliveries that never happened."""
        mine = {p.entry_id: p for p in self.backlog}
        with untraced():
            claimable, barrier = await self._pending_of_others()
            ids = [row["message_id"] for row in claimable]
            claimed = (
                await self.redis.xclaim(self.stream, self.group, self.consumer, self.claim_idle_ms, ids)
                if ids
                else []
            )
        deliveries = {row["message_id"]: row["times_delivered"] + 1 for row in claimable}
        taken = set()
        for entry_id, fields in claimed:
            taken.add(entry_id)
            if fields is None:
                continue
            if entry_id.decode() in mine:  # ours before the leader took it: ours again
                mine[entry_id.decode()].deliveries = deliveries[entry_id]
            else:
                self.backlog.append(Pending(entry_id.decode(), fields, deliveries.get(entry_id, 1)))
        # An entry that was not taken after all (its holder touched it) holds the line too.
        untaken = [entry_order(i.decode()) for i in ids if i not in taken]
        self._barrier = min([*untaken, *([barrier] if barrier else [])], default=None)
        self.backlog.sort(key=lambda p: entry_order(p.entry_id))
        wait = min(1.0, self.recover_seconds) if self._barrier is not None else self.recover_seconds
        self._recover_at = self._now() + wait

    async def _pending_of_others(self) -> tuple[list[dict], tuple[int, int] | None]:
        """Other consumers' pending entries in stream order: those idle long enough to claim (as many
        as the backlog has room for), up to the first that is not (returned as the barrier)."""
        room = self.max_backlog - len(self.backlog)
        claimable: list[dict] = []
        start = "-"
        while True:
            rows = await self.redis.xpending_range(
                self.stream, self.group, min=start, max="+", count=self.batch_size
            )
            for row in rows:
                if row["consumer"].decode() == self.consumer:
                    continue
                if row["time_since_delivered"] < self.claim_idle_ms or len(claimable) >= room:
                    return claimable, entry_order(row["message_id"].decode())
                claimable.append(row)
            if len(rows) < self.batch_size:
                return claimable, None
            start = "(" + rows[-1]["message_id"].decode()

    async def _read(self) -> bool:
        """Take up to a batch of new entries, as the lease's holder only; with none there, wait for
        one (until the next retry is due, at most `block_seconds`). True if any were taken."""
        count = min(self.batch_size, self.max_backlog - len(self.backlog))
        with untraced():
            reply = await self._read_as_leader(
                keys=[self.lease_key, self.stream], args=[self.consumer, self.group, count]
            )
        if reply[0] == 1:
            self.backlog += [Pending(entry_id.decode(), _pairs(fields), 1) for entry_id, fields in reply[1]]
            return True
        if reply[0] == -1:
            self.leading = False
            return False
        retries = self._retry_times()
        wait_ms = (
            self.block_ms if not retries else min(self.block_ms, int((min(retries) - self._now()) * 1000))
        )
        if wait_ms > 0:
            with untraced():
                await self.redis.xread({self.stream: reply[1]}, count=1, block=wait_ms)
        return False

    async def _work(self) -> None:
        """Handle what is due in stream order; a key whose event waits for a retry holds back its
        later events. Acknowledges with one XACK per round, after the commits."""
        held: set[str] = set()
        done: list[Pending] = []
        try:
            for pending in list(self.backlog):
                if self._barrier is not None and entry_order(pending.entry_id) > self._barrier:
                    break  # another consumer still holds an older entry, perhaps of this key
                if self._stopping.is_set() or not await self.lead():
                    break
                key = pending.envelope.key if pending.envelope else ""
                if key in held:
                    continue
                outcome = Outcome.WAIT if pending.due > self._now() else await self._attempt(pending)
                if outcome is Outcome.DONE:
                    done.append(pending)
                elif outcome is Outcome.WAIT:
                    held.add(key)
        finally:
            await self._acknowledge(done)

    async def _attempt(self, pending: Pending) -> Outcome:
        if pending.envelope is None:
            return await self._dead_letter(pending, MalformedEvent.__name__)
        if not self.handlers.subscribed(pending.envelope):
            self._count(pending, "skipped")
            return Outcome.DONE
        if pending.failed and not await self._redeliver(pending):
            self.backlog.remove(pending)  # acknowledged by another consumer, or trimmed
            return Outcome.GONE
        try:
            handled = await self.handlers.handle(pending.envelope)
        except Paused:
            raise  # the loop backs off; this entry stays due and no delivery is counted
        except MalformedEvent:
            return await self._dead_letter(pending, MalformedEvent.__name__)
        except Exception as error:
            return await self._failed(pending, error)
        self._failures.succeeded()
        self._count(pending, "handled" if handled else "duplicate")
        return Outcome.DONE

    async def _redeliver(self, pending: Pending) -> bool:
        """Count a retry as a delivery in Redis (XCLAIM), so the count survives this process."""
        with untraced():
            claimed = await self.redis.xclaim(self.stream, self.group, self.consumer, 0, [pending.entry_id])
        if not claimed or claimed[0][1] is None:
            return False
        pending.deliveries += 1
        return True

    async def _failed(self, pending: Pending, error: Exception) -> Outcome:
        self._failures.failed(error)
        if pending.deliveries >= self.max_deliveries:
            return await self._dead_letter(pending, type(error).__name__)
        pending.failed = True
        pending.due = self._now() + jittered(self.retry_seconds, pending.deliveries, self.max_retry_seconds)
        self._count(pending, "retried")
        return Outcome.WAIT

    async def _acknowledge(self, done: list[Pending]) -> None:
        if not done:
            return
        acknowledged = {p.entry_id for p in done}
        self.backlog = [p for p in self.backlog if p.entry_id not in acknowledged]
        with untraced():
            await self.redis.xack(self.stream, self.group, *[p.entry_id for p in done])

    async def _dead_letter(self, pending: Pending, error_type: str) -> Outcome:
        """Move the entry to `<stream>.dead.<group>` and acknowledge it, atomically."""
        fields = {
            **pending.fields,
            b"source_id": pending.entry_id,
            b"deliveries": str(pending.deliveries),
            b"error_type": error_type,
        }
        with untraced():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self.dead_stream, fields, maxlen=DEAD_LETTER_MAX_LENGTH, approximate=True)
                pipe.xack(self.stream, self.group, pending.entry_id)
                await pipe.execute()
        self.backlog.remove(pending)
        self._count(pending, "dead_lettered")
        ids = {
            "stream": self.stream,
            "group": self.group,
            "entry_id": pending.entry_id,
            "event_id": pending.envelope.event_id if pending.envelope else None,
            "event_type": pending.event_type,
            "deliveries": pending.deliveries,
            "error_type": error_type,
        }
        log.warning("event dead-lettered", extra={"fields": ids})
        return Outcome.GONE

    def _count(self, pending: Pending, outcome: str) -> None:
        CONSUMED.labels(self.stream, self.group, pending.event_type, outcome).inc()


def _pairs(fields: list[bytes]) -> dict[bytes, bytes]:
    """A script's reply gives an entry's fields as a flat [name, value, ...] list."""
    return dict(zip(fields[::2], fields[1::2], strict=True))
