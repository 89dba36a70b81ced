"""Manual point adjustments (AdjustPoints): the limits a tenant sets and the rule that holds one
adjustment against them. Credits and debits both count towards an admin user's day, so a limit
bounds how many points one person can move, whichever way."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from loyalty_runtime.errors import FailedPrecondition, InvalidArgument, Reason, ResourceExhausted

DEFAULT_PER_ADJUSTMENT = 5_000
DEFAULT_PER_DAY = 20_000
# Beyond any sane limit, and far inside int64 when added up.
MAX_LIMIT = 10**12


@dataclass(frozen=True)
class Limits:
    per_adjustment: int
    per_day: int

    @classmethod
    def of(cls, per_adjustment: int, per_day: int) -> "Limits":
        """The tenant's settings, where 0 means the default."""
        return cls(per_adjustment or DEFAULT_PER_ADJUSTMENT, per_day or DEFAULT_PER_DAY)


def check_limits(per_adjustment: int, per_day: int) -> None:
    for value, field in (
        (per_adjustment, "settings.adjustment_limit_points"),
        (per_day, "settings.daily_adjustment_limit_points"),
    ):
        if not 0 <= value <= MAX_LIMIT:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, f"0 (the default) to {MAX_LIMIT}", field=field)


def check_request(amount: int, reason: str, customer_id: str) -> None:
    if not customer_id:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "a customer is required", field="customer_id")
    if amount == 0:
        raise InvalidArgument(
            Reason.INVALID_AMOUNT, "a positive (credit) or negative (debit) amount", field="amount"
        )
    if not reason.strip():
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "say why (the customer sees it)", field="reason")


def counted_points(amount: int, limits: Limits) -> int:
    """What the adjustment counts towards its admin user's day; above what one adjustment may move
    (the per-adjustment limit, or a whole day's where that is lower), FAILED_PRECONDITION: no retry
    helps. Whether the day has room is decided atomically by the database (repository.count_adjustment)."""
    points = abs(amount)
    ceiling = min(limits.per_adjustment, limits.per_day)
    if points > ceiling:
        raise FailedPrecondition(
            Reason.ADJUSTMENT_LIMIT_EXCEEDED, f"one adjustment moves at most {ceiling} points", field="amount"
        )
    return points


def day_exhausted(limits: Limits, now: datetime, time_zone: str) -> ResourceExhausted:
    """The day has no room for the adjustment: retry tomorrow (the tenant's time zone)."""
    return ResourceExhausted(
        Reason.ADJUSTMENT_LIMIT_EXCEEDED,
        f"this would take your adjustments today beyond {limits.per_day} points",
        field="amount",
        retry_after_seconds=seconds_until_next_day(now, time_zone),
    )


def local_day(now: datetime, time_zone: str) -> date:
    return now.astimezone(ZoneInfo(time_zone)).date()


def seconds_until_next_day(now: datetime, time_zone: str) -> float:
    local = now.astimezone(ZoneInfo(time_zone))
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), local.tzinfo)
    return max((midnight - local).total_seconds(), 0.0)
