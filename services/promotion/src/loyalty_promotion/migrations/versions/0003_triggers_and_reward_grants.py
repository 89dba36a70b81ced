"""triggers, their per-customer counts, reward grants

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 17:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "promotion"


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "triggers",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("trigger_id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _now("created_at"),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "trigger_id"),
        sa.CheckConstraint("state IN ('enabled', 'disabled')", name="triggers_state"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "campaign_id"],
            [f"{SCHEMA}.campaigns.tenant_id", f"{SCHEMA}.campaigns.campaign_id"],
            ondelete="CASCADE",
            name="triggers_campaign",
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "triggers_listening",
        "triggers",
        ["tenant_id", "event_type"],
        schema=SCHEMA,
        postgresql_where=sa.text("state = 'enabled'"),
    )
    op.create_table(
        "trigger_counts",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("trigger_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("matched", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "trigger_id", "customer_id", "period"),
        schema=SCHEMA,
    )
    op.create_table(
        "reward_grants",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("grant_id", sa.Uuid(), nullable=False),
        sa.Column("trigger_id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("source_event_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reward", sa.LargeBinary(), nullable=False),
        _now("created_at"),
        sa.PrimaryKeyConstraint("tenant_id", "grant_id"),
        sa.CheckConstraint(
            "state IN ('pending', 'granted', 'withheld', 'reversed')", name="reward_grants_state"
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "reward_grants_once",
        "reward_grants",
        ["tenant_id", "trigger_id", "source_event_id"],
        unique=True,
        schema=SCHEMA,
    )
    op.create_index(
        "reward_grants_of_customer",
        "reward_grants",
        ["tenant_id", "trigger_id", "customer_id", "created_at"],
        schema=SCHEMA,
    )
    op.create_index(
        "reward_grants_newest", "reward_grants", ["tenant_id", "created_at", "grant_id"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("reward_grants", schema=SCHEMA)
    op.drop_table("trigger_counts", schema=SCHEMA)
    op.drop_table("triggers", schema=SCHEMA)
