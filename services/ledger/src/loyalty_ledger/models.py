"""The ledger's tables (schema `ledger`), SQLAlchemy 2.0 typed style.

Customer accounts keep posted/pending/held balance columns in step with their postings in the same
transaction. System accounts (issuance, redemption, ...) do not: every earn and burn of a programme
touches them, so a balance column there would be one hot row serialising the whole programme; their
balance is the sum of their postings, computed when asked.
"""

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loyalty_runtime.events import outbox_table
from loyalty_runtime.idempotency import idempotency_table

SCHEMA = "ledger"
Id = String(36)


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


idempotency_keys = idempotency_table(Base.metadata)
outbox = outbox_table(Base.metadata)


class Program(Base):
    __tablename__ = "programs"

    program_id: Mapped[str] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    asset_kind: Mapped[str] = mapped_column(String(20))
    asset_code: Mapped[str] = mapped_column(String(16))
    allow_overdraft: Mapped[bool] = mapped_column(Boolean)
    expiry_rule: Mapped[str] = mapped_column(String(40))
    expiry_months: Mapped[int] = mapped_column(Integer)
    default_hold_ttl_seconds: Mapped[int] = mapped_column(Integer)
    tier_window_days: Mapped[int] = mapped_column(Integer)
    tiers: Mapped[list] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        Index(
            "accounts_customer_uq",
            "tenant_id",
            "program_id",
            "customer_id",
            unique=True,
            postgresql_where=text("customer_id IS NOT NULL"),
        ),
        Index(
            "accounts_system_uq",
            "program_id",
            "kind",
            unique=True,
            postgresql_where=text("customer_id IS NULL"),
        ),
        CheckConstraint("pending >= 0 AND held >= 0", name="accounts_nonnegative_parts"),
    )

    account_id: Mapped[str] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.program_id"))
    customer_id: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    posted: Mapped[int] = mapped_column(BigInteger, default=0)
    pending: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    tier_code: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class JournalEntry(Base):
    """Append-only, apart from `reversed_amount`, which counts what later reversals took back."""

    __tablename__ = "journal_entries"
    __table_args__ = (
        Index("journal_entries_idempotency", "tenant_id", "idempotency_key"),
        Index(
            "journal_entries_qualifying",
            "qualifying_account_id",
            "created_at",
            postgresql_where=text("qualifying_delta <> 0"),
        ),
        CheckConstraint(
            "reversed_amount >= 0 AND reversed_amount <= amount", name="entries_reversal_bounded"
        ),
    )

    entry_id: Mapped[str] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.program_id"))
    entry_type: Mapped[str] = mapped_column(String(20))
    asset_code: Mapped[str] = mapped_column(String(16))
    # What can be reversed: the points the entry moved to or from the customer.
    amount: Mapped[int] = mapped_column(BigInteger)
    reversed_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    unrecovered_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    reason: Mapped[str] = mapped_column(String(500), default="")
    source_ref: Mapped[str] = mapped_column(String(200), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    reversed_entry_id: Mapped[str | None] = mapped_column(Id)
    hold_id: Mapped[str | None] = mapped_column(Id)
    subject_account_id: Mapped[str | None] = mapped_column(Id)
    counter_account_id: Mapped[str | None] = mapped_column(Id)
    lot_id: Mapped[str | None] = mapped_column(Id)
    restore_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    qualifying_account_id: Mapped[str | None] = mapped_column(Id)
    qualifying_delta: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Posting(Base):
    __tablename__ = "postings"
    __table_args__ = (Index("postings_account", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("journal_entries.entry_id"), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    bucket: Mapped[str] = mapped_column(String(10))
    # Customer accounts: posted + pending after this entry (statement running balance).
    balance_after: Mapped[int | None] = mapped_column(BigInteger)


class Lot(Base):
    __tablename__ = "lots"
    __table_args__ = (
        # Spendable lots in the order debits consume them (rules.consume_lots), so a debit reads
        # the first few instead of sorting all of an account's lots.
        Index(
            "lots_spendable",
            "account_id",
            "expires_at",
            "seq",
            postgresql_where=text("remaining > 0 AND NOT pending"),
        ),
        Index("lots_pending", "account_id", postgresql_where=text("remaining > 0 AND pending")),
        Index("lots_due", "expires_at", postgresql_where=text("remaining > 0 AND NOT pending")),
        Index("lots_maturing", "available_at", postgresql_where=text("remaining > 0 AND pending")),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="lots_remaining_bounded"),
    )

    lot_id: Mapped[str] = mapped_column(Id, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity())
    tenant_id: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"))
    entry_id: Mapped[str] = mapped_column(ForeignKey("journal_entries.entry_id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pending: Mapped[bool] = mapped_column(Boolean, default=False)
    available_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Hold(Base):
    __tablename__ = "holds"
    __table_args__ = (
        Index("holds_active", "account_id", postgresql_where=text("state = 'ACTIVE'")),
        Index("holds_due", "expires_at", postgresql_where=text("state = 'ACTIVE'")),
        CheckConstraint("captured_amount >= 0 AND captured_amount <= amount", name="holds_capture_bounded"),
    )

    hold_id: Mapped[str] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    captured_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(10))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(500), default="")
    source_ref: Mapped[str] = mapped_column(String(200), default="")
    capture_entry_id: Mapped[str | None] = mapped_column(Id)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
