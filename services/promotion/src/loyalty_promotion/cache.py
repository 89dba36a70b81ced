"""Each replica's compiled catalogs, one per tenant, rebuilt lazily when the tenant's catalog version
moves (repository.bump_catalog_version in every change's transaction). The mechanism, and why a
version rather than pub/sub, is the runtime's VersionedCache (loyalty_runtime.versioned)."""

import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from loyalty_runtime.versioned import VersionedCache


def version_key(tenant: str) -> str:
    return f"promotion:catalog-version:{tenant}"


class CatalogCache(VersionedCache[object]):
    """`await get(tenant)`: the tenant's compiled catalog, at most `check_seconds` behind Redis's
    version and `database_seconds` behind PostgreSQL's."""

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
        super().__init__(
            redis,
            version_key,
            check_seconds=check_seconds,
            database_seconds=database_seconds,
            max_tenants=max_tenants,
            clock=clock,
        )
        self.database_version = database_version
        self.build = build

    async def get(self, tenant: str) -> object:  # type: ignore[override]
        return await super().get(tenant, lambda: self.database_version(tenant), lambda: self.build(tenant))

    async def changed(self, tenant: str) -> None:  # type: ignore[override]
        """After a committed change: drop this replica's entry and tell the others."""
        await super().changed(tenant, await self.database_version(tenant))
