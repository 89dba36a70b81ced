"""Outbound channels: round-robin over replicas, the caller's tenant, deadline and trace carried along."""

import dataclasses
import time
import uuid

import grpc
import pytest

from loyalty.testing.v1 import echo_pb2, echo_pb2_grpc
from loyalty_runtime.calls import internal_token_authenticator
from loyalty_runtime.clients import internal_channel
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.testing import ECHO, running_service


def recording(calls: list[tuple[str, str | None]]):
    """The echo service, with an authenticator that also notes each caller's tenant and trace."""

    def authenticator(resources):
        inner = internal_token_authenticator(resources.settings.internal_token.get_secret_value())

        def authenticate(metadata):
            call = inner(metadata)
            calls.append((call.tenant_id, dict(metadata).get("traceparent")))
            return call

        return authenticate

    return dataclasses.replace(ECHO, authenticator=authenticator)


def outbound(target: str, settings) -> grpc.aio.Channel:
    return internal_channel(target, internal_token=settings.internal_token.get_secret_value())


def as_caller(tenant: str, seconds_left: float):
    return bind_call(
        CallContext(tenant_id=tenant, principal="gateway", deadline=time.monotonic() + seconds_left)
    )


async def test_two_replicas_both_receive_calls_and_the_tenant_travels(echo_settings):
    first_calls, second_calls = [], []
    async with (
        running_service(recording(first_calls), echo_settings) as first,
        running_service(recording(second_calls), echo_settings) as second,
    ):
        channel = outbound(
            f"ipv4:127.0.0.1:{first.server.port},127.0.0.1:{second.server.port}", echo_settings
        )
        stub = echo_pb2_grpc.EchoServiceStub(channel)
        tenant = f"rr-{uuid.uuid4().hex[:6]}"
        token = as_caller(tenant, 5)
        try:
            for _ in range(10):
                await stub.Echo(echo_pb2.EchoRequest(text="x"))
        finally:
            unbind_call(token)
            await channel.close()
    assert len(first_calls) >= 3 and len(second_calls) >= 3
    assert {t for t, _ in first_calls + second_calls} == {tenant}


async def test_a_downstream_call_gives_up_when_the_callers_deadline_does(echo):
    channel = outbound(echo.address, echo.server.settings)
    stub = echo_pb2_grpc.EchoServiceStub(channel)
    token = as_caller("t-deadline", 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Wait(echo_pb2.WaitRequest(sleep_ms=3000))
        waited = time.monotonic() - started
    finally:
        unbind_call(token)
        await channel.close()
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert waited < 1, "the call ended with the caller's 0.3 s, not the server's default 5 s"


async def test_the_callers_trace_travels_without_a_tracer_provider(echo_settings):
    from opentelemetry import context as otel_context, propagate

    calls = []
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    async with running_service(recording(calls), echo_settings) as service:
        channel = outbound(service.address, echo_settings)
        adopted = otel_context.attach(
            propagate.extract({"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"})
        )
        token = as_caller("t-trace", 5)
        try:
            await echo_pb2_grpc.EchoServiceStub(channel).Echo(echo_pb2.EchoRequest())
        finally:
            unbind_call(token)
            otel_context.detach(adopted)
            await channel.close()
    assert calls[0][1].split("-")[1] == trace_id
