"""Outbound calls to other services: one long-lived channel per downstream, round-robin over a
headless Service's pods, the caller's tenant, principal, remaining deadline and trace carried along."""

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from loyalty_runtime.calls import TRACEPARENT_HEADER
from loyalty_runtime.context import (
    AUTHORIZATION_HEADER,
    PRINCIPAL_HEADER,
    SCOPES_HEADER,
    TENANT_HEADER,
    current_call,
)
from loyalty_runtime.telemetry import client_interceptors
from loyalty_runtime.uow import trace_parent


class _Propagation:
    def __init__(self, internal_token: str, default_timeout: float, *, tracing: bool) -> None:
        self._authorization = f"Bearer {internal_token}"
        self._default_timeout = default_timeout
        # With a provider, OpenTelemetry's client interceptor injects the trace context itself.
        self._inject_traceparent = not tracing

    def _details(self, client_call_details) -> grpc.aio.ClientCallDetails:
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
        if self._inject_traceparent and trace.get_current_span().get_span_context().is_valid:
            metadata.append((TRACEPARENT_HEADER, trace_parent()))
        return grpc.aio.ClientCallDetails(
            client_call_details.method,
            timeout,
            metadata,
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )


class _PropagateCall(_Propagation, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


class _PropagateStreamCall(_Propagation, grpc.aio.UnaryStreamClientInterceptor):
    """The same for server-streaming calls (grpc.aio files each interceptor under one kind only)."""

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


def internal_channel(
    target: str,
    *,
    internal_token: str,
    tracer_provider: TracerProvider | None = None,
    default_timeout: float = 2.0,
) -> grpc.aio.Channel:
    """`target` is e.g. `dns:///loyalty-ledger-headless:50055`; calls must run inside a served call
    (or a bound CallContext) so the tenant and deadline are known."""
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
        interceptors=[
            *client_interceptors(tracer_provider),
            _PropagateCall(internal_token, default_timeout, tracing=tracer_provider is not None),
            _PropagateStreamCall(internal_token, default_timeout, tracing=tracer_provider is not None),
        ],
    )
