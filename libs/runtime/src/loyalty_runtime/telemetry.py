"""OpenTelemetry tracing from the standard OTEL_* variables. Tests pass their own provider."""

import os

from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

# Probes run every few seconds on every pod; tracing them would drown the real traffic.
NOT_HEALTH = filters.negate(filters.service_name("grpc.health.v1.Health"))


def tracer_provider_from_env(service: str) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    )
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def server_tracing_interceptor(provider: TracerProvider):
    return aio_server_interceptor(tracer_provider=provider, filter_=NOT_HEALTH)


def client_tracing_interceptors(provider: TracerProvider):
    return aio_client_interceptors(tracer_provider=provider, filter_=NOT_HEALTH)
