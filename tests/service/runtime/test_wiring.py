"""Everything a definition declares, run by the real server: an event relayed from the outbox is
consumed, its handler enqueues a job, the job runs, a schedule ticks, the runtime's housekeeping is
registered, and the server stops its background work within its bound."""

import logging
import time
import uuid

from loyalty.profile.v1 import events_pb2
from loyalty.testing.v1 import echo_pb2
from loyalty_runtime.events import Subscription
from loyalty_runtime.jobs import Job, Schedule
from loyalty_runtime.server import ServiceDefinition
from loyalty_runtime.testing import EchoSettings, running_service
from tests.service.runtime.conftest import as_tenant, eventually


async def test_a_definitions_events_jobs_and_schedules_run_with_the_server(
    database, database_url, redis_url, schema, effects, caplog
):
    ticks: list[float] = []

    async def on_updated(uow, event: events_pb2.CustomerUpdated) -> None:
        await uow.enqueue("welcome", echo_pb2.EchoRequest(text=event.customer_id))

    async def welcome(uow, payload: echo_pb2.EchoRequest) -> None:
        await effects.count(uow, payload.text)

    async def tick(resources) -> None:
        ticks.append(time.monotonic())

    name = f"svc-{uuid.uuid4().hex[:6]}"
    stream = f"{name}.events"
    definition = ServiceDefinition(
        name=name,
        settings=EchoSettings,
        apis=[],
        schema=schema,
        events=stream,
        subscriptions=[Subscription(stream, events_pb2.CustomerUpdated, on_updated)],
        jobs=[Job("welcome", echo_pb2.EchoRequest, welcome)],
        schedules=[Schedule("tick", lambda settings: 0.5, tick)],
    )
    settings = EchoSettings(database_url=database_url, redis_url=redis_url, grpc_host="127.0.0.1")
    caplog.set_level(logging.WARNING)
    service = running_service(definition, settings)
    running = await service.__aenter__()
    try:
        with as_tenant("t1"):
            async with running.server.resources.units.change() as uow:
                uow.record(events_pb2.CustomerUpdated(customer_id="c1"), key="c1")
        await eventually(lambda: effects.read(database))
        assert await effects.read(database) == {("t1", "c1"): (1, 0, f"{name}-jobs")}
        assert ticks
        async with database.connection() as connection:
            names = {row["name"] for row in await connection.fetch(f"SELECT name FROM {schema}.schedules")}
        assert names == {
            "tick",
            "runtime.idempotency-prune",
            "runtime.stream-trim",
            "runtime.processed-events-prune",
            "runtime.jobs-prune",
        }
    finally:
        started = time.monotonic()
        await service.__aexit__(None, None, None)
        stopped_in = time.monotonic() - started
    assert stopped_in < 3.0
    assert not [r for r in caplog.records if r.getMessage() == "background task did not stop"]
