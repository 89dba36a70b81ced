"""Each replica's copy of something every tenant has (compiled campaigns, fraud rules), rebuilt when
the tenant's version moves.

Why a version and not pub/sub: a version is a value, so a replica that missed a message (it was
restarting, Redis blipped) still sees the change on its next look. Every change raises the tenant's
version in PostgreSQL inside its own transaction; after the commit the replica that made it drops
its own copy (it reads its own writes) and raises the Redis copy (never lowers it: racing writers
leave the higher value). A replica compares its copy with Redis's version at most every
`check_seconds` per tenant (one GET, ~0.1 ms) and with PostgreSQL's at least every `database_seconds`,
and always when Redis is unreachable or has no value: a lost Redis write delays a change by at most
`database_seconds`, and a Redis outage costs a database read per look instead of a GET. At most
`max_tenants` copies are kept, the least recently used going first.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("loyalty.versioned")

# Raises the stored version to ARGV[1] unless it is already that high.
RAISE_VERSION = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    version: int
    value: T
    checked_at: float
    database_checked_at: float


class VersionedCache(Generic[T]):
    """`await get(tenant, version, load)`: the tenant's value, at most `check_seconds` behind Redis's
    version (under `key(tenant)`) and `database_seconds` behind the one `version()` reads from
    PostgreSQL; `load()` builds it anew when the version moved."""

    def __init__(
        self,
        redis: Redis,
        key: Callable[[str], str],
        *,
        check_seconds: float = 0.2,
        database_seconds: float = 5.0,
        max_tenants: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.key = key
        self.check_seconds = check_seconds
        self.database_seconds = database_seconds
        self.max_tenants = max_tenants
        self.clock = clock
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.builds = 0

    async def get(
        self, tenant: str, version: Callable[[], Awaitable[int]], load: Callable[[], Awaitable[T]]
    ) -> T:
        entry = self._entries.get(tenant)
        if entry is not None and self.clock() - entry.checked_at < self.check_seconds:
            self._entries.move_to_end(tenant)
            return entry.value
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            entry = self._entries.get(tenant)
            if entry is not None and self.clock() - entry.checked_at < self.check_seconds:
                return entry.value
            return await self._refresh(tenant, entry, version, load)

    async def _refresh(self, tenant: str, entry: _Entry[T] | None, version_of, load) -> T:
        now = self.clock()
        database_due = entry is None or now - entry.database_checked_at >= self.database_seconds
        version = None if database_due else await self._redis_version(tenant)
        database_checked_at = entry.database_checked_at if entry is not None else now
        if version is None:
            version = await version_of()
            await self._raise_redis(tenant, version)
            database_checked_at = now
        if entry is not None and entry.version == version:
            entry.checked_at, entry.database_checked_at = now, database_checked_at
            return entry.value
        # The version is read before the value: a change committing in between makes the next
        # look build again, never the other way round.
        value = await load()
        self.builds += 1
        self._entries[tenant] = _Entry(version, value, now, database_checked_at)
        self._entries.move_to_end(tenant)
        while len(self._entries) > self.max_tenants:
            evicted, _ = self._entries.popitem(last=False)
            self._locks.pop(evicted, None)
        return value

    async def _redis_version(self, tenant: str) -> int | None:
        try:
            raw = await self.redis.get(self.key(tenant))
        except (RedisError, OSError):
            return None
        return int(raw) if raw is not None else None

    async def _raise_redis(self, tenant: str, version: int) -> None:
        try:
            await self.redis.eval(RAISE_VERSION, 1, self.key(tenant), version)
        except (RedisError, OSError) as error:
            log.warning(
                "version not published",
                extra={"fields": {"key": self.key(tenant), "error_type": type(error).__name__}},
            )

    async def changed(self, tenant: str, version: int) -> None:
        """After a committed change to `version`: drop this replica's copy and tell the others."""
        self._entries.pop(tenant, None)
        await self._raise_redis(tenant, version)
