"""campaigns, promotions, tenant settings, catalog versions, campaign statistics, runtime tables

Revision ID: 0001
Revises:
Create Date: 2026-12-02 12:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from loyalty_runtime.tables import create_runtime_tables_v1, drop_runtime_tables_v1

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "promotion"
STATES = "('draft', 'scheduled', 'active', 'paused', 'ended', 'archived')"


def _created() -> sa.Column:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    create_runtime_tables_v1(op, SCHEMA)
    op.create_table(
        "campaigns",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _created(),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(f"state IN {STATES}", name="campaigns_state"),
        sa.CheckConstraint("version > 0", name="campaigns_version"),
        sa.PrimaryKeyConstraint("tenant_id", "campaign_id"),
        schema=SCHEMA,
    )
    op.create_index(
        "campaigns_by_priority", "campaigns", ["tenant_id", "priority", "campaign_id"], schema=SCHEMA
    )
    op.create_table(
        "promotions",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("promotion_id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _created(),
        sa.CheckConstraint("version > 0", name="promotions_version"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "campaign_id"],
            [f"{SCHEMA}.campaigns.tenant_id", f"{SCHEMA}.campaigns.campaign_id"],
            ondelete="CASCADE",
            name="promotions_campaign",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "promotion_id"),
        schema=SCHEMA,
    )
    op.create_index(
        "promotions_by_campaign",
        "promotions",
        ["tenant_id", "campaign_id", "priority", "promotion_id"],
        schema=SCHEMA,
    )
    op.create_table(
        "catalog_versions",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "tenant_settings",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("version > 0", name="tenant_settings_version"),
        sa.PrimaryKeyConstraint("tenant_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "campaign_statistics",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("promotion_id", sa.String(36), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("evaluations", sa.BigInteger(), nullable=False),
        sa.Column("discount", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "campaign_id", "promotion_id", "currency", "day"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("campaign_statistics", schema=SCHEMA)
    op.drop_table("tenant_settings", schema=SCHEMA)
    op.drop_table("catalog_versions", schema=SCHEMA)
    op.drop_index("promotions_by_campaign", table_name="promotions", schema=SCHEMA)
    op.drop_table("promotions", schema=SCHEMA)
    op.drop_index("campaigns_by_priority", table_name="campaigns", schema=SCHEMA)
    op.drop_table("campaigns", schema=SCHEMA)
    drop_runtime_tables_v1(op, SCHEMA)
