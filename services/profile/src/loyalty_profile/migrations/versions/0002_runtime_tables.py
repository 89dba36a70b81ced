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

The runtime tables come from the runtime's versioned step (`create_runtime_tables_v1`), which never
changes, so this revision keeps meaning what it meant when the runtime's tables change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from loyalty_runtime.tables import create_runtime_tables_v1, drop_runtime_tables_v1

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


def upgrade() -> None:
    op.drop_index("ix_profile_outbox_published_at", table_name="outbox", schema=SCHEMA)
    op.drop_table("outbox", schema=SCHEMA)
    op.drop_table("idempotency_keys", schema=SCHEMA)
    op.execute(f"DROP TABLE IF EXISTS {SCHEMA}.processed_events")
    create_runtime_tables_v1(op, SCHEMA)
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
    drop_runtime_tables_v1(op, SCHEMA)
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
