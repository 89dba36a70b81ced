"""Ledger domain types: plain frozen dataclasses over integers, enums and datetimes. No I/O.

Each thing has one shape, used by the rules, the repository (which builds it from rows) and the
servicer (which encodes it): an account is an `Account`, whether the rules plan a debit on it or a
caller reads its balance.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum


class AssetKind(StrEnum):
    POINTS = "POINTS"
    STORED_VALUE = "STORED_VALUE"


class ExpiryRule(StrEnum):
    NEVER = "NEVER"
    MONTHS_AFTER_EARN = "MONTHS_AFTER_EARN"
    END_OF_NEXT_CALENDAR_YEAR = "END_OF_NEXT_CALENDAR_YEAR"


class AccountKind(StrEnum):
    CUSTOMER = "CUSTOMER"
    ISSUANCE = "ISSUANCE"
    REDEMPTION = "REDEMPTION"
    EXPIRY = "EXPIRY"
    ADJUSTMENT = "ADJUSTMENT"
    DONATION = "DONATION"


SYSTEM_KINDS: tuple[AccountKind, ...] = (
    AccountKind.ISSUANCE,
    AccountKind.REDEMPTION,
    AccountKind.EXPIRY,
    AccountKind.ADJUSTMENT,
    AccountKind.DONATION,
)


class Bucket(StrEnum):
    POSTED = "POSTED"
    PENDING = "PENDING"


class EntryType(StrEnum):
    EARN = "EARN"
    BURN = "BURN"
    EXPIRY = "EXPIRY"
    REVERSAL = "REVERSAL"
    TRANSFER = "TRANSFER"
    MATURATION = "MATURATION"
    MERGE = "MERGE"


REVERSIBLE_TYPES = frozenset({EntryType.EARN, EntryType.BURN, EntryType.TRANSFER})


class HoldState(StrEnum):
    ACTIVE = "ACTIVE"
    CAPTURED = "CAPTURED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"
    VOIDED = "VOIDED"


@dataclass(frozen=True)
class ExpiryPolicy:
    rule: ExpiryRule = ExpiryRule.NEVER
    months: int = 0
    warning_days: int = 0  # points.expiring this many days ahead (0: never)


@dataclass(frozen=True)
class Tier:
    code: str
    display_name: str
    qualifying_points: int
    earn_multiplier_bps: int


@dataclass(frozen=True)
class ProgramRules:
    asset_kind: AssetKind = AssetKind.POINTS
    asset_code: str = "POINTS"
    allow_overdraft: bool = False
    expiry_policy: ExpiryPolicy = field(default_factory=ExpiryPolicy)
    default_hold_ttl_seconds: int = 900
    tiers: tuple[Tier, ...] = ()
    tier_window_days: int = 365


@dataclass(frozen=True)
class Program:
    """A programme never changes after it is created (so processes may cache it)."""

    program_id: str
    display_name: str
    rules: ProgramRules
    # The programme's system account of each kind.
    system: Mapping[AccountKind, str]
    created_at: datetime

    def system_account(self, kind: AccountKind) -> "Account":
        return Account(self.system[kind], kind, program_id=self.program_id)


@dataclass(frozen=True)
class Lot:
    """Points from one credit, consumed earliest-expiry-first. `pending` lots are not spendable yet."""

    lot_id: str
    remaining: int
    expires_at: datetime | None
    seq: int
    pending: bool = False
    available_at: datetime | None = None


@dataclass(frozen=True)
class Account:
    """An account: a customer's in a programme, or one of the programme's system accounts.

    A customer account's posted, pending and held balances are kept in step with its postings and
    holds. A system account's balance is the sum of its postings (no balance row: every earn and
    burn of a programme touches it, and a row there would serialise the programme), so its posted
    here is 0 unless it was summed for a caller. `lots` holds the lots a rule needs (for a debit, the
    earliest-expiring ones that cover it), not necessarily all of them."""

    account_id: str
    kind: AccountKind
    posted: int = 0
    pending: int = 0
    held: int = 0
    lots: tuple[Lot, ...] = ()
    program_id: str = ""
    customer_id: str | None = None
    tier_code: str = ""
    created_at: datetime | None = None

    @property
    def available(self) -> int:
        return self.posted - self.held

    @property
    def is_customer(self) -> bool:
        return self.kind is AccountKind.CUSTOMER


@dataclass(frozen=True)
class Posting:
    account_id: str
    amount: int
    bucket: Bucket = Bucket.POSTED
    # Customer accounts: posted + pending after the entry (the statement's running balance).
    balance_after: int | None = None


@dataclass(frozen=True)
class NewLot:
    amount: int
    expires_at: datetime | None
    pending: bool = False
    available_at: datetime | None = None


@dataclass(frozen=True)
class LotUpdate:
    lot_id: str
    delta: int
    mature: bool = False


@dataclass(frozen=True)
class AccountEffect:
    """Changes to one account's balance columns and lots. Deltas, applied under the row lock."""

    account_id: str
    d_posted: int = 0
    d_pending: int = 0
    d_held: int = 0
    lot_updates: tuple[LotUpdate, ...] = ()
    new_lots: tuple[NewLot, ...] = ()


@dataclass(frozen=True)
class Hold:
    hold_id: str
    account_id: str
    amount: int
    expires_at: datetime
    state: HoldState = HoldState.ACTIVE
    captured_amount: int = 0
    # Creation order: a reversal that must take held points back voids the newest holds first.
    seq: int = 0
    reason: str = ""
    source_ref: str = ""
    capture_entry_id: str | None = None
    created_at: datetime | None = None

    def is_live(self, now: datetime) -> bool:
        return self.state is HoldState.ACTIVE and now < self.expires_at

    def with_state(self, state: HoldState, captured_amount: int = 0) -> "Hold":
        return replace(self, state=state, captured_amount=captured_amount)


@dataclass(frozen=True)
class Plan:
    """A decided journal entry: its postings and the account changes that keep balances in step."""

    entry_type: EntryType
    postings: tuple[Posting, ...]
    effects: tuple[AccountEffect, ...]
    # For burns and transfers: expiry to give points that come back on reversal (latest consumed).
    restore_expires_at: datetime | None = None
    # Change in tier-qualifying points this entry makes.
    qualifying_delta: int = 0
    # Reversals: the part that could not be taken back (already spent, no overdraft).
    unrecovered: int = 0
    # How much of the original entry this entry reverses (recovered + unrecovered).
    reversed_amount: int = 0
    # Reversals: the holds whose points it took back (now VOIDED); their d_held is in the effects.
    voided_holds: tuple[Hold, ...] = ()


@dataclass(frozen=True)
class Entry:
    """An append-only journal entry. What a reversible entry has had reversed is the sum of its
    reversals' amounts, not a field of its own: entries are never edited."""

    entry_id: str
    program_id: str
    entry_type: EntryType
    asset_code: str
    # The points the entry moved to or from the customer (for reversals: how much of the original
    # they reverse, recovered + unrecovered).
    amount: int
    postings: tuple[Posting, ...]
    created_at: datetime
    unrecovered_amount: int = 0
    reason: str = ""
    source_ref: str = ""
    idempotency_key: str | None = None
    reversed_entry_id: str | None = None
    hold_id: str | None = None
    # EARN, BURN: the customer account. TRANSFER, MERGE: the source.
    subject_account_id: str | None = None
    # TRANSFER, MERGE: the destination.
    counter_account_id: str | None = None
    # EARN: the lot it created (if any).
    lot_id: str | None = None
    restore_expires_at: datetime | None = None
    qualifying_account_id: str | None = None
    qualifying_delta: int = 0


@dataclass(frozen=True)
class ReversibleEntry:
    """What reversing an entry needs to know about it."""

    entry_id: str
    entry_type: EntryType
    amount: int
    reversed_amount: int
    # EARN, BURN: the customer account. TRANSFER: the source.
    account_id: str
    # TRANSFER: the destination.
    counter_account_id: str | None = None
    # EARN: the lot it created (if any).
    lot_id: str | None = None
    qualifying: bool = False
    restore_expires_at: datetime | None = None

    @property
    def reversible(self) -> int:
        return self.amount - self.reversed_amount

    @classmethod
    def of(cls, entry: Entry, reversed_amount: int) -> "ReversibleEntry":
        return cls(
            entry.entry_id,
            entry.entry_type,
            entry.amount,
            reversed_amount,
            entry.subject_account_id or "",
            entry.counter_account_id,
            entry.lot_id,
            entry.qualifying_delta > 0,
            entry.restore_expires_at,
        )


@dataclass(frozen=True)
class CheckoutLine:
    """A settled checkout's line: its units, the points it earned and the burn allocated to it."""

    line_id: str
    quantity: int
    earn_points: int
    burn_points: int = 0


@dataclass(frozen=True)
class LineReturn:
    """Units of a line returned by one return, and the points that takes back and gives back."""

    line_id: str
    quantity: int
    earn_reversed: int = 0
    burn_restored: int = 0


@dataclass(frozen=True)
class Checkout:
    """A settled checkout: its account, its entries, and its lines with what was returned so far."""

    checkout_id: str
    account_id: str
    program_id: str
    earn_entry_id: str | None
    burn_entry_id: str | None
    lines: tuple[CheckoutLine, ...]
    # Units of each line returned by earlier returns.
    returned: Mapping[str, int] = field(default_factory=dict)
