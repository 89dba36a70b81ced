"""Test kit: the real server, its production call guard included, on port 0 behind a real channel."""

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
from opentelemetry.sdk.trace import TracerProvider
from pydantic_settings import SettingsConfigDict

from loyalty.testing.v1 import echo_pb2
from loyalty_runtime.context import AUTHORIZATION_HEADER, PRINCIPAL_HEADER, SCOPES_HEADER, TENANT_HEADER
from loyalty_runtime.errors import FailedPrecondition, Reason
from loyalty_runtime.server import Api, ServiceDefinition, ServiceServer
from loyalty_runtime.settings import ServiceSettings
from loyalty_runtime.uow import utcnow


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


TEST_POOL_SIZE = 3


class StoppedClock:
    """A server clock (`running_service(..., clock=)`) that stands still until the test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


async def migrated_settings(
    definition: ServiceDefinition, database_url: str, redis_url: str, **overrides
) -> ServiceSettings:
    """Migrate `definition`'s schema and return its settings for a test server: port 0 on loopback,
    pool waits long enough for the tests' deliberate pile-ups on one row (production sheds them
    after 0.5 s), and `overrides`. The pool is smaller than production's (3, not 5) and gives idle
    connections back after 2 s, not 60: the session-wide servers of both xdist workers (each
    service's own, the gateway's set of them, the triggers' suite) must stay within PostgreSQL's
    connection limit (100 by default); at 5, or holding idle ones for a minute, they reached it."""
    from loyalty_runtime.migrations import migrate  # Alembic: a test's import, never a server's

    await migrate(database_url, definition.migrations, definition.schema)
    defaults = {
        "database_url": database_url,
        "redis_url": redis_url,
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,
        "database_acquire_timeout_seconds": 10.0,
        "database_pool_size": TEST_POOL_SIZE,
        "database_idle_seconds": 2.0,
    }
    return definition.settings(**(defaults | overrides))


@asynccontextmanager
async def running_service(
    definition: ServiceDefinition,
    settings: ServiceSettings,
    *,
    tracer_provider: TracerProvider | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> AsyncIterator[RunningService]:
    server = ServiceServer(definition, settings, tracer_provider=tracer_provider, clock=clock)
    await server.start()
    await server.wait_until_ready()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield RunningService(server, channel)
    finally:
        await channel.close()
        await server.stop(grace=1.0, drain=0)


class EchoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ECHO_")


class EchoServicer:
    """A servicer with nothing behind it: what the runtime costs and does around a handler."""

    async def Echo(self, request: echo_pb2.EchoRequest, context) -> echo_pb2.EchoResponse:
        return echo_pb2.EchoResponse(text=request.text)

    async def Wait(self, request: echo_pb2.WaitRequest, context) -> echo_pb2.WaitResponse:
        await asyncio.sleep(request.sleep_ms / 1000)
        if request.fail_reason:
            raise FailedPrecondition(Reason[request.fail_reason], "failed as asked")
        return echo_pb2.WaitResponse(slept_ms=request.sleep_ms)


ECHO = ServiceDefinition(
    name="echo",
    settings=EchoSettings,
    apis=[Api(echo_pb2.DESCRIPTOR.services_by_name["EchoService"], lambda _resources: EchoServicer())],
)


async def model_differences(database_url: str, schema: str, metadata) -> list:
    """What Alembic's autogenerate finds between a service's models (`metadata`) and the `schema` its
    migrations built in `database_url`, types and server defaults included: [] when the models
    describe exactly what the migrations create (a model change without its migration shows here)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine

    from loyalty_runtime.migrations import sqlalchemy_url

    def compare(connection) -> list:
        options = {
            "include_schemas": True,
            "version_table_schema": schema,
            "include_name": lambda name, kind, _parent: kind != "schema" or name == schema,
            "compare_type": True,
            "compare_server_default": True,
        }
        return compare_metadata(MigrationContext.configure(connection, opts=options), metadata)

    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()
