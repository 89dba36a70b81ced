"""append-only journal, the runtime's tables, checkouts

- The runtime's tables (loyalty_runtime.tables) replace the old ones. Idempotency keys keep their
  stored answers (the fingerprint becomes the raw SHA-256 digest it was the hex of), so a retry of a
  call made before the upgrade still replays its answer. The outbox's payloads become the protobuf
  events of protos/loyalty/ledger/v1/events.proto: unpublished rows are converted, not dropped.
- Journal entries become append-only: `reversed_amount`, the one column that changed, goes. What an
  entry has had reversed is the sum of its reversals' amounts; old reversal entries carried 0 there,
  so they get recovered + unrecovered (their positive postings plus unrecovered_amount), checked
  against the column before it is dropped. Triggers (loyalty_runtime.append_only) refuse UPDATE,
  DELETE and TRUNCATE on entries, postings and the checkout tables.
- Holds get a creation order (reversals void the newest first) and may end VOIDED.
- Checkouts, their lines and their returns (SettleCheckout, ReturnCheckoutLines).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00.000000
"""

import json

import sqlalchemy as sa
from alembic import op
from google.protobuf import json_format
from sqlalchemy.dialects import postgresql

from loyalty.common.v1 import options_pb2
from loyalty.ledger.v1 import events_pb2
from loyalty_runtime import append_only
from loyalty_runtime.tables import create_runtime_tables_v1, drop_runtime_tables_v1

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "ledger"
APPEND_ONLY = ("journal_entries", "postings", "checkouts", "checkout_lines", "checkout_returns")
# The runtime's tables 0002 did not have (idempotency_keys and outbox are converted in place).
NEW_RUNTIME_TABLES = ("processed_events", "jobs", "schedules")


def upgrade() -> None:
    _journal_append_only_columns()
    op.add_column(
        "holds", sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False), schema=SCHEMA
    )
    _idempotency_keys()
    _outbox()
    _runtime_tables()
    _checkouts()
    append_only.create_function(op, SCHEMA)
    for table in APPEND_ONLY:
        append_only.protect(op, SCHEMA, table)


def _journal_append_only_columns() -> None:
    op.execute("""
        UPDATE ledger.journal_entries AS r
        SET amount = r.unrecovered_amount + coalesce(
            (SELECT sum(p.amount) FROM ledger.postings p WHERE p.entry_id = r.entry_id AND p.amount > 0), 0)
        WHERE r.reversed_entry_id IS NOT NULL""")
    drift = (
        op.get_bind()
        .execute(
            sa.text("""
        SELECT count(*) FROM ledger.journal_entries e
        WHERE e.reversed_amount <> coalesce(
            (SELECT sum(r.amount) FROM ledger.journal_entries r WHERE r.reversed_entry_id = e.entry_id), 0)""")
        )
        .scalar_one()
    )
    if drift:
        raise RuntimeError(f"{drift} entries' reversed_amount disagrees with their reversals; not migrating")
    op.drop_constraint("entries_reversal_bounded", "journal_entries", schema=SCHEMA)
    op.drop_column("journal_entries", "reversed_amount", schema=SCHEMA)
    op.create_index(
        "journal_entries_reversals",
        "journal_entries",
        ["reversed_entry_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("reversed_entry_id IS NOT NULL"),
    )


def _idempotency_keys() -> None:
    op.alter_column(
        "idempotency_keys",
        "fingerprint",
        type_=sa.LargeBinary(),
        postgresql_using="decode(fingerprint, 'hex')",
        schema=SCHEMA,
    )
    op.add_column("idempotency_keys", sa.Column("subject", sa.String(length=64)), schema=SCHEMA)
    op.add_column("idempotency_keys", sa.Column("erased_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.create_index(
        "idempotency_keys_subject",
        "idempotency_keys",
        ["tenant_id", "subject"],
        schema=SCHEMA,
        postgresql_where=sa.text("subject IS NOT NULL"),
    )
    op.create_index("idempotency_keys_created", "idempotency_keys", ["created_at"], schema=SCHEMA)


def _event_types() -> dict[str, type]:
    return {
        descriptor.GetOptions().Extensions[options_pb2.event_type]: getattr(events_pb2, name)
        for name, descriptor in events_pb2.DESCRIPTOR.message_types_by_name.items()
    }


def _outbox() -> None:
    op.rename_table("outbox", "outbox_0002", schema=SCHEMA)
    op.execute("ALTER INDEX ledger.ix_ledger_outbox_published_at RENAME TO outbox_0002_published_at")
    op.execute("ALTER INDEX ledger.outbox_pkey RENAME TO outbox_0002_pkey")
    op.execute("ALTER SEQUENCE ledger.outbox_id_seq RENAME TO outbox_0002_id_seq")
    create_runtime_tables_v1(op, SCHEMA, tables=("outbox",))
    bind = op.get_bind()
    messages = _event_types()
    rows = bind.execute(
        sa.text("""
        SELECT tenant_id, event_type, key, payload, trace_context, created_at FROM ledger.outbox_0002
        WHERE published_at IS NULL ORDER BY id""")
    ).all()
    insert = sa.text("""
        INSERT INTO ledger.outbox (tenant_id, event_type, key, payload, trace_parent, created_at)
        VALUES (:tenant_id, :event_type, :key, :payload, :trace_parent, :created_at)""")
    for row in rows:
        payload = row.payload if isinstance(row.payload, dict) else json.loads(row.payload)
        event = json_format.ParseDict(payload, messages[row.event_type](), ignore_unknown_fields=True)
        context = (
            row.trace_context
            if isinstance(row.trace_context, dict)
            else json.loads(row.trace_context or "{}")
        )
        bind.execute(
            insert,
            {
                "tenant_id": row.tenant_id,
                "event_type": row.event_type,
                "key": row.key,
                "payload": event.SerializeToString(),
                "trace_parent": (context or {}).get("traceparent"),
                "created_at": row.created_at,
            },
        )
    op.drop_table("outbox_0002", schema=SCHEMA)


def _runtime_tables() -> None:
    create_runtime_tables_v1(op, SCHEMA, tables=NEW_RUNTIME_TABLES)


def _checkouts() -> None:
    op.create_table(
        "checkouts",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("checkout_id", sa.String(length=200), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("program_id", sa.String(length=36), nullable=False),
        sa.Column("earn_entry_id", sa.String(length=36), nullable=True),
        sa.Column("burn_entry_id", sa.String(length=36), nullable=True),
        sa.Column("hold_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["ledger.accounts.account_id"]),
        sa.ForeignKeyConstraint(["burn_entry_id"], ["ledger.journal_entries.entry_id"]),
        sa.ForeignKeyConstraint(["earn_entry_id"], ["ledger.journal_entries.entry_id"]),
        sa.ForeignKeyConstraint(["program_id"], ["ledger.programs.program_id"]),
        sa.PrimaryKeyConstraint("tenant_id", "checkout_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "checkout_lines",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("checkout_id", sa.String(length=200), nullable=False),
        sa.Column("line_id", sa.String(length=100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("earn_points", sa.BigInteger(), nullable=False),
        sa.Column("burn_points", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "quantity > 0 AND earn_points >= 0 AND burn_points >= 0", name="checkout_lines_positive"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "checkout_id"], ["ledger.checkouts.tenant_id", "ledger.checkouts.checkout_id"]
        ),
        sa.PrimaryKeyConstraint("tenant_id", "checkout_id", "line_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "checkout_returns",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("checkout_id", sa.String(length=200), nullable=False),
        sa.Column("line_id", sa.String(length=100), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("earn_reversed", sa.BigInteger(), nullable=False),
        sa.Column("burn_restored", sa.BigInteger(), nullable=False),
        sa.Column("earn_reversal_entry_id", sa.String(length=36), nullable=True),
        sa.Column("burn_reversal_entry_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "quantity > 0 AND earn_reversed >= 0 AND burn_restored >= 0", name="checkout_returns_positive"
        ),
        sa.ForeignKeyConstraint(["burn_reversal_entry_id"], ["ledger.journal_entries.entry_id"]),
        sa.ForeignKeyConstraint(["earn_reversal_entry_id"], ["ledger.journal_entries.entry_id"]),
        sa.ForeignKeyConstraint(
            ["tenant_id", "checkout_id", "line_id"],
            [
                "ledger.checkout_lines.tenant_id",
                "ledger.checkout_lines.checkout_id",
                "ledger.checkout_lines.line_id",
            ],
        ),
        sa.PrimaryKeyConstraint("id"),
        schema=SCHEMA,
    )
    op.create_index(
        "checkout_returns_line", "checkout_returns", ["tenant_id", "checkout_id", "line_id"], schema=SCHEMA
    )


def downgrade() -> None:
    """Back to 0002's shape. Unpublished events in the new outbox are dropped (0002's relay cannot
    read them); stored answers keep working. Data 0002 cannot represent stops the downgrade: merge
    entries and checkouts. Voided holds become EXPIRED (ended, not captured, as 0002 knows it)."""
    bind = op.get_bind()
    merges = bind.execute(
        sa.text("SELECT count(*) FROM ledger.journal_entries WHERE entry_type = 'MERGE'")
    ).scalar_one()
    checkouts = bind.execute(sa.text("SELECT count(*) FROM ledger.checkouts")).scalar_one()
    if merges or checkouts:
        raise RuntimeError(
            f"{merges} merge entries and {checkouts} checkouts cannot be represented before 0003"
        )
    for table in APPEND_ONLY:
        append_only.unprotect(op, SCHEMA, table)
    append_only.drop_function(op, SCHEMA)
    for table in ("checkout_returns", "checkout_lines", "checkouts"):
        op.drop_table(table, schema=SCHEMA)
    drop_runtime_tables_v1(op, SCHEMA, tables=NEW_RUNTIME_TABLES)
    op.drop_table("outbox", schema=SCHEMA)
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("trace_context", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        schema=SCHEMA,
    )
    op.create_index(op.f("ix_ledger_outbox_published_at"), "outbox", ["published_at"], schema=SCHEMA)
    op.drop_index("idempotency_keys_created", table_name="idempotency_keys", schema=SCHEMA)
    op.drop_index("idempotency_keys_subject", table_name="idempotency_keys", schema=SCHEMA)
    op.drop_column("idempotency_keys", "erased_at", schema=SCHEMA)
    op.drop_column("idempotency_keys", "subject", schema=SCHEMA)
    op.alter_column(
        "idempotency_keys",
        "fingerprint",
        type_=sa.String(length=64),
        postgresql_using="encode(fingerprint, 'hex')",
        schema=SCHEMA,
    )
    op.execute("UPDATE ledger.holds SET state = 'EXPIRED' WHERE state = 'VOIDED'")
    op.drop_column("holds", "seq", schema=SCHEMA)
    op.drop_index("journal_entries_reversals", table_name="journal_entries", schema=SCHEMA)
    op.add_column(
        "journal_entries",
        sa.Column("reversed_amount", sa.BigInteger(), nullable=False, server_default="0"),
        schema=SCHEMA,
    )
    op.execute("""
        UPDATE ledger.journal_entries e SET reversed_amount = s.total
        FROM (SELECT reversed_entry_id, sum(amount) AS total FROM ledger.journal_entries
              WHERE reversed_entry_id IS NOT NULL GROUP BY reversed_entry_id) s
        WHERE e.entry_id = s.reversed_entry_id""")
    op.alter_column("journal_entries", "reversed_amount", server_default=None, schema=SCHEMA)
    op.create_check_constraint(
        "entries_reversal_bounded",
        "journal_entries",
        "reversed_amount >= 0 AND reversed_amount <= amount",
        schema=SCHEMA,
    )
