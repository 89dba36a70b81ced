"""The period a referrer's cap counts in: day, ISO week and month in the tenant's time zone, across a
change to summer time."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from loyalty.promotion.v1 import campaign_pb2
from loyalty_promotion.domain.referrals import cap_reached, period_start

DAY, WEEK, MONTH = (
    campaign_pb2.LIMIT_PERIOD_DAY,
    campaign_pb2.LIMIT_PERIOD_WEEK,
    campaign_pb2.LIMIT_PERIOD_MONTH,
)
WINTER, SUMMER = timezone(timedelta(hours=1)), timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("period", "now", "start"),
    [
        # 2026-03-31 00:30 in Vienna (summer time since the 29th) is still the 30th in UTC.
        (DAY, datetime(2026, 3, 30, 22, 30, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=SUMMER)),
        (WEEK, datetime(2026, 3, 30, 22, 30, tzinfo=UTC), datetime(2026, 3, 30, tzinfo=SUMMER)),
        (WEEK, datetime(2026, 3, 29, 12, tzinfo=UTC), datetime(2026, 3, 23, tzinfo=WINTER)),  # a Sunday
        (MONTH, datetime(2026, 3, 30, 22, 30, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=WINTER)),
    ],
)
def test_a_period_starts_at_local_midnight_with_its_own_offset(period, now, start):
    assert period_start(period, now, "Europe/Vienna") == start


def test_the_cap_is_reached_at_the_limit_and_zero_means_none():
    capped = campaign_pb2.ReferralSettings(max_referrals_per_period=3, referral_period=DAY)
    assert [cap_reached(capped, n) for n in (2, 3, 4)] == [False, True, True]
    assert not cap_reached(campaign_pb2.ReferralSettings(), 10_000)
