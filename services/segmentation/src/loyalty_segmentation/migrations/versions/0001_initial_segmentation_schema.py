"""segments, memberships, customers, purchases, returns, runtime tables

Revision ID: 0001
Revises:
Create Date: 2026-12-02 13:05:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from loyalty_runtime.tables import create_runtime_tables_v1, drop_runtime_tables_v1

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "segmentation"


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("segment_id", sa.Uuid(), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("rule", sa.LargeBinary(), nullable=True),
        sa.Column("labels", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("member_count", sa.BigInteger(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("type IN ('rule', 'static')", name="segments_type"),
        sa.CheckConstraint("(type = 'rule') = (rule IS NOT NULL)", name="segments_rule"),
        sa.PrimaryKeyConstraint("tenant_id", "segment_id"),
        schema=SCHEMA,
    )
    op.create_index(
        "segments_live_names",
        "segments",
        ["tenant_id", "display_name"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "segment_members",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("segment_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "segment_id", "customer_id"),
        schema=SCHEMA,
    )
    op.create_index(
        "segment_members_by_customer", "segment_members", ["tenant_id", "customer_id"], schema=SCHEMA
    )
    op.create_table(
        "customers",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "customer_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "purchases",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("purchase_key", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("purchased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("net_total", sa.BigInteger(), nullable=False),
        sa.Column("currency_code", sa.String(length=3), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "purchase_key"),
        schema=SCHEMA,
    )
    op.create_index(
        "purchases_by_customer", "purchases", ["tenant_id", "customer_id", "purchased_at"], schema=SCHEMA
    )
    op.create_table(
        "returns",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("return_key", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("checkout_id", sa.String(length=200), nullable=False),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refunded_total", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "return_key"),
        schema=SCHEMA,
    )
    op.create_index(
        "returns_by_customer", "returns", ["tenant_id", "customer_id", "returned_at"], schema=SCHEMA
    )
    create_runtime_tables_v1(op, SCHEMA)


def downgrade() -> None:
    drop_runtime_tables_v1(op, SCHEMA)
    for table in ("returns", "purchases", "customers", "segment_members", "segments"):
        op.drop_table(table, schema=SCHEMA)
