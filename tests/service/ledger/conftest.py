"""A migrated ledger schema and a running ledger server (production call guard) per test session; a
server with a clock the test moves, per module that asks for one."""

import uuid
from datetime import UTC, datetime

import pytest

from loyalty.ledger.v1 import ledger_service_pb2_grpc
from loyalty_ledger.service import DEFINITION
from loyalty_runtime.testing import StoppedClock, migrated_settings, running_service
from tests.service.ledger.helpers import Client


@pytest.fixture(scope="session")
async def ledger_settings(database_url, redis_url):
    return await migrated_settings(
        DEFINITION,
        database_url,
        redis_url,
        expiry_interval_seconds=0,
        tier_interval_seconds=0,
    )


@pytest.fixture(scope="session")
async def ledger(ledger_settings):
    async with running_service(DEFINITION, ledger_settings) as service:
        service.stub = ledger_service_pb2_grpc.LedgerServiceStub(service.channel)
        yield service


START = datetime(2030, 1, 31, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
async def clocked(ledger_settings):
    """A second server whose units of work take `now` from `clocked.clock`."""
    clock = StoppedClock(START)
    async with running_service(DEFINITION, ledger_settings, clock=clock) as service:
        service.stub = ledger_service_pb2_grpc.LedgerServiceStub(service.channel)
        service.clock = clock
        yield service


@pytest.fixture
def tenant(ledger) -> Client:
    """A fresh tenant per test, so tests never see each other's programmes."""
    return Client(ledger, f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def other_tenant(ledger) -> Client:
    return Client(ledger, f"o-{uuid.uuid4().hex[:8]}")
