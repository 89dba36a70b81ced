"""the version of the gateway's tenant settings a tenant's time zone was last copied from
(tenant.settings_changed): an older event never overwrites a newer one

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 01:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "promotion"


def upgrade() -> None:
    op.add_column(
        "tenant_settings",
        sa.Column("gateway_version", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("tenant_settings", "gateway_version", schema=SCHEMA)
