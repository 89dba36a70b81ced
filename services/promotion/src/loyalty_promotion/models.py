"""The promotion service's tables (schema `promotion`) for Alembic: SQLAlchemy 2.0 typed rows. Nothing
reads them through the ORM; repository.py speaks SQL on asyncpg.

A campaign and a promotion are stored as their protobuf message (`payload`) plus the columns that
queries filter, sort or lock by (tenant, id, state, priority, version): the message is what the
engine compiles, and a new contract field needs no migration. `version` is the optimistic
concurrency token (the API's etag). `catalog_versions` holds one counter per tenant, bumped in the
transaction of every change the compiled catalog depends on; replicas compare it to what they
compiled. `campaign_statistics` holds what evaluations offered, per day, added to by each replica's
background flush (promotion_id '' = the campaign as a whole).
"""

from datetime import date, datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loyalty_promotion.repository import SCHEMA
from loyalty_runtime.tables import add_runtime_tables

Tenant = String(64)
RESERVATION_STATES = "('reserved', 'committed', 'rolled_back', 'expired')"
REDEMPTION_STATES = "('reserved', 'committed', 'rolled_back', 'expired', 'reversed')"
STATES = "('draft', 'scheduled', 'active', 'paused', 'ended', 'archived')"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


add_runtime_tables(Base.metadata)


class CampaignRow(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(f"state IN {STATES}", name="campaigns_state"),
        CheckConstraint("version > 0", name="campaigns_version"),
        Index("campaigns_by_priority", "tenant_id", "priority", "campaign_id"),
        Index(
            "campaigns_ending",
            "end_at",
            postgresql_where=text("ended_at IS NULL AND state IN ('scheduled', 'active')"),
        ),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The schedule's end (from the payload), and the end campaign.ended was published for.
    end_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PromotionRow(Base):
    __tablename__ = "promotions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "campaign_id"],
            [f"{SCHEMA}.campaigns.tenant_id", f"{SCHEMA}.campaigns.campaign_id"],
            ondelete="CASCADE",
            name="promotions_campaign",
        ),
        CheckConstraint("version > 0", name="promotions_version"),
        Index("promotions_by_campaign", "tenant_id", "campaign_id", "priority", "promotion_id"),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    promotion_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(Uuid)
    priority: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CatalogVersionRow(Base):
    __tablename__ = "catalog_versions"

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class TenantSettingsRow(Base):
    """A tenant's PromotionSettings message; no row = the documented defaults."""

    __tablename__ = "tenant_settings"
    __table_args__ = (CheckConstraint("version > 0", name="tenant_settings_version"),)

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    # The version of the gateway's tenant settings the time zone was copied from (0: never).
    gateway_version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class CampaignStatisticsRow(Base):
    __tablename__ = "campaign_statistics"

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    promotion_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    evaluations: Mapped[int] = mapped_column(BigInteger)
    discount: Mapped[int] = mapped_column(BigInteger)
    points: Mapped[int] = mapped_column(BigInteger)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


def _counter() -> Mapped[int]:
    return mapped_column(BigInteger, server_default=text("0"))


def _campaign_fk(table: str) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["tenant_id", "campaign_id"],
        [f"{SCHEMA}.campaigns.tenant_id", f"{SCHEMA}.campaigns.campaign_id"],
        ondelete="CASCADE",
        name=f"{table}_campaign",
    )


class EarningRuleRow(Base):
    """An EarningRule message; program_id and priority are columns for listing."""

    __tablename__ = "earning_rules"
    __table_args__ = (CheckConstraint("version > 0", name="earning_rules_version"),)

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    earning_rule_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()


class BurnPolicyRow(Base):
    """A programme's BurnPolicy message (one per programme)."""

    __tablename__ = "burn_policies"
    __table_args__ = (CheckConstraint("version > 0", name="burn_policies_version"),)

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    program_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class VoucherRow(Base):
    """A code (stored upper-case, trimmed) with its own counters: `redemption_count` committed,
    `reserved_count` held by checkouts; the CHECK backs the guarded UPDATE that takes a use."""

    __tablename__ = "vouchers"
    __table_args__ = (
        CheckConstraint(
            "redemption_count >= 0 AND reserved_count >= 0 AND (max_redemptions = 0 OR "
            "redemption_count + reserved_count <= max_redemptions)",
            name="vouchers_uses",
        ),
        _campaign_fk("vouchers"),
        Index("vouchers_by_code", "tenant_id", "code", unique=True),
        Index("vouchers_by_campaign", "tenant_id", "campaign_id", "voucher_id"),
        Index(
            "vouchers_by_referrer",
            "tenant_id",
            "campaign_id",
            "referrer_customer_id",
            unique=True,
            postgresql_where=text("referrer_customer_id IS NOT NULL"),
        ),
        Index(
            "vouchers_by_holder",
            "tenant_id",
            "holder_customer_id",
            postgresql_where=text("holder_customer_id IS NOT NULL"),
        ),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    voucher_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(Uuid)
    code: Mapped[str] = mapped_column(String(64))
    unique_code: Mapped[bool] = mapped_column(Boolean)
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    max_redemptions: Mapped[int] = mapped_column(BigInteger)
    max_per_customer: Mapped[int] = mapped_column(BigInteger)
    holder_customer_id: Mapped[str | None] = mapped_column(String(64))
    # Set on a referral code: the customer whose code it is (one per referrer and campaign).
    referrer_customer_id: Mapped[str | None] = mapped_column(String(64))
    redemption_count: Mapped[int] = _counter()
    reserved_count: Mapped[int] = _counter()
    batch_id: Mapped[str | None] = mapped_column(Uuid)
    metadata_: Mapped[dict] = mapped_column("metadata", JSONB, server_default=text("'{}'::jsonb"))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(BigInteger, server_default=text("1"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class VoucherBatchRow(Base):
    """A generation or import batch: its VoucherBatch message (progress)."""

    __tablename__ = "voucher_batches"
    __table_args__ = (_campaign_fk("voucher_batches"),)

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    batch_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(Uuid)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()


class CampaignUsageRow(Base):
    """What a campaign's budget has consumed, reserved and committed (guarded UPDATEs keep each
    sum within the campaign's Budget)."""

    __tablename__ = "campaign_usage"
    __table_args__ = (
        CheckConstraint(
            "redemptions_reserved >= 0 AND redemptions_committed >= 0 AND discount_reserved >= 0 "
            "AND discount_committed >= 0 AND points_reserved >= 0 AND points_committed >= 0",
            name="campaign_usage_counts",
        ),
        _campaign_fk("campaign_usage"),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    redemptions_reserved: Mapped[int] = _counter()
    redemptions_committed: Mapped[int] = _counter()
    discount_reserved: Mapped[int] = _counter()
    discount_committed: Mapped[int] = _counter()
    points_reserved: Mapped[int] = _counter()
    points_committed: Mapped[int] = _counter()


class CustomerUsageRow(Base):
    """A customer's uses (reserved + committed) within one limit's scope: a voucher, a campaign,
    a promotion, or a campaign in one period of the tenant's calendar."""

    __tablename__ = "customer_usage"
    __table_args__ = (CheckConstraint("uses >= 0", name="customer_usage_uses"),)

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(120), primary_key=True)
    uses: Mapped[int] = mapped_column(BigInteger)


class StoreUsageRow(Base):
    """A campaign's uses (reserved + committed) at one store, against Budget.max_redemptions_per_store."""

    __tablename__ = "store_usage"
    __table_args__ = (CheckConstraint("uses >= 0", name="store_usage_uses"),)

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    uses: Mapped[int] = mapped_column(BigInteger)


class ReservationRow(Base):
    """A checkout's reservation: its request fingerprint (a retry with another basket is refused)
    and the EvaluationResult that was reserved."""

    __tablename__ = "reservations"
    __table_args__ = (
        CheckConstraint(f"state IN {RESERVATION_STATES}", name="reservations_state"),
        Index("reservations_expiring", "expire_at", postgresql_where=text("state = 'reserved'")),
        # SimulateCampaign's sample of recent committed checkouts.
        Index(
            "reservations_committed", "tenant_id", "commit_at", postgresql_where=text("state = 'committed'")
        ),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    checkout_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[str | None] = mapped_column(String(64))
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    result: Mapped[bytes] = mapped_column(LargeBinary)
    # The Basket reserved (returns are computed against its lines).
    basket: Mapped[bytes] = mapped_column(LargeBinary)
    expire_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    commit_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rollback_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RedemptionRow(Base):
    """One applied promotion of one checkout. The `first` row of each campaign in a checkout holds
    the campaign's one redemption: its voucher's use, its `scopes` (customer_usage rows) and one
    redemption of the budget; every row of a `budgeted` campaign holds its discount and points in
    campaign_usage."""

    __tablename__ = "redemptions"
    __table_args__ = (
        CheckConstraint(f"state IN {REDEMPTION_STATES}", name="redemptions_state"),
        CheckConstraint("discount >= 0 AND points >= 0", name="redemptions_amounts"),
        Index("redemptions_by_checkout", "tenant_id", "checkout_id"),
        Index("redemptions_newest", "tenant_id", "created_at", "redemption_id"),
        Index("redemptions_by_campaign", "tenant_id", "campaign_id", "created_at"),
        # Triggers' "code not redeemed" conditions.
        Index(
            "redemptions_committed_by_customer",
            "tenant_id",
            "customer_id",
            "code",
            postgresql_where=text("state = 'committed' AND customer_id IS NOT NULL"),
        ),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    redemption_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    checkout_id: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[str | None] = mapped_column(String(64))
    campaign_id: Mapped[str] = mapped_column(Uuid)
    promotion_id: Mapped[str] = mapped_column(Uuid)
    voucher_id: Mapped[str | None] = mapped_column(Uuid)
    code: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    discount: Mapped[int] = mapped_column(BigInteger)
    points: Mapped[int] = mapped_column(BigInteger)
    # The checkout's total payable, on the campaign's first row of the checkout (0 on the others),
    # so the campaign's revenue is a sum without double counting.
    basket_revenue: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    discount_reversed: Mapped[int] = _counter()
    points_reversed: Mapped[int] = _counter()
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(120)))
    first: Mapped[bool] = mapped_column(Boolean)
    budgeted: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    # The basket's store; `store_limited` on the campaign's first row when it holds a use of the
    # campaign's per-store limit (store_usage).
    store_id: Mapped[str | None] = mapped_column(String(64))
    store_limited: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class ReversalRow(Base):
    """One processed return of a checkout (its RedemptionReversal), keyed by the till's return id."""

    __tablename__ = "reversals"

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    checkout_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    return_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()


class ReferralConversionRow(Base):
    """A referee's committed purchase with a referral code: pending until `confirm_at` (the
    programme's confirmation delay), then confirmed (published) or cancelled by a rollback."""

    __tablename__ = "referral_conversions"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'confirmed', 'cancelled')", name="referral_conversions_state"),
        Index("referral_conversions_by_checkout", "tenant_id", "checkout_id", "voucher_id", unique=True),
        Index("referral_conversions_due", "confirm_at", postgresql_where=text("state = 'pending'")),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    conversion_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(Uuid)
    voucher_id: Mapped[str] = mapped_column(Uuid)
    code: Mapped[str] = mapped_column(String(64))
    referrer_customer_id: Mapped[str] = mapped_column(String(64))
    referee_customer_id: Mapped[str] = mapped_column(String(64))
    checkout_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    confirm_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReferralAcceptanceRow(Base):
    """A new customer's enrolment with a referral code (AcceptReferral): once per referee and
    programme; `converted_at` is set by the referee's first purchase committed afterwards. The
    referrer's rows per period are what the programme's cap counts."""

    __tablename__ = "referral_acceptances"
    __table_args__ = (
        Index("referral_acceptances_once", "tenant_id", "campaign_id", "referee_customer_id", unique=True),
        Index("referral_acceptances_of_referrer", "tenant_id", "voucher_id", "created_at"),
        Index(
            "referral_acceptances_open",
            "tenant_id",
            "referee_customer_id",
            postgresql_where=text("converted_at IS NULL"),
        ),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    acceptance_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(Uuid)
    voucher_id: Mapped[str] = mapped_column(Uuid)
    code: Mapped[str] = mapped_column(String(64))
    referrer_customer_id: Mapped[str] = mapped_column(String(64))
    referee_customer_id: Mapped[str] = mapped_column(String(64))
    referee_grant_id: Mapped[str | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = _now()
    converted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TriggerRow(Base):
    """A Trigger message; the event it listens to and its state are columns for the consumer's
    lookup ("the tenant's enabled triggers for customer.created")."""

    __tablename__ = "triggers"
    __table_args__ = (
        CheckConstraint("state IN ('enabled', 'disabled')", name="triggers_state"),
        _campaign_fk("triggers"),
        Index("triggers_listening", "tenant_id", "event_type", postgresql_where=text("state = 'enabled'")),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    trigger_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(Uuid)
    event_type: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class TriggerCountRow(Base):
    """Matching events of one customer for one trigger in one counting period ("M2027-02")."""

    __tablename__ = "trigger_counts"

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    trigger_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    matched: Mapped[int] = mapped_column(BigInteger)


class RewardGrantRow(Base):
    """A reward a trigger granted, once per (trigger, event): its Reward message and state; the
    ledger posts it from the `reward.granted` event."""

    __tablename__ = "reward_grants"
    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'granted', 'withheld', 'reversed')", name="reward_grants_state"
        ),
        Index("reward_grants_once", "tenant_id", "trigger_id", "source_event_id", unique=True),
        Index("reward_grants_of_customer", "tenant_id", "trigger_id", "customer_id", "created_at"),
        Index("reward_grants_newest", "tenant_id", "created_at", "grant_id"),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    grant_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    trigger_id: Mapped[str] = mapped_column(Uuid)
    campaign_id: Mapped[str] = mapped_column(Uuid)
    customer_id: Mapped[str] = mapped_column(String(64))
    source_event_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    reward: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()


class CatalogueRewardRow(Base):
    """A CatalogueReward message; its cost, programme, stock and window are columns for the guarded
    stock update and for listing. `redeemed_count` counts reserved and issued redemptions."""

    __tablename__ = "catalogue_rewards"
    __table_args__ = (
        CheckConstraint("points_cost > 0", name="catalogue_rewards_cost"),
        CheckConstraint(
            "redeemed_count >= 0 AND (stock IS NULL OR redeemed_count <= stock)",
            name="catalogue_rewards_stock",
        ),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    reward_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[str] = mapped_column(String(36))
    points_cost: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int | None] = mapped_column(BigInteger)
    redeemed_count: Mapped[int] = mapped_column(BigInteger)
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class CatalogueRedemptionRow(Base):
    """A CatalogueRedemption message by the id the gateway's saga chose."""

    __tablename__ = "catalogue_redemptions"
    __table_args__ = (
        CheckConstraint("state IN ('reserved', 'issued', 'cancelled')", name="catalogue_redemptions_state"),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    redemption_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    reward_id: Mapped[str] = mapped_column(Uuid)
    customer_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


def _of_trigger(name: str) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["tenant_id", "trigger_id"],
        [f"{SCHEMA}.triggers.tenant_id", f"{SCHEMA}.triggers.trigger_id"],
        ondelete="CASCADE",
        name=name,
    )


class AchievementContributionRow(Base):
    """What one event contributed to a customer's achievement (one row per distinct value), and
    what returns refunded of the purchase (`subject`, the checkout) it came from."""

    __tablename__ = "achievement_contributions"
    __table_args__ = (
        _of_trigger("achievement_contributions_trigger"),
        Index(
            "achievement_contributions_of_subject",
            "tenant_id",
            "customer_id",
            "subject",
            postgresql_where=text("subject <> ''"),
        ),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    trigger_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(128), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    subject: Mapped[str] = mapped_column(String(128))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    refundable: Mapped[int] = mapped_column(BigInteger)
    refunded: Mapped[int] = mapped_column(BigInteger)


class AchievementRow(Base):
    """A customer's achievement on a trigger: its row lock orders the customer's concurrent events,
    and `completed_at` says it rewarded (once)."""

    __tablename__ = "achievements"
    __table_args__ = (
        _of_trigger("achievements_trigger"),
        Index("achievements_of_customer", "tenant_id", "customer_id"),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    trigger_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completing_event_id: Mapped[str | None] = mapped_column(String(128))


class DelayedRewardRow(Base):
    """A trigger's reward waiting for `due_at` (once per trigger and event), unless an event of
    `cancel_on_event_type` for the customer cancels it first."""

    __tablename__ = "delayed_rewards"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'done', 'cancelled')", name="delayed_rewards_state"),
        _of_trigger("delayed_rewards_trigger"),
        Index("delayed_rewards_due", "due_at", postgresql_where=text("state = 'pending'")),
        Index(
            "delayed_rewards_cancellable",
            "tenant_id",
            "customer_id",
            "cancel_on_event_type",
            postgresql_where=text("state = 'pending' AND cancel_on_event_type <> ''"),
        ),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    trigger_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    source_event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cancel_on_event_type: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))


class CustomerBirthdayRow(Base):
    """The month and day of a customer's birthday (never the year) and their time zone, copied from
    profile's events, and the last year `customer.birthday` was emitted for them."""

    __tablename__ = "customer_birthdays"
    __table_args__ = (
        CheckConstraint(
            "birth_month BETWEEN 1 AND 12 AND birth_day BETWEEN 1 AND 31", name="customer_birthdays_date"
        ),
        Index("customer_birthdays_on", "birth_month", "birth_day"),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    birth_month: Mapped[int] = mapped_column(SmallInteger)
    birth_day: Mapped[int] = mapped_column(SmallInteger)
    time_zone: Mapped[str] = mapped_column(String(64))
    celebrated_year: Mapped[int | None] = mapped_column(Integer)
