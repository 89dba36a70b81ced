"""Test kit: the real server, production interceptors included, on port 0 behind a real channel."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from opentelemetry.sdk.trace import TracerProvider

from loyalty_runtime.context import AUTHORIZATION_HEADER, PRINCIPAL_HEADER, SCOPES_HEADER, TENANT_HEADER
from loyalty_runtime.server import ServiceDefinition, ServiceServer
from loyalty_runtime.settings import ServiceSettings


@dataclass
class RunningService:
    server: ServiceServer
    channel: grpc.aio.Channel

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def metadata(self, tenant_id: str, *, principal: str = "test", scopes: Sequence[str] = ()):
        """Metadata an authenticated internal caller sends for `tenant_id`."""
        return internal_metadata(self.server.settings, tenant_id, principal=principal, scopes=scopes)


def internal_metadata(settings: ServiceSettings, tenant_id: str, *, principal: str = "test", scopes=()):
    return (
        (AUTHORIZATION_HEADER, f"Bearer {settings.internal_token.get_secret_value()}"),
        (TENANT_HEADER, tenant_id),
        (PRINCIPAL_HEADER, principal),
        (SCOPES_HEADER, ",".join(scopes)),
    )


@asynccontextmanager
async def running_service(
    definition: ServiceDefinition, settings: ServiceSettings, *, tracer_provider: TracerProvider | None = None
) -> AsyncIterator[RunningService]:
    server = ServiceServer(definition, settings, tracer_provider=tracer_provider or TracerProvider())
    await server.start()
    await server.wait_until_ready()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield RunningService(server, channel)
    finally:
        await channel.close()
        await server.stop(grace=1.0)
