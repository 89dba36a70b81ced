"""profile attributes per customer, attribute types, activities, RFM scores, profile backfills,
background recompute progress

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 16:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "segmentation"


def upgrade() -> None:
    op.add_column("customers", sa.Column("birth_date", sa.Date(), nullable=True), schema=SCHEMA)
    op.add_column("customers", sa.Column("locale", sa.String(length=35), nullable=True), schema=SCHEMA)
    op.add_column(
        "customers", sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True), schema=SCHEMA
    )
    for column in ("attributes", "consents"):
        op.add_column(
            "customers",
            sa.Column(
                column,
                postgresql.JSONB(astext_type=sa.Text()),
                server_default=sa.text("'{}'::jsonb"),
                nullable=False,
            ),
            schema=SCHEMA,
        )
    op.create_table(
        "attribute_types",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.CheckConstraint(
            "type IN ('string', 'int', 'decimal', 'bool', 'date', 'enum')", name="attribute_types_type"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "name"),
        schema=SCHEMA,
    )
    op.create_table(
        "activities",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("activity_key", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("activity_type", sa.String(length=100), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "activity_key"),
        schema=SCHEMA,
    )
    op.create_index(
        "activities_by_customer",
        "activities",
        ["tenant_id", "customer_id", "activity_type", "occurred_at"],
        schema=SCHEMA,
    )
    op.create_table(
        "rfm_scores",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("recency_score", sa.SmallInteger(), nullable=False),
        sa.Column("frequency_score", sa.SmallInteger(), nullable=False),
        sa.Column("monetary_score", sa.SmallInteger(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "recency_score BETWEEN 1 AND 5 AND frequency_score BETWEEN 1 AND 5 AND monetary_score BETWEEN 1 AND 5",
            name="rfm_scores_range",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "customer_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "profile_backfills",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("copied", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id"),
        schema=SCHEMA,
    )
    op.add_column(
        "segments",
        sa.Column("rule_version", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        schema=SCHEMA,
    )
    op.add_column(
        "segments",
        sa.Column("computing", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        schema=SCHEMA,
    )
    for column in ("recompute_done", "recompute_total"):
        op.add_column(
            "segments",
            sa.Column(column, sa.BigInteger(), server_default=sa.text("0"), nullable=False),
            schema=SCHEMA,
        )


def downgrade() -> None:
    for column in ("recompute_total", "recompute_done", "computing", "rule_version"):
        op.drop_column("segments", column, schema=SCHEMA)
    for table in ("profile_backfills", "rfm_scores", "activities", "attribute_types"):
        op.drop_table(table, schema=SCHEMA)
    for column in ("consents", "attributes", "enrolled_at", "locale", "birth_date"):
        op.drop_column("customers", column, schema=SCHEMA)
