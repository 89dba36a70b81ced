"""Whether, where and when a message may go: consent, contact point, frequency caps, quiet hours.

Consent follows the profile service's rule (CheckConsent): marketing needs an explicit grant on the
channel; transactional messages are allowed unless the customer withdrew them on that channel.
Caps and quiet hours apply to marketing only (the contract's FrequencyCapPolicy).
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loyalty_notification.domain.model import Cap, Channel, Purpose, QuietHours, Suppression

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
EMAIL = re.compile(
    r"^[^@\s<>\",;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$"
)


@dataclass(frozen=True)
class ConsentAnswer:
    channel: Channel
    purpose: Purpose
    granted: bool


@dataclass(frozen=True)
class Candidate:
    """What is known about one channel for this customer and template."""

    channel: Channel
    contact: str  # "" = no contact point
    has_variant: bool


def allowed(consents: Iterable[ConsentAnswer], channel: Channel, purpose: Purpose) -> bool:
    answer = next((c for c in consents if c.channel is channel and c.purpose is purpose), None)
    if purpose is Purpose.MARKETING:
        return answer is not None and answer.granted
    return answer is None or answer.granted


def choose_channel(
    candidates: Sequence[Candidate], consents: Sequence[ConsentAnswer], purpose: Purpose
) -> Candidate | Suppression:
    """The first candidate with a variant, consent and a contact point; else why none qualifies
    (no consent outranks no contact point, which outranks no variant: the most telling reason)."""
    reasons = set()
    for candidate in candidates:
        if not candidate.has_variant:
            reasons.add(Suppression.NO_VARIANT)
        elif not allowed(consents, candidate.channel, purpose):
            reasons.add(Suppression.NO_CONSENT)
        elif not candidate.contact:
            reasons.add(Suppression.NO_CONTACT_POINT)
        else:
            return candidate
    for reason in (Suppression.NO_CONSENT, Suppression.NO_CONTACT_POINT, Suppression.NO_VARIANT):
        if reason in reasons:
            return reason
    return Suppression.NO_VARIANT


def valid_contact(channel: Channel, contact: str) -> bool:
    if channel is Channel.EMAIL:
        return bool(EMAIL.match(contact))
    if channel is Channel.SMS:
        return bool(E164.match(contact))
    return bool(contact)


def mask(channel: Channel, contact: str) -> str:
    """For support screens: "j***@example.com", "+49*******12"."""
    if channel is Channel.EMAIL and "@" in contact:
        local, domain = contact.split("@", 1)
        return f"{local[:1]}***@{domain}"
    if channel is Channel.SMS:
        return contact[:3] + "*" * max(0, len(contact) - 5) + contact[-2:]
    if channel is Channel.WEBHOOK:
        return contact.split("?", 1)[0][:200]
    return contact[:4] + "***"


def caps_exceeded(
    caps: Sequence[Cap], channel: Channel, sent_within: dict[tuple[Channel | None, int], int]
) -> bool:
    """`sent_within[(channel or None, window_seconds)]` = messages already counted in that window."""
    return any(
        sent_within.get((cap.channel, cap.window_seconds), 0) >= cap.max_messages
        for cap in caps
        if cap.channel is None or cap.channel is channel
    )


def zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_zone(customer_zone: str, quiet: QuietHours | None) -> ZoneInfo:
    """The customer's zone, else the tenant's default (kept with its quiet hours), else UTC."""
    default = zone(quiet.default_time_zone) if quiet else None
    return zone(customer_zone) or default or ZoneInfo("UTC")


def quiet_until(quiet: QuietHours | None, customer_zone: str, at: datetime) -> datetime | None:
    """When quiet hours end if `at` falls inside them in the customer's zone (else the policy's
    default zone, else UTC); None when `at` is outside them."""
    if quiet is None or quiet.start_minute == quiet.end_minute:
        return None
    tz = local_zone(customer_zone, quiet)
    local = at.astimezone(tz)
    minute = local.hour * 60 + local.minute
    start, end = quiet.start_minute, quiet.end_minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    end_day = local.date() if minute < end else local.date() + timedelta(days=1)
    wall = datetime.combine(end_day, time(end // 60, end % 60))
    return wall.replace(tzinfo=tz)
