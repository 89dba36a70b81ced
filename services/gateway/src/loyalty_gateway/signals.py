"""Raw card, device, IP, phone and e-mail values never leave the gateway: fraud gets keyed hashes
(HMAC-SHA-256 with the gateway's signal secret, per tenant, lower-case hex), the same value always
giving the same hash within a tenant and never across tenants."""

import hashlib
import hmac


def keyed_hash(secret: bytes, tenant: str, value: str) -> str:
    if not value:
        return ""
    return hmac.new(secret, f"{tenant}:{value}".encode(), hashlib.sha256).hexdigest()
