"""What the benchmarks under bench/ share: a server in a process of its own, configured like
production, whose CPU time can be read, so a benchmark reports server CPU per call (stable on a noisy
machine) rather than only throughput."""

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loyalty_devstack.infra import Infra, create_database, drop_database, free_port, plain_url

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/loyalty_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@asynccontextmanager
async def scratch_database() -> AsyncIterator[tuple[str, str]]:
    """A database of its own for one benchmark run, beside `$DATABASE_URL`'s, dropped at the end; yields
    its URL and `$REDIS_URL` (both default to localhost)."""
    base_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    infra = Infra(postgres_url=base_url, redis_url=redis_url)
    name = f"{base_url.rpartition('/')[2].split('?')[0]}_{uuid.uuid4().hex[:8]}"
    await create_database(infra, name)
    try:
        yield plain_url(base_url, name), redis_url
    finally:
        await drop_database(infra, name)


class ServerProcess:
    """A server child process: `command` with `env` added, answering health on `port`. Its output
    goes to a file, kept (and named) if it fails."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], port: int) -> None:
        self.name, self.port = name, port
        log, self.log = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
        self.process = subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=log)
        os.close(log)

    def cpu_seconds(self) -> float:
        """User + system CPU of the process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def channel(self) -> grpc.aio.Channel:
        """A channel to the server once its health check says SERVING."""
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return channel
            except grpc.aio.AioRpcError:
                pass
            if self.process.poll() is not None:
                break
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} never became ready; its log: {self.log}")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
            os.unlink(self.log)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            print(f"{self.name} ignored SIGTERM for 30 s and was killed; its log: {self.log}")


def service_process(
    service: str,
    database_url: str,
    redis_url: str,
    *,
    internal_token: str,
    migrate: bool = True,
    settings: dict[str, str] | None = None,
) -> ServerProcess:
    """`python -m loyalty_<service> serve` on a free port (after its `migrate`, unless told not to).
    `settings` are more of its settings, by name without the prefix (EXPIRY_INTERVAL_SECONDS)."""
    port = free_port()
    prefix = f"{service.upper()}_"
    env = {
        f"{prefix}DATABASE_URL": database_url,
        f"{prefix}REDIS_URL": redis_url,
        f"{prefix}GRPC_HOST": "127.0.0.1",
        f"{prefix}GRPC_PORT": str(port),
        f"{prefix}METRICS_PORT": "0",
        f"{prefix}INTERNAL_TOKEN": internal_token,
        **{prefix + name: value for name, value in (settings or {}).items()},
    }
    if migrate:
        done = subprocess.run(
            [sys.executable, "-m", f"loyalty_{service}", "migrate"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(f"migrating {service} failed:\n{done.stderr}")
    return ServerProcess(service, [sys.executable, "-m", f"loyalty_{service}", "serve"], env, port)
