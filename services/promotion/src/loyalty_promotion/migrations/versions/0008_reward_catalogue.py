"""the reward catalogue (rewards customers buy with points) and its redemptions

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 01:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "promotion"


def _at(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=None if nullable else sa.text("now()"),
    )


def upgrade() -> None:
    op.create_table(
        "catalogue_rewards",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("reward_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.String(36), nullable=False),
        sa.Column("points_cost", sa.BigInteger(), nullable=False),
        sa.Column("stock", sa.BigInteger(), nullable=True),
        sa.Column("redeemed_count", sa.BigInteger(), nullable=False),
        _at("start_time", nullable=True),
        _at("end_time", nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _at("deleted_at", nullable=True),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "reward_id"),
        sa.CheckConstraint("points_cost > 0", name="catalogue_rewards_cost"),
        sa.CheckConstraint(
            "redeemed_count >= 0 AND (stock IS NULL OR redeemed_count <= stock)",
            name="catalogue_rewards_stock",
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "catalogue_redemptions",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("redemption_id", sa.Uuid(), nullable=False),
        sa.Column("reward_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "redemption_id"),
        sa.CheckConstraint(
            "state IN ('reserved', 'issued', 'cancelled')", name="catalogue_redemptions_state"
        ),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("catalogue_redemptions", schema=SCHEMA)
    op.drop_table("catalogue_rewards", schema=SCHEMA)
