"""The checkout cache of ListCustomerSegments answers in Redis, one key per customer.

PostgreSQL stays the truth: every committed membership change deletes the keys of exactly the
customers it changed; a Redis outage makes reads fall back to PostgreSQL and never fails a call.
The TTL only bounds how long an entry could outlive an invalidation lost to such an outage.
"""

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

TTL_SECONDS = 600
BATCH = 1000


class MembershipCache:
    def __init__(self, redis: Redis | None) -> None:
        self.redis = redis

    @staticmethod
    def key(tenant: str, customer_id: str) -> str:
        return f"segmentation:{tenant}:customer-segments:{customer_id}"

    async def get(self, tenant: str, customer_id: str) -> bytes | None:
        if self.redis is None:
            return None
        try:
            return await self.redis.get(self.key(tenant, customer_id))
        except (RedisError, OSError):
            return None

    async def put(self, tenant: str, customer_id: str, answer: bytes) -> None:
        if self.redis is None:
            return
        try:
            await self.redis.set(self.key(tenant, customer_id), answer, ex=TTL_SECONDS)
        except (RedisError, OSError):
            log.warning("segment cache unavailable: answer not cached")

    async def forget(self, tenant: str, customer_ids) -> None:
        if self.redis is None or not customer_ids:
            return
        keys = [self.key(tenant, customer_id) for customer_id in customer_ids]
        try:
            for start in range(0, len(keys), BATCH):
                await self.redis.unlink(*keys[start : start + BATCH])
        except (RedisError, OSError):
            log.warning("segment cache unavailable: entries expire by their TTL")
