"""code brute-force lockouts the gateway reports (code_attempts.locked), for reviewers; review cases'
assignee

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 01:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "fraud"


def upgrade() -> None:
    op.add_column(
        "review_cases",
        sa.Column("assignee", sa.String(200), server_default="", nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "code_lockouts",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(16), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("locked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("code_lockouts_newest", "code_lockouts", ["tenant_id", "seq"], schema=SCHEMA)
    op.create_index(
        "code_lockouts_by_value", "code_lockouts", ["tenant_id", "key", "value", "seq"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("code_lockouts", schema=SCHEMA)
    op.drop_column("review_cases", "assignee", schema=SCHEMA)
