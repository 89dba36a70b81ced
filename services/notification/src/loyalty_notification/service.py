"""The notification service as the runtime runs it: settings, API, schema and migrations, events,
and its delivery workers (the runtime's JobWorker, run as the service's own loops because the job
needs the providers built from the settings)."""

import asyncio
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from loyalty.notification.v1 import jobs_pb2, notification_service_pb2
from loyalty_notification import app
from loyalty_notification.app import DELIVER_JOB
from loyalty_notification.directory import Directory
from loyalty_notification.dispatch import DeliveryPolicy, Dispatcher
from loyalty_notification.domain.model import Channel
from loyalty_notification.links import Links, serve_links
from loyalty_notification.providers import GatewayProvider, RateLimiter, SmtpProvider, WebhookProvider
from loyalty_notification.repository import SCHEMA
from loyalty_notification.servicer import NotificationServicer
from loyalty_notification.triggers import SEND_FOR_EVENT_JOB, SUBSCRIPTIONS, EventSender
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.clients import internal_channel
from loyalty_runtime.jobs import Job, JobWorker, Schedule
from loyalty_runtime.privacy import CustomerData
from loyalty_runtime.server import Api, Resources, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class NotificationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=PORTS["notification"].env_prefix)

    grpc_port: int = PORTS["notification"].grpc_port
    metrics_port: int = PORTS["notification"].metrics_port
    profile_target: str = f"dns:///loyalty-profile-headless:{PORTS['profile'].grpc_port}"
    # Delivery loops per process (each attempts one message at a time, in its own transaction);
    # 0 runs none here (replicas that only answer calls, beside replicas that deliver).
    delivery_workers: int = 4
    # Retries: exponential backoff with jitter from the base, capped; FAILED after max_attempts.
    max_attempts: int = 8
    retry_base_seconds: float = 30.0
    retry_cap_seconds: float = 3600.0
    poll_seconds: float = 1.0
    provider_timeout_seconds: float = 10.0
    # Attempts per second per provider across all replicas (0: unlimited).
    rate_limits: dict[str, int] = {"webhook": 200, "smtp": 50, "sms": 20, "push": 200}
    webhook_signing_secret: SecretStr = SecretStr("dev-webhook-secret")
    # Admits loopback webhook targets (local receivers in development and tests); link-local,
    # metadata and private addresses stay refused (domain/targets.py).
    webhook_allow_loopback: bool = False
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_start_tls: bool = False
    smtp_sender: str = "no-reply@loyalty.local"
    sms_endpoint: str = ""
    push_endpoint: str = ""
    # The links in messages (links.py), served over HTTP on every replica where enabled; the
    # ingress publishes them at the URLs below.
    http_enabled: bool = True
    http_host: str = "0.0.0.0"
    http_port: int = PORTS["notification"].http_port
    # Where readers reach that port (an ingress's URL, the chart's services.notification.http):
    # the two URLs below default to its /unsubscribe and /open, and its path is served too.
    http_public_url: str = ""
    # One-click unsubscribe (RFC 8058): the public URL of `/unsubscribe` ("": no List-Unsubscribe).
    unsubscribe_url: str = ""
    unsubscribe_secret: SecretStr = SecretStr("dev-unsubscribe-secret")
    # Open tracking: the public URL of `/open` ("": HTML e-mail carries no pixel).
    tracking_url: str = ""
    tracking_secret: SecretStr = SecretStr("dev-tracking-secret")

    @model_validator(mode="before")
    @classmethod
    def _links_under_the_public_url(cls, data):
        base = str(data.get("http_public_url") or "").rstrip("/") if isinstance(data, dict) else ""
        for name, path in (("unsubscribe_url", "/unsubscribe"), ("tracking_url", "/open")):
            if base and not data.get(name):
                data = {**data, name: f"{base}{path}"}
        return data


def _directory(resources: Resources) -> Directory:
    settings = resources.settings
    channel = internal_channel(
        settings.profile_target,
        internal_token=settings.internal_token.get_secret_value(),
        tracer_provider=resources.tracer_provider,
    )
    return Directory(channel)


def _servicer(resources: Resources) -> NotificationServicer:
    settings = resources.settings
    return NotificationServicer(
        resources.units,
        _directory(resources),
        allow_loopback=settings.webhook_allow_loopback,
        unsubscribe_secret=settings.unsubscribe_secret.get_secret_value(),
    )


def dispatcher(resources: Resources, client: httpx.AsyncClient) -> Dispatcher:
    s = resources.settings
    providers = {
        Channel.WEBHOOK: WebhookProvider(
            client, s.webhook_signing_secret.get_secret_value(), allow_loopback=s.webhook_allow_loopback
        ),
        Channel.EMAIL: SmtpProvider(
            s.smtp_host,
            s.smtp_port,
            s.smtp_sender,
            timeout=s.provider_timeout_seconds,
            start_tls=s.smtp_start_tls,
        ),
        Channel.SMS: GatewayProvider("sms", client, s.sms_endpoint),
        Channel.PUSH: GatewayProvider("push", client, s.push_endpoint),
    }
    rules = DeliveryPolicy(
        max_attempts=s.max_attempts,
        retry_base_seconds=s.retry_base_seconds,
        retry_cap_seconds=s.retry_cap_seconds,
        rates=dict(s.rate_limits),
        unsubscribe_url=s.unsubscribe_url,
        unsubscribe_secret=s.unsubscribe_secret.get_secret_value(),
        tracking_url=s.tracking_url,
        tracking_secret=s.tracking_secret.get_secret_value(),
    )
    return Dispatcher(providers, RateLimiter(resources.redis), rules)


def _jobs(resources: Resources, dispatch: Dispatcher, events: EventSender) -> list[Job]:
    attempts = resources.settings.max_attempts
    return [
        Job(DELIVER_JOB, jobs_pb2.DeliverMessageJob, dispatch.deliver, max_attempts=attempts),
        Job(SEND_FOR_EVENT_JOB, jobs_pb2.SendForEventJob, events.send, max_attempts=attempts),
    ]


def _worker(resources: Resources, jobs: list[Job]) -> JobWorker:
    return JobWorker(
        resources.units,
        SCHEMA,
        jobs,
        principal="notification-delivery",
        poll_seconds=resources.settings.poll_seconds,
        retention_hours=resources.settings.idempotency_retention_hours,
        on_events=resources.relay_wakeup.set,
    )


async def deliver_loop(resources: Resources, stopping: asyncio.Event) -> None:
    if resources.settings.delivery_workers <= 0:
        return
    timeout = httpx.Timeout(resources.settings.provider_timeout_seconds)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False) as client:
        jobs = _jobs(resources, dispatcher(resources, client), EventSender(_directory(resources)))
        workers = [_worker(resources, jobs) for _ in range(resources.settings.delivery_workers)]
        await asyncio.gather(*(worker.run(stopping) for worker in workers))


async def links_loop(resources: Resources, stopping: asyncio.Event) -> None:
    s = resources.settings
    if not s.http_enabled:
        return
    links = Links(
        resources.units,
        _directory(resources),
        unsubscribe_secret=s.unsubscribe_secret.get_secret_value(),
        tracking_secret=s.tracking_secret.get_secret_value(),
        timeout_seconds=s.default_deadline_seconds,
    )
    await serve_links(links, s.http_host, s.http_port, stopping, prefix=urlsplit(s.http_public_url).path)


async def prune_jobs(resources: Resources) -> None:
    await _worker(resources, []).prune()  # pruning runs no job


DEFINITION = ServiceDefinition(
    name="notification",
    settings=NotificationSettings,
    apis=[Api(notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"], _servicer)],
    schema=SCHEMA,
    migrations="loyalty_notification:migrations",
    events="notification.events",
    subscriptions=SUBSCRIPTIONS,
    background=[deliver_loop, links_loop],
    schedules=[Schedule("notification.jobs-prune", every=lambda _settings: 3600.0, run=prune_jobs)],
    customer_data=CustomerData(
        export=app.export_customer_data, erase=app.erase_customer, merge=app.merge_customers
    ),
)
