"""Two replicas sharing PostgreSQL and Redis (two running_service servers in this process: separate
gRPC servers, pools, Redis clients and caches, like two pods; processes would only add start-up
time): a change made through one is seen by the other's evaluations within a second, and still when
the other cannot reach Redis at all (it falls back to PostgreSQL's version)."""

import asyncio
import time

import pytest

from loyalty.promotion.v1 import promotion_service_pb2 as api
from loyalty_promotion.service import DEFINITION, replica_of
from loyalty_runtime.testing import running_service
from tests.service.promotion.helpers import basket, percent_off

SAMPLE = basket(("oil", 1, 1000))


def _settings(base, name: str):
    if name == "without-redis":
        # Nothing listens on port 1: every Redis call of this replica fails at once.
        return base.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    return base


@pytest.fixture(scope="module", params=["sharing-redis", "without-redis"])
async def second(promotion_settings, request):
    async with running_service(DEFINITION, _settings(promotion_settings, request.param)) as service:
        yield service


async def _seconds_until(client, discount: int) -> float:
    """Evaluate on `client` until the discount is `discount`; how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < 5:
        result = await client.evaluate(SAMPLE)
        if result.promotion_discount.amount_minor == discount:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"the other replica never gave a discount of {discount}")


async def test_a_change_on_one_replica_reaches_the_other_within_a_second(tenant, second):
    other = tenant.on(second)
    assert (await other.evaluate(SAMPLE)).promotion_discount.amount_minor == 0  # compiled, empty
    campaign = await tenant.live_campaign(percent_off(1000))
    assert await _seconds_until(other, 100) < 1.0
    await tenant.pause(campaign.campaign_id)
    assert await _seconds_until(other, 0) < 1.0
    await tenant.activate(campaign.campaign_id)
    assert await _seconds_until(other, 100) < 1.0


async def test_a_replica_rebuilds_only_when_the_version_moves(tenant, second):
    """Between changes it looks at the version (Redis, or PostgreSQL) and keeps its catalog."""
    other = tenant.on(second)
    await tenant.live_campaign(percent_off(1000))
    await _seconds_until(other, 100)
    cache = replica_of(second.server.resources).catalogs
    builds = cache.builds
    for _ in range(10):
        await other.evaluate(SAMPLE)
        await asyncio.sleep(0.05)
    assert cache.builds == builds


@pytest.fixture(scope="module")
async def rechecking(promotion_settings):
    """A replica that re-reads PostgreSQL's version every half second whatever Redis says."""
    settings = promotion_settings.model_copy(update={"catalog_database_seconds": 0.5})
    async with running_service(DEFINITION, settings) as service:
        yield service


async def test_a_change_whose_redis_write_was_lost_still_arrives(tenant, rechecking):
    """The change reaches PostgreSQL only (as when the writer's Redis call failed after its commit):
    Redis keeps saying the old version, and the replica still follows within its recheck period."""
    other = tenant.on(rechecking)
    campaign = await tenant.live_campaign(percent_off(1000))
    await _seconds_until(other, 100)
    async with rechecking.server.resources.database.connection() as connection:
        await connection.execute(
            "UPDATE promotion.campaigns SET state = 'paused' WHERE tenant_id = $1 AND campaign_id = $2",
            tenant.tenant_id,
            campaign.campaign_id,
        )
        await connection.execute(
            "UPDATE promotion.catalog_versions SET version = version + 1 WHERE tenant_id = $1",
            tenant.tenant_id,
        )
    assert await _seconds_until(other, 0) < 1.0


async def test_statistics_of_two_replicas_add_up(tenant, rechecking):
    other = tenant.on(rechecking)
    campaign = await tenant.live_campaign(percent_off(1000))
    await _seconds_until(other, 100)
    await asyncio.sleep(0.5)  # both replicas have flushed what waiting for the change counted
    before = await _evaluations(tenant, campaign.campaign_id)
    await asyncio.gather(*(client.evaluate(SAMPLE) for client in (tenant, other) for _ in range(10)))
    for _ in range(100):
        if await _evaluations(tenant, campaign.campaign_id) == before + 20:
            break
        await asyncio.sleep(0.05)
    assert await _evaluations(tenant, campaign.campaign_id) == before + 20


async def _evaluations(client, campaign_id: str) -> int:
    response = await client.stub.GetCampaignStatistics(
        api.GetCampaignStatisticsRequest(campaign_id=campaign_id), metadata=client.metadata
    )
    return response.statistics.evaluation_count
