"""Tables of the segmentation schema, described for Alembic (the service speaks SQL text, see
repository.py). Every table leads with tenant_id and every statement filters by it."""

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loyalty_runtime.tables import add_runtime_tables
from loyalty_segmentation.repository import SCHEMA


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class SegmentRow(Base):
    __tablename__ = "segments"
    __table_args__ = (
        CheckConstraint("type IN ('rule', 'static')", name="segments_type"),
        CheckConstraint("(type = 'rule') = (rule IS NOT NULL)", name="segments_rule"),
        # Names are unique among a tenant's live segments; a deleted one frees its name.
        Index(
            "segments_live_names",
            "tenant_id",
            "display_name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000))
    type: Mapped[str] = mapped_column(String(8))
    # The serialised loyalty.segmentation.v1.Condition; NULL for a static segment.
    rule: Mapped[bytes | None] = mapped_column(LargeBinary)
    labels: Mapped[dict] = mapped_column(JSONB)
    member_count: Mapped[int] = mapped_column(BigInteger)
    refreshed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Bumped by every recompute started (a rule change, a refresh): an older chain of slices stops.
    rule_version: Mapped[int] = mapped_column(BigInteger, server_default=text("1"))
    # A full recompute is running; recompute_done of recompute_total customers are evaluated.
    computing: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    recompute_done: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    recompute_total: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class MemberRow(Base):
    __tablename__ = "segment_members"
    __table_args__ = (Index("segment_members_by_customer", "tenant_id", "customer_id"),)

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CustomerRow(Base):
    """Every customer segmentation knows of (from profile events or a record): the population
    rules are evaluated over, including customers who never bought."""

    __tablename__ = "customers"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Segmentation's copy of the profile attributes rules use (profile events and the backfill).
    birth_date: Mapped[date | None] = mapped_column(Date)
    locale: Mapped[str | None] = mapped_column(String(35))
    enrolled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Custom attributes by name: strings, integers, booleans; decimals and dates as strings.
    attributes: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # "<channel>.<purpose>" -> granted, e.g. {"email.marketing": true}.
    consents: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class AttributeTypeRow(Base):
    """The type of each custom attribute of a tenant, as profile's schema and data declare it."""

    __tablename__ = "attribute_types"
    __table_args__ = (
        CheckConstraint(
            "type IN ('string', 'int', 'decimal', 'bool', 'date', 'enum')", name="attribute_types_type"
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(8))


class ActivityRow(Base):
    __tablename__ = "activities"
    __table_args__ = (
        Index("activities_by_customer", "tenant_id", "customer_id", "activity_type", "occurred_at"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The activity event id: an activity recorded twice is one row.
    activity_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    activity_type: Mapped[str] = mapped_column(String(100))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RfmScoreRow(Base):
    """Quintile scores of each purchasing customer, recomputed for the whole tenant at once."""

    __tablename__ = "rfm_scores"
    __table_args__ = (
        CheckConstraint(
            "recency_score BETWEEN 1 AND 5 AND frequency_score BETWEEN 1 AND 5 AND monetary_score BETWEEN 1 AND 5",
            name="rfm_scores_range",
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    recency_score: Mapped[int] = mapped_column(SmallInteger)
    frequency_score: Mapped[int] = mapped_column(SmallInteger)
    monetary_score: Mapped[int] = mapped_column(SmallInteger)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ProfileBackfillRow(Base):
    """A tenant's copy of profile's bulk export: running while finished_at is NULL."""

    __tablename__ = "profile_backfills"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    copied: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PurchaseRow(Base):
    __tablename__ = "purchases"
    __table_args__ = (Index("purchases_by_customer", "tenant_id", "customer_id", "purchased_at"),)

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The checkout id: a purchase recorded twice is one row.
    purchase_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    purchased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    net_total: Mapped[int] = mapped_column(BigInteger)
    currency_code: Mapped[str] = mapped_column(String(3))


class ReturnRow(Base):
    __tablename__ = "returns"
    __table_args__ = (Index("returns_by_customer", "tenant_id", "customer_id", "returned_at"),)

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    return_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    checkout_id: Mapped[str] = mapped_column(String(200))
    returned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    refunded_total: Mapped[int] = mapped_column(BigInteger)


class PurchaseCategoryRow(Base):
    """The categories a purchase's basket held (each line's most general one), for the
    categories-bought metric."""

    __tablename__ = "purchase_categories"
    __table_args__ = (Index("purchase_categories_by_customer", "tenant_id", "customer_id", "purchased_at"),)

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purchase_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    category: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    purchased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CodeRedemptionRow(Base):
    """A code (voucher) redeemed in a committed checkout, from redemptions.committed / .released."""

    __tablename__ = "code_redemptions"
    __table_args__ = (Index("code_redemptions_by_customer", "tenant_id", "customer_id", "redeemed_at"),)

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Promotion's redemption id: a redemption delivered twice is one row.
    redemption_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    checkout_id: Mapped[str] = mapped_column(String(200))
    voucher_id: Mapped[str] = mapped_column(String(200))
    redeemed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Released after all (redemptions.released): no longer a code redeemed. Kept as a row so a
    # commit delivered after its release does not count it again.
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TenantSettingsRow(Base):
    """The tenant's segmentation settings (SegmentationSettings); no row: the defaults (UTC)."""

    __tablename__ = "tenant_settings"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # IANA name: the calendar of ages, relative dates, anniversaries and whole days since a moment.
    time_zone: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The version of the gateway's tenant settings the time zone was copied from (0: never).
    gateway_version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


add_runtime_tables(Base.metadata)
