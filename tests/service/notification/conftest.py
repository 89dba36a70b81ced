"""A running profile server and notification server (production call guard, delivery workers) per
session, real local HTTP and SMTP receivers, a fresh tenant per test, and helpers to enrol
customers and wait for deliveries."""

import socket
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from loyalty.notification.v1 import notification_service_pb2_grpc
from loyalty.profile.v1 import profile_service_pb2_grpc
from loyalty_notification.service import DEFINITION
from loyalty_profile.service import DEFINITION as PROFILE
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.testing import StoppedClock, migrated_settings, running_service
from tests.service.notification.helpers import Client
from tests.service.notification.receivers import SmtpReceiver

SECRET = "test-webhook-secret"
UNSUBSCRIBE_SECRET = "test-unsubscribe-secret"
TRACKING_SECRET = "test-tracking-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
async def profile_service(database_url, redis_url):
    settings = await migrated_settings(PROFILE, database_url, redis_url)
    async with running_service(PROFILE, settings) as service:
        service.stub = profile_service_pb2_grpc.ProfileServiceStub(service.channel)
        yield service


@pytest.fixture(scope="session")
def smtp():
    receiver = SmtpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
async def notification_settings(database_url, redis_url, profile_service, smtp):
    return await migrated_settings(
        DEFINITION,
        database_url,
        redis_url,
        profile_target=f"127.0.0.1:{profile_service.server.port}",
        # This server only answers calls; `workers` (or a test) runs the delivery loops.
        delivery_workers=0,
        max_attempts=3,
        retry_base_seconds=0.05,
        retry_cap_seconds=0.2,
        poll_seconds=0.05,
        provider_timeout_seconds=2.0,
        rate_limits={"webhook": 0, "smtp": 0, "sms": 0, "push": 0},
        webhook_signing_secret=SECRET,
        webhook_allow_loopback=True,
        smtp_port=smtp.port,
        # Only the session's answering server serves the links; the other test servers do not.
        http_enabled=False,
        http_host="127.0.0.1",
        http_port=free_port(),
        unsubscribe_url="https://loyalty.example/unsubscribe",
        unsubscribe_secret=UNSUBSCRIBE_SECRET,
        tracking_url="https://loyalty.example/open",
        tracking_secret=TRACKING_SECRET,
    )


@pytest.fixture(scope="session")
async def notification(notification_settings):
    settings = notification_settings.model_copy(update={"http_enabled": True})
    async with running_service(DEFINITION, settings) as service:
        service.stub = notification_service_pb2_grpc.NotificationServiceStub(service.channel)
        service.links = f"http://127.0.0.1:{settings.http_port}"
        yield service


@pytest.fixture(scope="module")
async def workers(notification_settings):
    """A second replica that delivers (two loops), for the modules that want messages sent."""
    async with running_service(
        DEFINITION, notification_settings.model_copy(update={"delivery_workers": 2})
    ) as service:
        yield service


@pytest.fixture(scope="session")
async def db(notification_settings):
    pool = await asyncpg.create_pool(asyncpg_dsn(notification_settings.database_url), min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def tenant(notification, profile_service) -> Client:
    return Client(notification, profile_service, f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
async def clocked(notification_settings):
    clock = StoppedClock(datetime(2030, 6, 1, 12, tzinfo=UTC))
    async with running_service(DEFINITION, notification_settings, clock=clock) as service:
        service.stub = notification_service_pb2_grpc.NotificationServiceStub(service.channel)
        service.clock = clock
        yield service
