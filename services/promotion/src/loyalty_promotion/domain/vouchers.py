"""Codes and limits as pure rules: how a presented code is normalised, why a stored voucher cannot
be used now, which customer-usage scopes a redemption takes (with their limits, and the period of
the tenant's calendar), and whether a budget has room."""

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from loyalty.promotion.v1 import campaign_pb2
from loyalty_runtime.errors import Reason

MAX_CODE_LENGTH = 64
CODE_CHARACTERS = re.compile(r"^[A-Z0-9][A-Z0-9_-]*$")


def normalize(code: str, ignore_dashes: bool = False) -> str:
    """Codes are matched case-insensitively after trimming surrounding spaces, and without their
    dashes where the tenant says so (PromotionSettings.ignore_dashes_in_codes)."""
    code = code.strip().upper()
    return code.replace("-", "") if ignore_dashes else code


def code_problem(code: str) -> str:
    """Why a code cannot be stored ('' = fine): 1..64 of A-Z, 0-9, '-' and '_' after normalising."""
    if not code or len(code) > MAX_CODE_LENGTH:
        return f"a code has 1 to {MAX_CODE_LENGTH} characters"
    if not CODE_CHARACTERS.match(code):
        return "a code has only letters, digits, '-' and '_' and starts with a letter or digit"
    return ""


@dataclass(frozen=True)
class VoucherFacts:
    """What decides whether a voucher may be used (read from its row)."""

    voucher_id: str
    campaign_id: str
    code: str
    disabled: bool
    start: datetime | None
    end: datetime | None
    max_redemptions: int
    max_per_customer: int
    holder_customer_id: str | None
    redemption_count: int
    reserved_count: int

    @property
    def exhausted(self) -> bool:
        return (
            bool(self.max_redemptions) and self.redemption_count + self.reserved_count >= self.max_redemptions
        )


def rejection(voucher: VoucherFacts, customer_id: str, now: datetime) -> Reason | None:
    """Why this voucher cannot be used now by this customer, in a fixed order (disabled before
    expired before exhausted before holder), or None."""
    if voucher.disabled:
        return Reason.VOUCHER_DISABLED
    if voucher.start is not None and now < voucher.start:
        return Reason.VOUCHER_NOT_YET_VALID
    if voucher.end is not None and now >= voucher.end:
        return Reason.VOUCHER_EXPIRED
    if voucher.exhausted:
        return Reason.VOUCHER_EXHAUSTED
    if voucher.holder_customer_id and voucher.holder_customer_id != customer_id:
        return Reason.VOUCHER_NOT_HOLDER
    return None


def period_key(period: int, now: datetime, tz: str) -> str:
    """The calendar period `now` falls in, in the tenant's time zone: 2026-12-02, 2026-W49, 2026-12."""
    local = now.astimezone(ZoneInfo(tz))
    if period == campaign_pb2.LIMIT_PERIOD_DAY:
        return local.date().isoformat()
    if period == campaign_pb2.LIMIT_PERIOD_WEEK:
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{local.year}-{local.month:02d}"


@dataclass(frozen=True)
class Scope:
    """One per-customer limit a redemption counts against: `key` names its customer_usage row."""

    key: str
    limit: int
    reason: Reason = Reason.CUSTOMER_LIMIT_REACHED


def customer_scopes(
    campaign_id: str,
    budget: campaign_pb2.Budget | None,
    promotion_limits: dict[str, int],
    voucher: VoucherFacts | None,
    now: datetime,
    tz: str,
) -> list[Scope]:
    """Every per-customer limit one campaign's redemption takes, sorted by key (the order rows are
    locked in, so concurrent reservations never deadlock)."""
    scopes = []
    if voucher is not None and voucher.max_per_customer:
        scopes.append(Scope(f"v:{voucher.voucher_id}", voucher.max_per_customer))
    if budget is not None and budget.max_redemptions_per_customer:
        scopes.append(Scope(f"c:{campaign_id}", budget.max_redemptions_per_customer))
    if budget is not None and budget.max_redemptions_per_customer_per_period and budget.period:
        key = f"c:{campaign_id}:{period_key(budget.period, now, tz)}"
        scopes.append(Scope(key, budget.max_redemptions_per_customer_per_period))
    scopes += [Scope(f"p:{promotion_id}", limit) for promotion_id, limit in promotion_limits.items() if limit]
    return sorted(scopes, key=lambda s: s.key)


@dataclass(frozen=True)
class Usage:
    """A campaign's consumption: reserved plus committed (`at_store`: its redemptions at the
    basket's store)."""

    redemptions: int = 0
    discount: int = 0
    points: int = 0
    at_store: int = 0


def budget_rejection(
    budget: campaign_pb2.Budget | None, usage: Usage, discount: int, points: int, currency: str
) -> Reason | None:
    """Whether one more redemption worth `discount` and `points` fits the budget (never partly)."""
    if budget is None:
        return None
    if budget.max_redemptions and usage.redemptions + 1 > budget.max_redemptions:
        return Reason.BUDGET_EXHAUSTED
    if budget.max_redemptions_per_store and usage.at_store + 1 > budget.max_redemptions_per_store:
        return Reason.STORE_LIMIT_REACHED
    if budget.max_points and usage.points + points > budget.max_points:
        return Reason.BUDGET_EXHAUSTED
    limit = budget.max_discount
    if (
        limit.amount_minor
        and discount
        and (limit.currency_code != currency or usage.discount + discount > limit.amount_minor)
    ):
        return Reason.BUDGET_EXHAUSTED
    return None


def discount_limit(budget: campaign_pb2.Budget | None, currency: str) -> int:
    """The discount budget for a basket in `currency` (0 = none; another currency has no room: -1)."""
    if budget is None or not budget.max_discount.amount_minor:
        return 0
    return budget.max_discount.amount_minor if budget.max_discount.currency_code == currency else -1
