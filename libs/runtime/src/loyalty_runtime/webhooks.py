"""Signed webhooks (Stripe's scheme) for services that call one (promotion's trigger webhooks;
notification's domain/signing.py signs its webhook channel the same way).

The header `Loyalty-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. The
receiver recomputes it over the raw body, compares in constant time and refuses a timestamp older
than its tolerance (5 minutes by default), so a captured request cannot be replayed later; within
the tolerance it drops a request id it has already seen (a retry after a lost answer carries the
same id, so duplicates are detectable too)."""

import hashlib
import hmac

SIGNATURE_HEADER = "Loyalty-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def mac(secret: str, data: bytes) -> bytes:
    return hmac.new(secret.encode(), data, hashlib.sha256).digest()


def sign_webhook(secret: str, body: bytes, timestamp: int) -> str:
    digest = mac(secret, f"{timestamp}.".encode() + body).hex()
    return f"t={timestamp},v1={digest}"


class SignatureRefused(Exception):
    """The signature does not match, is malformed, or is too old (a replay)."""


def verify_webhook(
    secret: str, header: str, body: bytes, now: int, tolerance: int = DEFAULT_TOLERANCE_SECONDS
) -> int:
    """The signed timestamp, if `header` signs `body` and is recent; else SignatureRefused."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if "t" not in parts or "v1" not in parts or not parts["t"].isdigit():
        raise SignatureRefused("malformed signature header")
    timestamp = int(parts["t"])
    expected = mac(secret, f"{timestamp}.".encode() + body).hex()
    if not hmac.compare_digest(expected, parts["v1"]):
        raise SignatureRefused("signature does not match")
    if abs(now - timestamp) > tolerance:
        raise SignatureRefused("timestamp outside the tolerance: a replay")
    return timestamp
