"""redemptions.basket_revenue: what the checkout paid, on each campaign's first row, for statistics

Existing rows get 0: their checkouts' totals were not kept (the reservation keeps the basket, not
the amount paid), so revenue counts from this revision on.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 18:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "promotion"


def upgrade() -> None:
    op.add_column(
        "redemptions",
        sa.Column("basket_revenue", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("redemptions", "basket_revenue", schema=SCHEMA)
