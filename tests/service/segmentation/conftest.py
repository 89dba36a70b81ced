"""A migrated segmentation schema and a running server whose clock the test sets, per session; a
fresh tenant per test; a plain asyncpg connection to look at what the server stored."""

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from loyalty.segmentation.v1 import segmentation_service_pb2_grpc
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.migrations import migrate
from loyalty_runtime.testing import running_service
from loyalty_segmentation.service import DEFINITION, SegmentationSettings
from tests.service.segmentation.helpers import Client


class Clock:
    """The server's clock: stands still until the test moves it."""

    start = datetime(2030, 6, 30, 12, tzinfo=UTC)

    def __init__(self) -> None:
        self.now = self.start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="session")
async def segmentation_settings(database_url, redis_url):
    await migrate(database_url, DEFINITION.migrations, DEFINITION.schema)
    return SegmentationSettings(
        database_url=database_url,
        redis_url=redis_url,
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        refresh_interval_seconds=0,
        database_pool_size=10,
        database_acquire_timeout_seconds=10.0,
    )


@pytest.fixture(scope="session")
async def segmentation(segmentation_settings):
    clock = Clock()
    async with running_service(DEFINITION, segmentation_settings, clock=clock) as service:
        service.stub = segmentation_service_pb2_grpc.SegmentationServiceStub(service.channel)
        service.clock = clock
        yield service


@pytest.fixture
def tenant(segmentation) -> Client:
    segmentation.clock.now = Clock.start
    return Client(segmentation, f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def other_tenant(segmentation) -> Client:
    return Client(segmentation, f"o-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def db(segmentation_settings):
    connection = await asyncpg.connect(asyncpg_dsn(segmentation_settings.database_url))
    yield connection
    await connection.close()
