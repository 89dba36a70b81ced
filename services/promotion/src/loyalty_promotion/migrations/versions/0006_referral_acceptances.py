"""referral acceptances: a new customer's enrolment with a referral code, for the programme's cap per
referrer and period and the conversion by the referee's first purchase

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 01:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "promotion"


def upgrade() -> None:
    op.create_table(
        "referral_acceptances",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("acceptance_id", sa.Uuid(), primary_key=True),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("voucher_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("referrer_customer_id", sa.String(64), nullable=False),
        sa.Column("referee_customer_id", sa.String(64), nullable=False),
        sa.Column("referee_grant_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=True),
        schema=SCHEMA,
    )
    op.create_index(
        "referral_acceptances_once",
        "referral_acceptances",
        ["tenant_id", "campaign_id", "referee_customer_id"],
        unique=True,
        schema=SCHEMA,
    )
    op.create_index(
        "referral_acceptances_of_referrer",
        "referral_acceptances",
        ["tenant_id", "voucher_id", "created_at"],
        schema=SCHEMA,
    )
    op.create_index(
        "referral_acceptances_open",
        "referral_acceptances",
        ["tenant_id", "referee_customer_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("converted_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("referral_acceptances", schema=SCHEMA)
