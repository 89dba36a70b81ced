"""Customer tokens: what a customer's app shows as a QR code at the till. A token is 256 random bits
that Redis maps, by its SHA-256, to the customer until it expires (the token itself is stored
nowhere). Issuing is idempotent per key for the token's lifetime."""

import hashlib
import secrets
from datetime import datetime, timedelta

from redis.asyncio import Redis
from redis.exceptions import RedisError

from loyalty_runtime.errors import FailedPrecondition, NotFound, Reason, Unavailable

PREFIX = "ct_"


def _key(tenant: str, token: str) -> str:
    return f"gateway:customer-token:{tenant}:{hashlib.sha256(token.encode()).hexdigest()}"


class CustomerTokens:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def issue(self, tenant: str, customer_id: str, idempotency_key: str, ttl: timedelta, now: datetime):
        """(token, expire time); the same key within the lifetime answers the same token."""
        seconds = max(1, int(ttl.total_seconds()))
        token = PREFIX + secrets.token_urlsafe(32)
        claim = f"gateway:customer-token-key:{tenant}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"
        try:
            if await self.redis.set(claim, f"{token}|{customer_id}", ex=seconds, nx=True):
                await self.redis.set(_key(tenant, token), customer_id, ex=seconds)
                return token, now + timedelta(seconds=seconds)
            earlier = (await self.redis.get(claim) or b"").decode()
            left = await self.redis.ttl(claim)
        except (RedisError, OSError):
            raise Unavailable(Reason.UNAVAILABLE, "tokens cannot be issued right now; retry") from None
        token, _, owner = earlier.partition("|")
        if owner != customer_id:
            raise FailedPrecondition(
                Reason.IDEMPOTENCY_KEY_REUSED,
                "this key issued a token for another customer",
                field="idempotency_key",
            )
        return token, now + timedelta(seconds=max(left, 0))

    async def customer(self, tenant: str, token: str) -> str:
        try:
            found = await self.redis.get(_key(tenant, token)) if token.startswith(PREFIX) else None
        except (RedisError, OSError):
            raise Unavailable(Reason.UNAVAILABLE, "tokens cannot be checked right now; retry") from None
        if not found:
            raise NotFound(Reason.CUSTOMER_NOT_FOUND, "no such customer", field="customer.customer_token")
        return found.decode()
