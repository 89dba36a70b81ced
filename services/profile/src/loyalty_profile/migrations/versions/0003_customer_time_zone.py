"""customers: an IANA time zone each

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 17:00:00

Existing customers get '' (unknown: the tenant's default zone applies wherever local time matters,
such as notification's quiet hours). Adding a column with a constant default rewrites no rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "profile"


def upgrade() -> None:
    op.add_column(
        "customers",
        sa.Column("time_zone", sa.String(length=64), server_default="", nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("customers", "time_zone", schema=SCHEMA)
