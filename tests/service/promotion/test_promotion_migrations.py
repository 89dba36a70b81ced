"""The promotion schema the migrations build is exactly the one the models describe (so a model
change without its numbered migration fails here), on the session's migrated database."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from loyalty_promotion.models import Base
from loyalty_promotion.repository import SCHEMA
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.migrations import sqlalchemy_url


def _differences(connection) -> list:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "version_table_schema": SCHEMA,
            "include_name": lambda name, kind, _parent: kind != "schema" or name == SCHEMA,
        },
    )
    return compare_metadata(context, Base.metadata)


async def test_the_migrated_schema_matches_the_models(promotion_settings):
    engine = create_async_engine(sqlalchemy_url(asyncpg_dsn(promotion_settings.database_url)))
    try:
        async with engine.begin() as connection:
            assert await connection.run_sync(_differences) == []
    finally:
        await engine.dispose()
