"""achievement progress per customer, delayed trigger rewards, the customers' birthdays

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "promotion"


def _of_trigger(name: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id", "trigger_id"],
        [f"{SCHEMA}.triggers.tenant_id", f"{SCHEMA}.triggers.trigger_id"],
        ondelete="CASCADE",
        name=name,
    )


def upgrade() -> None:
    op.create_table(
        "achievement_contributions",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("trigger_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("source_event_id", sa.String(128), nullable=False),
        sa.Column("value", sa.String(128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refundable", sa.BigInteger(), nullable=False),
        sa.Column("refunded", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "trigger_id", "customer_id", "source_event_id", "value"),
        _of_trigger("achievement_contributions_trigger"),
        schema=SCHEMA,
    )
    op.create_index(
        "achievement_contributions_of_subject",
        "achievement_contributions",
        ["tenant_id", "customer_id", "subject"],
        schema=SCHEMA,
        postgresql_where=sa.text("subject <> ''"),
    )
    op.create_table(
        "achievements",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("trigger_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completing_event_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "trigger_id", "customer_id"),
        _of_trigger("achievements_trigger"),
        schema=SCHEMA,
    )
    op.create_index("achievements_of_customer", "achievements", ["tenant_id", "customer_id"], schema=SCHEMA)
    op.create_table(
        "delayed_rewards",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("trigger_id", sa.Uuid(), nullable=False),
        sa.Column("source_event_id", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancel_on_event_type", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "trigger_id", "source_event_id"),
        sa.CheckConstraint("state IN ('pending', 'done', 'cancelled')", name="delayed_rewards_state"),
        _of_trigger("delayed_rewards_trigger"),
        schema=SCHEMA,
    )
    op.create_index(
        "delayed_rewards_due",
        "delayed_rewards",
        ["due_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        "delayed_rewards_cancellable",
        "delayed_rewards",
        ["tenant_id", "customer_id", "cancel_on_event_type"],
        schema=SCHEMA,
        postgresql_where=sa.text("state = 'pending' AND cancel_on_event_type <> ''"),
    )
    op.create_table(
        "customer_birthdays",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("birth_month", sa.SmallInteger(), nullable=False),
        sa.Column("birth_day", sa.SmallInteger(), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("celebrated_year", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "customer_id"),
        sa.CheckConstraint(
            "birth_month BETWEEN 1 AND 12 AND birth_day BETWEEN 1 AND 31", name="customer_birthdays_date"
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "customer_birthdays_on", "customer_birthdays", ["birth_month", "birth_day"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("customer_birthdays", schema=SCHEMA)
    op.drop_table("delayed_rewards", schema=SCHEMA)
    op.drop_table("achievements", schema=SCHEMA)
    op.drop_table("achievement_contributions", schema=SCHEMA)
