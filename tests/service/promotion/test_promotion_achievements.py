"""Achievements against a real promotion server and real Redis Streams: progress across events (a
rolling sum, distinct categories, a count) stored per customer and read by ListAchievementProgress,
completed and rewarded exactly once (also when the customer's events race), undone by returns before
the reward and clawed back after it per the trigger's policy; and what may not be saved."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from redis.asyncio import Redis

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.promotion.v1 import events_pb2, promotion_service_pb2 as api, reward_pb2, trigger_pb2
from loyalty_promotion import app_triggers
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from tests.conftest import rpc_failure
from tests.service.promotion.test_promotion_triggers import (
    create,
    event_campaign,
    grants,
    points,
    publish,
    welcome,
)

DAY = 86_400
MARKER = "marker.reached"


def purchase(checkout_id: str, customer_id: str, total: int, *categories: str):
    lines = [
        basket_pb2.LineItem(line_id=str(n), sku=f"s{n}", categories=[c]) for n, c in enumerate(categories)
    ]
    return gateway_events.PurchaseCommitted(
        checkout_id=checkout_id,
        customer_id=customer_id,
        net_total=money_pb2.Money(amount_minor=total, currency_code="EUR"),
        basket=basket_pb2.Basket(lines=lines),
    )


def returned(checkout_id: str, customer_id: str, refunded: int):
    return gateway_events.CheckoutReturned(
        checkout_id=checkout_id,
        return_id=str(uuid.uuid4()),
        customer_id=customer_id,
        refunded_total=money_pb2.Money(amount_minor=refunded, currency_code="EUR"),
    )


def achievement(campaign_id: str, measure, target: int, *, prop: str = "", window_days: int = 0, **fields):
    rule = trigger_pb2.AchievementRule(measure=measure, property=prop, target=target)
    if window_days:
        rule.window.CopyFrom(Duration(seconds=window_days * DAY))
    fields = {
        "display_name": "Achievement",
        "event_type": "purchase.committed",
        "reward": points(500),
        **fields,
    }
    return trigger_pb2.Trigger(campaign_id=campaign_id, achievement=rule, **fields)


async def add_marker(tenant, campaign_id: str) -> None:
    """A trigger on an activity on gateway.events, for settled(): that stream is handled in order."""
    await create(tenant, welcome(campaign_id, display_name="Marker", event_type=MARKER))


async def settled(tenant, redis_url: str, marker_customer: str) -> None:
    """Wait until the consumer has handled every gateway event published before: a last one whose
    grant shows up last."""
    marker = gateway_events.ActivityRecorded(customer_id=marker_customer, activity_type=MARKER)
    await publish(redis_url, "gateway.events", tenant.tenant_id, marker)
    await grants(tenant, 1, customer_id=marker_customer)


async def progress(tenant, customer_id: str) -> dict[str, trigger_pb2.AchievementProgress]:
    response = await tenant.stub.ListAchievementProgress(
        api.ListAchievementProgressRequest(customer_id=customer_id), metadata=tenant.metadata
    )
    return {p.trigger_id: p for p in response.progress}


async def test_spend_500_in_a_rolling_30_days_completes_once_and_shows_its_progress(tenant, redis_url):
    campaign = await event_campaign(tenant)
    spend = await create(
        tenant,
        achievement(
            campaign.campaign_id,
            trigger_pb2.ACHIEVEMENT_MEASURE_SUM,
            50_000,
            prop="net_total",
            window_days=30,
        ),
    )
    await add_marker(tenant, campaign.campaign_id)
    start = datetime.now(UTC) - timedelta(days=60)
    # 200 on day 0 has left the window by day 40: 200 + 200 < 500 then; 150 on day 45 completes it.
    for day, total in ((0, 20_000), (20, 20_000), (40, 20_000)):
        event = purchase(f"k-{day}", "c-1", total)
        await publish(redis_url, "gateway.events", tenant.tenant_id, event, at=start + timedelta(days=day))
    await settled(tenant, redis_url, "c-marker-1")
    assert not await grants_of(tenant, spend.trigger_id)

    event_id = await publish(
        redis_url,
        "gateway.events",
        tenant.tenant_id,
        purchase("k-45", "c-1", 15_000),
        at=start + timedelta(days=45),
    )
    await publish(  # redelivered
        redis_url,
        "gateway.events",
        tenant.tenant_id,
        purchase("k-45", "c-1", 15_000),
        event_id=event_id,
        at=start + timedelta(days=45),
    )
    await publish(
        redis_url,
        "gateway.events",
        tenant.tenant_id,
        purchase("k-46", "c-1", 90_000),
        at=start + timedelta(days=46),
    )
    await settled(tenant, redis_url, "c-marker-2")
    [grant] = await grants_of(tenant, spend.trigger_id)
    assert grant.source_event_id == event_id and grant.customer_id == "c-1"
    shown = (await progress(tenant, "c-1"))[spend.trigger_id]
    assert shown.completed and shown.target == 50_000 and shown.display_name == "Achievement"
    # Now, 14 days after the last purchase, the window holds days 40, 45 and 46 (the ones in the last 30).
    assert shown.current == 20_000 + 15_000 + 90_000


async def grants_of(tenant, trigger_id: str) -> list[reward_pb2.RewardGrant]:
    response = await tenant.stub.ListRewardGrants(
        api.ListRewardGrantsRequest(trigger_id=trigger_id), metadata=tenant.metadata
    )
    return list(response.grants)


async def test_three_distinct_categories_and_two_reviews_show_as_2_of_3_then_complete(tenant, redis_url):
    campaign = await event_campaign(tenant)
    categories = await create(
        tenant,
        achievement(campaign.campaign_id, trigger_pb2.ACHIEVEMENT_MEASURE_DISTINCT, 3, prop="categories"),
    )
    reviews = await create(
        tenant,
        achievement(
            campaign.campaign_id, trigger_pb2.ACHIEVEMENT_MEASURE_COUNT, 2, event_type="review.written"
        ),
    )
    await add_marker(tenant, campaign.campaign_id)
    await publish(
        redis_url, "gateway.events", tenant.tenant_id, purchase("k-1", "c-1", 100, "dairy", "bakery")
    )
    await publish(redis_url, "gateway.events", tenant.tenant_id, purchase("k-2", "c-1", 100, "dairy"))
    review = gateway_events.ActivityRecorded(customer_id="c-1", activity_type="review.written")
    await publish(redis_url, "gateway.events", tenant.tenant_id, review)
    await settled(tenant, redis_url, "c-marker-1")
    shown = await progress(tenant, "c-1")
    assert (shown[categories.trigger_id].current, shown[categories.trigger_id].target) == (2, 3)
    assert (shown[reviews.trigger_id].current, shown[reviews.trigger_id].completed) == (1, False)

    await publish(redis_url, "gateway.events", tenant.tenant_id, purchase("k-3", "c-1", 100, "toys"))
    await publish(redis_url, "gateway.events", tenant.tenant_id, review)
    await settled(tenant, redis_url, "c-marker-2")
    shown = await progress(tenant, "c-1")
    assert shown[categories.trigger_id].completed and shown[reviews.trigger_id].completed
    assert len(await grants_of(tenant, categories.trigger_id)) == 1
    assert len(await grants_of(tenant, reviews.trigger_id)) == 1
    assert await progress(tenant, "c-nobody") == {
        t: trigger_pb2.AchievementProgress(
            trigger_id=t,
            campaign_id=campaign.campaign_id,
            display_name="Achievement",
            measure=m,
            target=n,
        )
        for t, m, n in (
            (categories.trigger_id, trigger_pb2.ACHIEVEMENT_MEASURE_DISTINCT, 3),
            (reviews.trigger_id, trigger_pb2.ACHIEVEMENT_MEASURE_COUNT, 2),
        )
    }


async def test_concurrent_events_of_one_customer_complete_the_achievement_exactly_once(tenant, promotion):
    campaign = await event_campaign(tenant)
    trigger = await create(
        tenant, achievement(campaign.campaign_id, trigger_pb2.ACHIEVEMENT_MEASURE_COUNT, 3)
    )
    units = promotion.server.resources.units
    now = datetime.now(UTC)

    async def handle(event_id: str) -> None:
        token = bind_call(CallContext(tenant.tenant_id, "test", event_id=event_id, event_time=now))
        try:
            async with units.change() as uow:
                await app_triggers.on_event(uow, "purchase.committed", "c-1", {"checkout_id": event_id})
        finally:
            unbind_call(token)

    # Ten distinct purchases and each of them twice, all at once.
    event_ids = [f"e-{n}" for n in range(10)]
    await asyncio.gather(*(handle(event_id) for event_id in event_ids * 2))
    assert len(await grants_of(tenant, trigger.trigger_id)) == 1
    shown = (await progress(tenant, "c-1"))[trigger.trigger_id]
    assert (shown.current, shown.completed) == (10, True)


async def test_a_return_before_the_reward_undoes_the_progress_and_after_it_claws_back(tenant, redis_url):
    campaign = await event_campaign(tenant)
    clawing = await create(
        tenant,
        achievement(
            campaign.campaign_id,
            trigger_pb2.ACHIEVEMENT_MEASURE_SUM,
            1_000,
            prop="net_total",
            clawback=trigger_pb2.CLAWBACK_POLICY_POINTS,
        ),
    )
    keeping = await create(
        tenant,
        achievement(campaign.campaign_id, trigger_pb2.ACHIEVEMENT_MEASURE_COUNT, 2, display_name="Keeps"),
    )
    await add_marker(tenant, campaign.campaign_id)
    await publish(redis_url, "gateway.events", tenant.tenant_id, purchase("k-1", "c-1", 800))
    await publish(redis_url, "gateway.events", tenant.tenant_id, returned("k-1", "c-1", 800))  # before
    await publish(redis_url, "gateway.events", tenant.tenant_id, purchase("k-2", "c-1", 600))
    await settled(tenant, redis_url, "c-marker-1")
    shown = await progress(tenant, "c-1")
    assert (shown[clawing.trigger_id].current, shown[clawing.trigger_id].completed) == (600, False)
    assert (shown[keeping.trigger_id].current, shown[keeping.trigger_id].completed) == (1, False)

    await publish(redis_url, "gateway.events", tenant.tenant_id, purchase("k-3", "c-1", 500))
    await settled(tenant, redis_url, "c-marker-2")
    [given] = await grants_of(tenant, clawing.trigger_id)
    assert len(await grants_of(tenant, keeping.trigger_id)) == 1
    # A partial return of 200 leaves 900 < 1000: the points are clawed back, once; the count
    # achievement, with no clawback, keeps its reward (the purchase still counts: not all refunded).
    back = returned("k-3", "c-1", 200)
    event_id = await publish(redis_url, "gateway.events", tenant.tenant_id, back)
    await publish(redis_url, "gateway.events", tenant.tenant_id, back, event_id=event_id)
    await settled(tenant, redis_url, "c-marker-3")
    [clawed] = await grants_of(tenant, clawing.trigger_id)
    assert clawed.grant_id == given.grant_id and clawed.state == reward_pb2.REWARD_GRANT_STATE_REVERSED
    [kept] = await grants_of(tenant, keeping.trigger_id)
    assert kept.state == reward_pb2.REWARD_GRANT_STATE_PENDING
    shown = await progress(tenant, "c-1")
    assert (shown[clawing.trigger_id].current, shown[clawing.trigger_id].completed) == (900, False)
    [announced] = await reversed_events(redis_url, tenant.tenant_id)
    assert (announced.grant_id, announced.customer_id, announced.program_id) == (
        given.grant_id,
        "c-1",
        "club",
    )
    assert announced.source_event_id == event_id


async def reversed_events(redis_url: str, tenant: str) -> list[events_pb2.RewardReversed]:
    redis = Redis.from_url(redis_url)
    try:
        return [
            events_pb2.RewardReversed.FromString(fields[b"payload"])
            for _, fields in await redis.xrange("promotion.events")
            if fields[b"type"] == b"reward.reversed" and fields[b"tenant"].decode() == tenant
        ]
    finally:
        await redis.aclose()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"delay": Duration(seconds=0)}, "trigger.delay"),
        ({"delay": Duration(seconds=366 * DAY)}, "trigger.delay"),
        ({"cancel_on_event_type": "purchase.committed"}, "trigger.cancel_on_event_type"),
        (
            {"delay": Duration(seconds=60), "cancel_on_event_type": "no.such_event!"},
            "trigger.cancel_on_event_type",
        ),
        ({"clawback": trigger_pb2.CLAWBACK_POLICY_POINTS}, "trigger.clawback"),
        (
            {
                "achievement": trigger_pb2.AchievementRule(
                    measure=trigger_pb2.ACHIEVEMENT_MEASURE_SUM, target=5
                )
            },
            "trigger.achievement.property",
        ),
        (
            {"achievement": trigger_pb2.AchievementRule(measure=trigger_pb2.ACHIEVEMENT_MEASURE_COUNT)},
            "trigger.achievement.target",
        ),
        (
            {
                "achievement": trigger_pb2.AchievementRule(
                    measure=trigger_pb2.ACHIEVEMENT_MEASURE_COUNT,
                    target=2,
                    window=Duration(seconds=400 * DAY),
                )
            },
            "trigger.achievement.window",
        ),
        (
            {
                "achievement": trigger_pb2.AchievementRule(
                    measure=trigger_pb2.ACHIEVEMENT_MEASURE_COUNT, target=2
                ),
                "occurrence": trigger_pb2.OccurrenceRule(
                    nth=1, period=trigger_pb2.OCCURRENCE_PERIOD_CAMPAIGN
                ),
            },
            "trigger.achievement",
        ),
    ],
)
async def test_what_an_achievement_or_a_delay_may_not_say_is_refused_with_its_field(tenant, fields, field):
    campaign = await event_campaign(tenant)
    trigger = trigger_pb2.Trigger(
        campaign_id=campaign.campaign_id,
        display_name="Bad",
        event_type="purchase.committed",
        reward=points(10),
        **fields,
    )
    failure = await rpc_failure(create(tenant, trigger))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert field in failure.fields
    listed = await tenant.stub.ListTriggers(api.ListTriggersRequest(), metadata=tenant.metadata)
    assert not listed.triggers


async def test_progress_needs_a_customer(tenant):
    failure = await rpc_failure(
        tenant.stub.ListAchievementProgress(api.ListAchievementProgressRequest(), metadata=tenant.metadata)
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["customer_id"])
