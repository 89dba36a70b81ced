"""`make run`: PostgreSQL and Redis (found or started), migrations, all seven services on their
local ports, a demo tenant, and a clean stop on Ctrl-C that leaves no process behind."""

import asyncio
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loyalty_devstack.catalogue import SERVICES, ServiceEntry
from loyalty_devstack.infra import Infra, asyncpg_url, create_database, ensure_infra
from loyalty_devstack.seed import DEMO_TENANT, seed_demo
from loyalty_runtime.migrations import migrate

INTERNAL_TOKEN = "dev-internal-token"
DATABASE = "loyalty"
READY_TIMEOUT_SECONDS = 60


def service_environment(infra: Infra, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    for service in SERVICES:
        prefix = service.env_prefix
        env |= {
            f"{prefix}DATABASE_URL": database_url,
            f"{prefix}REDIS_URL": infra.redis_url,
            f"{prefix}GRPC_PORT": str(service.grpc_port),
            f"{prefix}METRICS_PORT": str(service.metrics_port),
            f"{prefix}INTERNAL_TOKEN": env.get("INTERNAL_TOKEN", INTERNAL_TOKEN),
        }
        for other in SERVICES:
            env.setdefault(f"{prefix}{other.name.upper()}_TARGET", f"dns:///127.0.0.1:{other.grpc_port}")
    return env


async def migrate_all(database_url: str) -> None:
    """In one process: each service's `migrate` command would pay the interpreter start-up again."""
    for service in SERVICES:
        definition = importlib.import_module(f"loyalty_{service.name}.service").DEFINITION
        if definition.migrations and definition.schema:
            await migrate(database_url, definition.migrations, definition.schema)


def start_all(env: dict[str, str], logs: Path) -> dict[str, subprocess.Popen]:
    logs.mkdir(parents=True, exist_ok=True)
    processes = {}
    for service in SERVICES:
        log_file = (logs / f"{service.name}.log").open("ab")
        processes[service.name] = subprocess.Popen(
            [sys.executable, "-m", f"loyalty_{service.name}", "serve"],
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


BANNER = """
all services SERVING  (logs: {logs})

  service        gRPC    metrics
{table}

Demo tenant "{tenant}"; internal calls carry the token "{token}". Try:

  grpcurl -plaintext localhost:50052 list
  grpcurl -plaintext -H 'authorization: Bearer {token}' -H 'x-loyalty-tenant: {tenant}' \\
    -d '{{"identifier": {{"type": "IDENTIFIER_TYPE_EMAIL", "value": "ada@example.com"}}}}' \\
    localhost:50052 loyalty.profile.v1.ProfileService/LookupCustomer
  grpcurl -plaintext -H 'authorization: Bearer {token}' -H 'x-loyalty-tenant: {tenant}' \\
    -d '{{"account_id": "{account}"}}' localhost:50055 loyalty.ledger.v1.LedgerService/GetAccount

Ctrl-C stops everything.
"""


def run(data_dir: Path) -> None:
    given_database = os.environ.get("DATABASE_URL")
    infra = ensure_infra(data_dir, redis_url=os.environ.get("REDIS_URL"))
    if given_database:
        database_url = asyncpg_url(given_database, given_database.rsplit("/", 1)[-1].split("?")[0])
    else:
        asyncio.run(create_database(infra, DATABASE, exist_ok=True))
        database_url = infra.database_url(DATABASE)
    env = service_environment(infra, database_url)
    token = env["PROFILE_INTERNAL_TOKEN"]
    logs = data_dir / "logs"
    processes: dict[str, subprocess.Popen] = {}
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await migrate_all(database_url)
        processes.update(start_all(env, logs))
        started = time.monotonic()
        await wait_until_serving(processes, logs)
        ports = {s.name: s.grpc_port for s in SERVICES}
        demo = await seed_demo(token, f"127.0.0.1:{ports['profile']}", f"127.0.0.1:{ports['ledger']}")
        table = "\n".join(f"  {s.name:<14} {s.grpc_port:<7} {s.metrics_port}" for s in SERVICES)
        print(
            BANNER.format(logs=logs, table=table, tenant=DEMO_TENANT, token=token, account=demo.account_id),
            flush=True,
        )
        print(f"(ready in {time.monotonic() - started:.1f}s)", flush=True)
        await stop.wait()

    try:
        asyncio.run(main())
    finally:
        print("stopping...", flush=True)
        stop_all(processes)
        infra.stop()
