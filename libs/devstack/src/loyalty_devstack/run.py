"""`make run`: PostgreSQL and Redis (found or started), migrations, every service of the catalogue on
its local port, a demo tenant, and a clean stop on Ctrl-C that leaves no process behind.

As in production, two database roles: migrations run as the PostgreSQL owner (the local superuser,
or the user of a given DATABASE_URL) and grant the LOGIN role `loyalty_app` only what a running
service needs (append-only tables: INSERT and SELECT); the services connect as `loyalty_app`."""

import asyncio
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loyalty_devstack.infra import Infra, asyncpg_url, create_database, ensure_infra, plain_url, with_user
from loyalty_devstack.seed import DEMO_TENANT, seed_demo
from loyalty_runtime.catalogue import PORTS, SERVICES, ServiceEntry
from loyalty_runtime.migrations import migrate

INTERNAL_TOKEN = "dev-internal-token"
DATABASE = "loyalty"
# The services' role. Its password only matters where PostgreSQL asks for one (not with trust auth).
SERVICE_ROLE = "loyalty_app"
SERVICE_PASSWORD = "loyalty-app-dev"
READY_TIMEOUT_SECONDS = 60


def internal_token() -> str:
    return os.environ.get("INTERNAL_TOKEN", INTERNAL_TOKEN)


def service_environment(infra: Infra, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    token = internal_token()
    for service in SERVICES:
        prefix = service.env_prefix
        env |= {
            f"{prefix}DATABASE_URL": database_url,
            f"{prefix}REDIS_URL": infra.redis_url,
            f"{prefix}GRPC_PORT": str(service.grpc_port),
            f"{prefix}METRICS_PORT": str(service.metrics_port),
            f"{prefix}INTERNAL_TOKEN": token,
        }
        if service.http_port:
            env[f"{prefix}HTTP_PORT"] = str(service.http_port)
            # Links in what a service sends (notification's unsubscribe and tracking links) point
            # here, so a locally sent e-mail's links work; set it to reach them from elsewhere.
            env.setdefault(f"{prefix}HTTP_PUBLIC_URL", f"http://127.0.0.1:{service.http_port}")
        for other in SERVICES:
            env.setdefault(f"{prefix}{other.name.upper()}_TARGET", f"dns:///127.0.0.1:{other.grpc_port}")
    return env


async def service_login(owner_url: str, database: str) -> tuple[str, str]:
    """The URL the services connect with and its role: `loyalty_app` (created if missing), or the
    owner's own URL and no role when the owner may not create roles (the services get its rights)."""
    connection = await asyncpg.connect(plain_url(owner_url, database))
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", SERVICE_ROLE):
            await connection.execute(f"CREATE ROLE {SERVICE_ROLE} LOGIN PASSWORD '{SERVICE_PASSWORD}'")
        await connection.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {SERVICE_ROLE}')
    except asyncpg.InsufficientPrivilegeError:
        print(f"cannot create the role {SERVICE_ROLE} here: the services run as the owner", flush=True)
        return owner_url, ""
    finally:
        await connection.close()
    return with_user(owner_url, SERVICE_ROLE, SERVICE_PASSWORD), SERVICE_ROLE


async def migrate_all(owner_url: str, service_role: str) -> None:
    """In one process: each service's `migrate` command would pay the interpreter start-up again."""
    for service in SERVICES:
        definition = importlib.import_module(f"{service.package}.service").DEFINITION
        if definition.migrations and definition.schema:
            await migrate(owner_url, definition.migrations, definition.schema, service_role=service_role)


def start_all(env: dict[str, str], logs: Path) -> dict[str, subprocess.Popen]:
    logs.mkdir(parents=True, exist_ok=True)
    processes = {}
    for service in SERVICES:
        log_file = (logs / f"{service.name}.log").open("ab")
        processes[service.name] = subprocess.Popen(
            [sys.executable, "-m", service.package, "serve"],
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
    return processes


async def serving(service: ServiceEntry) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.aio.AioRpcError:
            return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING


async def wait_until_serving(processes: dict[str, subprocess.Popen], logs: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    waiting = list(SERVICES)
    while waiting:
        for service in list(waiting):
            if processes[service.name].poll() is not None:
                raise RuntimeError(f"{service.name} exited; see {logs / (service.name + '.log')}")
            if await serving(service):
                waiting.remove(service)
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"not SERVING after {READY_TIMEOUT_SECONDS}s: {[s.name for s in waiting]}")
        await asyncio.sleep(0.2)


def stop_all(processes: dict[str, subprocess.Popen], grace: float = 10.0) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))
        if process.poll() is None:
            process.kill()
            process.wait()


# The same commands as the README's "Try it by hand" (a bash array keeps each header one argument).
BANNER = """
all services SERVING  (logs: {logs})

  service        gRPC    metrics  HTTP
{table}

Demo tenant "{tenant}"; internal calls carry the token "{token}"; the services connect to
PostgreSQL as "{role}". Try (bash):

  grpcurl -plaintext localhost:{profile} list
  H=(-H 'authorization: Bearer {token}' -H 'x-loyalty-tenant: {tenant}')
  grpcurl -plaintext "${{H[@]}}" -d '{{"identifier": {{"type": "IDENTIFIER_TYPE_EMAIL", "value": "ada@example.com"}}}}' \\
    localhost:{profile} loyalty.profile.v1.ProfileService/LookupCustomer
  grpcurl -plaintext "${{H[@]}}" -d '{{"account_id": "{account}"}}' \\
    localhost:{ledger} loyalty.ledger.v1.LedgerService/GetAccount

Ctrl-C stops everything.
"""


def owner_database(infra: Infra) -> tuple[str, str]:
    """The database the services use and its owner's URL: DATABASE_URL's, or `loyalty` on `infra`."""
    given = os.environ.get("DATABASE_URL")
    if not given:
        asyncio.run(create_database(infra, DATABASE, exist_ok=True))
        return infra.database_url(DATABASE), DATABASE
    name = given.rsplit("/", 1)[-1].split("?")[0]
    return asyncpg_url(given, name), name


def run(data_dir: Path) -> None:
    infra = ensure_infra(data_dir, redis_url=os.environ.get("REDIS_URL"))
    owner_url, database = owner_database(infra)
    logs = data_dir / "logs"
    processes: dict[str, subprocess.Popen] = {}
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        service_url, role = await service_login(owner_url, database)
        await migrate_all(owner_url, role)
        env = service_environment(infra, service_url)
        processes.update(start_all(env, logs))
        started = time.monotonic()
        await wait_until_serving(processes, logs)
        token = internal_token()
        profile, ledger = PORTS["profile"].grpc_port, PORTS["ledger"].grpc_port
        demo = await seed_demo(token)
        table = "\n".join(
            f"  {s.name:<14} {s.grpc_port:<7} {s.metrics_port:<8} {s.http_port or ''}".rstrip()
            for s in SERVICES
        )
        banner = BANNER.format(
            logs=logs,
            table=table,
            tenant=DEMO_TENANT,
            token=token,
            role=role or "the owner",
            account=demo.account_id,
            profile=profile,
            ledger=ledger,
        )
        print(banner, flush=True)
        print(f"(ready in {time.monotonic() - started:.1f}s)", flush=True)
        await stop.wait()

    try:
        asyncio.run(main())
    finally:
        print("stopping...", flush=True)
        stop_all(processes)
        infra.stop()
