"""Outbound channels: round-robin over replicas, the caller's tenant and deadline carried along."""

import dataclasses
import time
import uuid

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

from loyalty.common.v1 import customer_pb2
from loyalty.profile.v1 import profile_service_pb2 as api, profile_service_pb2_grpc
from loyalty_profile.service import DEFINITION
from loyalty_runtime.clients import internal_channel
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.interceptors import internal_token_authenticator
from loyalty_runtime.testing import running_service
from tests.service.conftest import locked_customer, rename


def lookup_request() -> api.LookupCustomerRequest:
    return api.LookupCustomerRequest(
        identifier=customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, value="NOBODY01")
    )


def recording(calls: list[str]):
    """A definition whose authenticator also notes each caller's tenant."""

    def authenticator(resources):
        inner = internal_token_authenticator(resources.settings.internal_token.get_secret_value())

        def authenticate(metadata):
            call = inner(metadata)
            calls.append(call.tenant_id)
            return call

        return authenticate

    return dataclasses.replace(DEFINITION, authenticator=authenticator)


def outbound(target: str, settings) -> grpc.aio.Channel:
    return internal_channel(
        target, internal_token=settings.internal_token.get_secret_value(), tracer_provider=TracerProvider()
    )


def as_caller(tenant: str, seconds_left: float):
    return bind_call(
        CallContext(tenant_id=tenant, principal="gateway", deadline=time.monotonic() + seconds_left)
    )


async def test_two_replicas_both_receive_calls_and_the_tenant_travels(profile_settings):
    first_calls, second_calls = [], []
    async with (
        running_service(recording(first_calls), profile_settings) as first,
        running_service(recording(second_calls), profile_settings) as second,
    ):
        channel = outbound(
            f"ipv4:127.0.0.1:{first.server.port},127.0.0.1:{second.server.port}", profile_settings
        )
        stub = profile_service_pb2_grpc.ProfileServiceStub(channel)
        tenant = f"rr-{uuid.uuid4().hex[:6]}"
        token = as_caller(tenant, 5)
        try:
            for _ in range(10):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.LookupCustomer(lookup_request())
                assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            unbind_call(token)
            await channel.close()
    assert len(first_calls) >= 3 and len(second_calls) >= 3
    assert set(first_calls + second_calls) == {tenant}


async def test_a_downstream_call_gives_up_when_the_callers_deadline_does(profile):
    tenant = profile.metadata(f"dl-{uuid.uuid4().hex[:6]}")
    customer, connection, transaction = await locked_customer(
        profile.channel, profile.server.resources.database, tenant
    )
    channel = outbound(profile.address, profile.server.settings)
    stub = profile_service_pb2_grpc.ProfileServiceStub(channel)
    token = as_caller(dict(tenant)["x-loyalty-tenant"], 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.UpdateCustomer(rename(customer.customer_id))
        waited = time.monotonic() - started
    finally:
        unbind_call(token)
        await transaction.rollback()
        await connection.close()
        await channel.close()
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server's own default is 5 s; the call ended with the caller's 0.3 s instead.
    assert waited < profile.server.settings.default_deadline_seconds / 2
