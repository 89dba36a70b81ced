"""Referral programme rules that need no I/O: the start of the period a referrer's cap counts in."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from loyalty.promotion.v1 import campaign_pb2


def period_start(period: int, now: datetime, time_zone: str) -> datetime:
    """The first instant of the calendar day, ISO week (from Monday) or month `now` falls in, in
    the tenant's time zone."""
    local = now.astimezone(ZoneInfo(time_zone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == campaign_pb2.LIMIT_PERIOD_DAY:
        start = midnight
    elif period == campaign_pb2.LIMIT_PERIOD_WEEK:
        start = midnight - timedelta(days=local.weekday())
    else:
        start = midnight.replace(day=1)
    return start  # zoneinfo takes the offset of the start's own wall time (summer time or not)


def cap_reached(settings: campaign_pb2.ReferralSettings, accepted_in_period: int) -> bool:
    return 0 < settings.max_referrals_per_period <= accepted_in_period
