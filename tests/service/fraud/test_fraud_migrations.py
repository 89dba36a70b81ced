"""The fraud schema's migration: a fresh database reaches the models exactly (Alembic finds no
difference), the review audit is append-only, and the downgrade leaves nothing behind."""

import uuid

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import create_async_engine

from loyalty_devstack.infra import create_database, drop_database
from loyalty_fraud.models import SCHEMA, Base
from loyalty_fraud.service import DEFINITION
from loyalty_runtime import append_only
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.migrations import migrate, sqlalchemy_url
from loyalty_runtime.testing import model_differences


@pytest.fixture
async def scratch(infra):
    name = f"fraud_migrate_{uuid.uuid4().hex[:8]}"
    await create_database(infra, name)
    yield infra.database_url(name)
    await drop_database(infra, name)


def _downgrade(connection) -> None:
    config = Config()
    config.set_main_option("script_location", DEFINITION.migrations)
    config.attributes["connection"] = connection
    config.attributes["schema"] = SCHEMA
    command.downgrade(config, "base")


async def _sync(database_url: str, step):
    engine = create_async_engine(sqlalchemy_url(asyncpg_dsn(database_url)))
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(step)
    finally:
        await engine.dispose()


async def test_the_migration_reaches_the_models_and_goes_back(scratch):
    await migrate(scratch, DEFINITION.migrations, DEFINITION.schema)
    assert await model_differences(scratch, SCHEMA, Base.metadata) == []
    connection = await asyncpg.connect(asyncpg_dsn(scratch))
    try:
        protected = [row["relname"] for row in await connection.fetch(append_only.PROTECTED_TABLES, SCHEMA)]
        assert protected == ["review_case_audit"]
        await _sync(scratch, _downgrade)
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename <> 'alembic_version'", SCHEMA
        )
        assert tables == []
    finally:
        await connection.close()
