"""A migrated segmentation schema and a running server whose clock the test sets, per session, beside
a real profile server it reads (events, syncs, the bulk export); a fresh tenant per test; a plain
asyncpg connection to look at what the server stored. Recompute slices are small, so every bulk
recompute in the tests runs as a chain of several jobs."""

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from loyalty.profile.v1 import profile_service_pb2_grpc
from loyalty.segmentation.v1 import segmentation_service_pb2_grpc
from loyalty_profile.service import DEFINITION as PROFILE
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.testing import StoppedClock, migrated_settings, running_service
from loyalty_segmentation.service import DEFINITION
from tests.service.segmentation.helpers import Client

START = datetime(2030, 6, 30, 12, tzinfo=UTC)


@pytest.fixture(scope="session")
async def profile(database_url, redis_url):
    settings = await migrated_settings(PROFILE, database_url, redis_url)
    async with running_service(PROFILE, settings) as service:
        service.stub = profile_service_pb2_grpc.ProfileServiceStub(service.channel)
        yield service


@pytest.fixture(scope="session")
async def segmentation_settings(database_url, redis_url, profile):
    return await migrated_settings(
        DEFINITION,
        database_url,
        redis_url,
        refresh_interval_seconds=0,
        rfm_interval_seconds=0,
        profile_target=f"127.0.0.1:{profile.server.port}",
        job_poll_seconds=0.05,
        recompute_slice_customers=3,
        backfill_page_size=2,
        backfill_step_customers=3,
    )


@pytest.fixture(scope="session")
async def segmentation(segmentation_settings):
    clock = StoppedClock(START)
    async with running_service(DEFINITION, segmentation_settings, clock=clock) as service:
        service.stub = segmentation_service_pb2_grpc.SegmentationServiceStub(service.channel)
        service.clock = clock
        yield service


@pytest.fixture
def tenant(segmentation) -> Client:
    segmentation.clock.now = START
    return Client(segmentation, f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def other_tenant(segmentation) -> Client:
    return Client(segmentation, f"o-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def db(segmentation_settings):
    connection = await asyncpg.connect(asyncpg_dsn(segmentation_settings.database_url))
    yield connection
    await connection.close()
