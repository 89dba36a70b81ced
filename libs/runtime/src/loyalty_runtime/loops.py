"""What every background loop of the runtime shares (the outbox relay, event consumers, job workers,
schedules): it stops promptly, it backs off while PostgreSQL or Redis is down and recovers by itself,
it logs an outage once rather than once per attempt, and it traces only the work it finds.

Stopping: the server sets a `stopping` event, then cancels the task and waits a bounded time. A loop
checks `stopping` after every await that can swallow a cancellation (CPython 3.11's
`asyncio.wait_for`, gh-86296, which redis-py uses around socket writes) and never blocks longer than
a second or two, so even a swallowed cancellation ends the loop within that bound. Nothing here uses
`wait_for`.
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context, propagate
from opentelemetry.trace import SpanKind, Tracer

from loyalty_runtime.db import Database
from loyalty_runtime.telemetry import untraced

# The key OpenTelemetry's instrumentations check (see telemetry.untraced).
_SUPPRESS = otel_context._SUPPRESS_INSTRUMENTATION_KEY
# A prune run deletes at most this many chunks (bounded work per period; the next period goes on).
PRUNE_CHUNKS = 20


async def pause(seconds: float, *events: asyncio.Event) -> None:
    """Sleep up to `seconds`; return early when any of `events` is set (the stop signal, a wake-up)."""
    if seconds <= 0 or any(event.is_set() for event in events):
        return
    if not events:
        await asyncio.sleep(seconds)
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def jittered(base: float, attempt: int, cap: float) -> float:
    """Exponential backoff for the `attempt`-th consecutive failure (1, 2, ...), capped, with jitter
    (50-100% of the step) so replicas that failed together do not retry together."""
    step = min(cap, base * 2 ** max(0, attempt - 1))
    return step * random.uniform(0.5, 1.0)


class Backoff:
    """A loop's consecutive failures: how long to wait, and a log line per outage, not per attempt.

    The first failure of a streak is logged with its error type (never its message: a message can
    quote a connection string or personal data); a different error type later in the streak is
    logged once too; the first success after a streak logs the recovery."""

    def __init__(self, log: logging.Logger, loop: str, *, base: float = 0.5, cap: float = 30.0) -> None:
        self.log = log
        self.loop = loop
        self.base = base
        self.cap = cap
        self.failures = 0
        self._logged: set[str] = set()

    def failed(self, error: BaseException) -> float:
        """Note a failure; returns how long to wait before trying again."""
        self.failures += 1
        kind = type(error).__name__
        if kind not in self._logged:
            self._logged.add(kind)
            self.log.warning(
                "background work failing; backing off",
                extra={"fields": {"loop": self.loop, "error_type": kind}},
            )
        return jittered(self.base, self.failures, self.cap)

    def succeeded(self) -> None:
        if self.failures:
            self.log.info(
                "background work recovered", extra={"fields": {"loop": self.loop, "failures": self.failures}}
            )
            self.failures = 0
            self._logged.clear()


@contextlib.contextmanager
def traced(
    tracer: Tracer | None,
    name: str,
    *,
    trace_parent: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[None]:
    """The work a background loop found, as a span (child of `trace_parent`, an event's W3C
    traceparent, when given) with its database and Redis calls under it, even where the loop's
    polling runs `untraced()`. Without a tracer, the parent's trace context is still adopted so the
    work's log lines carry the producer's trace id."""
    parent = propagate.extract({"traceparent": trace_parent}) if trace_parent else otel_context.get_current()
    token = otel_context.attach(otel_context.set_value(_SUPPRESS, False, parent))
    try:
        if tracer is None:
            yield
        else:
            with tracer.start_as_current_span(name, kind=kind, attributes=attributes):
                yield
    finally:
        otel_context.detach(token)


async def delete_in_chunks(database: Database, statement: str, *args, chunk: int) -> int:
    """Run a `DELETE ... LIMIT chunk` (untraced housekeeping) until it deletes fewer rows than a
    chunk, at most PRUNE_CHUNKS times; returns how many rows went."""
    deleted = 0
    with untraced():
        async with database.connection() as connection:
            for _ in range(PRUNE_CHUNKS):
                status = await connection.execute(statement, *args)
                count = int(status.rsplit(" ", 1)[-1])
                deleted += count
                if count < chunk:
                    break
    return deleted
