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
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Uuid,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loyalty_promotion.repository import SCHEMA
from loyalty_runtime.tables import add_runtime_tables

Tenant = String(64)
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
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(Uuid, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


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
