"""Append-only tables (journals, audit logs), enforced by the database, for Alembic revisions.

    from loyalty_runtime import append_only

    def upgrade() -> None:
        append_only.create_function(op, "ledger")
        append_only.protect(op, "ledger", "journal_entries")

A protected table refuses UPDATE and DELETE (a row trigger named `append_only`) and TRUNCATE (a
statement trigger named `append_only_truncate`; PostgreSQL wants trigger names unique per table),
whoever asks. The deployment's grants take the second step: the service's role gets only SELECT and
INSERT on every table carrying a trigger named `append_only` (`PROTECTED_TABLES` finds them), so even
a role that could drop a trigger is not the one the service runs as. Migrations run as the owner.

The refusal is SQLSTATE 42501 (insufficient_privilege), the error a missing grant gives, so a service
that tries is told the same thing whichever of the two stopped it; it is a bug, answered INTERNAL.
"""

FUNCTION = "refuse_change_to_append_only"
TRIGGER = "append_only"
TRUNCATE_TRIGGER = "append_only_truncate"

# The protected tables of a schema ($1), for the grants.
PROTECTED_TABLES = f"""
SELECT c.relname FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND t.tgname = '{TRIGGER}' AND NOT t.tgisinternal
ORDER BY c.relname"""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_function_sql(schema: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {_quote(schema)}.{FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    RAISE EXCEPTION '% on %.% refused: the table is append-only', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$body$"""


def protect_sql(schema: str, table: str) -> list[str]:
    target = f"{_quote(schema)}.{_quote(table)}"
    function = f"{_quote(schema)}.{FUNCTION}()"
    return [
        f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE OR DELETE ON {target} FOR EACH ROW EXECUTE FUNCTION {function}",
        f"CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {target} FOR EACH STATEMENT EXECUTE FUNCTION {function}",
    ]


def unprotect_sql(schema: str, table: str) -> list[str]:
    target = f"{_quote(schema)}.{_quote(table)}"
    return [f"DROP TRIGGER IF EXISTS {name} ON {target}" for name in (TRIGGER, TRUNCATE_TRIGGER)]


def create_function(op, schema: str) -> None:
    """The trigger function, once per schema (before the first `protect`)."""
    op.execute(create_function_sql(schema))


def drop_function(op, schema: str) -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {_quote(schema)}.{FUNCTION}()")


def protect(op, schema: str, table: str) -> None:
    """Make `schema.table` append-only."""
    for statement in protect_sql(schema, table):
        op.execute(statement)


def unprotect(op, schema: str, table: str) -> None:
    """For a revision's downgrade (or one that must rewrite the table, as the owner, knowingly)."""
    for statement in unprotect_sql(schema, table):
        op.execute(statement)
