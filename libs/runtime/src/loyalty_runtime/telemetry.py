"""OpenTelemetry tracing from the standard OTEL_* variables; nothing at all without an endpoint.

With no exporter configured there is no tracer provider: no server interceptor, no span per call or
statement, nothing to pay for. An incoming `traceparent` is still adopted (calls.py) and passed on
(clients.py), so logs carry the trace id and a downstream service that does export joins the trace.
With one, the grpc server and client interceptors, asyncpg and redis instrumentations make a call's
spans nest under its server span; tests pass a provider of their own.
"""

import contextlib
import os
from collections.abc import Iterator

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider

# Probes run every few seconds on every pod; tracing them would drown the real traffic.
HEALTH_SERVICE = "grpc.health.v1.Health"


def tracer_provider_from_env(service: str) -> TracerProvider | None:
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _instrumentors() -> list:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    return [AsyncPGInstrumentor(), RedisInstrumentor()]


_instrumented = False


def instrument(provider: TracerProvider) -> None:
    """Database and Redis client spans (process-wide: the instrumentations patch the libraries)."""
    global _instrumented
    for instrumentor in _instrumentors():
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=provider)
    _instrumented = True


def uninstrument() -> None:
    global _instrumented
    for instrumentor in _instrumentors():
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    _instrumented = False


def instrumented() -> bool:
    """True while this process's database and Redis clients make spans (some server traces). A
    server without tracing in the same process (tests run several) then keeps its work untraced."""
    return _instrumented


def server_interceptors(provider: TracerProvider | None) -> list:
    if provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    return [
        aio_server_interceptor(
            tracer_provider=provider, filter_=filters.negate(filters.service_name(HEALTH_SERVICE))
        )
    ]


def client_interceptors(provider: TracerProvider | None) -> list:
    if provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors, filters

    return aio_client_interceptors(
        tracer_provider=provider, filter_=filters.negate(filters.service_name(HEALTH_SERVICE))
    )


def silenced(context: otel_context.Context | None = None) -> otel_context.Context:
    """`context` (default: the current one) with OpenTelemetry's instrumentations told to stay quiet."""
    # The key the instrumentations check (opentelemetry.instrumentation.utils.is_instrumentation_enabled).
    return otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True, context)


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Background polls (is there work?) make no spans; only the work they find is traced."""
    token = otel_context.attach(silenced())
    try:
        yield
    finally:
        otel_context.detach(token)
