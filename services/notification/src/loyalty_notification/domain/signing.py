"""Signatures: webhook requests (Stripe's scheme) and one-click unsubscribe tokens (RFC 8058).

Webhook: the header `Loyalty-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
The receiver recomputes it over the raw body, compares in constant time and refuses a timestamp
older than its tolerance (5 minutes by default), so a captured request cannot be replayed later;
within the tolerance it drops a `Loyalty-Message-Id` it has already seen (a retry after a lost answer
carries the same id, so duplicates are detectable too).

Unsubscribe token: base64url("<tenant>|<customer>|<channel>") "." base64url(HMAC-SHA256), so the
link cannot be altered to unsubscribe someone else.

Tracking token (the open pixel): base64url("<tenant>|<message>") "." base64url(HMAC-SHA256 over a
purpose prefix and the payload), so neither kind of token passes for the other.
"""

import base64
import hmac
from dataclasses import dataclass

# The webhook channel signs as every webhook of the platform does (the runtime's scheme).
from loyalty_runtime.webhooks import (  # noqa: F401 (re-exported for the channel and its tests)
    DEFAULT_TOLERANCE_SECONDS,
    SIGNATURE_HEADER,
    SignatureRefused,
    mac as _mac,
    sign_webhook,
    verify_webhook,
)

MESSAGE_ID_HEADER = "Loyalty-Message-Id"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Unsubscription:
    tenant_id: str
    customer_id: str
    channel: str  # a Channel value


def unsubscribe_token(secret: str, subject: Unsubscription) -> str:
    payload = f"{subject.tenant_id}|{subject.customer_id}|{subject.channel}".encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def _signed_parts(secret: str, token: str, purpose: bytes) -> list[str] | None:
    """The payload's fields, or None when the token was not signed with `secret` for `purpose`."""
    try:
        payload_text, mac_text = token.split(".", 1)
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except (ValueError, TypeError):
        return None
    if not hmac.compare_digest(mac, _mac(secret, purpose + payload)):
        return None
    return payload.decode(errors="replace").split("|")


def read_unsubscribe_token(secret: str, token: str) -> Unsubscription | None:
    """The token's subject, or None when it was not signed with `secret` or was altered."""
    parts = _signed_parts(secret, token, b"")
    return Unsubscription(*parts) if parts and len(parts) == 3 else None


# Unsubscribe tokens were signed without a prefix before tracking tokens existed; links already sent
# keep working, and this prefix keeps the two kinds apart.
TRACKING_PURPOSE = b"notification.opened\x00"


@dataclass(frozen=True)
class Tracked:
    tenant_id: str
    message_id: str


def tracking_token(secret: str, subject: Tracked) -> str:
    payload = f"{subject.tenant_id}|{subject.message_id}".encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, TRACKING_PURPOSE + payload))}"


def read_tracking_token(secret: str, token: str) -> Tracked | None:
    parts = _signed_parts(secret, token, TRACKING_PURPOSE)
    return Tracked(*parts) if parts and len(parts) == 2 else None
