"""Each replica's copy of every tenant's rules and settings, decoded, so an assessment reads neither.

Invalidation across replicas by a version, not pub/sub: a version is a value, so a replica that
missed a message still sees the change on its next look. Every change raises the tenant's version in
PostgreSQL inside its own transaction (repository.bump_config_version); after the commit the replica
that made it drops its own copy (it reads its own writes) and raises the Redis copy (never lowers it:
racing writers leave the higher value). A replica compares its copy with Redis's version at most every
`check_seconds` per tenant (one GET) and with PostgreSQL's at least every `database_seconds`, and
always when Redis is unreachable or has no value: a lost Redis write delays a change by at most
`database_seconds`, and a Redis outage costs a primary-key read per look instead of a GET.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from loyalty.fraud.v1 import rule_pb2 as rpb
from loyalty_fraud import encoding
from loyalty_fraud.domain import model

log = logging.getLogger("loyalty.fraud.config")

RAISE_VERSION = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


def version_key(tenant: str) -> str:
    return f"fraud:{{{tenant}}}:config-version"


@dataclass(frozen=True)
class Config:
    """A tenant's configuration as assessments use it."""

    version: int
    rules: tuple[model.Rule, ...]
    settings: model.Settings
    message: rpb.FraudSettings


def build(version: int, rule_bodies: list[bytes], settings_body: bytes | None) -> Config:
    # Stored rules and settings were validated when written.
    rules = tuple(encoding.decode_rule(rpb.Rule.FromString(body)) for body in rule_bodies)
    message = (
        rpb.FraudSettings.FromString(settings_body)
        if settings_body is not None
        else encoding.default_settings()
    )
    return Config(version, rules, encoding.decode_settings(message), message)


@dataclass
class _Entry:
    config: Config
    checked_at: float
    database_checked_at: float


class Source:
    """Where the cache reads a tenant's version and configuration (the caller's unit of work)."""

    def __init__(self, version: Callable[[], Awaitable[int]], load: Callable[[], Awaitable[Config]]) -> None:
        self.version = version
        self.load = load


class ConfigCache:
    def __init__(
        self,
        redis: Redis,
        *,
        check_seconds: float = 0.2,
        database_seconds: float = 5.0,
        max_tenants: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.check_seconds = check_seconds
        self.database_seconds = database_seconds
        self.max_tenants = max_tenants
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.builds = 0

    async def get(self, tenant: str, source: Source) -> Config:
        entry = self._entries.get(tenant)
        if entry is not None and self.clock() - entry.checked_at < self.check_seconds:
            self._entries.move_to_end(tenant)
            return entry.config
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            entry = self._entries.get(tenant)
            if entry is not None and self.clock() - entry.checked_at < self.check_seconds:
                return entry.config
            return await self._refresh(tenant, entry, source)

    async def _refresh(self, tenant: str, entry: _Entry | None, source: Source) -> Config:
        now = self.clock()
        database_due = entry is None or now - entry.database_checked_at >= self.database_seconds
        version = None if database_due else await self._redis_version(tenant)
        database_checked_at = entry.database_checked_at if entry is not None else now
        if version is None:
            version = await source.version()
            await self._raise_redis(tenant, version)
            database_checked_at = now
        if entry is not None and entry.config.version == version:
            entry.checked_at, entry.database_checked_at = now, database_checked_at
            return entry.config
        # The load reads the version with the configuration in one statement: a change committing
        # after the look above is either in both or in neither.
        config = await source.load()
        self.builds += 1
        self._entries[tenant] = _Entry(config, now, database_checked_at)
        self._entries.move_to_end(tenant)
        while len(self._entries) > self.max_tenants:
            evicted, _ = self._entries.popitem(last=False)
            self._locks.pop(evicted, None)
        return config

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
                "config version not published", extra={"fields": {"error_type": type(error).__name__}}
            )

    async def changed(self, tenant: str, version: int) -> None:
        """After a committed change to `version`: drop this replica's copy and tell the others."""
        self._entries.pop(tenant, None)
        await self._raise_redis(tenant, version)
