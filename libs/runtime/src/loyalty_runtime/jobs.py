"""Durable work in PostgreSQL: jobs a use case enqueues in its own transaction, and periodic tasks.

Jobs. A definition declares `Job(name, PayloadMessage, run, max_attempts)`; a use case calls
`await uow.enqueue("name", payload, run_at=None, dedupe_key=None)`, which writes a row into the
service's own `jobs` table on the use case's connection, so the job exists if and only if the change
commits (and a second enqueue with the same dedupe key makes no second job while the first is kept).
`JobWorker` claims a due job with `SELECT ... FOR UPDATE SKIP LOCKED` and runs `run(uow, payload)` in
that same transaction, bound to the tenant that enqueued it, then marks the job done before COMMIT:

- its database effects happen exactly once: they commit together with "done", or not at all;
- a worker that dies mid-job (process killed, task cancelled, connection lost) rolls back, the row
  lock goes with its connection, and the job runs again later, on any replica;
- a job that raises is retried with exponential backoff and jitter, and after `max_attempts`
  attempts is `dead` (kept for an operator, with the error's type, never its message);
- a database outage is not the job's fault: it counts no attempt, the worker backs off and recovers;
- effects outside the database (a gRPC call, an e-mail) are at-least-once: give them an idempotency
  key derived from the job (its dedupe key).
A job runs within one transaction bounded by `budget_seconds` (statement and lock timeouts), so jobs
are short; long work is a chain of jobs, each enqueueing the next batch. A worker claims only the job
names it knows, so during a rolling deploy an older replica leaves a newer job to the newer ones.
Done jobs without a dedupe key are deleted at once; with one, after `idempotency_retention_hours`.

Schedules. `Schedule(name, every(settings) -> seconds, run(resources))` runs once per period across
all replicas: each schedule has a row in `schedules`, and the replica whose `UPDATE ... SET
next_run_at = now() + period WHERE next_run_at <= now()` succeeds runs that period (at most once: a
run that fails or dies is not repeated before the next period). A run is bounded by its period (at
least 30 s). The database's clock decides, not the replicas'.

Why our own worker rather than procrastinate or pgqueuer (both well kept, both SKIP LOCKED inside):
- enqueueing in the use case's transaction: our unit of work is an asyncpg connection; procrastinate
  speaks psycopg (or aiopg), so it could not write on that connection;
- exactly-once database effects: both libraries mark a job "doing" in one transaction and run the
  task outside it, so a job's own writes can happen twice after a crash; here the job's writes and
  its "done" are one commit. That is the property a ledger posting or a code generation needs;
- the service's own schema: each service owns its tables and migrations (Alembic, tables.py);
  procrastinate installs its tables, functions and triggers with its own migrations, pgqueuer with
  its own CLI, and pgqueuer's LISTEN/NOTIFY trigger makes every enqueueing commit take PostgreSQL's
  global notify lock;
- tenant binding, the unit of work (events recorded by a job go to the outbox in the same commit),
  our tracing and metrics would be glue around either library anyway.
What it costs: about 250 lines here, a poll a second per idle worker (no LISTEN), and no
dashboard; what we give up is nothing the platform needs today.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError, Message
from opentelemetry.trace import Tracer
from prometheus_client import Counter, Gauge

from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.db import BACKGROUND_STATEMENT_SECONDS, Database, as_domain_error
from loyalty_runtime.errors import DomainError, Unavailable
from loyalty_runtime.loops import Backoff, delete_in_chunks, jittered, pause, traced
from loyalty_runtime.telemetry import untraced
from loyalty_runtime.uow import UnitsOfWork

if TYPE_CHECKING:
    from loyalty_runtime.server import Resources

log = logging.getLogger("loyalty.jobs")

JOBS = Counter("loyalty_jobs_total", "Job attempts by outcome: done, retried, dead.", ["job", "outcome"])
OVERDUE = Gauge("loyalty_jobs_overdue_seconds", "How long the oldest due job has waited (0: none waits).")
SCHEDULE_RUNS = Counter(
    "loyalty_schedule_runs_total", "Schedule runs by outcome: done, failed.", ["schedule", "outcome"]
)

POLL_SECONDS = 1.0
# A scheduler re-reads its schedules at least this often (a new replica may bring a shorter period).
SCHEDULER_MAX_SLEEP_SECONDS = 60.0
PRUNE_CHUNK = 10_000


@dataclass(frozen=True)
class Job:
    """A kind of job: `run(uow, payload)` in a unit of work of the tenant that enqueued it."""

    name: str
    payload: type[Message]
    run: Callable[..., Awaitable[None]]
    max_attempts: int = 5


@dataclass(frozen=True)
class Schedule:
    """A periodic task, run once per period across all replicas: `run(resources)`, every
    `every(settings)` seconds (0 turns it off)."""

    name: str
    every: Callable[..., float]
    run: Callable[..., Awaitable[None]]


def _is_outage(error: BaseException) -> bool:
    """The database went away (not a refusal raised by the job's own code, such as a downstream
    service's UNAVAILABLE, which counts as an attempt like any failure)."""
    return not isinstance(error, DomainError) and isinstance(as_domain_error(error), Unavailable)


class JobWorker:
    def __init__(
        self,
        units: UnitsOfWork,
        schema: str,
        jobs: Sequence[Job],
        *,
        principal: str = "jobs",
        poll_seconds: float = POLL_SECONDS,
        retry_seconds: float = 5.0,
        max_retry_seconds: float = 3600.0,
        budget_seconds: float = BACKGROUND_STATEMENT_SECONDS,
        retention_hours: float = 168.0,
        tracer: Tracer | None = None,
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self.units = units
        self.database: Database = units.database
        self.jobs = {job.name: job for job in jobs}
        self.names = list(self.jobs)
        self.principal = principal
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.budget_seconds = budget_seconds
        self.retention_hours = retention_hours
        self.tracer = tracer
        # Wakes the outbox relay after a job's commit that recorded events.
        self.on_events = on_events
        # A job that keeps failing is logged once per error type, not once per attempt.
        self._failures = {name: Backoff(log, f"job {name}") for name in self.jobs}
        self._next_due = f"""
            SELECT EXTRACT(EPOCH FROM min(run_at) - now())::float8 FROM {schema}.jobs
            WHERE state = 'queued' AND name = ANY($1::varchar[])"""
        self._claim = f"""
            SELECT id, tenant_id, name, payload, attempts, dedupe_key FROM {schema}.jobs
            WHERE state = 'queued' AND run_at <= now() AND name = ANY($1::varchar[])
            ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"""
        self._delete = f"DELETE FROM {schema}.jobs WHERE id = $1"
        self._done = f"""
            UPDATE {schema}.jobs SET state = 'done', attempts = attempts + 1, finished_at = now()
            WHERE id = $1"""
        self._failed = f"""
            UPDATE {schema}.jobs SET attempts = attempts + 1, last_error = $3,
                state = CASE WHEN attempts + 1 >= $4 THEN 'dead' ELSE 'queued' END,
                finished_at = CASE WHEN attempts + 1 >= $4 THEN now() END,
                run_at = now() + make_interval(secs => $5)
            WHERE id = $1 AND state = 'queued' AND attempts = $2
            RETURNING state"""
        self._prune = f"""
            DELETE FROM {schema}.jobs WHERE id IN (
                SELECT id FROM {schema}.jobs WHERE state = 'done'
                AND finished_at < now() - make_interval(secs => $1) LIMIT {PRUNE_CHUNK})"""

    async def run(self, stopping: asyncio.Event) -> None:
        backoff = Backoff(log, "job worker")
        while not stopping.is_set():
            try:
                wait = await self.seconds_until_due()
                while wait == 0.0 and not stopping.is_set() and await self.run_one():
                    pass
                backoff.succeeded()
            except Exception as error:
                wait = backoff.failed(error)
            await pause(min(self.poll_seconds, wait or self.poll_seconds), stopping)

    async def seconds_until_due(self) -> float | None:
        """0 if a job is due, else how long until the next one; None: nothing is queued."""
        with untraced():
            async with self.database.connection() as connection:
                wait = await connection.fetchval(self._next_due, self.names)
        OVERDUE.set(max(0.0, -wait) if wait is not None else 0.0)
        return None if wait is None else max(0.0, wait)

    async def run_one(self) -> bool:
        """Claim one due job and run it; False when none was due (or all are taken by others)."""
        claimed = None
        try:
            with untraced():
                async with self.database.transaction(self.budget_seconds) as connection:
                    claimed = await connection.fetchrow(self._claim, self.names)
                    if claimed is None:
                        return False
                    recorded = await self._run(connection, claimed)
        except Exception as error:
            if claimed is None or _is_outage(error):
                raise  # not the job's fault: the loop backs off and the job runs later
            await self._record_failure(claimed, error)
            return True
        JOBS.labels(claimed["name"], "done").inc()
        self._failures[claimed["name"]].succeeded()
        if recorded and self.on_events is not None:
            self.on_events()
        return True

    async def _run(self, connection, claimed) -> bool:
        """The job's use case and its "done", on the claiming transaction; True if it recorded events."""
        job = self.jobs[claimed["name"]]
        try:
            payload = job.payload.FromString(claimed["payload"])
        except DecodeError:
            raise UndecodablePayload(job.name) from None
        call = CallContext(
            claimed["tenant_id"], self.principal, deadline=time.monotonic() + self.budget_seconds
        )
        token = bind_call(call)
        try:
            with traced(self.tracer, f"job {job.name}", attributes={"job.id": claimed["id"]}):
                async with self.units.within(connection, call) as uow:
                    await job.run(uow, payload)
                await connection.execute(self._done if claimed["dedupe_key"] else self._delete, claimed["id"])
            return uow.recorded_events > 0
        finally:
            unbind_call(token)

    async def _record_failure(self, claimed, error: Exception) -> None:
        job = self.jobs[claimed["name"]]
        self._failures[job.name].failed(error)
        attempts = claimed["attempts"] + 1
        max_attempts = 1 if isinstance(error, UndecodablePayload) else job.max_attempts
        delay = jittered(self.retry_seconds, attempts, self.max_retry_seconds)
        with untraced():
            async with self.database.connection() as connection:
                state = await connection.fetchval(
                    self._failed,
                    claimed["id"],
                    claimed["attempts"],
                    type(error).__name__,
                    max_attempts,
                    delay,
                )
        if state == "dead":
            JOBS.labels(job.name, "dead").inc()
            fields = {
                "job": job.name,
                "job_id": claimed["id"],
                "attempts": attempts,
                "error_type": type(error).__name__,
            }
            log.warning("job dead after its last attempt", extra={"fields": fields})
        elif state == "queued":
            JOBS.labels(job.name, "retried").inc()

    async def prune(self) -> int:
        """Delete done jobs (those with a dedupe key) older than the retention; returns how many."""
        return await delete_in_chunks(
            self.database, self._prune, self.retention_hours * 3600, chunk=PRUNE_CHUNK
        )


class UndecodablePayload(Exception):
    """The row's payload is not the job's message: retrying cannot help."""


class Scheduler:
    """Runs a service's schedules, each once per period across replicas (see the module's docstring)."""

    def __init__(
        self,
        database: Database,
        schema: str,
        schedules: Sequence[Schedule],
        resources: "Resources",
        *,
        tracer: Tracer | None = None,
    ) -> None:
        self.database = database
        self.resources = resources
        self.tracer = tracer
        self.periods = {s.name: s.every(resources.settings) for s in schedules}
        self.schedules = {s.name: s for s in schedules if self.periods[s.name] > 0}
        self._register = f"""
            INSERT INTO {schema}.schedules (name, next_run_at) VALUES ($1, now())
            ON CONFLICT (name) DO UPDATE
            SET next_run_at = LEAST({schema}.schedules.next_run_at, now() + make_interval(secs => $2))"""
        self._waits = f"""
            SELECT name, EXTRACT(EPOCH FROM next_run_at - now())::float8 AS wait FROM {schema}.schedules
            WHERE name = ANY($1::varchar[])"""
        self._claim = f"""
            UPDATE {schema}.schedules SET next_run_at = now() + make_interval(secs => $2)
            WHERE name = $1 AND next_run_at <= now() RETURNING true"""
        self._failures = {name: Backoff(log, f"schedule {name}") for name in self.schedules}

    async def run(self, stopping: asyncio.Event) -> None:
        if not self.schedules:
            return
        backoff = Backoff(log, "scheduler")
        registered = False
        while not stopping.is_set():
            try:
                if not registered:
                    await self.register()
                    registered = True
                wait = await self.run_due()
                backoff.succeeded()
            except Exception as error:
                wait = backoff.failed(error)
            await pause(wait, stopping)

    async def register(self) -> None:
        """Make each schedule's row (due at once the first time); a shorter period than the one the
        row was last moved by brings its next run forward."""
        with untraced():
            async with self.database.connection() as connection:
                await connection.executemany(
                    self._register, [(name, self.periods[name]) for name in self.schedules]
                )

    async def run_due(self) -> float:
        """Run every schedule whose period has come and that this replica wins; returns how long to
        sleep until the next one is due."""
        with untraced():
            async with self.database.connection() as connection:
                waits = {
                    row["name"]: row["wait"]
                    for row in await connection.fetch(self._waits, list(self.schedules))
                }
        for name, wait in waits.items():
            if wait <= 0 and await self._claim_period(name):
                await self._run(name)
                waits[name] = self.periods[name]
        return max(0.0, min([SCHEDULER_MAX_SLEEP_SECONDS, *waits.values()]))

    async def _claim_period(self, name: str) -> bool:
        with untraced():
            async with self.database.connection() as connection:
                return bool(await connection.fetchval(self._claim, name, self.periods[name]))

    async def _run(self, name: str) -> None:
        failures = self._failures[name]
        try:
            with traced(self.tracer, f"schedule {name}"):
                async with asyncio.timeout(max(self.periods[name], 30.0)):
                    await self.schedules[name].run(self.resources)
        except Exception as error:
            failures.failed(error)
            SCHEDULE_RUNS.labels(name, "failed").inc()
            return
        failures.succeeded()
        SCHEDULE_RUNS.labels(name, "done").inc()
