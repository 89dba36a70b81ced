"""an index of committed redemptions by customer and code, for triggers' "code not redeemed" conditions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "promotion"


def upgrade() -> None:
    op.create_index(
        "redemptions_committed_by_customer",
        "redemptions",
        ["tenant_id", "customer_id", "code"],
        schema=SCHEMA,
        postgresql_where=sa.text("state = 'committed' AND customer_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("redemptions_committed_by_customer", table_name="redemptions", schema=SCHEMA)
