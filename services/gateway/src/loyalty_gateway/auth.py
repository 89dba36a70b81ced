"""Who is calling the gateway, and may they: API keys (tills, app backends, admin tools), admin tokens
(JWTs the gateway signs for its admin users) and per-key rate limits. The runtime's call guard awaits
`Authenticator.authenticate` before every call; each servicer method then asks `require(method)`.

- A key is checked against its stored hash, its state, its expiry and its terminal's state. Verified
  keys are kept in memory for `key_cache_seconds` (bounded): revoking a key takes effect at once in
  the replica that revoked it and within that bound everywhere else.
- Tokens are verified with PyJWT: the algorithm pinned per issuer, exp, iat, aud and iss required
  and checked. The gateway's own tokens are HS256 with its secret; with `oidc_jwks_url` set, tokens
  from that OIDC issuer are RS256/ES256 (as configured) with the issuer's key for their `kid` (its
  JWKS, fetched off the event loop and cached). `alg: none`, and one issuer's algorithm presented
  with the other's key, are refused.
- A call without credentials is anonymous for the tenant it names (x-loyalty-tenant): it reaches only
  the RPCs that need no scope (CreateAdminToken).
- Rate limits: a token bucket per key in Redis (one script call per request). When Redis does not
  answer the call goes ahead: the limit protects capacity, and refusing every till for a cache
  outage would be worse. RESOURCE_EXHAUSTED, reason RATE_LIMITED, carries the wait in RetryInfo.
"""

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

import jwt
from redis.asyncio import Redis
from redis.exceptions import RedisError

from loyalty_gateway import repository
from loyalty_gateway.domain import credentials
from loyalty_runtime.context import (
    AUTHORIZATION_HEADER,
    TENANT_HEADER,
    CallContext,
    check_tenant,
    current_call,
)
from loyalty_runtime.db import Database
from loyalty_runtime.errors import PermissionDenied, Reason, ResourceExhausted, Unauthenticated

log = logging.getLogger("loyalty.gateway.auth")

ALGORITHM = "HS256"
KEY_LOOKUP_SECONDS = 1.0

# KEYS[1] the bucket; ARGV: capacity, refill per second, now (ms). Returns {allowed, wait ms}.
TOKEN_BUCKET = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - at) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, wait}
"""


@dataclass(frozen=True)
class KeyCaller:
    """An authenticated API key, as the checkout needs it."""

    api_key_id: str
    tenant_id: str
    scopes: frozenset[str]
    terminal_id: str
    store_id: str
    channel: int


def _unauthenticated(why: str = "missing or invalid credentials") -> Unauthenticated:
    return Unauthenticated(Reason.UNAUTHENTICATED, why)


class Authenticator:
    def __init__(self, database: Database, redis: Redis, settings) -> None:
        self.database = database
        self.redis = redis
        self.settings = settings
        self._keys: OrderedDict[uuid.UUID, tuple[float, object]] = OrderedDict()
        self._bucket = redis.register_script(TOKEN_BUCKET)
        self._jwks = jwt.PyJWKClient(settings.oidc_jwks_url, lifespan=300) if settings.oidc_jwks_url else None

    async def authenticate(self, metadata) -> CallContext:
        authorization = tenant = ""
        for key, value in metadata:
            if key == AUTHORIZATION_HEADER:
                authorization = value
            elif key == TENANT_HEADER:
                tenant = value
        if not authorization:
            if not tenant:
                raise _unauthenticated()
            return CallContext(check_tenant(tenant), "anonymous", credentials.PUBLIC)
        if not isinstance(authorization, str) or not authorization.startswith("Bearer "):
            raise _unauthenticated()
        presented = authorization[7:].strip()
        if presented.startswith(credentials.PREFIX):
            return await self._api_key(presented)
        return await self._token(presented)

    # --- API keys ---

    async def _api_key(self, presented: str) -> CallContext:
        key_id = credentials.parse_key(presented)
        if key_id is None:
            raise _unauthenticated()
        row = await self._key_row(key_id)
        now = datetime.now(UTC)
        if (
            row is None
            or not credentials.secret_matches(presented, row["secret_hash"])
            or row["state"] != "active"
            or (row["expire_at"] is not None and row["expire_at"] <= now)
            or (row["terminal_id"] is not None and row["terminal_state"] != "active")
        ):
            raise _unauthenticated()
        await self._rate_limit(key_id)
        return CallContext(row["tenant_id"], f"key:{key_id.hex}", frozenset(row["scopes"]))

    async def _key_row(self, key_id: uuid.UUID):
        cached = self._keys.get(key_id)
        if cached is not None and time.monotonic() - cached[0] < self.settings.key_cache_seconds:
            return cached[1]
        async with self.database.connection(KEY_LOOKUP_SECONDS) as connection:
            row = await repository.key_by_id(connection, key_id)
        self._keys[key_id] = (time.monotonic(), row)
        self._keys.move_to_end(key_id)
        while len(self._keys) > self.settings.key_cache_size:
            self._keys.popitem(last=False)
        return row

    def forget(self, key_id: uuid.UUID) -> None:
        """After a revocation or rotation in this replica: the next call reads the key again."""
        self._keys.pop(key_id, None)

    def forget_all(self) -> None:
        self._keys.clear()

    def key_caller(self) -> KeyCaller | None:
        """The current call's API key (None for an admin token or an anonymous caller)."""
        call = current_call()
        if not call.principal.startswith("key:"):
            return None
        row = self._keys.get(uuid.UUID(call.principal[4:]))
        if row is None or row[1] is None:
            raise _unauthenticated()
        key = row[1]
        return KeyCaller(
            api_key_id=call.principal[4:],
            tenant_id=key["tenant_id"],
            scopes=call.scopes,
            terminal_id=key["terminal_id"].hex if key["terminal_id"] else "",
            store_id=key["store_id"] or "",
            channel=key["channel"],
        )

    async def _rate_limit(self, key_id: uuid.UUID) -> None:
        s = self.settings
        if s.rate_limit_per_second <= 0:
            return
        try:
            allowed, wait_ms = await self._bucket(
                keys=[f"gateway:ratelimit:{key_id.hex}"],
                args=[s.rate_limit_burst, s.rate_limit_per_second, int(time.time() * 1000)],
            )
        except (RedisError, OSError) as error:
            log.warning("rate limit not checked", extra={"fields": {"error_type": type(error).__name__}})
            return
        if not allowed:
            raise ResourceExhausted(
                Reason.RATE_LIMITED, "too many calls with this API key", retry_after_seconds=wait_ms / 1000
            )

    # --- admin tokens ---

    async def _token(self, token: str) -> CallContext:
        s = self.settings
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            if self._jwks is not None and algorithm in s.oidc_algorithms:
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
                algorithms, audience, issuer = list(s.oidc_algorithms), s.oidc_audience, s.oidc_issuer
                names = (s.oidc_tenant_claim, s.oidc_roles_claim)
            else:
                key, algorithms = s.jwt_secret.get_secret_value(), [ALGORITHM]
                audience, issuer, names = s.jwt_audience, s.jwt_issuer, ("tenant", "roles")
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=audience,
                issuer=issuer,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
                leeway=5,
            )
        except jwt.PyJWTError:
            raise _unauthenticated() from None
        tenant, roles = claims.get(names[0]), claims.get(names[1])
        if not isinstance(tenant, str) or not isinstance(roles, list):
            raise _unauthenticated()
        scopes = frozenset(credentials.role_scope(r) for r in roles if r in credentials.ROLES)
        return CallContext(check_tenant(tenant), f"admin:{claims['sub']}", scopes)

    def issue_token(
        self, tenant: str, admin_user_id: str, roles: list[str], now: datetime
    ) -> tuple[str, datetime]:
        s = self.settings
        expires = now + timedelta(seconds=s.jwt_lifetime_seconds)
        claims = {
            "iss": s.jwt_issuer,
            "aud": s.jwt_audience,
            "sub": admin_user_id,
            "tenant": tenant,
            "roles": roles,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        return jwt.encode(claims, s.jwt_secret.get_secret_value(), algorithm=ALGORITHM), expires


def require(method: str) -> CallContext:
    """The current caller, if it may call `method`; PERMISSION_DENIED otherwise (nothing is done)."""
    call = current_call()
    if not credentials.permitted(method, call.scopes):
        refuse(call, method)
    return call


def refuse(call: CallContext, method: str) -> NoReturn:
    """An anonymous caller must sign in (UNAUTHENTICATED); any other may not (PERMISSION_DENIED)."""
    if call.principal == "anonymous":
        raise _unauthenticated()
    raise PermissionDenied(Reason.PERMISSION_DENIED, f"this credential may not call {method}")
