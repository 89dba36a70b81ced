"""`loyalty-profile migrate` brings a fresh database and one at the old head (0001) to the head, the
models describe exactly what the migrations create, and 0002 goes down and up again."""

import asyncio
import os
import sys
import uuid
from contextlib import asynccontextmanager

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from loyalty.profile.v1 import profile_service_pb2 as api, profile_service_pb2_grpc
from loyalty_devstack.infra import create_database, drop_database
from loyalty_profile.models import Base
from loyalty_profile.service import DEFINITION, ProfileSettings
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.migrations import sqlalchemy_url
from loyalty_runtime.testing import model_differences, running_service
from tests.service.profile.conftest import card, key

HEAD = "0003"


@asynccontextmanager
async def scratch_database(infra):
    name = f"loyalty_profile_migration_{uuid.uuid4().hex[:8]}"
    await create_database(infra, name)
    try:
        yield infra.database_url(name)
    finally:
        await drop_database(infra, name)


def _alembic(connection, step, revision: str) -> None:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{DEFINITION.schema}"'))
    config = Config()
    config.set_main_option("script_location", DEFINITION.migrations)
    config.attributes["connection"] = connection
    config.attributes["schema"] = DEFINITION.schema
    step(config, revision)


async def alembic(url: str, step, revision: str) -> None:
    """Run one Alembic command (upgrade or downgrade to `revision`) the way `migrate` runs them."""
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_alembic, step, revision)
    finally:
        await engine.dispose()


async def migrate_with_the_cli(url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loyalty_profile",
        "migrate",
        env={**os.environ, "PROFILE_DATABASE_URL": url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()


async def version(connection) -> str:
    return await connection.fetchval("SELECT version_num FROM profile.alembic_version")


async def column_types(connection, table: str) -> dict[str, str]:
    rows = await connection.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'profile' AND table_name = $1",
        table,
    )
    return {row["column_name"]: row["data_type"] for row in rows}


async def test_migrate_creates_the_schema_in_a_fresh_database(infra):
    async with scratch_database(infra) as url:
        await migrate_with_the_cli(url)
        await migrate_with_the_cli(url)  # and again: nothing to do
        connection = await asyncpg.connect(asyncpg_dsn(url))
        try:
            assert await version(connection) == HEAD
            tables = {
                row["table_name"]
                for row in await connection.fetch(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'profile'"
                )
            }
            assert tables == {
                "alembic_version",
                "customers",
                "identifiers",
                "consents",
                "attribute_definitions",
                "idempotency_keys",
                "outbox",
                "processed_events",
                "jobs",
                "schedules",
            }
        finally:
            await connection.close()


async def insert_old_rows(connection) -> dict[str, str]:
    """Rows as the service wrote them at 0001: a customer, a duplicate merged into it that kept
    its personal data, an unrelayed JSON event and a stored answer."""
    survivor, duplicate = str(uuid.uuid4()), str(uuid.uuid4())
    await connection.execute(
        """INSERT INTO profile.customers
               (id, tenant_id, given_name, family_name, birth_date, locale, attributes, status, merged_into)
           VALUES ($1, 'old', 'Anna', 'Alt', '1980-01-01', 'de-AT', '{}', 'active', NULL),
                  ($2, 'old', 'Ann', 'Duplikat', '1980-01-01', 'de-DE',
                   '{"nick": {"t": "string", "v": "annie"}}', 'merged', $1)""",
        survivor,
        duplicate,
    )
    await connection.execute(
        """INSERT INTO profile.identifiers VALUES ('old', 'email', '', 'anna@old.example', $1),
                                                  ('old', 'loyalty_card', '', 'OLDCARD1', $1)""",
        survivor,
    )
    await connection.execute(
        "INSERT INTO profile.consents VALUES ('old', $1, 'email', 'marketing', true, 'app', now())", survivor
    )
    await connection.execute(
        """INSERT INTO profile.outbox (tenant_id, event_type, key, payload, trace_context)
           VALUES ('old', 'customer.created', $1, '{"customer_id": "x"}', '{}')""",
        survivor,
    )
    await connection.execute(
        """INSERT INTO profile.idempotency_keys (tenant_id, key, method, fingerprint, response)
           VALUES ('old', 'k1', 'EnrolCustomer', 'abc', 'anna@old.example'::bytea)"""
    )
    return {"survivor": survivor, "duplicate": duplicate}


async def test_migrate_upgrades_a_database_at_the_old_head_and_the_service_runs_on_it(infra, redis_url):
    async with scratch_database(infra) as url:
        await alembic(url, command.upgrade, "0001")
        connection = await asyncpg.connect(asyncpg_dsn(url))
        try:
            ids = await insert_old_rows(connection)
            await migrate_with_the_cli(url)
            assert await version(connection) == HEAD
            survivor = await connection.fetchrow(
                "SELECT given_name, locale, status FROM profile.customers WHERE id = $1", ids["survivor"]
            )
            assert tuple(survivor) == ("Anna", "de-AT", "active")
            duplicate = await connection.fetchrow(
                "SELECT given_name, family_name, birth_date, locale, attributes::text, status"
                " FROM profile.customers WHERE id = $1",
                ids["duplicate"],
            )
            assert tuple(duplicate) == ("", "", None, "", "{}", "merged")
            assert await connection.fetchval("SELECT count(*) FROM profile.identifiers") == 2
            assert (await column_types(connection, "outbox"))["payload"] == "bytea"
            assert "subject" in await column_types(connection, "idempotency_keys")
            assert await connection.fetchval("SELECT count(*) FROM profile.idempotency_keys") == 0
        finally:
            await connection.close()

        settings = ProfileSettings(database_url=url, redis_url=redis_url, grpc_port=0, grpc_host="127.0.0.1")
        async with running_service(DEFINITION, settings) as service:
            stub = profile_service_pb2_grpc.ProfileServiceStub(service.channel)
            old = service.metadata("old")
            got = await stub.GetCustomer(api.GetCustomerRequest(customer_id=ids["duplicate"]), metadata=old)
            assert (got.customer.customer_id, got.customer.given_name) == (ids["survivor"], "Anna")
            assert [i.value for i in got.customer.identifiers] == ["anna@old.example", "OLDCARD1"]
            enrolled = await stub.EnrolCustomer(
                api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[card()]), metadata=old
            )
            assert enrolled.customer.customer_id


async def test_0002_goes_down_to_0001_and_up_again(infra):
    async with scratch_database(infra) as url:
        await alembic(url, command.upgrade, "head")
        await alembic(url, command.downgrade, "0001")
        connection = await asyncpg.connect(asyncpg_dsn(url))
        try:
            assert await version(connection) == "0001"
            assert (await column_types(connection, "outbox"))["payload"] == "jsonb"
            await alembic(url, command.upgrade, "head")
            assert await version(connection) == HEAD
        finally:
            await connection.close()


async def test_the_models_describe_exactly_what_the_migrations_create(profile_settings):
    assert await model_differences(profile_settings.database_url, DEFINITION.schema, Base.metadata) == []
