"""messages: when first opened; an index for listing newest first

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 17:00:00

ListMessages pages newest first by (create_time, message_id) within a tenant; its filters narrow
that walk (a customer's messages have their own index from 0001).
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "notification"


def upgrade() -> None:
    op.execute(f"ALTER TABLE {SCHEMA}.messages ADD COLUMN opened_time timestamptz")
    op.execute(
        f"CREATE INDEX messages_newest ON {SCHEMA}.messages (tenant_id, create_time DESC, message_id DESC)"
    )


def downgrade() -> None:
    op.execute(f"DROP INDEX {SCHEMA}.messages_newest")
    op.execute(f"ALTER TABLE {SCHEMA}.messages DROP COLUMN opened_time")
