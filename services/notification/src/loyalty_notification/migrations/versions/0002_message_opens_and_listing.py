"""messages: when first opened; an index for listing newest first; JSON documents, not strings

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 17:00:00

ListMessages pages newest first by (create_time, message_id) within a tenant; its filters narrow
that walk (a customer's messages have their own index from 0001).

Templates' variants and policies' caps were written as JSON text that the connection's jsonb codec
encoded once more, so each was stored as a jsonb string holding the document; they become the
document itself (arrays SQL can look into), which the service now writes.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "notification"
DOCUMENTS = (("templates", "variants"), ("cap_policies", "caps"))


def upgrade() -> None:
    op.execute(f"ALTER TABLE {SCHEMA}.messages ADD COLUMN opened_time timestamptz")
    op.execute(
        f"CREATE INDEX messages_newest ON {SCHEMA}.messages (tenant_id, create_time DESC, message_id DESC)"
    )
    for table, column in DOCUMENTS:
        op.execute(
            f"UPDATE {SCHEMA}.{table} SET {column} = ({column} #>> '{{}}')::jsonb"
            f" WHERE jsonb_typeof({column}) = 'string'"
        )


def downgrade() -> None:
    for table, column in DOCUMENTS:
        op.execute(f"UPDATE {SCHEMA}.{table} SET {column} = to_jsonb({column} #>> '{{}}')")
    op.execute(f"DROP INDEX {SCHEMA}.messages_newest")
    op.execute(f"ALTER TABLE {SCHEMA}.messages DROP COLUMN opened_time")
