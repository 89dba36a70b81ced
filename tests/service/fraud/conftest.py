"""A migrated fraud schema and a fraud server (production call guard) whose clock the test moves,
per test session; a fresh tenant per test."""

import uuid
from datetime import UTC, datetime

import pytest

from loyalty.fraud.v1 import fraud_service_pb2_grpc
from loyalty_fraud.service import DEFINITION
from loyalty_runtime.testing import StoppedClock, migrated_settings, running_service
from tests.service.fraud.helpers import Client


@pytest.fixture(scope="session")
async def fraud_settings(database_url, redis_url):
    return await migrated_settings(
        DEFINITION,
        database_url,
        redis_url,
    )


@pytest.fixture(scope="session")
async def fraud(fraud_settings):
    # Stands still until a test moves it; each test starts a day later, so no window reaches back
    # into another test's.
    clock = StoppedClock(datetime(2030, 1, 31, 12, tzinfo=UTC))
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
