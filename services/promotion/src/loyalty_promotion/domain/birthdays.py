"""Birthdays, pure: on which date a customer celebrates in a given year, and whose birthday is today
where they live. A birthday on 29 February is celebrated on the 28th in other years."""

from calendar import isleap
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class Birthday:
    tenant_id: str
    customer_id: str
    month: int
    day: int
    time_zone: str
    celebrated_year: int | None


def celebrated_on(month: int, day: int, year: int) -> date:
    if (month, day) == (2, 29) and not isleap(year):
        return date(year, 2, 28)
    return date(year, month, day)


def candidate_days(now: datetime) -> list[tuple[int, int]]:
    """(month, day) of every birthday that may be today somewhere on earth (UTC-12 to UTC+14)."""
    days = {(now + timedelta(hours=hours)).date() for hours in (-12, 0, 14)}
    found = {(d.month, d.day) for d in days}
    if (2, 28) in found:
        found.add((2, 29))
    return sorted(found)


def local_today(now: datetime, time_zone: str) -> date:
    try:
        zone = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return now.astimezone(zone).date()


def due_today(
    birthdays: Iterable[Birthday], now: datetime, tenant_zones: dict[str, str]
) -> list[tuple[Birthday, int]]:
    """The birthdays that are today in the customer's time zone (else the tenant's), not yet
    celebrated this year, each with the year celebrated."""
    due = []
    for birthday in birthdays:
        today = local_today(now, birthday.time_zone or tenant_zones.get(birthday.tenant_id, ""))
        if birthday.celebrated_year == today.year:
            continue
        if celebrated_on(birthday.month, birthday.day, today.year) == today:
            due.append((birthday, today.year))
    return due
