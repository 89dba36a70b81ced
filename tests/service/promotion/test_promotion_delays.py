"""Delayed trigger rewards against real promotion servers on a controllable clock: stored when the
event is handled, given once when due (not before) by the sweep, also after a restart in the middle
of the delay and with two replicas sweeping at once, and cancelled by a later event of the trigger's
`cancel_on_event_type` ("30 days after a purchase, if no purchase since")."""

import asyncio
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration

from loyalty.promotion.v1 import trigger_pb2
from loyalty_promotion import app_delays
from loyalty_promotion.service import DEFINITION
from loyalty_runtime.testing import StoppedClock, running_service
from tests.service.promotion.test_promotion_achievements import add_marker, grants_of, purchase, settled
from tests.service.promotion.test_promotion_triggers import create, event_campaign, points, publish

DAY = 86_400
SWEEPS = 1.5  # several sweep periods (0.2 s each) of waiting for what must not happen


def reengagement(campaign_id: str) -> trigger_pb2.Trigger:
    return trigger_pb2.Trigger(
        campaign_id=campaign_id,
        display_name="Come back",
        event_type="purchase.committed",
        reward=points(300),
        delay=Duration(seconds=30 * DAY),
        cancel_on_event_type="purchase.committed",
    )


async def pending(promotion, tenant: str) -> list[tuple[str, str]]:
    """The tenant's delayed rewards: (event, state), soonest due first."""
    async with promotion.server.resources.database.connection() as connection:
        rows = await connection.fetch(
            "SELECT source_event_id, state FROM promotion.delayed_rewards WHERE tenant_id = $1 ORDER BY due_at",
            tenant,
        )
    return [tuple(row) for row in rows]


async def given(tenant, trigger_id: str, count: int):
    async with asyncio.timeout(15):
        while len(found := await grants_of(tenant, trigger_id)) < count:
            await asyncio.sleep(0.05)
    return found


async def test_a_delayed_reward_survives_a_restart_and_is_given_once_when_due(
    tenant, redis_url, promotion, promotion_settings
):
    campaign = await event_campaign(tenant)
    trigger = await create(tenant, reengagement(campaign.campaign_id))
    await add_marker(tenant, campaign.campaign_id)
    bought_at = datetime(2031, 3, 1, 12, tzinfo=UTC)
    clock = StoppedClock(bought_at)
    async with running_service(DEFINITION, promotion_settings, clock=clock):
        event_id = await publish(
            redis_url, "gateway.events", tenant.tenant_id, purchase("k-1", "c-1", 100), at=bought_at
        )
        await settled(tenant, redis_url, "c-marker")
        assert await pending(promotion, tenant.tenant_id) == [(event_id, "pending")]
        clock.advance(days=15)
        await asyncio.sleep(SWEEPS)
    # The replica stopped half way; another starts, a second before the reward is due.
    clock.now = bought_at + timedelta(days=30, seconds=-1)
    async with running_service(DEFINITION, promotion_settings, clock=clock) as restarted:
        await asyncio.sleep(SWEEPS)
        assert not await grants_of(tenant, trigger.trigger_id)
        clock.advance(seconds=1)
        [grant] = await given(tenant, trigger.trigger_id, 1)
        assert (grant.source_event_id, grant.customer_id, grant.reward.points.points) == (
            event_id,
            "c-1",
            300,
        )
        clock.advance(days=1)
        assert await app_delays.give_due(restarted.server.resources.units) == 0  # nothing given twice
        await asyncio.sleep(SWEEPS)
    assert len(await grants_of(tenant, trigger.trigger_id)) == 1
    assert await pending(promotion, tenant.tenant_id) == [(event_id, "done")]


async def test_a_later_purchase_cancels_the_waiting_reward_and_waits_itself(
    tenant, redis_url, promotion, promotion_settings
):
    campaign = await event_campaign(tenant)
    trigger = await create(tenant, reengagement(campaign.campaign_id))
    await add_marker(tenant, campaign.campaign_id)
    first_at = datetime(2032, 5, 1, tzinfo=UTC)
    first = await publish(
        redis_url, "gateway.events", tenant.tenant_id, purchase("k-1", "c-1", 100), at=first_at
    )
    second = await publish(
        redis_url,
        "gateway.events",
        tenant.tenant_id,
        purchase("k-2", "c-1", 100),
        at=first_at + timedelta(days=10),
    )
    await settled(tenant, redis_url, "c-marker")
    assert await pending(promotion, tenant.tenant_id) == [(first, "cancelled"), (second, "pending")]
    clock = StoppedClock(first_at + timedelta(days=35))
    async with running_service(DEFINITION, promotion_settings, clock=clock):
        await asyncio.sleep(SWEEPS)
        assert not await grants_of(tenant, trigger.trigger_id)  # the first was cancelled
        clock.advance(days=6)
        [grant] = await given(tenant, trigger.trigger_id, 1)
        assert grant.source_event_id == second


async def test_two_replicas_sweeping_at_once_give_each_due_reward_once(
    tenant, redis_url, promotion, promotion_settings
):
    campaign = await event_campaign(tenant)
    trigger = await create(tenant, reengagement(campaign.campaign_id))
    await add_marker(tenant, campaign.campaign_id)
    bought_at = datetime(2033, 1, 1, tzinfo=UTC)
    for n in range(20):
        event = purchase(f"k-{n}", f"c-{n}", 100)
        await publish(redis_url, "gateway.events", tenant.tenant_id, event, at=bought_at)
    await settled(tenant, redis_url, "c-marker")
    clock = StoppedClock(bought_at + timedelta(days=31))
    sweepless = promotion_settings.model_copy(update={"delay_sweep_seconds": 0.0})  # sweeps called here
    async with (
        running_service(DEFINITION, sweepless, clock=clock) as one,
        running_service(DEFINITION, sweepless, clock=clock) as two,
    ):
        counts = await asyncio.gather(
            *(app_delays.give_due(replica.server.resources.units) for replica in (one, two, one, two))
        )
    assert sum(counts) == 20
    assert len({g.customer_id for g in await grants_of(tenant, trigger.trigger_id)}) == 20
    assert len(await grants_of(tenant, trigger.trigger_id)) == 20
