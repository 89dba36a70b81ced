"""a version on each tenant's settings: tenant.settings_changed carries it, so the services that keep
a copy keep the newest

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 01:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.add_column(
        "tenant_settings",
        sa.Column("version", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("tenant_settings", "version", schema=SCHEMA)
