"""The segmentation service as the runtime runs it: one definition (settings, API, schema and
migrations, events, subscriptions, schedules, customer data) and its job worker (the runtime's
JobWorker, run as the service's own loop because two of its jobs call profile, and because a job's
membership changes must drop their cached answers after the job's commit)."""

import asyncio

from pydantic_settings import SettingsConfigDict

from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.notification.v1 import events_pb2 as notification_events
from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty.promotion.v1 import events_pb2 as promotion_events
from loyalty.segmentation.v1 import jobs_pb2, segmentation_service_pb2
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.clients import internal_channel
from loyalty_runtime.events import Subscription
from loyalty_runtime.jobs import Job, JobWorker, Schedule
from loyalty_runtime.privacy import PROFILE_EVENTS, CustomerData
from loyalty_runtime.server import Api, Resources, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings
from loyalty_segmentation import app
from loyalty_segmentation.cache import MembershipCache
from loyalty_segmentation.directory import ProfileDirectory
from loyalty_segmentation.repository import SCHEMA
from loyalty_segmentation.servicer import SegmentationServicer

NOTIFICATION_EVENTS = "notification.events"
GATEWAY_EVENTS = "gateway.events"
PROMOTION_EVENTS = "promotion.events"


class SegmentationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SEGMENTATION_")
    grpc_port: int = PORTS["segmentation"].grpc_port
    metrics_port: int = PORTS["segmentation"].metrics_port
    # Time-based rules ("no purchase in 90 days") turn true with no event: recompute every live rule
    # segment this often, once per period across replicas. 0 turns it off.
    refresh_interval_seconds: float = 3600.0
    # RFM scores of every tenant are recomputed this often (nightly); 0 turns it off.
    rfm_interval_seconds: float = 86400.0
    # How long the nightly scoring of one tenant may take (its one statement's timeout).
    rfm_budget_seconds: float = 600.0
    profile_target: str = f"dns:///loyalty-profile-headless:{PORTS['profile'].grpc_port}"
    # Job loops per process (recompute slices, profile syncs and backfills); 0 runs none here.
    job_workers: int = 1
    job_poll_seconds: float = 1.0
    recompute_slice_customers: int = 250_000
    backfill_page_size: int = 500
    backfill_step_customers: int = 5000


class CachedJobWorker(JobWorker):
    """Drops the cached answers a job's membership changes made stale once the job has committed
    (dropping them before could let a reader cache the old answer again)."""

    def __init__(self, cache: MembershipCache, pending: list, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cache, self.pending = cache, pending

    async def run_one(self) -> bool:
        try:
            return await super().run_one()
        finally:
            # After a rollback the list holds customers who did not change: dropping their
            # entries too costs a cache miss, never a stale answer.
            while self.pending:
                tenant, customers = self.pending.pop()
                await self.cache.forget(tenant, customers)


async def _forget(changed: app.Changed, customer_ids) -> None:
    changed.customers.update(customer_ids)


def _jobs(resources: Resources, cache_pending: list) -> list[Job]:
    settings = resources.settings
    tuning = app.Tuning(
        recompute_slice=settings.recompute_slice_customers,
        backfill_page=settings.backfill_page_size,
        backfill_step=settings.backfill_step_customers,
    )
    directory = ProfileDirectory(
        internal_channel(
            settings.profile_target,
            internal_token=settings.internal_token.get_secret_value(),
            tracer_provider=resources.tracer_provider,
        )
    )

    def changing(run):
        async def with_changes(uow, payload) -> None:
            changed = app.Changed()
            cache_pending.append((uow.tenant, changed.customers))
            await run(uow, payload, changed)

        return with_changes

    return [
        Job(
            app.RECOMPUTE_JOB,
            jobs_pb2.RecomputeSegmentJob,
            changing(lambda uow, job, changed: app.recompute_slice(uow, job, changed, tuning)),
        ),
        Job(
            app.SYNC_CUSTOMER_JOB,
            jobs_pb2.SyncCustomerJob,
            changing(lambda uow, job, changed: app.sync_customer(uow, job, changed, directory)),
        ),
        Job(
            app.FORGET_JOB,
            jobs_pb2.ForgetCachedJob,
            changing(lambda _uow, job, changed: _forget(changed, job.customer_ids)),
        ),
        Job(
            app.BACKFILL_JOB,
            jobs_pb2.BackfillProfilesJob,
            lambda uow, job: app.backfill_page(uow, job, directory, tuning),
        ),
    ]


async def job_loop(resources: Resources, stopping: asyncio.Event) -> None:
    settings = resources.settings
    cache = MembershipCache(resources.redis)
    workers = []
    for _ in range(settings.job_workers):
        pending: list = []
        workers.append(
            CachedJobWorker(
                cache,
                pending,
                resources.units,
                SCHEMA,
                _jobs(resources, pending),
                principal="segmentation-jobs",
                poll_seconds=settings.job_poll_seconds,
                retention_hours=settings.idempotency_retention_hours,
                on_events=resources.relay_wakeup.set,
            )
        )
    await asyncio.gather(*(worker.run(stopping) for worker in workers))


DEFINITION = ServiceDefinition(
    name="segmentation",
    settings=SegmentationSettings,
    apis=[
        Api(
            segmentation_service_pb2.DESCRIPTOR.services_by_name["SegmentationService"],
            lambda resources: SegmentationServicer(resources.units, MembershipCache(resources.redis)),
        )
    ],
    schema=SCHEMA,
    migrations="loyalty_segmentation:migrations",
    events="segmentation.events",
    subscriptions=[
        Subscription(PROFILE_EVENTS, profile_events.CustomerCreated, app.customer_created),
        Subscription(PROFILE_EVENTS, profile_events.CustomerUpdated, app.customer_updated),
        Subscription(NOTIFICATION_EVENTS, notification_events.NotificationSent, app.notification_activity),
        Subscription(NOTIFICATION_EVENTS, notification_events.NotificationOpened, app.notification_activity),
        Subscription(GATEWAY_EVENTS, gateway_events.PurchaseCommitted, app.purchase_committed),
        Subscription(GATEWAY_EVENTS, gateway_events.CheckoutReturned, app.checkout_returned),
        Subscription(GATEWAY_EVENTS, gateway_events.ActivityRecorded, app.activity_recorded),
        Subscription(GATEWAY_EVENTS, gateway_events.TenantSettingsChanged, app.tenant_settings_changed),
        Subscription(PROMOTION_EVENTS, promotion_events.RedemptionsCommitted, app.redemptions_committed),
        Subscription(PROMOTION_EVENTS, promotion_events.RedemptionsReleased, app.redemptions_released),
    ],
    background=[job_loop],
    schedules=[
        Schedule(
            "segmentation.refresh",
            every=lambda settings: settings.refresh_interval_seconds,
            run=app.scheduled_refresh,
        ),
        Schedule(
            "segmentation.rfm", every=lambda settings: settings.rfm_interval_seconds, run=app.scheduled_rfm
        ),
    ],
    customer_data=CustomerData(
        export=app.export_customer_data, erase=app.erase_customer, merge=app.merge_customers
    ),
)
