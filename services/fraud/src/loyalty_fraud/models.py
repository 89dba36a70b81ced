"""The fraud service's tables (schema `fraud`) for Alembic. Nothing reads them through the ORM
(repository.py speaks SQL on asyncpg).

Rules, blocklist entries and assessments keep their contract message (`body`, serialised protobuf)
next to the columns that are filtered, sorted or constrained on: the message is what is answered,
the columns are what is queried. The audit of review cases is append-only (migration 0001).
"""

from datetime import datetime

from sqlalchemy import DateTime, Identity, Index, LargeBinary, MetaData, SmallInteger, String, func, text
from sqlalchemy.dialects.postgresql import BIGINT
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loyalty_runtime.tables import add_runtime_tables

SCHEMA = "fraud"
Id = String(36)
Tenant = String(64)
Moment = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


add_runtime_tables(Base.metadata)


class RuleRow(Base):
    __tablename__ = "rules"

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    rule_id: Mapped[str] = mapped_column(Id, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Moment)
    updated_at: Mapped[datetime] = mapped_column(Moment)


class SettingsRow(Base):
    __tablename__ = "settings"

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(Moment)


class AssessmentRow(Base):
    __tablename__ = "assessments"
    __table_args__ = (
        # The request's key: a retry finds the first decision.
        Index("assessments_subject_uq", "tenant_id", "kind", "subject_key", unique=True),
        Index("assessments_newest", "tenant_id", text("created_at DESC"), text("assessment_id DESC")),
        Index("assessments_customer", "tenant_id", "customer_id", text("created_at DESC")),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    assessment_id: Mapped[str] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject_key: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    customer_id: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(Moment)
    body: Mapped[bytes] = mapped_column(LargeBinary)


class BlocklistEntryRow(Base):
    __tablename__ = "blocklist_entries"
    __table_args__ = (Index("blocklist_value_uq", "tenant_id", "type", "value", unique=True),)

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    entry_id: Mapped[str] = mapped_column(Id, primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(200))
    expire_at: Mapped[datetime | None] = mapped_column(Moment, nullable=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Moment)


class ReviewCaseRow(Base):
    __tablename__ = "review_cases"
    __table_args__ = (Index("review_cases_queue", "tenant_id", "state", "created_at", "review_case_id"),)

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    review_case_id: Mapped[str] = mapped_column(Id, primary_key=True)
    assessment_id: Mapped[str] = mapped_column(Id)
    customer_id: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    resolved_by: Mapped[str] = mapped_column(String(200), server_default="")
    resolution_note: Mapped[str] = mapped_column(String(2000), server_default="")
    assignee: Mapped[str] = mapped_column(String(200), server_default="")
    created_at: Mapped[datetime] = mapped_column(Moment)
    resolved_at: Mapped[datetime | None] = mapped_column(Moment, nullable=True)


class ReviewCaseAuditRow(Base):
    """Who did what to a case, when: append-only."""

    __tablename__ = "review_case_audit"

    seq: Mapped[int] = mapped_column(BIGINT, Identity(always=True), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Tenant)
    review_case_id: Mapped[str] = mapped_column(Id, index=True)
    action: Mapped[str] = mapped_column(String(16))
    principal: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(String(2000))
    at: Mapped[datetime] = mapped_column(Moment, server_default=func.now())


class ConfigVersionRow(Base):
    """Raised with every change to a tenant's rules or settings: the replicas' caches compare it."""

    __tablename__ = "config_versions"

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    version: Mapped[int] = mapped_column(BIGINT)


class ActivityRow(Base):
    """What the pattern rules look back on: one row per fact of a recorded, not declined assessment
    (earn, burn, purchase, return, referral) and per account change from profile's events."""

    __tablename__ = "activity"
    __table_args__ = (
        Index("activity_customer", "tenant_id", "customer_id", "at"),
        # Referees per device.
        Index("activity_fact_value", "tenant_id", "fact", "value", "at"),
    )

    seq: Mapped[int] = mapped_column(BIGINT, Identity(always=True), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Tenant)
    customer_id: Mapped[str] = mapped_column(String(200))
    fact: Mapped[str] = mapped_column(String(16))
    # The assessed request's key (a checkout id for purchases), or the event's id.
    subject_key: Mapped[str] = mapped_column(String(200))
    # Points, or money in minor units of `value`'s currency.
    amount: Mapped[int] = mapped_column(BIGINT)
    # A currency code, a device hash (referrals), or empty.
    value: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(Moment)


class EarnStatsRow(Base):
    """Each customer's and store's earns so far: what "usual" is measured against. A store's are spread
    over STORE_SHARDS rows (`shard`, picked at random per earn) and summed when read: every earn of a
    store adds to them, and one row would make a busy store's assessments wait on its lock
    (bench/fraud/bench_store_hot_row.py). A customer's are one row (shard 0)."""

    __tablename__ = "earn_stats"

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default="0")
    earns: Mapped[int] = mapped_column(BIGINT)
    points: Mapped[int] = mapped_column(BIGINT)


class CustomerFingerprintRow(Base):
    """Devices, cards, phones and e-mails (keyed hashes) a customer was seen with, and since when."""

    __tablename__ = "customer_fingerprints"
    __table_args__ = (Index("customer_fingerprints_value", "tenant_id", "type", "value"),)

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(Moment)


class CodeLockoutRow(Base):
    """A code brute-force lockout the gateway reported (`code_attempts.locked`): its CodeLockout message,
    and the key and value it locked for listing by them; `seq` orders them (newest first)."""

    __tablename__ = "code_lockouts"
    __table_args__ = (
        Index("code_lockouts_newest", "tenant_id", "seq"),
        Index("code_lockouts_by_value", "tenant_id", "key", "value", "seq"),
    )

    seq: Mapped[int] = mapped_column(BIGINT, Identity(always=True), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Tenant)
    key: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(200))
    locked_at: Mapped[datetime] = mapped_column(Moment)
    body: Mapped[bytes] = mapped_column(LargeBinary)
