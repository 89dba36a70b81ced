"""Tracing: with a tracer provider, one trace follows a call from its caller through the service into
the database; background loops trace only the work they do; health checks are not traced."""

import asyncio
import time
import uuid
from urllib.parse import urlsplit

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loyalty.testing.v1 import echo_pb2, echo_pb2_grpc
from loyalty_devstack.infra import create_database, drop_database
from loyalty_runtime.clients import internal_channel
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.testing import running_service
from tests.service.runtime.probe_service import create_schema, probe_definition

# A probe of its own: the session's shared probe (same process, same instrumented Redis client
# library) would otherwise relay some of these tests' events, untraced by this test's provider.
TRACED_PROBE = probe_definition("probe_traced")


@pytest.fixture(scope="module")
async def traced_database_url(infra):
    """A database of the traced probe's own. Tracing instruments asyncpg for the whole process, so
    the statements of the other servers this worker runs (their consumers handle events whenever
    some arrive) are traced too; only a database of its own tells the probe's spans apart."""
    name = f"loyalty_test_traced_{uuid.uuid4().hex[:8]}"
    await create_database(infra, name)
    yield infra.database_url(name)
    await drop_database(infra, name)


@pytest.fixture(scope="module")
async def traced_probe_settings(probe_settings, traced_database_url):
    """The traced probe's schema, with the runtime's housekeeping schedules (due at once in a new
    schema) already run once, untraced, so the tests' idle windows see only what they cause."""
    await create_schema(traced_database_url, TRACED_PROBE.schema)
    probe_settings = probe_settings.model_copy(update={"database_url": traced_database_url})
    async with running_service(TRACED_PROBE, probe_settings) as service:
        database = service.server.resources.database
        due = f"SELECT count(*) = 0 OR bool_or(next_run_at <= now()) FROM {TRACED_PROBE.schema}.schedules"
        async with asyncio.timeout(10):
            while True:
                async with database.connection() as connection:
                    if not await connection.fetchval(due):
                        break
                await asyncio.sleep(0.05)
    return probe_settings


async def outbox_drained(service, exporter: InMemorySpanExporter) -> None:
    """Wait until the relay has published what earlier tests left in the probe's outbox, then forget
    the spans of that (legitimate) work."""
    database = service.server.resources.database
    async with asyncio.timeout(10):
        while True:
            async with database.connection() as connection:
                if not await connection.fetchval(f"SELECT count(*) FROM {TRACED_PROBE.schema}.outbox"):
                    break
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    exporter.clear()


def probes_own(spans, settings) -> list:
    """The spans of the probe: its statements are on its own database, other spans come from its
    tracer provider (the worker's other servers have none)."""
    database = urlsplit(settings.database_url).path.lstrip("/")
    return [s for s in spans if s.attributes.get("db.name", database) == database]


def recording() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_one_trace_follows_a_call_from_its_caller_into_the_database(traced_probe_settings):
    provider, exporter = recording()
    async with running_service(TRACED_PROBE, traced_probe_settings, tracer_provider=provider) as service:
        await outbox_drained(service, exporter)
        await health_pb2_grpc.HealthStub(service.channel).Check(health_pb2.HealthCheckRequest())
        caller = internal_channel(
            service.address,
            internal_token=traced_probe_settings.internal_token.get_secret_value(),
            tracer_provider=provider,
        )
        token = bind_call(CallContext("t-trace", "gateway", deadline=time.monotonic() + 5))
        try:
            with provider.get_tracer("test").start_as_current_span("checkout"):
                await echo_pb2_grpc.EchoServiceStub(caller).Echo(echo_pb2.EchoRequest(text="x"))
        finally:
            unbind_call(token)
            await caller.close()
    spans = exporter.get_finished_spans()
    checkout = next(s for s in spans if s.name == "checkout")
    server = next(
        s for s in spans if s.name == "/loyalty.testing.v1.EchoService/Echo" and s.kind.name == "SERVER"
    )
    database = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    assert database, "the database statement has a span"
    assert {s.context.trace_id for s in (server, *database)} == {checkout.context.trace_id}
    by_id = {s.context.span_id: s for s in spans}

    def under_server(span) -> bool:
        while span.parent is not None:
            if span.parent.span_id == server.context.span_id:
                return True
            span = by_id.get(span.parent.span_id)
            if span is None:
                return False
        return False

    assert all(under_server(s) for s in database), "a call's spans nest under its server span"
    assert not any("Health" in s.name for s in spans)


async def test_an_idle_service_exports_nothing_and_its_relay_traces_only_what_it_publishes(
    traced_probe_settings,
):
    provider, exporter = recording()
    async with running_service(TRACED_PROBE, traced_probe_settings, tracer_provider=provider) as service:
        await outbox_drained(service, exporter)
        await asyncio.sleep(2.5)  # the relay polls, the readiness check pings: no spans for either
        idle = probes_own(exporter.get_finished_spans(), traced_probe_settings)
        stub = echo_pb2_grpc.EchoServiceStub(service.channel)
        await stub.Wait(echo_pb2.WaitRequest(), metadata=service.metadata("t-trace"))
        await asyncio.sleep(1.5)
    assert idle == [], [(s.name, dict(s.attributes), s.resource.attributes.get("service.name")) for s in idle]
    spans = probes_own(exporter.get_finished_spans(), traced_probe_settings)
    traces = {s.context.trace_id for s in spans}
    roots = [s.name for s in spans if s.parent is None]
    assert sorted(roots) == ["/loyalty.testing.v1.EchoService/Wait", "outbox publish"]
    assert len(traces) == 2
