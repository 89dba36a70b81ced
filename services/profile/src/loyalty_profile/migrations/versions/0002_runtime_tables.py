"""runtime tables, enum checks, merged profiles without personal data

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 07:00:00

The runtime's tables replace the old ones: a protobuf outbox, idempotency answers erasable with
their customer, consumed events, jobs and schedules. The old outbox (JSON payloads) and idempotency
keys (answers that could not be erased with their customer) are dropped, not converted: a retry of
a request answered before the upgrade runs again (its effects were committed, so it meets its own
data: IDENTIFIER_TAKEN, CUSTOMER_MERGED, ...), and events not yet relayed are lost, so drain the
outbox (stop the old service once its relay has published everything) before upgrading.

The runtime tables are spelled out here rather than created from `loyalty_runtime.tables`, so this
revision keeps meaning what it meant when the runtime's tables change (a later revision follows).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "profile"

CHECKS = {
    "customers": {
        "customers_status": "status IN ('active', 'merged', 'erased')",
        "customers_merged_into": "(status = 'merged') = (merged_into IS NOT NULL)",
    },
    "identifiers": {"identifiers_type": "type IN ('loyalty_card', 'phone', 'email', 'external')"},
    "consents": {
        "consents_channel": "channel IN ('email', 'sms', 'push', 'messenger')",
        "consents_purpose": "purpose IN ('marketing', 'transactional')",
    },
    "attribute_definitions": {
        "attribute_definitions_type": "type IN ('string', 'int', 'decimal', 'bool', 'date', 'enum')"
    },
}


def _now() -> sa.TextClause:
    return sa.text("now()")


def _create_runtime_tables() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("method", sa.String(length=100), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "key"),
        schema=SCHEMA,
    )
    op.create_index(
        "idempotency_keys_subject",
        "idempotency_keys",
        ["tenant_id", "subject"],
        schema=SCHEMA,
        postgresql_where=sa.text("subject IS NOT NULL"),
    )
    op.create_index("idempotency_keys_created", "idempotency_keys", ["created_at"], schema=SCHEMA)
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("trace_parent", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        schema=SCHEMA,
    )
    op.create_index(
        "outbox_unpublished",
        "outbox",
        ["id"],
        schema=SCHEMA,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_index(
        "outbox_published",
        "outbox",
        ["published_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("published_at IS NOT NULL"),
    )
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
        schema=SCHEMA,
    )
    op.create_index("processed_events_age", "processed_events", ["processed_at"], schema=SCHEMA)
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=10), server_default="queued", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        schema=SCHEMA,
    )
    op.create_index(
        "jobs_due", "jobs", ["run_at"], schema=SCHEMA, postgresql_where=sa.text("state = 'queued'")
    )
    op.create_index(
        "jobs_dedupe",
        "jobs",
        ["tenant_id", "name", "dedupe_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("dedupe_key IS NOT NULL"),
    )
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
        schema=SCHEMA,
    )


def upgrade() -> None:
    op.drop_index("ix_profile_outbox_published_at", table_name="outbox", schema=SCHEMA)
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("idempotency_keys", schema=SCHEMA)
    op.execute(f"DROP TABLE IF EXISTS {SCHEMA}.processed_events")
    _create_runtime_tables()
    # A merged profile's data moved to its survivor; the copy left behind goes (as merges do now).
    op.execute(
        f"""UPDATE {SCHEMA}.customers
            SET given_name = '', family_name = '', birth_date = NULL, locale = '', attributes = '{{}}'
            WHERE status = 'merged'"""
    )
    for table, checks in CHECKS.items():
        for name, condition in checks.items():
            op.create_check_constraint(name, table, condition, schema=SCHEMA)
    # Redundant: customers_tenant_names leads with tenant_id.
    op.drop_index("ix_profile_customers_tenant_id", table_name="customers", schema=SCHEMA)
    op.create_index(
        "customers_merged",
        "customers",
        ["tenant_id", "merged_into"],
        schema=SCHEMA,
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )


def downgrade() -> None:
    """Back to 0001's shape. Stored answers, unrelayed events and merged profiles' wiped data do
    not come back."""
    op.drop_index("customers_merged", table_name="customers", schema=SCHEMA)
    op.create_index("ix_profile_customers_tenant_id", "customers", ["tenant_id"], schema=SCHEMA)
    for table, checks in CHECKS.items():
        for name in checks:
            op.drop_constraint(name, table, type_="check", schema=SCHEMA)
    for table in ("schedules", "jobs", "processed_events", "outbox", "idempotency_keys"):
        op.drop_table(table, schema=SCHEMA)
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("method", sa.String(length=100), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "key"),
        schema=SCHEMA,
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("trace_context", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        schema=SCHEMA,
    )
    op.create_index("ix_profile_outbox_published_at", "outbox", ["published_at"], schema=SCHEMA)
