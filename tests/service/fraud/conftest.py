"""A migrated fraud schema and a fraud server (production call guard) whose clock the test moves,
per test session; a fresh tenant per test."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from loyalty.fraud.v1 import fraud_service_pb2_grpc
from loyalty_fraud.service import DEFINITION, FraudSettings
from loyalty_runtime.migrations import migrate
from loyalty_runtime.testing import running_service
from tests.service.fraud.helpers import Client


class Clock:
    """The server's clock: stands still until the test moves it (each test starts a day later, so
    no window reaches back into another test's)."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 31, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(scope="session")
async def fraud_settings(database_url, redis_url):
    await migrate(database_url, DEFINITION.migrations, DEFINITION.schema)
    return FraudSettings(
        database_url=database_url,
        redis_url=redis_url,
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        database_pool_size=20,
        database_acquire_timeout_seconds=10.0,
    )


@pytest.fixture(scope="session")
async def fraud(fraud_settings):
    clock = Clock()
    async with running_service(DEFINITION, fraud_settings, clock=clock) as service:
        service.stub = fraud_service_pb2_grpc.FraudServiceStub(service.channel)
        service.clock = clock
        yield service


@pytest.fixture
def tenant(fraud) -> Client:
    fraud.clock.advance(days=1)
    return Client(fraud, f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def other_tenant(fraud) -> Client:
    return Client(fraud, f"o-{uuid.uuid4().hex[:8]}")
