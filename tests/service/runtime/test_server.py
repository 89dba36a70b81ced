"""The shared server runtime, exercised through the profile service: the stack every service runs."""

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loyalty.profile.v1 import profile_service_pb2_grpc
from loyalty_devstack.infra import free_port
from loyalty_profile.service import DEFINITION
from loyalty_runtime.db import Database
from loyalty_runtime.testing import internal_metadata, running_service
from tests.conftest import rpc_failure
from tests.service.conftest import (
    enrol_request,
    locked_customer,
    rename,
    wait_until_a_call_waits_on_the_lock,
)


async def test_health_is_serving_for_the_server_and_each_service(profile):
    health = health_pb2_grpc.HealthStub(profile.channel)
    for service in ("", "loyalty.profile.v1.ProfileService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_waits_for_the_database(profile_settings):
    unreachable = profile_settings.model_copy(
        update={"database_url": f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"}
    )
    from loyalty_runtime.server import ServiceServer

    server = ServiceServer(DEFINITION, unreachable, tracer_provider=TracerProvider())
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await asyncio.sleep(0.3)
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="")
            )
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop(grace=0)


async def test_reflection_lists_the_services(profile):
    stub = reflection_pb2_grpc.ServerReflectionStub(profile.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = [s.name async for r in responses for s in r.list_services_response.service]
    assert {"loyalty.profile.v1.ProfileService", "grpc.health.v1.Health"} <= set(names)


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer wrong"), ("x-loyalty-tenant", "t1")),
        (("authorization", "Bearer dev-internal-token"),),
    ],
    ids=["no credentials", "wrong token", "no tenant"],
)
async def test_calls_without_valid_credentials_are_unauthenticated(profile, metadata):
    stub = profile_service_pb2_grpc.ProfileServiceStub(profile.channel)
    failure = await rpc_failure(stub.EnrolCustomer(enrol_request("AUTH0001"), metadata=metadata))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_a_call_without_deadline_gets_the_default_one(profile_settings):
    short = profile_settings.model_copy(update={"default_deadline_seconds": 0.3})
    async with running_service(DEFINITION, short) as profile:
        tenant = profile.metadata("deadline-" + uuid.uuid4().hex[:6])
        customer, connection, transaction = await locked_customer(
            profile.channel, profile.server.resources.database, tenant
        )
        try:
            stub = profile_service_pb2_grpc.ProfileServiceStub(profile.channel)
            failure = await rpc_failure(stub.UpdateCustomer(rename(customer.customer_id), metadata=tenant))
            assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            await transaction.rollback()
            await connection.close()


async def test_unexpected_errors_are_internal_without_a_stack_trace(profile, monkeypatch):
    from loyalty_profile import servicer

    def explode(*_args, **_kwargs):
        raise RuntimeError("secret detail from deep inside")

    monkeypatch.setattr(servicer, "customer_out", explode)
    stub = profile_service_pb2_grpc.ProfileServiceStub(profile.channel)
    failure = await rpc_failure(
        stub.EnrolCustomer(enrol_request("BOOM0001"), metadata=profile.metadata("t-boom"))
    )
    assert (failure.code, failure.reason, failure.message) == (
        grpc.StatusCode.INTERNAL,
        "INTERNAL",
        "internal error",
    )


async def test_server_spans_are_recorded_and_health_checks_are_not(profile_settings):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with running_service(DEFINITION, profile_settings, tracer_provider=provider) as profile:
        await health_pb2_grpc.HealthStub(profile.channel).Check(health_pb2.HealthCheckRequest())
        stub = profile_service_pb2_grpc.ProfileServiceStub(profile.channel)
        await stub.EnrolCustomer(
            enrol_request("SPAN0001"), metadata=profile.metadata("t-span-" + uuid.uuid4().hex[:6])
        )
    names = [span.name for span in exporter.get_finished_spans()]
    assert "/loyalty.profile.v1.ProfileService/EnrolCustomer" in names
    assert not any("Health" in name for name in names)


async def wait_until_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    async with asyncio.timeout(60):
        while True:
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_sigterm_lets_the_call_in_flight_finish_then_exits_zero(profile_settings):
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "PROFILE_DATABASE_URL": profile_settings.database_url,
        "PROFILE_REDIS_URL": profile_settings.redis_url,
        "PROFILE_GRPC_PORT": str(port),
        "PROFILE_GRACE_PERIOD_SECONDS": "10",
        "PROFILE_METRICS_PORT": str(metrics_port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "loyalty_profile", "serve"], env=env, stderr=subprocess.DEVNULL
    )
    database = Database(profile_settings.database_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_until_serving(channel)
            tenant = internal_metadata(profile_settings, "t-sigterm-" + uuid.uuid4().hex[:6])
            customer, connection, transaction = await locked_customer(channel, database, tenant)
            # The metrics port of the real process counts the enrolment.
            metrics = await asyncio.to_thread(scrape, metrics_port)
            assert (
                'loyalty_grpc_server_handled_total{code="OK",method="/loyalty.profile.v1.ProfileService/EnrolCustomer"} 1.0'
                in metrics
            )
            stub = profile_service_pb2_grpc.ProfileServiceStub(channel)
            in_flight = asyncio.ensure_future(
                stub.UpdateCustomer(rename(customer.customer_id), metadata=tenant)
            )
            await wait_until_a_call_waits_on_the_lock(database)
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert process.poll() is None, "the server must wait for the call in flight"
            await transaction.rollback()
            await connection.close()
            answer = await in_flight
            assert answer.customer.given_name == "Renamed"
        assert await asyncio.to_thread(process.wait, 15) == 0
    finally:
        await database.dispose()
        if process.poll() is None:
            process.kill()
