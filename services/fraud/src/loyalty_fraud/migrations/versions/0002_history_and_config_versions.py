"""the pattern rules' history (activity, earn statistics, customer fingerprints) and the rules cache's
configuration versions

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 17:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "fraud"
TABLES = ("customer_fingerprints", "earn_stats", "activity", "config_versions")


def upgrade() -> None:
    op.create_table(
        "config_versions",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "activity",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("fact", sa.String(16), nullable=False),
        sa.Column("subject_key", sa.String(200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("activity_customer", "activity", ["tenant_id", "customer_id", "at"], schema=SCHEMA)
    op.create_index("activity_fact_value", "activity", ["tenant_id", "fact", "value", "at"], schema=SCHEMA)
    op.create_table(
        "earn_stats",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("scope_id", sa.String(200), primary_key=True),
        sa.Column("earns", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "customer_fingerprints",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(200), primary_key=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "customer_fingerprints_value", "customer_fingerprints", ["tenant_id", "type", "value"], schema=SCHEMA
    )


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table, schema=SCHEMA)
