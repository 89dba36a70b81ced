"""Tables of the gateway schema, described for Alembic (the service speaks SQL text, repository.py).
Every table but api_keys leads with tenant_id: an API key is looked up by its id before the tenant
is known (the key decides the tenant), and carries its tenant."""

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    String,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loyalty_gateway.repository import SCHEMA
from loyalty_runtime.tables import add_runtime_tables


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


add_runtime_tables(Base.metadata)


class TenantSettingsRow(Base):
    __tablename__ = "tenant_settings"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    default_program_id: Mapped[str] = mapped_column(String(36))
    currency_code: Mapped[str] = mapped_column(String(3))
    time_zone: Mapped[str] = mapped_column(String(64))
    default_locale: Mapped[str] = mapped_column(String(35))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # 0: the defaults of domain/adjustments.py.
    adjustment_limit_points: Mapped[int] = mapped_column(BigInteger, server_default="0")
    daily_adjustment_limit_points: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # One more with every change; tenant.settings_changed carries it.
    version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class TerminalRow(Base):
    __tablename__ = "terminals"
    __table_args__ = (CheckConstraint("state IN ('active', 'revoked')", name="terminals_state"),)
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    terminal_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    store_id: Mapped[str] = mapped_column(String(100))
    labels: Mapped[dict] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("state IN ('active', 'revoked')", name="api_keys_state"),
        Index("api_keys_tenant", "tenant_id", "created_at"),
    )
    api_key_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    terminal_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    channel: Mapped[int] = mapped_column(BigInteger)
    key_prefix: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the secret: the secret is 256 random bits, so a slow hash would add nothing.
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(10))
    expire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(200))
    rotated_from: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class AdminUserRow(Base):
    __tablename__ = "admin_users"
    __table_args__ = (Index("admin_users_username", "tenant_id", "username", unique=True),)
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    admin_user_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    username: Mapped[str] = mapped_column(String(100))
    # argon2id, in its PHC string form.
    password_hash: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditRecordRow(Base):
    """Append-only (a trigger refuses UPDATE, DELETE, TRUNCATE); hash-chained per tenant."""

    __tablename__ = "audit_log"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    principal: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    resource: Mapped[str] = mapped_column(String(300))
    fields: Mapped[list[str]] = mapped_column(ARRAY(String(100)))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    hash: Mapped[str] = mapped_column(String(64))


class CheckoutRow(Base):
    """The saga log of one checkout: its request, its stored result and each step's progress."""

    __tablename__ = "checkouts"
    __table_args__ = (
        CheckConstraint(
            "state IN ('processing', 'reserved', 'committed', 'declined', 'failed', 'cancelled')",
            name="checkouts_state",
        ),
    )
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    checkout_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(12))
    # The sale as requested (a ReserveCheckoutRequest), for a retry or another replica to finish.
    request: Mapped[bytes] = mapped_column(LargeBinary)
    api_key_id: Mapped[str] = mapped_column(String(64))
    terminal_id: Mapped[str] = mapped_column(String(64))
    store_id: Mapped[str] = mapped_column(String(100))
    customer_id: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str] = mapped_column(String(36))
    hold_id: Mapped[str] = mapped_column(String(36))
    # The evaluation the checkout applies (a loyalty.promotion.v1.EvaluationResult), once known.
    evaluation: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The till's receipt (a loyalty.gateway.v1.CheckoutResult), once committed.
    result: Mapped[bytes | None] = mapped_column(LargeBinary)
    # {step name: {state, attempts, reason, message, at}}; "failure": the error being compensated.
    steps: Mapped[dict] = mapped_column(JSONB)
    rewards_withheld: Mapped[bool] = mapped_column()
    receipt_number: Mapped[str] = mapped_column(String(100))
    purchase_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A replica works on the saga while it holds the lease; a dead one's lease runs out.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    committed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CheckoutReturnRow(Base):
    __tablename__ = "checkout_returns"
    __table_args__ = (CheckConstraint("state IN ('processing', 'completed')", name="checkout_returns_state"),)
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    checkout_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    return_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(12))
    # Units returned per line id.
    units: Mapped[dict] = mapped_column(JSONB)
    # The CheckoutReturn answered (loyalty.gateway.v1.CheckoutReturn), once completed.
    answer: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AdjustmentRow(Base):
    """A manual point adjustment (adjustments.py), by idempotency key: pending until the ledger
    posted it, then posted with its answer."""

    __tablename__ = "adjustments"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="adjustments_nonzero"),
        CheckConstraint(
            "(state = 'pending' AND answer IS NULL) OR (state = 'posted' AND answer IS NOT NULL)",
            name="adjustments_state",
        ),
    )
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    adjustment_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    principal: Mapped[str] = mapped_column(String(200))
    # The day it counts towards, in the tenant's time zone.
    day: Mapped[date] = mapped_column(Date)
    customer_id: Mapped[str] = mapped_column(String(64))
    program_id: Mapped[str] = mapped_column(String(36))
    amount: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(8))
    # The AdjustPointsResponse (loyalty.gateway.v1), once posted.
    answer: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AdjustmentDayRow(Base):
    """What one admin user adjusted on one day, credits and debits alike."""

    __tablename__ = "adjustment_days"
    __table_args__ = (CheckConstraint("adjusted_points >= 0", name="adjustment_days_nonnegative"),)
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    adjusted_points: Mapped[int] = mapped_column(BigInteger)
