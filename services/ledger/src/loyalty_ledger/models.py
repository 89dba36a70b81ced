"""The ledger's tables (schema `ledger`) for Alembic: SQLAlchemy 2.0 typed rows, nothing reads them
through the ORM (repository.py speaks SQL on asyncpg; domain/model.py has the shapes it returns).

Customer accounts keep posted/pending/held balance columns in step with their postings in the same
transaction. System accounts (issuance, redemption, ...) do not: every earn and burn of a programme
touches them, so a balance column there would be one hot row serialising the whole programme; their
balance is the sum of their postings, computed when asked.

Append-only (migration 0003, loyalty_runtime.append_only): journal entries, postings, checkouts,
their lines and their returns; UPDATE, DELETE and TRUNCATE fail there. What an entry has had
reversed is the sum of its reversals (`journal_entries_reversals`), read under the account lock.
"""

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
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

from loyalty_ledger.repository import SCHEMA
from loyalty_runtime.tables import add_runtime_tables

Id = String(36)
Tenant = String(64)
APPEND_ONLY_TABLES = ("journal_entries", "postings", "checkouts", "checkout_lines", "checkout_returns")


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


add_runtime_tables(Base.metadata)


class ProgramRow(Base):
    __tablename__ = "programs"

    program_id: Mapped[str] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Tenant, index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    asset_kind: Mapped[str] = mapped_column(String(20))
    asset_code: Mapped[str] = mapped_column(String(16))
    allow_overdraft: Mapped[bool] = mapped_column(Boolean)
    expiry_rule: Mapped[str] = mapped_column(String(40))
    expiry_months: Mapped[int] = mapped_column(Integer)
    expiry_warning_days: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    default_hold_ttl_seconds: Mapped[int] = mapped_column(Integer)
    tier_window_days: Mapped[int] = mapped_column(Integer)
    tiers: Mapped[list] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AccountRow(Base):
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
    tenant_id: Mapped[str] = mapped_column(Tenant)
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.program_id"))
    customer_id: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    posted: Mapped[int] = mapped_column(BigInteger)
    pending: Mapped[int] = mapped_column(BigInteger)
    held: Mapped[int] = mapped_column(BigInteger)
    tier_code: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class JournalEntryRow(Base):
    """Append-only."""

    __tablename__ = "journal_entries"
    __table_args__ = (
        Index("journal_entries_idempotency", "tenant_id", "idempotency_key"),
        Index(
            "journal_entries_qualifying",
            "qualifying_account_id",
            "created_at",
            postgresql_where=text("qualifying_delta <> 0"),
        ),
        Index(
            "journal_entries_reversals",
            "reversed_entry_id",
            postgresql_where=text("reversed_entry_id IS NOT NULL"),
        ),
    )

    entry_id: Mapped[str] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Tenant)
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.program_id"))
    entry_type: Mapped[str] = mapped_column(String(20))
    asset_code: Mapped[str] = mapped_column(String(16))
    # The points the entry moved to or from the customer; for reversals, how much of the original
    # they reverse (recovered + unrecovered), so what is left to reverse is a sum over them.
    amount: Mapped[int] = mapped_column(BigInteger)
    unrecovered_amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(500))
    source_ref: Mapped[str] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    reversed_entry_id: Mapped[str | None] = mapped_column(Id)
    hold_id: Mapped[str | None] = mapped_column(Id)
    subject_account_id: Mapped[str | None] = mapped_column(Id)
    counter_account_id: Mapped[str | None] = mapped_column(Id)
    lot_id: Mapped[str | None] = mapped_column(Id)
    restore_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    qualifying_account_id: Mapped[str | None] = mapped_column(Id)
    qualifying_delta: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PostingRow(Base):
    """Append-only."""

    __tablename__ = "postings"
    __table_args__ = (Index("postings_account", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("journal_entries.entry_id"), index=True)
    tenant_id: Mapped[str] = mapped_column(Tenant)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    bucket: Mapped[str] = mapped_column(String(10))
    # Customer accounts: posted + pending after this entry (statement running balance).
    balance_after: Mapped[int | None] = mapped_column(BigInteger)


class LotRow(Base):
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
        # Lots not yet announced by points.expiring, by when they expire.
        Index(
            "lots_unwarned",
            "tenant_id",
            "expires_at",
            postgresql_where=text("remaining > 0 AND NOT pending AND warned_at IS NULL"),
        ),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="lots_remaining_bounded"),
    )

    lot_id: Mapped[str] = mapped_column(Id, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity())
    tenant_id: Mapped[str] = mapped_column(Tenant)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"))
    entry_id: Mapped[str] = mapped_column(ForeignKey("journal_entries.entry_id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pending: Mapped[bool] = mapped_column(Boolean)
    available_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When points.expiring announced this lot (NULL: not yet).
    warned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class HoldRow(Base):
    __tablename__ = "holds"
    __table_args__ = (
        Index("holds_active", "account_id", postgresql_where=text("state = 'ACTIVE'")),
        Index("holds_due", "expires_at", postgresql_where=text("state = 'ACTIVE'")),
        CheckConstraint("captured_amount >= 0 AND captured_amount <= amount", name="holds_capture_bounded"),
    )

    hold_id: Mapped[str] = mapped_column(Id, primary_key=True)
    # Creation order: reversals void the newest holds first.
    seq: Mapped[int] = mapped_column(BigInteger, Identity())
    tenant_id: Mapped[str] = mapped_column(Tenant)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    captured_amount: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(10))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(500))
    source_ref: Mapped[str] = mapped_column(String(200))
    capture_entry_id: Mapped[str | None] = mapped_column(Id)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CheckoutRow(Base):
    """A settled checkout (SettleCheckout), once per checkout id. Append-only."""

    __tablename__ = "checkouts"

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    checkout_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"))
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.program_id"))
    earn_entry_id: Mapped[str | None] = mapped_column(ForeignKey("journal_entries.entry_id"))
    burn_entry_id: Mapped[str | None] = mapped_column(ForeignKey("journal_entries.entry_id"))
    hold_id: Mapped[str | None] = mapped_column(Id)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CheckoutLineRow(Base):
    """A settled checkout's line: units, earned points, allocated burn. Append-only."""

    __tablename__ = "checkout_lines"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "checkout_id"], ["checkouts.tenant_id", "checkouts.checkout_id"]),
        CheckConstraint(
            "quantity > 0 AND earn_points >= 0 AND burn_points >= 0", name="checkout_lines_positive"
        ),
    )

    tenant_id: Mapped[str] = mapped_column(Tenant, primary_key=True)
    checkout_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    line_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The line's position in the checkout, so lines read back in the order they were given.
    position: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int] = mapped_column(BigInteger)
    earn_points: Mapped[int] = mapped_column(BigInteger)
    burn_points: Mapped[int] = mapped_column(BigInteger)


class CheckoutReturnRow(Base):
    """Units of one line returned by one return, and what they took back. What a line has had
    returned is the sum of its rows, read under the checkout account's lock. Append-only."""

    __tablename__ = "checkout_returns"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "checkout_id", "line_id"],
            ["checkout_lines.tenant_id", "checkout_lines.checkout_id", "checkout_lines.line_id"],
        ),
        Index("checkout_returns_line", "tenant_id", "checkout_id", "line_id"),
        CheckConstraint(
            "quantity > 0 AND earn_reversed >= 0 AND burn_restored >= 0", name="checkout_returns_positive"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Tenant)
    checkout_id: Mapped[str] = mapped_column(String(200))
    line_id: Mapped[str] = mapped_column(String(100))
    quantity: Mapped[int] = mapped_column(BigInteger)
    earn_reversed: Mapped[int] = mapped_column(BigInteger)
    burn_restored: Mapped[int] = mapped_column(BigInteger)
    earn_reversal_entry_id: Mapped[str | None] = mapped_column(ForeignKey("journal_entries.entry_id"))
    burn_reversal_entry_id: Mapped[str | None] = mapped_column(ForeignKey("journal_entries.entry_id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
