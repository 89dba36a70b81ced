"""Alembic migrations, one chain per service in the service's own schema and version table.

A service's `migrations/env.py` is two lines: it calls `run_alembic_env(context, metadata)`.
`migrate()` is what `<service> migrate` and the Helm migration Job run.
"""

import zlib

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import create_async_engine


def _config(connection, script_location: str, schema: str) -> Config:
    # Two replicas migrating at once wait for each other instead of racing on the same DDL.
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(schema.encode())})
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


def _upgrade(connection, script_location: str, schema: str) -> None:
    command.upgrade(_config(connection, script_location, schema), "head")


def _autogenerate(connection, script_location: str, schema: str, message: str) -> None:
    config = _config(connection, script_location, schema)
    command.upgrade(config, "head")
    command.revision(config, message=message, autogenerate=True)


def sqlalchemy_url(url: str) -> str:
    """Settings hold plain `postgresql://` URLs; SQLAlchemy wants its asyncpg dialect named."""
    scheme, _, rest = url.partition("://")
    return f"postgresql+asyncpg://{rest}" if scheme in ("postgresql", "postgres") else url


async def _run(database_url: str, step, *args) -> None:
    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(step, *args)
    finally:
        await engine.dispose()


async def migrate(database_url: str, script_location: str, schema: str) -> None:
    await _run(database_url, _upgrade, script_location, schema)


async def autogenerate_revision(database_url: str, script_location: str, schema: str, message: str) -> None:
    """Write a new revision with what the models have and the migrations do not (for developers;
    point it at a scratch database: it applies the existing revisions first)."""
    await _run(database_url, _autogenerate, script_location, schema, message)


def run_alembic_env(context, target_metadata: MetaData) -> None:
    """Body of every service's env.py: migrate on the connection `migrate()` hands over."""
    schema = context.config.attributes["schema"]
    context.configure(
        connection=context.config.attributes["connection"],
        target_metadata=target_metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=lambda name, kind, _parent: kind != "schema" or name == schema,
    )
    with context.begin_transaction():
        context.run_migrations()
