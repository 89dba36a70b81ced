"""Tenant settings (currency, default programme, time zone, locale) as checkouts read them: from the
gateway's own table, kept in memory for `tenant_cache_seconds`."""

import time
from dataclasses import dataclass

from loyalty.gateway.v1 import admin_pb2
from loyalty_gateway import repository
from loyalty_runtime.errors import FailedPrecondition, Reason
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitsOfWork


@dataclass(frozen=True)
class TenantSettings:
    default_program_id: str
    currency_code: str
    time_zone: str
    default_locale: str


def encode_settings(row) -> admin_pb2.TenantSettings:
    return admin_pb2.TenantSettings(
        default_program_id=row["default_program_id"],
        currency_code=row["currency_code"],
        time_zone=row["time_zone"],
        default_locale=row["default_locale"],
        update_time=timestamp(row["updated_at"]),
        adjustment_limit_points=row["adjustment_limit_points"],
        daily_adjustment_limit_points=row["daily_adjustment_limit_points"],
    )


class Tenants:
    def __init__(self, units: UnitsOfWork, ttl: float, size: int = 10_000) -> None:
        self.units = units
        self.ttl = ttl
        self.size = size
        self._known: dict[str, tuple[float, object]] = {}

    async def get(self, tenant: str) -> TenantSettings:
        hit = self._known.get(tenant)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        async with self.units.read() as uow:
            row = await repository.tenant_settings(uow.connection, tenant)
        if row is None:
            raise FailedPrecondition(
                Reason.TENANT_NOT_PROVISIONED, "the tenant has no settings yet (UpdateTenantSettings)"
            )
        settings = TenantSettings(
            row["default_program_id"], row["currency_code"], row["time_zone"], row["default_locale"]
        )
        if len(self._known) >= self.size:
            self._known.clear()
        self._known[tenant] = (time.monotonic(), settings)
        return settings

    def forget(self, tenant: str) -> None:
        self._known.pop(tenant, None)
