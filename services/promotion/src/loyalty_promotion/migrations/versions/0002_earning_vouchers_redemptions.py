"""earning rules, burn policies, vouchers, budget usage, customer usage, reservations, redemptions

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 16:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "promotion"
RESERVATION_STATES = "('reserved', 'committed', 'rolled_back', 'expired')"
REDEMPTION_STATES = "('reserved', 'committed', 'rolled_back', 'expired', 'reversed')"


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)


def _counter(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)


def _campaign_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id", "campaign_id"],
        [f"{SCHEMA}.campaigns.tenant_id", f"{SCHEMA}.campaigns.campaign_id"],
        ondelete="CASCADE",
        name=f"{table}_campaign",
    )


def upgrade() -> None:
    op.create_table(
        "earning_rules",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("earning_rule_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _now("created_at"),
        sa.CheckConstraint("version > 0", name="earning_rules_version"),
        sa.PrimaryKeyConstraint("tenant_id", "earning_rule_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "burn_policies",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("program_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("version > 0", name="burn_policies_version"),
        sa.PrimaryKeyConstraint("tenant_id", "program_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "vouchers",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("voucher_id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("unique_code", sa.Boolean(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("max_redemptions", sa.BigInteger(), nullable=False),
        sa.Column("max_per_customer", sa.BigInteger(), nullable=False),
        sa.Column("holder_customer_id", sa.String(64), nullable=True),
        sa.Column("referrer_customer_id", sa.String(64), nullable=True),
        _counter("redemption_count"),
        _counter("reserved_count"),
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        sa.Column("metadata", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        _now("created_at"),
        _now("updated_at"),
        sa.CheckConstraint(
            "redemption_count >= 0 AND reserved_count >= 0 AND (max_redemptions = 0 OR "
            "redemption_count + reserved_count <= max_redemptions)",
            name="vouchers_uses",
        ),
        _campaign_fk("vouchers"),
        sa.PrimaryKeyConstraint("tenant_id", "voucher_id"),
        schema=SCHEMA,
    )
    op.create_index("vouchers_by_code", "vouchers", ["tenant_id", "code"], unique=True, schema=SCHEMA)
    op.create_index(
        "vouchers_by_campaign", "vouchers", ["tenant_id", "campaign_id", "voucher_id"], schema=SCHEMA
    )
    op.create_index(
        "vouchers_by_holder",
        "vouchers",
        ["tenant_id", "holder_customer_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("holder_customer_id IS NOT NULL"),
    )
    op.create_index(
        "vouchers_by_referrer",
        "vouchers",
        ["tenant_id", "campaign_id", "referrer_customer_id"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("referrer_customer_id IS NOT NULL"),
    )
    op.create_table(
        "referral_conversions",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("conversion_id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("voucher_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("referrer_customer_id", sa.String(64), nullable=False),
        sa.Column("referee_customer_id", sa.String(64), nullable=False),
        sa.Column("checkout_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("confirm_at", sa.DateTime(timezone=True), nullable=False),
        _now("created_at"),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'confirmed', 'cancelled')", name="referral_conversions_state"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "conversion_id"),
        schema=SCHEMA,
    )
    op.create_index(
        "referral_conversions_by_checkout",
        "referral_conversions",
        ["tenant_id", "checkout_id", "voucher_id"],
        unique=True,
        schema=SCHEMA,
    )
    op.create_index(
        "referral_conversions_due",
        "referral_conversions",
        ["confirm_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "voucher_batches",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _now("created_at"),
        _campaign_fk("voucher_batches"),
        sa.PrimaryKeyConstraint("tenant_id", "batch_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "campaign_usage",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        _counter("redemptions_reserved"),
        _counter("redemptions_committed"),
        _counter("discount_reserved"),
        _counter("discount_committed"),
        _counter("points_reserved"),
        _counter("points_committed"),
        sa.CheckConstraint(
            "redemptions_reserved >= 0 AND redemptions_committed >= 0 AND discount_reserved >= 0 "
            "AND discount_committed >= 0 AND points_reserved >= 0 AND points_committed >= 0",
            name="campaign_usage_counts",
        ),
        _campaign_fk("campaign_usage"),
        sa.PrimaryKeyConstraint("tenant_id", "campaign_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "customer_usage",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(120), nullable=False),
        sa.Column("uses", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("uses >= 0", name="customer_usage_uses"),
        sa.PrimaryKeyConstraint("tenant_id", "customer_id", "scope"),
        schema=SCHEMA,
    )
    op.create_table(
        "reservations",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("checkout_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("result", sa.LargeBinary(), nullable=False),
        sa.Column("basket", sa.LargeBinary(), nullable=False),
        sa.Column("expire_at", sa.DateTime(timezone=True), nullable=False),
        _now("created_at"),
        sa.Column("commit_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rollback_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"state IN {RESERVATION_STATES}", name="reservations_state"),
        sa.PrimaryKeyConstraint("tenant_id", "checkout_id"),
        schema=SCHEMA,
    )
    op.create_index(
        "reservations_expiring",
        "reservations",
        ["expire_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("state = 'reserved'"),
    )
    op.create_table(
        "redemptions",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("redemption_id", sa.Uuid(), nullable=False),
        sa.Column("checkout_id", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("promotion_id", sa.Uuid(), nullable=False),
        sa.Column("voucher_id", sa.Uuid(), nullable=True),
        sa.Column("code", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("discount", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        _counter("discount_reversed"),
        _counter("points_reversed"),
        sa.Column("scopes", postgresql.ARRAY(sa.String(120)), nullable=False),
        sa.Column("first", sa.Boolean(), nullable=False),
        sa.Column("budgeted", sa.Boolean(), nullable=False),
        _now("created_at"),
        _now("updated_at"),
        sa.CheckConstraint(f"state IN {REDEMPTION_STATES}", name="redemptions_state"),
        sa.CheckConstraint("discount >= 0 AND points >= 0", name="redemptions_amounts"),
        sa.PrimaryKeyConstraint("tenant_id", "redemption_id"),
        schema=SCHEMA,
    )
    op.create_index("redemptions_by_checkout", "redemptions", ["tenant_id", "checkout_id"], schema=SCHEMA)
    op.create_index(
        "redemptions_newest", "redemptions", ["tenant_id", "created_at", "redemption_id"], schema=SCHEMA
    )
    op.create_table(
        "reversals",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("checkout_id", sa.String(128), nullable=False),
        sa.Column("return_id", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _now("created_at"),
        sa.PrimaryKeyConstraint("tenant_id", "checkout_id", "return_id"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in (
        "referral_conversions",
        "reversals",
        "redemptions",
        "reservations",
        "customer_usage",
        "campaign_usage",
        "voucher_batches",
        "vouchers",
        "burn_policies",
        "earning_rules",
    ):
        op.drop_table(table, schema=SCHEMA)
