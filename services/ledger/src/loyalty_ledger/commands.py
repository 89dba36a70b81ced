"""What the use cases take (commands, decoded from requests by the servicer) and what they answer
(results, encoded by the servicer). Plain data over the domain's types."""

from dataclasses import dataclass
from datetime import datetime

from loyalty_ledger.domain.model import Account, CheckoutLine, Entry, Hold, LineReturn, Program, ProgramRules


@dataclass(frozen=True)
class CreateProgram:
    display_name: str
    rules: ProgramRules


@dataclass(frozen=True)
class GetProgram:
    program_id: str


@dataclass(frozen=True)
class OpenAccount:
    program_id: str
    customer_id: str


@dataclass(frozen=True)
class GetAccount:
    """By account_id, or by program_id + customer_id."""

    account_id: str = ""
    program_id: str = ""
    customer_id: str = ""


@dataclass(frozen=True)
class EarnPoints:
    account_id: str
    amount: int
    idempotency_key: str
    asset_code: str = ""
    reason: str = ""
    source_ref: str = ""
    available_at: datetime | None = None
    expires_at: datetime | None = None
    qualifying: bool = True


@dataclass(frozen=True)
class HoldPoints:
    account_id: str
    amount: int
    asset_code: str = ""
    reason: str = ""
    source_ref: str = ""
    ttl_seconds: int | None = None


@dataclass(frozen=True)
class CaptureHold:
    hold_id: str
    idempotency_key: str
    amount: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class ReleaseHold:
    hold_id: str


@dataclass(frozen=True)
class GetHold:
    hold_id: str


@dataclass(frozen=True)
class ReverseEntry:
    entry_id: str
    idempotency_key: str
    amount: int | None = None
    reason: str = ""
    source_ref: str = ""


@dataclass(frozen=True)
class TransferPoints:
    source_account_id: str
    destination_account_id: str
    amount: int
    idempotency_key: str
    asset_code: str = ""
    reason: str = ""


@dataclass(frozen=True)
class GetEntry:
    """By entry_id, or by the idempotency key of the call that made it."""

    entry_id: str = ""
    idempotency_key: str = ""


@dataclass(frozen=True)
class ListStatementLines:
    account_id: str
    page_size: int
    # The last posting id of the previous page's last line.
    before: int | None = None


@dataclass(frozen=True)
class RunExpiry:
    program_id: str | None = None


@dataclass(frozen=True)
class RecomputeTiers:
    program_id: str | None = None


@dataclass(frozen=True)
class SettleCheckout:
    account_id: str
    checkout_id: str
    lines: tuple[CheckoutLine, ...]
    idempotency_key: str
    hold_id: str | None = None
    burn_amount: int | None = None
    asset_code: str = ""
    reason: str = ""
    available_at: datetime | None = None
    expires_at: datetime | None = None
    qualifying: bool = True


@dataclass(frozen=True)
class ReturnCheckoutLines:
    checkout_id: str
    lines: tuple[LineReturn, ...]
    idempotency_key: str
    reason: str = ""


# --- results ---


@dataclass(frozen=True)
class AccountResult:
    """An account with the programme it belongs to (its asset and tiers), for the answer."""

    account: Account
    program: Program
    # Earliest first: (expires_at, points), at most 12. Filled for GetAccount only.
    expiring: tuple[tuple[datetime, int], ...] = ()
    # OpenAccount: False when the customer already had an account in the programme.
    created: bool = True


@dataclass(frozen=True)
class Earned:
    entry: Entry
    account: AccountResult


@dataclass(frozen=True)
class Held:
    hold: Hold
    account: AccountResult


@dataclass(frozen=True)
class Captured:
    hold: Hold
    entry: Entry
    account: AccountResult


@dataclass(frozen=True)
class StatementLine:
    entry_id: str
    entry_type: str
    amount: int
    running_balance: int
    reason: str
    source_ref: str
    created_at: datetime


@dataclass(frozen=True)
class StatementPage:
    lines: tuple[StatementLine, ...]
    # The `before` of the next page; None on the last one.
    next_before: int | None


@dataclass(frozen=True)
class ExpiryRun:
    run_time: datetime
    expired_points: int = 0
    expired_lots: int = 0
    voided_holds: int = 0
    matured_points: int = 0
    warned_lots: int = 0


@dataclass(frozen=True)
class TierRun:
    accounts_checked: int = 0
    accounts_changed: int = 0


@dataclass(frozen=True)
class Settled:
    account: AccountResult
    lines: tuple[CheckoutLine, ...]
    hold: Hold | None = None
    burn_entry: Entry | None = None
    earn_entry: Entry | None = None


@dataclass(frozen=True)
class Returned:
    account: AccountResult
    lines: tuple[LineReturn, ...]
    earn_reversal: Entry | None = None
    burn_reversal: Entry | None = None
