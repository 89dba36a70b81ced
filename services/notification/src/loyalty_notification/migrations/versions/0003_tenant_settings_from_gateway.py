"""the tenant's default locale, a copy of the gateway's tenant settings (tenant.settings_changed) and
the version it was copied from, so an older event never overwrites a newer one

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 01:45:00
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "notification"


def upgrade() -> None:
    op.execute(
        f"""CREATE TABLE {SCHEMA}.tenant_settings (
                tenant_id varchar(64) PRIMARY KEY,
                default_locale varchar(35) NOT NULL,
                gateway_version bigint NOT NULL,
                update_time timestamptz NOT NULL)"""
    )


def downgrade() -> None:
    op.execute(f"DROP TABLE {SCHEMA}.tenant_settings")
