"""A migrated promotion schema and a running promotion server (production call guard) per test
session; a fresh tenant per test."""

import uuid

import pytest

from loyalty.promotion.v1 import promotion_service_pb2_grpc
from loyalty_promotion.service import DEFINITION
from loyalty_runtime.testing import migrated_settings, running_service
from tests.service.promotion.helpers import Client


@pytest.fixture(scope="session")
async def promotion_settings(database_url, redis_url):
    return await migrated_settings(
        DEFINITION,
        database_url,
        redis_url,
        # Short enough for tests to wait on; the default is 5 s.
        statistics_flush_seconds=0.1,
        # campaign.ended follows a schedule's end within this (the default is 10 s).
        campaign_end_sweep_seconds=0.2,
        # Delayed trigger rewards are given within this long of being due; the default is 10 s.
        delay_sweep_seconds=0.2,
        # Every server of these tests sweeps expired reservations often: a schedule runs once per
        # period across the servers sharing the database, so one with the default 10 s would hold
        # back a short-lived one's sweep.
        reservation_sweep_seconds=0.2,
    )


@pytest.fixture(scope="session")
async def promotion(promotion_settings):
    async with running_service(DEFINITION, promotion_settings) as service:
        service.stub = promotion_service_pb2_grpc.PromotionServiceStub(service.channel)
        yield service


@pytest.fixture
def tenant(promotion) -> Client:
    return Client(promotion, f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def other_tenant(promotion) -> Client:
    return Client(promotion, f"o-{uuid.uuid4().hex[:8]}")
