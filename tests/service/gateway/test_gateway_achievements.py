"""ListAchievementProgress through the real gateway: the customer's app reads "2 of 3 purchases"
kept by promotion's trigger engine, fed by real purchase.committed events; another tenant's key
sees nothing of it."""

import asyncio
import uuid

import pytest

from loyalty.gateway.v1 import customer_service_pb2 as customer_api
from loyalty.promotion.v1 import campaign_pb2, promotion_service_pb2_grpc, trigger_pb2
from tests.service.gateway.conftest import provision
from tests.service.gateway.test_gateway_checkout import enrol
from tests.service.promotion.helpers import Client
from tests.service.promotion.test_promotion_achievements import purchase
from tests.service.promotion.test_promotion_triggers import create, points, publish


@pytest.fixture
async def tenant(shop, services):
    return await provision(shop, services)


async def three_purchases(services, tenant) -> trigger_pb2.Trigger:
    """An event campaign with an achievement: 3 committed purchases earn 500 points."""
    service = services["promotion"]
    promotion = Client(
        service, tenant.tenant_id, promotion_service_pb2_grpc.PromotionServiceStub(service.channel)
    )
    campaign = await promotion.create_campaign(
        type=campaign_pb2.CAMPAIGN_TYPE_EVENT, program_id=tenant.program_id
    )
    await promotion.activate(campaign.campaign_id)
    rule = trigger_pb2.AchievementRule(measure=trigger_pb2.ACHIEVEMENT_MEASURE_COUNT, target=3)
    return await create(
        promotion,
        trigger_pb2.Trigger(
            campaign_id=campaign.campaign_id,
            display_name="3 purchases",
            event_type="purchase.committed",
            achievement=rule,
            reward=points(500, tenant.program_id),
        ),
    )


def list_progress(shop, tenant, customer_id: str, **fields):
    return shop.customers.ListAchievementProgress(
        customer_api.ListAchievementProgressRequest(customer={"customer_id": customer_id}, **fields),
        metadata=tenant.till_auth,
    )


async def progress_reaching(shop, tenant, customer_id: str, current: int):
    """The customer's progress once it counts `current` (the consumer works in the background)."""
    async with asyncio.timeout(15):
        while True:
            listed = await list_progress(shop, tenant, customer_id)
            if listed.progress and listed.progress[0].current >= current:
                return listed
            await asyncio.sleep(0.05)


async def test_the_app_reads_two_of_three_purchases_and_another_tenant_sees_nothing(
    shop, services, shop_redis_url, tenant
):
    trigger = await three_purchases(services, tenant)
    customer_id = await enrol(shop, tenant)
    for n in range(2):
        event = purchase(f"k-{n}-{uuid.uuid4()}", customer_id, 1_000)
        await publish(shop_redis_url, "gateway.events", tenant.tenant_id, event)

    listed = await progress_reaching(shop, tenant, customer_id, 2)
    (progress,) = listed.progress
    assert (progress.trigger_id, progress.campaign_id) == (trigger.trigger_id, trigger.campaign_id)
    assert (progress.current, progress.target, progress.completed) == (2, 3, False)
    assert progress.measure == trigger_pb2.ACHIEVEMENT_MEASURE_COUNT
    only_its_campaign = await list_progress(shop, tenant, customer_id, campaign_id=trigger.campaign_id)
    assert list(only_its_campaign.progress) == [progress]
    other_campaign = await list_progress(shop, tenant, customer_id, campaign_id=str(uuid.uuid4()))
    assert not other_campaign.progress

    other = await provision(shop, services)
    # A customer id is not checked against the profile (as GetWallet's): promotion's rows are the
    # first tenant's, so the other tenant's answer is empty.
    assert not (await list_progress(shop, other, customer_id)).progress
