"""categories bought per purchase, codes redeemed

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 18:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "segmentation"


def upgrade() -> None:
    op.create_table(
        "purchase_categories",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("purchase_key", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("purchased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "purchase_key", "category"),
        schema=SCHEMA,
    )
    op.create_index(
        "purchase_categories_by_customer",
        "purchase_categories",
        ["tenant_id", "customer_id", "purchased_at"],
        schema=SCHEMA,
    )
    op.create_table(
        "code_redemptions",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("redemption_id", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("checkout_id", sa.String(length=200), nullable=False),
        sa.Column("voucher_id", sa.String(length=200), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "redemption_id"),
        schema=SCHEMA,
    )
    op.create_index(
        "code_redemptions_by_customer",
        "code_redemptions",
        ["tenant_id", "customer_id", "redeemed_at"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index("code_redemptions_by_customer", table_name="code_redemptions", schema=SCHEMA)
    op.drop_table("code_redemptions", schema=SCHEMA)
    op.drop_index("purchase_categories_by_customer", table_name="purchase_categories", schema=SCHEMA)
    op.drop_table("purchase_categories", schema=SCHEMA)
