"""The server every service runs, built from its one `ServiceDefinition`.

- Every RPC of every API in the definition passes the one call guard (calls.py); an API or method
  without a servicer answers UNIMPLEMENTED, honestly, until its issue builds it.
- Health (grpc.health.v1) and reflection in one place. The service names and "" follow readiness:
  NOT_SERVING until PostgreSQL answers, while it does not, and from the first moment of a shutdown.
  "liveness" stays SERVING while the process runs (a Redis outage changes neither).
- The outbox relay, event consumers, job workers and schedules the definition declares run beside the
  server and stop with it.
- SIGTERM: NOT_SERVING at once, calls still accepted for `drain_delay_seconds` (load balancers
  notice), then no new calls and the grace period for those in flight; background work is cancelled
  and waited for with a bound, so shutdown never hangs.
"""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from loyalty_runtime.cache import connect_redis
from loyalty_runtime.calls import Authenticator, CallGuard, internal_token_authenticator
from loyalty_runtime.db import Database
from loyalty_runtime.events import Subscription
from loyalty_runtime.jobs import Job, Schedule
from loyalty_runtime.logs import install_trace_context
from loyalty_runtime.privacy import CustomerData
from loyalty_runtime.settings import ServiceSettings
from loyalty_runtime.telemetry import instrument, server_interceptors, uninstrument, untraced
from loyalty_runtime.uow import UnitsOfWork, utcnow
from loyalty_runtime.wiring import runtime_apis, runtime_loops

log = logging.getLogger("loyalty.server")

LIVENESS = "liveness"
STOP_BACKGROUND_SECONDS = 2.0


@dataclass(frozen=True)
class Api:
    """One gRPC service of the contract and how to build its servicer (None: not built yet)."""

    descriptor: ServiceDescriptor
    servicer: Callable[["Resources"], object] | None = None


@dataclass(frozen=True)
class Forward:
    """Another service's API that this server answers by forwarding (the gateway's admin API): under
    that service's own name, so its generated clients work here unchanged. `methods(resources)` gives
    the behavior of each method served, taking the request's bytes and returning the answer's (see
    `CallGuard.forwarder`); a method it leaves out is not served at all (UNIMPLEMENTED)."""

    descriptor: ServiceDescriptor
    methods: Callable[["Resources"], Mapping[str, Callable]]


@dataclass(frozen=True)
class ServiceDefinition:
    """Everything the runtime needs to run a service; `service.py` of each service declares one."""

    name: str
    settings: type[ServiceSettings]
    apis: Sequence[Api]
    # The PostgreSQL schema the service owns and its Alembic scripts ("loyalty_ledger:migrations").
    schema: str | None = None
    migrations: str | None = None
    # The stream its outbox is relayed to ("ledger.events"); None: it publishes no events.
    events: str | None = None
    # Other services' events it handles, the kinds of job it runs, its periodic tasks.
    subscriptions: Sequence[Subscription] = ()
    jobs: Sequence[Job] = ()
    schedules: Sequence[Schedule] = ()
    # How it takes part in GDPR export, erasure and merges, if it keeps customer data.
    customer_data: CustomerData | None = None
    # Loops the service runs besides the runtime's own (each gets the resources and a stop signal).
    background: Sequence[Callable[["Resources", asyncio.Event], Awaitable[None]]] = ()
    # Who may call. Internal services trust the shared internal token; the gateway brings its own.
    authenticator: Callable[["Resources"], Authenticator] | None = None
    # Other services' APIs it serves by forwarding their calls.
    forwards: Sequence[Forward] = ()

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(api.descriptor.full_name for api in self.apis)


@dataclass
class Resources:
    """What a service's servicers and background work are built from."""

    definition: ServiceDefinition
    settings: ServiceSettings
    database: Database
    redis: Redis
    units: UnitsOfWork | None
    tracer_provider: TracerProvider | None
    # Set by the relay: wakes it when this process commits events.
    relay_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # The port the gRPC server listens on, once started (a background loop that calls it, such as
    # the gateway's JSON/HTTP front, needs it when the settings say 0).
    grpc_port: int = 0


class ServiceServer:
    def __init__(
        self,
        definition: ServiceDefinition,
        settings: ServiceSettings,
        *,
        tracer_provider: TracerProvider | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.definition = definition
        self.settings = settings
        install_trace_context()
        if tracer_provider is not None:
            instrument(tracer_provider)
        database = Database(
            settings.database_url,
            pool_size=settings.database_pool_size,
            acquire_timeout=settings.database_acquire_timeout_seconds,
            application_name=definition.name,
            idle_seconds=settings.database_idle_seconds,
        )
        self.resources = Resources(
            definition=definition,
            settings=settings,
            database=database,
            redis=connect_redis(settings.redis_url),
            units=None,
            tracer_provider=tracer_provider,
        )
        if definition.schema:
            self.resources.units = UnitsOfWork(
                database,
                definition.schema,
                apis=[api.descriptor for api in definition.apis],
                clock=clock,
                on_events=self.resources.relay_wakeup.set,
            )
        self.health = health_aio.HealthServicer()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._stopping = asyncio.Event()
        self._draining = False
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def _authenticator(self) -> Authenticator:
        if self.definition.authenticator is not None:
            return self.definition.authenticator(self.resources)
        return internal_token_authenticator(self.settings.internal_token.get_secret_value())

    def _options(self) -> list[tuple[str, int]]:
        s = self.settings
        return [
            ("grpc.max_connection_age_ms", int(s.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(s.grace_period_seconds * 1000)),
            ("grpc.keepalive_time_ms", int(s.keepalive_time_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", int(s.keepalive_timeout_seconds * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", int(s.min_client_ping_interval_seconds * 1000)),
            ("grpc.so_reuseport", 0),
        ]

    def _build(self) -> grpc.aio.Server:
        s = self.settings
        guard = CallGuard(
            self._authenticator(),
            default_deadline_seconds=s.default_deadline_seconds,
            max_concurrent_calls=s.max_concurrent_calls,
            slow_call_seconds=s.slow_call_seconds,
            log_every_call=s.log_every_call,
            tracing=self.resources.tracer_provider is not None,
        )
        server = grpc.aio.server(
            interceptors=server_interceptors(self.resources.tracer_provider), options=self._options()
        )
        for api in (*self.definition.apis, *runtime_apis(self.definition)):
            servicer = api.servicer(self.resources) if api.servicer is not None else None
            handlers = {
                method.name: guard.handler(
                    api.descriptor.full_name, method, getattr(servicer, method.name, None)
                )
                for method in api.descriptor.methods
            }
            server.add_registered_method_handlers(api.descriptor.full_name, handlers)
        for forward in self.definition.forwards:
            methods = forward.descriptor.methods_by_name
            handlers = {
                name: guard.forwarder(forward.descriptor.full_name, methods[name], behavior)
                for name, behavior in forward.methods(self.resources).items()
            }
            server.add_registered_method_handlers(forward.descriptor.full_name, handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                *self.definition.service_names,
                *(forward.descriptor.full_name for forward in self.definition.forwards),
                *(api.descriptor.full_name for api in runtime_apis(self.definition)),
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        return server

    async def _set_readiness(self, serving: bool) -> None:
        serving = serving and not self._draining
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.definition.service_names):
            await self.health.set(name, status)

    async def start(self) -> int:
        """Bind and start serving; readiness follows the database from here on."""
        await self._set_readiness(False)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.resources.database.open()
        self._server = self._build()
        self.port = self._server.add_insecure_port(f"{self.settings.grpc_host}:{self.settings.grpc_port}")
        self.resources.grpc_port = self.port
        await self._server.start()
        # Without tracing, background work runs untraced, whatever else this process instruments.
        quiet = self.resources.tracer_provider is None
        with untraced() if quiet else contextlib.nullcontext():
            self._tasks.append(asyncio.create_task(self._watch_readiness(), name="readiness"))
            for loop in self._background():
                self._tasks.append(asyncio.create_task(loop(self.resources, self._stopping)))
        log.info("listening", extra={"fields": {"port": self.port, "service": self.definition.name}})
        return self.port

    def _background(self) -> list[Callable[[Resources, asyncio.Event], Awaitable[None]]]:
        return [*runtime_loops(self.definition), *self.definition.background]

    async def _watch_readiness(self) -> None:
        """SERVING while PostgreSQL answers a ping; re-checked every readiness interval."""
        interval = self.settings.readiness_interval_seconds
        serving: bool | None = None
        while not self._stopping.is_set():
            try:
                await self.resources.database.ping(min(1.0, interval))
                answers = True
            except Exception as error:
                answers = False
                if serving is not False:
                    log.warning(
                        "database unreachable", extra={"fields": {"error_type": type(error).__name__}}
                    )
            if answers != serving:
                await self._set_readiness(answers)
                serving = answers
                if answers:
                    self._ready.set()
            await asyncio.sleep(interval if answers else min(interval, 0.2))

    async def wait_until_ready(self) -> None:
        await self._ready.wait()

    async def stop(self, grace: float | None = None, *, drain: float | None = None) -> None:
        """NOT_SERVING, then refuse new calls and let those in flight finish within the grace period."""
        # Not the health servicer's enter_graceful_shutdown(): that would fail liveness too.
        self._draining = True
        await self._set_readiness(False)
        await asyncio.sleep(self.settings.drain_delay_seconds if drain is None else drain)
        self._stopping.set()
        if self._server is not None:
            await self._server.stop(self.settings.grace_period_seconds if grace is None else grace)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a task that swallows its cancellation (CPython 3.11's wait_for, gh-86296)
            # must not keep the process from exiting.
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_BACKGROUND_SECONDS)
            for task in stuck:
                log.warning("background task did not stop", extra={"fields": {"task": task.get_name()}})
        try:
            async with asyncio.timeout(STOP_BACKGROUND_SECONDS):
                await self.resources.redis.aclose()
        except (TimeoutError, OSError):
            pass
        await self.resources.database.close(STOP_BACKGROUND_SECONDS)
        if self.resources.tracer_provider is not None:
            uninstrument()


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
