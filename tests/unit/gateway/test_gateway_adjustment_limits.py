"""The limits of manual point adjustments (domain/adjustments.py)."""

from datetime import UTC, date, datetime

import pytest

from loyalty_gateway.domain import adjustments as a
from loyalty_runtime.errors import FailedPrecondition, InvalidArgument, Reason


def test_zero_limits_are_the_defaults():
    assert a.Limits.of(0, 0) == a.Limits(a.DEFAULT_PER_ADJUSTMENT, a.DEFAULT_PER_DAY)
    assert a.Limits.of(7, 9) == a.Limits(7, 9)


@pytest.mark.parametrize("amount", [100, -100, 1, -1])
def test_credits_and_debits_count_alike(amount):
    assert a.counted_points(amount, a.Limits(100, 1000)) == abs(amount)


@pytest.mark.parametrize(("amount", "limits"), [(101, a.Limits(100, 1000)), (-60, a.Limits(100, 50))])
def test_one_adjustment_above_what_one_may_move_is_refused_for_good(amount, limits):
    with pytest.raises(FailedPrecondition) as refused:
        a.counted_points(amount, limits)
    assert refused.value.reason is Reason.ADJUSTMENT_LIMIT_EXCEEDED


def test_the_day_is_the_tenants_and_a_full_one_says_when_the_next_begins():
    late = datetime(2026, 12, 3, 23, 30, tzinfo=UTC)  # 00:30 on the 4th in Vienna
    assert a.local_day(late, "Europe/Vienna") == date(2026, 12, 4)
    assert a.local_day(late, "UTC") == date(2026, 12, 3)
    exhausted = a.day_exhausted(a.Limits(10, 20), late, "Europe/Vienna")
    assert exhausted.reason is Reason.ADJUSTMENT_LIMIT_EXCEEDED
    assert exhausted.retry_after_seconds == 23.5 * 3600


@pytest.mark.parametrize(
    ("amount", "reason", "customer", "field"),
    [(0, "why", "c", "amount"), (5, " ", "c", "reason"), (5, "why", "", "customer_id")],
)
def test_a_request_needs_a_customer_an_amount_and_a_reason(amount, reason, customer, field):
    with pytest.raises(InvalidArgument) as refused:
        a.check_request(amount, reason, customer)
    assert refused.value.violations[0].field == field


@pytest.mark.parametrize(("per_adjustment", "per_day"), [(-1, 0), (0, a.MAX_LIMIT + 1)])
def test_limits_are_bounded(per_adjustment, per_day):
    with pytest.raises(InvalidArgument):
        a.check_limits(per_adjustment, per_day)
