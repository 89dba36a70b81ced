"""What the runtime runs for a ServiceDefinition besides the service's own APIs and loops.

- APIs: `CustomerDataService` for a definition with `customer_data` (privacy.py).
- Loops: the outbox relay and its stream's monitor (events `events`), one consumer per subscribed
  stream (`subscriptions` plus the `customer_data` hooks), the job worker (`jobs`), and the
  scheduler (`schedules` plus the runtime's housekeeping below). Each loop takes the resources and
  the server's stop signal, backs off while PostgreSQL or Redis is down, and ends within about a
  second of the signal (loops.py).
- Housekeeping schedules, each once per period across replicas: trim the stream to what every group
  has read (streams.py), forget handled event ids after `processed_events_retention_hours` and
  idempotency keys and done jobs after `idempotency_retention_hours`. (The outbox needs none: the
  relay deletes what it publishes.)
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from loyalty_runtime.consumers import EventHandlers, StreamConsumer, forget_processed_events
from loyalty_runtime.events import Subscription, relay_loop
from loyalty_runtime.jobs import JobWorker, Schedule, Scheduler
from loyalty_runtime.loops import delete_in_chunks
from loyalty_runtime.privacy import CUSTOMER_DATA_SERVICE, CustomerDataServicer
from loyalty_runtime.streams import StreamRetention

if TYPE_CHECKING:
    from loyalty_runtime.server import Api, Resources, ServiceDefinition

Loop = Callable[["Resources", asyncio.Event], Awaitable[None]]

HOUSEKEEPING_SECONDS = 60.0
IDEMPOTENCY_PRUNE_CHUNK = 10_000


def subscriptions_of(definition: "ServiceDefinition") -> list[Subscription]:
    """Every event subscription of a service: declared ones and those of its customer-data hooks."""
    hooks = definition.customer_data.subscriptions() if definition.customer_data else []
    return [*definition.subscriptions, *hooks]


def runtime_apis(definition: "ServiceDefinition") -> list["Api"]:
    if definition.customer_data is None:
        return []
    from loyalty_runtime.server import Api  # server.py imports this module

    _require_schema(definition, "customer_data")
    export = definition.customer_data.export
    return [
        Api(
            CUSTOMER_DATA_SERVICE,
            lambda resources: CustomerDataServicer(definition.name, resources.units, export),
        )
    ]


def runtime_loops(definition: "ServiceDefinition") -> list[Loop]:
    loops: list[Loop] = []
    if definition.events and definition.schema:
        loops += [relay_loop(definition.events), _monitor_loop(definition.events)]
    by_stream: dict[str, list[Subscription]] = {}
    for subscription in subscriptions_of(definition):
        by_stream.setdefault(subscription.stream, []).append(subscription)
    for stream, subscriptions in by_stream.items():
        _require_schema(definition, "subscriptions")
        loops.append(_consumer_loop(stream, subscriptions))
    if definition.jobs:
        _require_schema(definition, "jobs")
        loops.append(_worker_loop)
    if definition.schedules:
        _require_schema(definition, "schedules")
    if definition.schema:
        loops.append(_scheduler_loop([*definition.schedules, *housekeeping(definition)]))
    return loops


def _require_schema(definition: "ServiceDefinition", what: str) -> None:
    if not definition.schema:
        raise ValueError(f"{definition.name} declares {what} but no schema to keep their tables in")


def _tracer(resources: "Resources"):
    provider = resources.tracer_provider
    return provider.get_tracer("loyalty_runtime") if provider else None


def _monitor_loop(stream: str) -> Loop:
    async def monitor(resources: "Resources", stopping: asyncio.Event) -> None:
        await StreamRetention(resources.redis, stream).monitor(stopping)

    return monitor


def _consumer_loop(stream: str, subscriptions: list[Subscription]) -> Loop:
    async def consume(resources: "Resources", stopping: asyncio.Event) -> None:
        definition = resources.definition
        handlers = EventHandlers(
            definition.name, resources.units, definition.schema, subscriptions, tracer=_tracer(resources)
        )
        await StreamConsumer(resources.redis, stream, handlers).run(stopping)

    return consume


async def _worker_loop(resources: "Resources", stopping: asyncio.Event) -> None:
    await _worker(resources).run(stopping)


def _worker(resources: "Resources") -> JobWorker:
    definition = resources.definition
    return JobWorker(
        resources.units,
        definition.schema,
        definition.jobs,
        principal=f"{definition.name}-jobs",
        retention_hours=resources.settings.idempotency_retention_hours,
        tracer=_tracer(resources),
        on_events=resources.relay_wakeup.set,
    )


def _scheduler_loop(schedules: list[Schedule]) -> Loop:
    async def schedule(resources: "Resources", stopping: asyncio.Event) -> None:
        definition = resources.definition
        await Scheduler(
            resources.database, definition.schema, schedules, resources, tracer=_tracer(resources)
        ).run(stopping)

    return schedule


def _housekeeping_period(_settings) -> float:
    return HOUSEKEEPING_SECONDS


def housekeeping(definition: "ServiceDefinition") -> list[Schedule]:
    """The runtime's own schedules for a definition (see the module's docstring)."""
    every = _housekeeping_period
    schedules = [Schedule("runtime.idempotency-prune", every, _prune_idempotency_keys)]
    if definition.events:
        schedules.append(Schedule("runtime.stream-trim", every, _trim_stream))
    if subscriptions_of(definition):
        schedules.append(Schedule("runtime.processed-events-prune", every, _prune_processed_events))
    if definition.jobs:
        schedules.append(Schedule("runtime.jobs-prune", every, _prune_jobs))
    return schedules


async def _trim_stream(resources: "Resources") -> None:
    await StreamRetention(resources.redis, resources.definition.events).trim()


async def _prune_processed_events(resources: "Resources") -> None:
    await forget_processed_events(
        resources.database, resources.definition.schema, resources.settings.processed_events_retention_hours
    )


async def _prune_jobs(resources: "Resources") -> None:
    await _worker(resources).prune()


async def _prune_idempotency_keys(resources: "Resources") -> None:
    schema = resources.definition.schema
    statement = f"""
        DELETE FROM {schema}.idempotency_keys WHERE (tenant_id, key) IN (
            SELECT tenant_id, key FROM {schema}.idempotency_keys
            WHERE created_at < now() - make_interval(secs => $1) LIMIT {IDEMPOTENCY_PRUNE_CHUNK})"""
    hours = resources.settings.idempotency_retention_hours
    await delete_in_chunks(resources.database, statement, hours * 3600, chunk=IDEMPOTENCY_PRUNE_CHUNK)
