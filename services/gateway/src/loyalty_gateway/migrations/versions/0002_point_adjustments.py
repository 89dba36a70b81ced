"""manual point adjustments: the tenant's limits, each adjustment (its saga state and answer, by
idempotency key) and the points each admin user adjusted per day

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 01:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def upgrade() -> None:
    # 0: the default limits (domain/adjustments.py).
    for column in ("adjustment_limit_points", "daily_adjustment_limit_points"):
        op.add_column(
            "tenant_settings",
            sa.Column(column, sa.BigInteger(), nullable=False, server_default="0"),
            schema=SCHEMA,
        )
    op.create_table(
        "adjustments",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("idempotency_key", sa.String(200), primary_key=True),
        sa.Column("adjustment_id", sa.Uuid(), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("program_id", sa.String(36), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("answer", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount <> 0", name="adjustments_nonzero"),
        sa.CheckConstraint(
            "(state = 'pending' AND answer IS NULL) OR (state = 'posted' AND answer IS NOT NULL)",
            name="adjustments_state",
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "adjustment_days",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("principal", sa.String(200), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("adjusted_points", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("adjusted_points >= 0", name="adjustment_days_nonnegative"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("adjustment_days", schema=SCHEMA)
    op.drop_table("adjustments", schema=SCHEMA)
    for column in ("daily_adjustment_limit_points", "adjustment_limit_points"):
        op.drop_column("tenant_settings", column, schema=SCHEMA)
