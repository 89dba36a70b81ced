"""The server every service runs: one interceptor stack, health and reflection in one place,
readiness gated on the database and cache, and graceful shutdown."""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from loyalty_runtime.cache import connect_redis
from loyalty_runtime.db import Database
from loyalty_runtime.interceptors import Authenticator, CallInterceptor, internal_token_authenticator
from loyalty_runtime.logs import install_trace_context
from loyalty_runtime.settings import ServiceSettings
from loyalty_runtime.telemetry import server_tracing_interceptor

log = logging.getLogger("loyalty.server")


@dataclass
class Resources:
    """What a service's servicers and background tasks are built from."""

    settings: ServiceSettings
    database: Database
    redis: Redis
    tracer_provider: TracerProvider


@dataclass(frozen=True)
class ServiceDefinition:
    """One service: its gRPC services (full names, for health and reflection), how to register its
    servicers, and the background loops it runs (outbox relay, expiry runs, consumers)."""

    name: str
    service_names: Sequence[str]
    add_servicers: Callable[[grpc.aio.Server, Resources], None]
    background: Sequence[Callable[[Resources], Awaitable[None]]] = field(default_factory=tuple)
    # Who may call. Internal services trust the shared internal token; the gateway brings its own.
    authenticator: Callable[[Resources], Authenticator] | None = None
    # Alembic script location ("loyalty_profile:migrations") and the schema the service owns.
    migrations: str | None = None
    schema: str | None = None


class ServiceServer:
    def __init__(
        self, definition: ServiceDefinition, settings: ServiceSettings, *, tracer_provider: TracerProvider
    ) -> None:
        self.definition = definition
        self.settings = settings
        install_trace_context()
        self.resources = Resources(
            settings=settings,
            database=Database(
                settings.database_url, pool_size=settings.database_pool_size, tracer_provider=tracer_provider
            ),
            redis=connect_redis(settings.redis_url, tracer_provider=tracer_provider),
            tracer_provider=tracer_provider,
        )
        self.health = health_aio.HealthServicer()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task] = []

    def _authenticator(self) -> Authenticator:
        if self.definition.authenticator is not None:
            return self.definition.authenticator(self.resources)
        return internal_token_authenticator(self.settings.internal_token.get_secret_value())

    def _build(self) -> grpc.aio.Server:
        max_age_ms = int(self.settings.max_connection_age_seconds * 1000)
        server = grpc.aio.server(
            interceptors=[
                server_tracing_interceptor(self.resources.tracer_provider),
                CallInterceptor(self._authenticator(), self.settings.default_deadline_seconds),
            ],
            options=[
                ("grpc.max_connection_age_ms", max_age_ms),
                ("grpc.max_connection_age_grace_ms", int(self.settings.grace_period_seconds * 1000)),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.definition.add_servicers(server, self.resources)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                *self.definition.service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        return server

    async def start(self) -> int:
        """Bind and start serving; health says NOT_SERVING until the database and cache answer."""
        for name in ("", *self.definition.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._server = self._build()
        self.port = self._server.add_insecure_port(f"{self.settings.grpc_host}:{self.settings.grpc_port}")
        await self._server.start()
        self._tasks.append(asyncio.create_task(self._become_ready()))
        log.info("listening", extra={"fields": {"port": self.port, "service": self.definition.name}})
        return self.port

    async def _become_ready(self) -> None:
        delay = 0.05
        while True:
            try:
                await self.resources.database.ping()
                await self.resources.redis.ping()
                break
            except Exception as error:
                log.warning("dependencies not ready", extra={"fields": {"error_type": type(error).__name__}})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        for name in ("", *self.definition.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._tasks.extend(asyncio.create_task(loop(self.resources)) for loop in self.definition.background)

    async def wait_until_ready(self) -> None:
        await self._tasks[0]

    async def stop(self, grace: float | None = None) -> None:
        """Say NOT_SERVING, refuse new calls, let calls in flight finish within the grace period."""
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.settings.grace_period_seconds if grace is None else grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.resources.redis.aclose()
        await self.resources.database.dispose()


async def serve_until_signalled(server: ServiceServer) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    await stop.wait()
    log.info("shutting down", extra={"fields": {"grace_seconds": server.settings.grace_period_seconds}})
    await server.stop()
