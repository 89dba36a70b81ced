"""Each replica's copy of every tenant's rules and settings, decoded, so an assessment reads neither.
Every change raises the tenant's version in PostgreSQL inside its own transaction
(repository.bump_config_version); the runtime's VersionedCache (loyalty_runtime.versioned) keeps the
copies current across replicas, and why a version rather than pub/sub is said there."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from loyalty.fraud.v1 import rule_pb2 as rpb
from loyalty_fraud import encoding
from loyalty_fraud.domain import model
from loyalty_runtime.versioned import VersionedCache


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


class Source:
    """Where the cache reads a tenant's version and configuration (the caller's unit of work)."""

    def __init__(self, version: Callable[[], Awaitable[int]], load: Callable[[], Awaitable[Config]]) -> None:
        self.version = version
        self.load = load


class ConfigCache(VersionedCache[Config]):
    """`await get(tenant, source)`: the tenant's configuration, read through `source` (the caller's
    unit of work) only when its version moved."""

    def __init__(self, redis: Redis, **timing) -> None:
        super().__init__(redis, version_key, **timing)

    async def get(self, tenant: str, source: Source) -> Config:  # type: ignore[override]
        return await super().get(tenant, source.version, source.load)
