"""per-store redemption limits: each campaign's uses per store, and the store of each redemption

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 01:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "promotion"


def upgrade() -> None:
    op.create_table(
        "store_usage",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("campaign_id", sa.Uuid(), primary_key=True),
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("uses", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("uses >= 0", name="store_usage_uses"),
        schema=SCHEMA,
    )
    op.add_column("redemptions", sa.Column("store_id", sa.String(64)), schema=SCHEMA)
    op.add_column(
        "redemptions",
        sa.Column("store_limited", sa.Boolean(), nullable=False, server_default=sa.false()),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("redemptions", "store_limited", schema=SCHEMA)
    op.drop_column("redemptions", "store_id", schema=SCHEMA)
    op.drop_table("store_usage", schema=SCHEMA)
