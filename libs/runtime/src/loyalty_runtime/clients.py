"""Outbound calls to other services: one long-lived channel per downstream, round-robin over a
headless Service's pods, the caller's tenant and remaining deadline carried along."""

import grpc
from opentelemetry.sdk.trace import TracerProvider

from loyalty_runtime.context import (
    AUTHORIZATION_HEADER,
    PRINCIPAL_HEADER,
    SCOPES_HEADER,
    TENANT_HEADER,
    current_call,
)
from loyalty_runtime.telemetry import client_tracing_interceptors


class _PropagateCall(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, internal_token: str, default_timeout: float) -> None:
        self._authorization = f"Bearer {internal_token}"
        self._default_timeout = default_timeout

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        call = current_call()
        remaining = call.remaining_seconds()
        timeout = client_call_details.timeout
        if timeout is None:
            timeout = remaining if remaining is not None else self._default_timeout
        elif remaining is not None:
            timeout = min(timeout, remaining)
        metadata = [
            *(client_call_details.metadata or ()),
            (AUTHORIZATION_HEADER, self._authorization),
            (TENANT_HEADER, call.tenant_id),
            (PRINCIPAL_HEADER, call.principal),
            (SCOPES_HEADER, ",".join(sorted(call.scopes))),
        ]
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            timeout,
            metadata,
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


def internal_channel(
    target: str, *, internal_token: str, tracer_provider: TracerProvider, default_timeout: float = 2.0
) -> grpc.aio.Channel:
    """`target` is e.g. `dns:///loyalty-ledger-headless:50055`; calls must run inside a served call
    (or a bound CallContext) so the tenant and deadline are known."""
    return grpc.aio.insecure_channel(
        target,
        options=[("grpc.lb_policy_name", "round_robin"), ("grpc.enable_retries", 1)],
        interceptors=[
            *client_tracing_interceptors(tracer_provider),
            _PropagateCall(internal_token, default_timeout),
        ],
    )
