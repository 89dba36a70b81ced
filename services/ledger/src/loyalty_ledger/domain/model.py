"""Ledger domain types: plain frozen dataclasses over integers, enums and datetimes. No I/O."""

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


REVERSIBLE_TYPES = frozenset({EntryType.EARN, EntryType.BURN, EntryType.TRANSFER})


class HoldState(StrEnum):
    ACTIVE = "ACTIVE"
    CAPTURED = "CAPTURED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class ExpiryPolicy:
    rule: ExpiryRule = ExpiryRule.NEVER
    months: int = 0


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
class Lot:
    """Points from one credit, consumed earliest-expiry-first. `pending` lots are not spendable yet."""

    lot_id: str
    remaining: int
    expires_at: datetime | None
    seq: int
    pending: bool = False
    available_at: datetime | None = None


@dataclass(frozen=True)
class AccountState:
    """What the domain needs to know about an account to decide a change (the row, locked)."""

    account_id: str
    kind: AccountKind
    posted: int = 0
    pending: int = 0
    held: int = 0
    lots: tuple[Lot, ...] = ()

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
    # Reversals of earns: lots the original created, if any.
    lot_count: int = 0


@dataclass(frozen=True)
class Hold:
    hold_id: str
    account_id: str
    amount: int
    expires_at: datetime
    state: HoldState = HoldState.ACTIVE
    captured_amount: int = 0

    def is_live(self, now: datetime) -> bool:
        return self.state is HoldState.ACTIVE and now < self.expires_at

    def with_state(self, state: HoldState, captured_amount: int = 0) -> "Hold":
        return replace(self, state=state, captured_amount=captured_amount)


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
