"""Alembic migrations, one chain per service in the service's own schema and version table.

A service's `migrations/env.py` is two lines: it calls `run_alembic_env(context, metadata)`.
`migrate()` is what `<service> migrate` and the Helm migration Job run.

Least privilege: migrations run as the schema's owner. Given the role the service itself connects as
(`service_role`, or `<PREFIX>DATABASE_SERVICE_ROLE` in the environment of `<service> migrate`), the
same transaction then grants that role what a running service needs and nothing more: USAGE on the
schema and its sequences, SELECT/INSERT/UPDATE/DELETE on its tables, but only SELECT and INSERT on
append-only tables (those carrying a trigger named `append_only`: journals, postings, audit logs).
Not being the owner, the service can neither drop nor disable those triggers, alter a table, nor
TRUNCATE. Without a service role nothing is granted: one role does both jobs, as before.
"""

import os
import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import create_async_engine

from loyalty_runtime.catalogue import SERVICES

SERVICE_ROLE_VARIABLE = "DATABASE_SERVICE_ROLE"
APPEND_ONLY_TRIGGER = "append_only"
VERSION_TABLE = "alembic_version"

# Every table of the schema, and whether a trigger marks it append-only.
_TABLES = text(
    """
    SELECT c.relname AS name,
           EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = :trigger) AS append_only
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')
    ORDER BY c.relname
    """
)


def _config(connection, script_location: str, schema: str) -> Config:
    # Two replicas migrating at once wait for each other instead of racing on the same DDL.
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(schema.encode())})
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def grant_service_role(connection, schema: str, role: str) -> None:
    """Give `role` what a running service needs in `schema`, and take back anything more."""
    s, r = _quoted(schema), _quoted(role)
    connection.execute(text(f"GRANT USAGE ON SCHEMA {s} TO {r}"))
    for table in connection.execute(_TABLES, {"schema": schema, "trigger": APPEND_ONLY_TRIGGER}):
        if table.name == VERSION_TABLE:
            privileges = "SELECT"
        elif table.append_only:
            privileges = "SELECT, INSERT"
        else:
            privileges = "SELECT, INSERT, UPDATE, DELETE"
        # Revoked first: a table that became append-only keeps none of what it had before.
        qualified = f"{s}.{_quoted(table.name)}"
        connection.execute(text(f"REVOKE ALL ON TABLE {qualified} FROM {r}"))
        connection.execute(text(f"GRANT {privileges} ON TABLE {qualified} TO {r}"))
    connection.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {r}"))


def configured_service_role(script_location: str) -> str:
    """`<PREFIX>DATABASE_SERVICE_ROLE` of the catalogue's service owning these migrations, or ""."""
    package = script_location.partition(":")[0]
    entry = next((entry for entry in SERVICES if entry.package == package), None)
    return os.environ.get(f"{entry.env_prefix}{SERVICE_ROLE_VARIABLE}", "") if entry else ""


def _upgrade(connection, script_location: str, schema: str, service_role: str) -> None:
    command.upgrade(_config(connection, script_location, schema), "head")
    if service_role:
        grant_service_role(connection, schema, service_role)


def next_revision_id(config: Config) -> str:
    """Revisions are numbered 0001, 0002, ...: the next one after the highest so far."""
    numbers = [
        int(s.revision) for s in ScriptDirectory.from_config(config).walk_revisions() if s.revision.isdigit()
    ]
    return f"{max(numbers, default=0) + 1:04d}"


def _autogenerate(connection, script_location: str, schema: str, message: str) -> Path:
    config = _config(connection, script_location, schema)
    command.upgrade(config, "head")
    script = command.revision(config, message=message, autogenerate=True, rev_id=next_revision_id(config))
    return Path(script.path)


def sqlalchemy_url(url: str) -> str:
    """Settings hold plain `postgresql://` URLs; SQLAlchemy wants its asyncpg dialect named."""
    scheme, _, rest = url.partition("://")
    return f"postgresql+asyncpg://{rest}" if scheme in ("postgresql", "postgres") else url


async def _run(database_url: str, step, *args):
    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(step, *args)
    finally:
        await engine.dispose()


async def migrate(
    database_url: str, script_location: str, schema: str, *, service_role: str | None = None
) -> None:
    """Upgrade `schema` to head as the owner `database_url` connects as, then grant `service_role`
    (None: the service's `<PREFIX>DATABASE_SERVICE_ROLE`; "": grant nothing)."""
    role = configured_service_role(script_location) if service_role is None else service_role
    await _run(database_url, _upgrade, script_location, schema, role)


async def autogenerate_revision(database_url: str, script_location: str, schema: str, message: str) -> Path:
    """Write a new revision with what the models have and the migrations do not (for developers;
    point it at a scratch database: it applies the existing revisions first). Returns its path."""
    return await _run(database_url, _autogenerate, script_location, schema, message)


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
