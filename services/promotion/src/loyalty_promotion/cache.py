"""Each replica's compiled catalogs, one per tenant, rebuilt lazily when the tenant's catalog
version moves.

Why a version and not pub/sub: a version is a value, so a replica that missed a message (it was
restarting, Redis blipped) still sees the change on its next look. Every change bumps the tenant's
counter in PostgreSQL inside its own transaction (repository.bump_catalog_version), and after the
commit the replica that made it raises the Redis copy (never lowers it: two writers racing leave
the higher value). A replica looks at the Redis copy at most every `check_seconds` per tenant
(one GET, ~0.1 ms) and at PostgreSQL's value at least every `database_seconds`, and always when
Redis is unreachable or has no value, so a lost Redis write delays a change by at most
`database_seconds` and a Redis outage by none. The replica that made a change drops its own entry at
once, so it reads its own writes.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("loyalty.promotion.catalog")

# Raises the stored version to ARGV[1] unless it is already that high.
RAISE_VERSION = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


def version_key(tenant: str) -> str:
    return f"promotion:catalog-version:{tenant}"


@dataclass
class _Entry:
    version: int
    catalog: object
    checked_at: float
    database_checked_at: float


class CatalogCache:
    """`await get(tenant)`: the tenant's compiled catalog, at most `check_seconds` behind Redis's
    version and `database_seconds` behind PostgreSQL's. Holds at most `max_tenants` catalogs (the
    least recently used goes first)."""

    def __init__(
        self,
        redis: Redis,
        *,
        database_version: Callable[[str], Awaitable[int]],
        build: Callable[[str], Awaitable[object]],
        check_seconds: float = 0.2,
        database_seconds: float = 5.0,
        max_tenants: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.database_version = database_version
        self.build = build
        self.check_seconds = check_seconds
        self.database_seconds = database_seconds
        self.max_tenants = max_tenants
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.builds = 0

    async def get(self, tenant: str) -> object:
        entry = self._entries.get(tenant)
        now = self.clock()
        if entry is not None and now - entry.checked_at < self.check_seconds:
            self._entries.move_to_end(tenant)
            return entry.catalog
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            entry = self._entries.get(tenant)
            if entry is not None and self.clock() - entry.checked_at < self.check_seconds:
                return entry.catalog
            return await self._refresh(tenant, entry)

    async def _refresh(self, tenant: str, entry: _Entry | None) -> object:
        now = self.clock()
        database_due = entry is None or now - entry.database_checked_at >= self.database_seconds
        version = None if database_due else await self._redis_version(tenant)
        if version is None:
            version = await self.database_version(tenant)
            await self._raise_redis(tenant, version)
            database_checked_at = now
        else:
            database_checked_at = entry.database_checked_at
        if entry is not None and entry.version == version:
            entry.checked_at = now
            entry.database_checked_at = database_checked_at
            return entry.catalog
        # The version is read before the campaigns: a change committing in between makes the
        # next look rebuild again, never the other way round.
        catalog = await self.build(tenant)
        self.builds += 1
        self._store(tenant, _Entry(version, catalog, now, database_checked_at))
        return catalog

    def _store(self, tenant: str, entry: _Entry) -> None:
        self._entries[tenant] = entry
        self._entries.move_to_end(tenant)
        while len(self._entries) > self.max_tenants:
            evicted, _ = self._entries.popitem(last=False)
            self._locks.pop(evicted, None)

    async def _redis_version(self, tenant: str) -> int | None:
        try:
            raw = await self.redis.get(version_key(tenant))
        except (RedisError, OSError):
            return None
        return int(raw) if raw is not None else None

    async def _raise_redis(self, tenant: str, version: int) -> None:
        try:
            await self.redis.eval(RAISE_VERSION, 1, version_key(tenant), version)
        except (RedisError, OSError) as error:
            log.warning(
                "catalog version not published", extra={"fields": {"error_type": type(error).__name__}}
            )

    async def changed(self, tenant: str) -> None:
        """After a committed change: drop this replica's entry and tell the others."""
        self._entries.pop(tenant, None)
        await self._raise_redis(tenant, await self.database_version(tenant))
