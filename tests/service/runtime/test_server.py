"""The server every service runs: health, reflection, who may call, what a call may carry, deadlines,
overload, errors and metrics, tried through a real channel against the echo and probe services."""

import asyncio
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from loyalty.testing.v1 import echo_pb2, echo_pb2_grpc
from loyalty_runtime.errors import retry_info
from loyalty_runtime.server import Api, ServiceDefinition
from loyalty_runtime.testing import ECHO, running_service
from tests.conftest import rpc_failure
from tests.raw_http2 import raw_call

ECHO_SERVICE = "loyalty.testing.v1.EchoService"
SERVING = health_pb2.HealthCheckResponse.SERVING


async def health_of(channel, service: str = "") -> int:
    answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return answer.status


async def test_health_is_serving_for_the_server_its_services_and_liveness(echo):
    for service in ("", ECHO_SERVICE, "liveness"):
        assert await health_of(echo.channel, service) == SERVING


async def test_reflection_lists_the_services(echo):
    stub = reflection_pb2_grpc.ServerReflectionStub(echo.channel)
    answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = [s.name async for answer in answers for s in answer.list_services_response.service]
    assert {ECHO_SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(names)


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "UNAUTHENTICATED"),
        ((("authorization", "Bearer wrong"), ("x-loyalty-tenant", "t1")), "UNAUTHENTICATED"),
        ((("authorization", "Bearer dev-internal-token"),), "UNAUTHENTICATED"),
    ],
    ids=["no credentials", "wrong token", "no tenant"],
)
async def test_calls_without_valid_credentials_are_unauthenticated(echo_stub, metadata, reason):
    failure = await rpc_failure(echo_stub.Echo(echo_pb2.EchoRequest(text="x"), metadata=metadata))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)


@pytest.mark.parametrize("tenant", ["Demo", "a'; DROP TABLE x; --", "t" * 64, "-leading-dash", "a b"])
async def test_a_tenant_that_is_not_an_identifier_is_refused_before_any_work(echo, echo_stub, tenant):
    failure = await rpc_failure(
        echo_stub.Echo(echo_pb2.EchoRequest(text="x"), metadata=echo.metadata(tenant))
    )
    assert (failure.code, failure.reason, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_TENANT",
        ["x-loyalty-tenant"],
    )


@pytest.mark.parametrize(
    "tenant", [b"nul\x00", b"cr\r\nx-injected: 1", b"tab\there", "\u00fcnicode".encode(), b"\xff\xfe"]
)
async def test_a_tenant_no_grpc_client_would_send_is_refused(echo, tenant):
    """Sent by hand over HTTP/2: the server refuses the call (or the whole stream), never serves it."""
    headers = [
        (b"authorization", f"Bearer {echo.server.settings.internal_token.get_secret_value()}".encode()),
        (b"x-loyalty-tenant", tenant),
    ]
    status = await asyncio.to_thread(raw_call, echo.server.port, f"/{ECHO_SERVICE}/Echo", headers, b"")
    assert status in (None, "3", "16"), f"answered grpc-status {status}"


async def test_bytes_that_are_not_the_request_message_are_invalid_argument(echo, tenant):
    raw = echo.channel.unary_unary(f"/{ECHO_SERVICE}/Echo")
    for garbage in (b"\xff\xff\xff\xff", b"\x0a\x03\xc3\x28\x41", b"\x0a\x7f"):  # junk, bad UTF-8, short
        failure = await rpc_failure(raw(garbage, metadata=tenant))
        assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")


async def test_a_field_the_contract_does_not_allow_names_the_field(echo_stub, tenant):
    from google.protobuf.timestamp_pb2 import Timestamp

    cases = {
        "text": echo_pb2.EchoRequest(text="nul\x00byte"),
        "time": echo_pb2.EchoRequest(time=Timestamp(seconds=-62_135_596_801)),
    }
    for field, request in cases.items():
        failure = await rpc_failure(echo_stub.Echo(request, metadata=tenant))
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


async def test_an_rpc_without_a_servicer_is_unimplemented(echo_settings):
    declared = ServiceDefinition(name="declared", settings=ECHO.settings, apis=[Api(ECHO.apis[0].descriptor)])
    async with running_service(declared, echo_settings) as service:
        stub = echo_pb2_grpc.EchoServiceStub(service.channel)
        failure = await rpc_failure(stub.Echo(echo_pb2.EchoRequest(), metadata=service.metadata("t1")))
        assert failure.code == grpc.StatusCode.UNIMPLEMENTED
        assert (await rpc_failure(stub.Echo(echo_pb2.EchoRequest()))).code == grpc.StatusCode.UNAUTHENTICATED


async def test_a_call_without_deadline_gets_the_default_one(echo_settings):
    short = echo_settings.model_copy(update={"default_deadline_seconds": 0.3})
    async with running_service(ECHO, short) as service:
        stub = echo_pb2_grpc.EchoServiceStub(service.channel)
        started = time.monotonic()
        failure = await rpc_failure(
            stub.Wait(echo_pb2.WaitRequest(sleep_ms=3000), metadata=service.metadata("t1"))
        )
        assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2


async def test_overload_is_refused_at_once_not_queued(echo_settings):
    limited = echo_settings.model_copy(update={"max_concurrent_calls": 4})
    async with running_service(ECHO, limited) as service:
        stub = echo_pb2_grpc.EchoServiceStub(service.channel)
        metadata = service.metadata("t1")
        refused_after: list[float] = []
        started = time.monotonic()

        async def one():
            try:
                return await stub.Wait(echo_pb2.WaitRequest(sleep_ms=500), metadata=metadata)
            except grpc.aio.AioRpcError as error:
                refused_after.append(time.monotonic() - started)
                return error

        outcomes = await asyncio.gather(*(one() for _ in range(20)), health_of(service.channel))
        answers, health = outcomes[:-1], outcomes[-1]
        assert sum(isinstance(a, echo_pb2.WaitResponse) for a in answers) == 4
        refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
        assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert max(refused_after) < 0.4, "refusals come at once, not after waiting"
        from grpc_status import rpc_status

        assert retry_info(rpc_status.from_call(refused[0])).retry_delay.ToNanoseconds() > 0
        assert health == SERVING, "probes are never refused for overload"


async def test_unexpected_errors_are_internal_without_details(echo_settings, monkeypatch):
    from loyalty_runtime import testing

    async def explode(self, request, context):
        raise RuntimeError("secret detail from deep inside")

    monkeypatch.setattr(testing.EchoServicer, "Echo", explode)
    async with running_service(ECHO, echo_settings) as service:
        stub = echo_pb2_grpc.EchoServiceStub(service.channel)
        failure = await rpc_failure(
            stub.Echo(echo_pb2.EchoRequest(text="x"), metadata=service.metadata("t1"))
        )
    assert (failure.code, failure.reason, failure.message) == (
        grpc.StatusCode.INTERNAL,
        "INTERNAL",
        "internal error",
    )


async def test_metrics_carry_the_names_grpc_dashboards_expect(echo_stub, tenant):
    labels = {"grpc_type": "unary", "grpc_service": ECHO_SERVICE, "grpc_method": "Echo"}

    def sample(name: str, **extra) -> float:
        return REGISTRY.get_sample_value(name, {**labels, **extra}) or 0.0

    before = sample("grpc_server_handled_total", grpc_code="OK")
    invalid_before = sample("grpc_server_handled_total", grpc_code="INVALID_ARGUMENT")
    await echo_stub.Echo(echo_pb2.EchoRequest(text="x"), metadata=tenant)
    await rpc_failure(echo_stub.Echo(echo_pb2.EchoRequest(text="\x00"), metadata=tenant))
    assert sample("grpc_server_handled_total", grpc_code="OK") == before + 1
    assert sample("grpc_server_handled_total", grpc_code="INVALID_ARGUMENT") == invalid_before + 1
    assert sample("grpc_server_started_total") >= before + 2
    assert sample("grpc_server_handling_seconds_count") >= before + 2


async def test_a_caller_that_keeps_its_connection_alive_is_never_sent_away(echo_settings):
    """A client pinging every 2 s (scaled down from production's 10 s against a 5 s minimum) keeps
    its connection; the same client against a server allowing one ping a minute is sent away, so
    this test would notice a policy that does not hold."""
    pinging = [
        ("grpc.keepalive_time_ms", 2000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]

    async def connection_survives(min_interval_seconds: float) -> bool:
        settings = echo_settings.model_copy(update={"min_client_ping_interval_seconds": min_interval_seconds})
        async with (
            running_service(ECHO, settings) as service,
            grpc.aio.insecure_channel(service.address, options=pinging) as channel,
        ):
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            await stub.Echo(echo_pb2.EchoRequest(text="x"), metadata=service.metadata("t1"))
            try:
                async with asyncio.timeout(9):
                    await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
            except TimeoutError:
                return True
            return False

    kept, sent_away = await asyncio.gather(connection_survives(1.0), connection_survives(60.0))
    assert kept, "a client pinging within the policy lost its connection"
    assert not sent_away, "the control (pings far more often than allowed) kept its connection"


async def test_calls_carry_their_caller_into_the_handler(echo_settings, monkeypatch):
    from loyalty_runtime import testing
    from loyalty_runtime.context import current_call

    seen = []

    async def record(self, request, context):
        seen.append(current_call())
        return echo_pb2.EchoResponse(text=request.text)

    monkeypatch.setattr(testing.EchoServicer, "Echo", record)
    async with running_service(ECHO, echo_settings) as service:
        stub = echo_pb2_grpc.EchoServiceStub(service.channel)
        tenant = f"t-{uuid.uuid4().hex[:6]}"
        await stub.Echo(
            echo_pb2.EchoRequest(),
            metadata=service.metadata(tenant, principal="gateway", scopes=["a", "b"]),
            timeout=3,
        )
    (call,) = seen
    assert (call.tenant_id, call.principal, call.scopes) == (tenant, "gateway", frozenset({"a", "b"}))
    assert 2 < call.remaining_seconds() <= 3
