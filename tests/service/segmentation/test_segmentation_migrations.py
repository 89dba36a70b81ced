"""The models describe exactly what the migrations create."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from loyalty_runtime.migrations import sqlalchemy_url
from loyalty_segmentation.models import Base
from loyalty_segmentation.service import DEFINITION


def _differences(connection) -> list:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "version_table_schema": DEFINITION.schema,
            "include_name": lambda name, kind, _parent: kind != "schema" or name == DEFINITION.schema,
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    return compare_metadata(context, Base.metadata)


async def test_the_models_describe_exactly_what_the_migrations_create(segmentation_settings):
    engine = create_async_engine(sqlalchemy_url(segmentation_settings.database_url))
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()
    assert differences == []
