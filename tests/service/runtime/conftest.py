"""Fixtures for the runtime's own tests: the echo service (no database work) and the probe service
(a pool, transactions, an outbox), each started with the production call guard on port 0; and, for
the event, job and schedule tests, a scratch schema with the runtime's tables (as every service's
migrations create them) and a table the handlers under test write to."""

import asyncio
import contextlib
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from loyalty.testing.v1 import echo_pb2_grpc
from loyalty_runtime.cache import connect_redis
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.db import Database
from loyalty_runtime.migrations import sqlalchemy_url
from loyalty_runtime.tables import add_runtime_tables
from loyalty_runtime.testing import ECHO, running_service
from loyalty_runtime.uow import UnitsOfWork
from tests.service.runtime.probe_service import PROBE, create_schema


@pytest.fixture(scope="session")
async def probe_settings(database_url, redis_url):
    await create_schema(database_url)
    return PROBE.settings(database_url=database_url, redis_url=redis_url, grpc_host="127.0.0.1")


@pytest.fixture(scope="session")
async def probe(probe_settings):
    async with running_service(PROBE, probe_settings) as service:
        yield service


@pytest.fixture(scope="session")
def echo_settings(database_url, redis_url):
    return ECHO.settings(database_url=database_url, redis_url=redis_url, grpc_host="127.0.0.1")


@pytest.fixture(scope="session")
async def echo(echo_settings):
    async with running_service(ECHO, echo_settings) as service:
        yield service


@pytest.fixture
def echo_stub(echo):
    return echo_pb2_grpc.EchoServiceStub(echo.channel)


@pytest.fixture
def tenant(echo):
    return echo.metadata(f"t-{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def schema(database_url):
    """A fresh schema per test: the runtime tables and `effects`, one counter per (tenant, key)."""
    name = f"rt_{uuid.uuid4().hex[:10]}"
    metadata = MetaData(schema=name)
    add_runtime_tables(metadata)
    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(f"CREATE SCHEMA {name}")
            await connection.run_sync(metadata.create_all)
            await connection.exec_driver_sql(
                f"""CREATE TABLE {name}.effects (
                    tenant_id text, key text, count int NOT NULL, last int NOT NULL, principal text,
                    PRIMARY KEY (tenant_id, key))"""
            )
        yield name
        async with engine.begin() as connection:
            await connection.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
    finally:
        await engine.dispose()


@pytest.fixture
async def database(database_url):
    database = Database(database_url, pool_size=10)
    await database.open()
    yield database
    await database.close()


@pytest.fixture
async def redis(redis_url):
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def units(database, schema):
    return UnitsOfWork(database, schema)


@pytest.fixture
def stream():
    return f"test-{uuid.uuid4().hex[:8]}.events"


@contextlib.contextmanager
def as_tenant(tenant: str, principal: str = "test") -> Iterator[CallContext]:
    """Bind a caller for code that runs outside a gRPC call (the test itself)."""
    call = CallContext(tenant_id=tenant, principal=principal)
    token = bind_call(call)
    try:
        yield call
    finally:
        unbind_call(token)


class Effects:
    """What handlers and jobs under test do to the database: count one effect per (tenant, key), or
    apply the `seq`-th in order (raising if it is not the next, so out-of-order work fails loudly)."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

    async def count(self, uow, key: str) -> None:
        await uow.connection.execute(
            f"""INSERT INTO {self.schema}.effects (tenant_id, key, count, last, principal)
                VALUES ($1, $2, 1, 0, $3)
                ON CONFLICT (tenant_id, key) DO UPDATE SET count = effects.count + 1""",
            uow.tenant,
            key,
            uow.call.principal,
        )

    async def apply_in_order(self, uow, key: str, seq: int) -> None:
        applied = await uow.connection.fetchval(
            f"""INSERT INTO {self.schema}.effects AS e (tenant_id, key, count, last, principal)
                VALUES ($1, $2, 1, $3, $4)
                ON CONFLICT (tenant_id, key) DO UPDATE SET count = e.count + 1, last = $3
                WHERE e.last = $3 - 1
                RETURNING true""",
            uow.tenant,
            key,
            seq,
            uow.call.principal,
        )
        if not applied:
            raise AssertionError(f"{key}: {seq} arrived out of order")

    async def read(self, database) -> dict[tuple[str, str], tuple[int, int, str]]:
        async with database.connection() as connection:
            rows = await connection.fetch(
                f"SELECT tenant_id, key, count, last, principal FROM {self.schema}.effects"
            )
        return {(r["tenant_id"], r["key"]): (r["count"], r["last"], r["principal"]) for r in rows}


@pytest.fixture
def effects(schema):
    return Effects(schema)


async def eventually(condition, *, within: float = 15.0, every: float = 0.02) -> None:
    """Wait until `await condition()` holds: PostgreSQL and Redis notify nobody, so tests poll them."""
    async with asyncio.timeout(within):
        while True:
            if await condition():
                return
            await asyncio.sleep(every)
