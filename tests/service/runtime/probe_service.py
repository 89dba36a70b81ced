"""A service with a database and an outbox but no domain, to try the runtime's edges with: the Echo
RPC reads through the pool, Wait holds a connection (`pg_sleep`), waits for a row lock, records an
event and commits. Run alone (`python -m tests.service.runtime.probe_service`) it serves like any
service, from PROBE_* settings; `create_schema` makes its tables."""

import uuid

import asyncpg
from pydantic_settings import SettingsConfigDict

from loyalty.profile.v1 import events_pb2
from loyalty.testing.v1 import echo_pb2
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.errors import FailedPrecondition, Reason
from loyalty_runtime.server import Api, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings
from loyalty_runtime.uow import UnitsOfWork

SCHEMA = "probe"


class ProbeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROBE_")


class ProbeServicer:
    def __init__(self, units: UnitsOfWork, schema: str) -> None:
        self.units = units
        self.schema = schema

    async def Echo(self, request: echo_pb2.EchoRequest, context) -> echo_pb2.EchoResponse:
        async with self.units.read() as uow:
            return echo_pb2.EchoResponse(text=await uow.connection.fetchval("SELECT $1::text", request.text))

    async def Wait(self, request: echo_pb2.WaitRequest, context) -> echo_pb2.WaitResponse:
        async with self.units.change() as uow:
            if request.sleep_ms:
                await uow.connection.execute("SELECT pg_sleep($1)", request.sleep_ms / 1000)
            await uow.connection.execute(f"SELECT id FROM {self.schema}.rows WHERE id = 1 FOR UPDATE")
            if request.fail_reason:
                raise FailedPrecondition(Reason[request.fail_reason], "failed as asked")
            customer_id = str(uuid.uuid4())
            uow.record(events_pb2.CustomerCreated(customer_id=customer_id), key=customer_id)
        return echo_pb2.WaitResponse(slept_ms=request.sleep_ms)


def probe_definition(schema: str = SCHEMA) -> ServiceDefinition:
    """The probe on `schema` (and its own stream): a test that must see every event it causes runs
    one apart from the session's shared probe, whose relay would otherwise publish some of them."""
    echo = echo_pb2.DESCRIPTOR.services_by_name["EchoService"]
    return ServiceDefinition(
        name="probe",
        settings=ProbeSettings,
        apis=[Api(echo, lambda resources: ProbeServicer(resources.units, schema))],
        schema=schema,
        events=f"{schema}.events",
    )


PROBE = probe_definition()


async def create_schema(database_url: str, schema: str = SCHEMA) -> None:
    """The runtime's tables and one row to lock (SQLAlchemy, as a service's migrations would)."""
    from sqlalchemy import Column, Integer, MetaData, Table
    from sqlalchemy.ext.asyncio import create_async_engine

    from loyalty_runtime.migrations import sqlalchemy_url
    from loyalty_runtime.tables import add_runtime_tables

    metadata = MetaData(schema=schema)
    add_runtime_tables(metadata)
    Table("rows", metadata, Column("id", Integer, primary_key=True))
    engine = create_async_engine(sqlalchemy_url(database_url))
    async with engine.begin() as connection:
        await connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await connection.run_sync(metadata.create_all)
        await connection.exec_driver_sql(f"INSERT INTO {schema}.rows (id) VALUES (1) ON CONFLICT DO NOTHING")
    await engine.dispose()


async def lock_the_row(database_url: str) -> asyncpg.Connection:
    """A connection holding the row every Wait call needs, until it rolls back."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    await connection.execute("BEGIN")
    await connection.execute(f"SELECT id FROM {SCHEMA}.rows WHERE id = 1 FOR UPDATE")
    return connection


if __name__ == "__main__":
    from loyalty_runtime.cli import run_service_cli

    run_service_cli(PROBE)
