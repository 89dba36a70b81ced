"""The runtime's own servers for its tests: the echo service (no database work) and the probe service
(a pool, transactions, an outbox), each started with the production call guard on port 0."""

import uuid

import pytest

from loyalty.testing.v1 import echo_pb2_grpc
from loyalty_runtime.testing import ECHO, running_service
from tests.service.runtime.probe_service import PROBE, create_schema


@pytest.fixture(scope="session")
async def probe_settings(database_url, redis_url):
    await create_schema(database_url)
    return PROBE.settings(database_url=database_url, redis_url=redis_url, grpc_host="127.0.0.1")


@pytest.fixture(scope="session")
async def probe(probe_settings):
    async with running_service(PROBE, probe_settings) as service:
        yield service


@pytest.fixture(scope="session")
def echo_settings(database_url, redis_url):
    return ECHO.settings(database_url=database_url, redis_url=redis_url, grpc_host="127.0.0.1")


@pytest.fixture(scope="session")
async def echo(echo_settings):
    async with running_service(ECHO, echo_settings) as service:
        yield service


@pytest.fixture
def echo_stub(echo):
    return echo_pb2_grpc.EchoServiceStub(echo.channel)


@pytest.fixture
def tenant(echo):
    return echo.metadata(f"t-{uuid.uuid4().hex[:10]}")
