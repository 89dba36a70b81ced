"""API keys and admin roles: what a credential looks like and what each scope or role may call.

An API key is `lk_<key id, 32 hex>_<secret, 43 url-safe characters>`: the id finds the row (and with
it the tenant) without a scan, the secret (256 random bits) is compared with its stored SHA-256 in
constant time. A fast hash is right here: nothing can be guessed from a 256-bit secret's hash, unlike
a password's (argon2 for those).
"""

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass

PREFIX = "lk_"
_KEY = re.compile(r"lk_([0-9a-f]{32})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class NewKey:
    api_key_id: uuid.UUID
    secret: str
    secret_hash: bytes

    @property
    def display_prefix(self) -> str:
        return self.secret[:11]


def new_key() -> NewKey:
    key_id = uuid.uuid4()
    secret = f"{PREFIX}{key_id.hex}_{secrets.token_urlsafe(32)}"
    return NewKey(key_id, secret, hash_secret(secret))


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_key(presented: str) -> uuid.UUID | None:
    """The key id of a well-formed key; None for anything else."""
    match = _KEY.fullmatch(presented)
    return uuid.UUID(match.group(1)) if match else None


def secret_matches(presented: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(presented), stored_hash)


# Scopes of API keys (ApiScope) and roles of admin users (AdminRole), as the names carried in the
# call context (and on to the services in x-loyalty-scopes).
CHECKOUT, CUSTOMER_READ, CUSTOMER_WRITE, ADMIN = "checkout", "customer.read", "customer.write", "admin"
KEY_SCOPES = (CHECKOUT, CUSTOMER_READ, CUSTOMER_WRITE, ADMIN)
ROLES = ("admin", "marketer", "support", "analyst", "auditor")


def role_scope(role: str) -> str:
    return f"role.{role}"


ANY_ADMIN = frozenset({ADMIN, *(role_scope(r) for r in ROLES)})
ADMINISTRATORS = frozenset({ADMIN, role_scope("admin")})
AUDITORS = frozenset({role_scope("auditor"), role_scope("admin")})
SUPPORT = frozenset({ADMIN, role_scope("admin"), role_scope("support")})
PUBLIC: frozenset[str] = frozenset()

# What each RPC requires: any one of the scopes listed. An RPC missing here is refused (fail closed).
PERMISSIONS: dict[str, frozenset[str]] = {
    "PreviewCheckout": frozenset({CHECKOUT}),
    "ReserveCheckout": frozenset({CHECKOUT}),
    "CommitCheckout": frozenset({CHECKOUT}),
    "CancelCheckout": frozenset({CHECKOUT}),
    "GetCheckout": frozenset({CHECKOUT}),
    "ReturnItems": frozenset({CHECKOUT}),
    "IdentifyCustomer": frozenset({CHECKOUT, CUSTOMER_READ}),
    "GetWallet": frozenset({CUSTOMER_READ}),
    "EnrolCustomer": frozenset({CUSTOMER_WRITE}),
    "RecordEvent": frozenset({CUSTOMER_WRITE}),
    "ListRewards": frozenset({CUSTOMER_READ}),
    "ListAchievementProgress": frozenset({CUSTOMER_READ}),
    "RedeemReward": frozenset({CUSTOMER_WRITE}),
    "CreateCustomerToken": frozenset({CUSTOMER_WRITE}),
    "CreateTerminal": ADMINISTRATORS,
    "GetTerminal": ADMINISTRATORS,
    "ListTerminals": ADMINISTRATORS,
    "RevokeTerminal": ADMINISTRATORS,
    "CreateApiKey": ADMINISTRATORS,
    "GetApiKey": ADMINISTRATORS,
    "ListApiKeys": ADMINISTRATORS,
    "RevokeApiKey": ADMINISTRATORS,
    "RotateApiKey": ADMINISTRATORS,
    "CreateAdminUser": ADMINISTRATORS,
    "UpdateTenantSettings": ADMINISTRATORS,
    "GetTenantSettings": ANY_ADMIN,
    "ListAuditRecords": AUDITORS,
    "VerifyAuditLog": AUDITORS,
    "AdjustPoints": SUPPORT,
    "CreateAdminToken": PUBLIC,
}


def permitted(method: str, scopes: frozenset[str]) -> bool:
    required = PERMISSIONS.get(method)
    if required is None:
        return False
    return not required or not required.isdisjoint(scopes)
