"""an index of committed checkouts by commit time, for SimulateCampaign's sample baskets

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 18:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "promotion"


def upgrade() -> None:
    op.create_index(
        "reservations_committed",
        "reservations",
        ["tenant_id", "commit_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("state = 'committed'"),
    )


def downgrade() -> None:
    op.drop_index("reservations_committed", table_name="reservations", schema=SCHEMA)
