"""What a tenant's settings may hold: the services that copy them (tenant.settings_changed) compute
with the time zone and choose texts by the locale, so a value none of them could use is refused here,
at their one source."""

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# A BCP 47 shape (language, then subtags): "de", "de-AT", "zh-Hant-TW".
LOCALE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")


def time_zone_problem(name: str) -> str | None:
    """Why `name` is not an IANA time zone; None if it is one (empty: UTC)."""
    if not name:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "an IANA time zone such as Europe/Berlin"
    return None


def locale_problem(tag: str) -> str | None:
    """Why `tag` is not a BCP 47 language tag; None if it is one (empty: none)."""
    if not tag or LOCALE.fullmatch(tag):
        return None
    return "a BCP 47 language tag such as de-AT"
