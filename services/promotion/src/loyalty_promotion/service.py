"""The promotion service as the runtime runs it: settings, the API, schema and migrations, and the
background flush of evaluation statistics."""

import asyncio

import httpx
from pydantic_settings import SettingsConfigDict

from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.promotion.v1 import jobs_pb2, promotion_service_pb2, trigger_jobs_pb2
from loyalty_promotion import (
    app,
    app_birthdays,
    app_delays,
    app_generation,
    app_redemptions,
    app_referrals,
    app_trigger_actions,
    app_trigger_conditions,
    app_triggers,
    repository,
)
from loyalty_promotion.app_generation import GENERATE_JOB
from loyalty_promotion.cache import CatalogCache
from loyalty_promotion.replica import Replica
from loyalty_promotion.repository import SCHEMA
from loyalty_promotion.servicer import PromotionServicer
from loyalty_promotion.statistics import StatisticsBuffer, flush_loop
from loyalty_promotion.trigger_links import TriggerLinks
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.events import Subscription
from loyalty_runtime.jobs import Job, JobWorker, Schedule
from loyalty_runtime.server import Api, Resources, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings
from loyalty_runtime.uow import utcnow


class PromotionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=PORTS["promotion"].env_prefix)
    grpc_port: int = PORTS["promotion"].grpc_port
    metrics_port: int = PORTS["promotion"].metrics_port
    # How often a replica looks at a tenant's catalog version in Redis, and at the latest in
    # PostgreSQL (the bound on staleness when a Redis write was lost); see cache.py.
    catalog_check_seconds: float = 0.2
    catalog_database_seconds: float = 5.0
    catalog_max_tenants: int = 1000
    # Evaluation statistics: flush period and the buffer's bound (distinct keys between flushes).
    statistics_flush_seconds: float = 5.0
    statistics_max_keys: int = 50_000
    # A reservation not committed within this long expires; the sweep that releases expired
    # reservations runs this often.
    reservation_ttl_seconds: float = 900.0
    reservation_sweep_seconds: float = 10.0
    # How soon after a campaign's schedule ends campaign.ended is published, at most.
    campaign_end_sweep_seconds: float = 10.0
    # Job workers making large voucher batches (0 = none on this replica), and how often an idle
    # one looks for work.
    generation_workers: int = 1
    job_poll_seconds: float = 1.0
    # Triggers: the services their conditions and actions call, the deadline of those calls, the
    # job workers running their jobs (0 = none on this replica), their first retry's delay (doubling
    # after each failure) and the webhook timeout.
    segmentation_target: str = f"dns:///loyalty-segmentation-headless:{PORTS['segmentation'].grpc_port}"
    notification_target: str = f"dns:///loyalty-notification-headless:{PORTS['notification'].grpc_port}"
    trigger_call_seconds: float = 2.0
    trigger_action_workers: int = 1
    trigger_retry_seconds: float = 5.0
    webhook_timeout_seconds: float = 5.0
    # How often the sweep gives the triggers' delayed rewards that are due (how late one may be).
    delay_sweep_seconds: float = 10.0
    # How often the scheduler looks for customers whose birthday is today (emitted once a year each).
    birthday_check_seconds: float = 3600.0


# The runtime's Resources has no place for a service's own per-process state, so the replica is
# kept here, one per Resources (one per server), for the servicer and the flush loop to share.
_REPLICAS: dict[int, Replica] = {}
_LINKS: dict[int, TriggerLinks] = {}


def links_of(resources: Resources) -> TriggerLinks:
    """The server's channels to segmentation and notification, for triggers."""
    links = _LINKS.get(id(resources))
    if links is None:
        links = _LINKS[id(resources)] = TriggerLinks(resources.settings, resources.tracer_provider)
    return links


def replica_of(resources: Resources) -> Replica:
    replica = _REPLICAS.get(id(resources))
    if replica is None:
        replica = _REPLICAS[id(resources)] = _new_replica(resources)
    return replica


def _new_replica(resources: Resources) -> Replica:
    settings: PromotionSettings = resources.settings
    database = resources.database

    async def database_version(tenant: str) -> int:
        async with database.connection() as connection:
            return await repository.catalog_version(connection, tenant)

    async def build(tenant: str):
        async with database.connection() as connection:
            return await app.build_catalog(connection, tenant, utcnow())

    catalogs = CatalogCache(
        resources.redis,
        database_version=database_version,
        build=build,
        check_seconds=settings.catalog_check_seconds,
        database_seconds=settings.catalog_database_seconds,
        max_tenants=settings.catalog_max_tenants,
    )
    return Replica(catalogs, StatisticsBuffer(settings.statistics_max_keys), utcnow)


async def _flush_statistics(resources: Resources, stopping: asyncio.Event) -> None:
    replica = replica_of(resources)
    try:
        await flush_loop(
            replica.statistics, resources.database, resources.settings.statistics_flush_seconds, stopping
        )
    finally:
        _REPLICAS.pop(id(resources), None)


async def _generate_codes(resources: Resources, stopping: asyncio.Event) -> None:
    if resources.settings.generation_workers <= 0:
        return
    jobs = [Job(GENERATE_JOB, jobs_pb2.GenerateVouchersJob, app_generation.run_generation)]
    workers = [
        JobWorker(
            resources.units,
            SCHEMA,
            jobs,
            principal="promotion-generation",
            poll_seconds=resources.settings.job_poll_seconds,
            retention_hours=resources.settings.idempotency_retention_hours,
        )
        for _ in range(resources.settings.generation_workers)
    ]
    await asyncio.gather(*(worker.run(stopping) for worker in workers))


async def _run_trigger_jobs(resources: Resources, stopping: asyncio.Event) -> None:
    """The job workers of triggers: conditions that need lookups, and outside actions."""
    settings = resources.settings
    links = links_of(resources)
    try:
        async with httpx.AsyncClient(timeout=settings.webhook_timeout_seconds) as http:
            runner = app_trigger_actions.ActionRunner(links, http)
            jobs = [
                Job(app_trigger_actions.ACTION_JOB, trigger_jobs_pb2.TriggerActionJob, runner.run),
                Job(
                    app_trigger_conditions.CONDITION_JOB,
                    trigger_jobs_pb2.TriggerConditionJob,
                    lambda uow, job: app_triggers.on_condition_job(uow, links, job),
                ),
            ]
            workers = [
                JobWorker(
                    resources.units,
                    SCHEMA,
                    jobs,
                    principal="promotion-triggers",
                    poll_seconds=settings.job_poll_seconds,
                    retry_seconds=settings.trigger_retry_seconds,
                    retention_hours=settings.idempotency_retention_hours,
                )
                for _ in range(settings.trigger_action_workers)
            ]
            await asyncio.gather(*(worker.run(stopping) for worker in workers))
            await stopping.wait()
    finally:
        _LINKS.pop(id(resources), None)
        await links.close()


DEFINITION = ServiceDefinition(
    name="promotion",
    settings=PromotionSettings,
    apis=[
        Api(
            promotion_service_pb2.DESCRIPTOR.services_by_name["PromotionService"],
            lambda resources: PromotionServicer(
                resources.units,
                replica_of(resources),
                resources.settings.reservation_ttl_seconds,
                links_of(resources),
            ),
        )
    ],
    schema=SCHEMA,
    migrations="loyalty_promotion:migrations",
    events="promotion.events",
    subscriptions=[
        *app_referrals.with_conversions(app_triggers.subscriptions()),
        Subscription("gateway.events", gateway_events.TenantSettingsChanged, app.tenant_settings_changed),
    ],
    background=[_flush_statistics, _generate_codes, _run_trigger_jobs],
    schedules=[
        Schedule(
            "promotion.reservations-expiry",
            every=lambda settings: settings.reservation_sweep_seconds,
            run=lambda resources: app_redemptions.sweep(resources.units),
        ),
        Schedule(
            "promotion.campaign-ends",
            every=lambda settings: settings.campaign_end_sweep_seconds,
            run=lambda resources: app.announce_ended_campaigns(resources.units),
        ),
        Schedule(
            "promotion.delayed-rewards",
            every=lambda settings: settings.delay_sweep_seconds,
            run=lambda resources: app_delays.give_due(resources.units),
        ),
        Schedule(
            "promotion.birthdays",
            every=lambda settings: settings.birthday_check_seconds,
            run=lambda resources: app_birthdays.emit_due(resources.units),
        ),
    ],
)
