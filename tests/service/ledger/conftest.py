"""A migrated ledger schema and a running ledger server (production interceptors) per test session."""

import pytest

from loyalty.ledger.v1 import ledger_service_pb2_grpc
from loyalty_ledger.service import DEFINITION, LedgerSettings
from loyalty_runtime.migrations import migrate
from loyalty_runtime.testing import running_service


@pytest.fixture(scope="session")
async def ledger_settings(database_url, redis_url):
    await migrate(database_url, DEFINITION.migrations, DEFINITION.schema)
    return LedgerSettings(
        database_url=database_url,
        redis_url=redis_url,
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        expiry_interval_seconds=0,
        tier_interval_seconds=0,
        database_pool_size=20,
    )


@pytest.fixture(scope="session")
async def ledger(ledger_settings):
    async with running_service(DEFINITION, ledger_settings) as service:
        service.stub = ledger_service_pb2_grpc.LedgerServiceStub(service.channel)
        yield service
