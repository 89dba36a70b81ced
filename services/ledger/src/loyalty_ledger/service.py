"""The ledger as the runtime runs it: settings, servicer, outbox relay, scheduled expiry and tier runs."""

import asyncio
import logging

import grpc
from pydantic_settings import SettingsConfigDict

from loyalty.ledger.v1 import ledger_service_pb2, ledger_service_pb2_grpc
from loyalty_ledger.models import SCHEMA, outbox
from loyalty_ledger.repository import LedgerRepository
from loyalty_ledger.servicer import LedgerServicer
from loyalty_runtime.events import OutboxRelay, RedisStreamsBroker
from loyalty_runtime.server import Resources, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings

log = logging.getLogger("loyalty.ledger")


class LedgerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_")

    grpc_port: int = 50055
    metrics_port: int = 9455
    # Background runs: expire due lots, void timed-out holds, mature pending points; downgrade tiers.
    # 0 turns a loop off (tests call the RPCs instead).
    expiry_interval_seconds: float = 60.0
    tier_interval_seconds: float = 3600.0
    # Test-only crash hook: sleep this long after a state change commits and before answering, so a
    # test can kill the process in between. Never set in production.
    test_pause_after_commit_ms: int = 0


SERVICE_NAME = ledger_service_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name
EVENTS_STREAM = "ledger.events"


def add_servicers(server: grpc.aio.Server, resources: Resources) -> None:
    repository = LedgerRepository(resources.database)
    ledger_service_pb2_grpc.add_LedgerServiceServicer_to_server(
        LedgerServicer(
            repository, pause_after_commit_seconds=resources.settings.test_pause_after_commit_ms / 1000
        ),
        server,
    )


async def relay_outbox(resources: Resources) -> None:
    await OutboxRelay(
        resources.database.sessions, outbox, RedisStreamsBroker(resources.redis), EVENTS_STREAM
    ).run()


def _every(setting: str, work_name: str):
    async def loop(resources: Resources) -> None:
        interval = getattr(resources.settings, setting, 0)
        if not interval:
            return
        repository = LedgerRepository(resources.database)
        while True:
            await asyncio.sleep(interval)
            try:
                await repository.run_for_every_tenant(getattr(repository, work_name))
            except Exception:
                log.exception("scheduled run failed", extra={"fields": {"run": work_name}})

    return loop


DEFINITION = ServiceDefinition(
    name="ledger",
    service_names=[SERVICE_NAME],
    migrations="loyalty_ledger:migrations",
    schema=SCHEMA,
    add_servicers=add_servicers,
    background=[
        relay_outbox,
        _every("expiry_interval_seconds", "run_expiry"),
        _every("tier_interval_seconds", "recompute_tiers"),
    ],
)
