"""Triggers against a real promotion server and real Redis Streams: configured through the admin
RPCs (refused with field violations when they cannot work), fed by other services' events as the
runtime's consumer delivers them, rewarding once per trigger and event, within their occurrence
rule and limits, with `reward.granted` published for the ledger."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.duration_pb2 import Duration
from redis.asyncio import Redis

from loyalty.common.v1 import money_pb2
from loyalty.gateway.v1 import customer_pb2 as gateway_customer, events_pb2 as gateway_events
from loyalty.ledger.v1 import events_pb2 as ledger_events
from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty.promotion.v1 import (
    campaign_pb2,
    events_pb2,
    promotion_service_pb2 as api,
    reward_pb2,
    trigger_pb2,
)
from loyalty_runtime.events import Envelope
from loyalty_runtime.uow import event_type_of
from tests.conftest import rpc_failure
from tests.service.promotion.helpers import key


def points(amount: int, program_id: str = "club") -> reward_pb2.Reward:
    return reward_pb2.Reward(points=reward_pb2.PointsReward(program_id=program_id, points=amount))


def welcome(campaign_id: str, **fields) -> trigger_pb2.Trigger:
    fields = {
        "display_name": "Welcome bonus",
        "event_type": "customer.created",
        "reward": points(100),
        **fields,
    }
    return trigger_pb2.Trigger(campaign_id=campaign_id, **fields)


async def event_campaign(tenant) -> campaign_pb2.Campaign:
    campaign = await tenant.create_campaign(type=campaign_pb2.CAMPAIGN_TYPE_EVENT, program_id="club")
    return await tenant.activate(campaign.campaign_id)


async def create(tenant, trigger: trigger_pb2.Trigger) -> trigger_pb2.Trigger:
    response = await tenant.stub.CreateTrigger(
        api.CreateTriggerRequest(idempotency_key=key(), trigger=trigger), metadata=tenant.metadata
    )
    return response.trigger


async def publish(redis_url: str, stream: str, tenant: str, event, *, event_id: str = "", at=None) -> str:
    """An event on `stream` as another service's outbox relay would put it there."""
    envelope = Envelope(
        event_id=event_id or f"test:{uuid.uuid4()}",
        event_type=event_type_of(event.DESCRIPTOR),
        tenant_id=tenant,
        key=getattr(event, "customer_id", ""),
        payload=event.SerializeToString(),
        occurred_at=at or datetime.now(UTC),
        trace_parent=None,
    )
    redis = Redis.from_url(redis_url)
    try:
        await redis.xadd(stream, envelope.to_fields())
    finally:
        await redis.aclose()
    return envelope.event_id


async def grants(tenant, count: int, **filters) -> list[reward_pb2.RewardGrant]:
    """The tenant's grants once there are `count` of them (the consumer works in the background)."""
    async with asyncio.timeout(15):
        while True:
            response = await tenant.stub.ListRewardGrants(
                api.ListRewardGrantsRequest(**filters), metadata=tenant.metadata
            )
            if len(response.grants) >= count:
                return list(response.grants)
            await asyncio.sleep(0.05)


async def granted_events(redis_url: str, tenant: str) -> list[events_pb2.RewardGranted]:
    redis = Redis.from_url(redis_url)
    try:
        return [
            events_pb2.RewardGranted.FromString(fields[b"payload"])
            for _, fields in await redis.xrange("promotion.events")
            if fields[b"type"] == b"reward.granted" and fields[b"tenant"].decode() == tenant
        ]
    finally:
        await redis.aclose()


async def settled(tenant, redis_url: str, marker_customer: str) -> None:
    """Wait until the consumer has handled everything published before: a last event for a customer
    the tests reward anyway, whose grant shows up last."""
    await publish(
        redis_url,
        "profile.events",
        tenant.tenant_id,
        profile_events.CustomerCreated(customer_id=marker_customer),
    )
    await grants(tenant, 1, customer_id=marker_customer)


async def test_a_welcome_trigger_rewards_each_new_customer_once_even_if_the_event_comes_twice(
    tenant, redis_url
):
    campaign = await event_campaign(tenant)
    trigger = await create(tenant, welcome(campaign.campaign_id))
    assert trigger.state == trigger_pb2.TRIGGER_STATE_ENABLED and trigger.etag == "1"

    event = profile_events.CustomerCreated(customer_id="c-1")
    event_id = await publish(redis_url, "profile.events", tenant.tenant_id, event)
    await publish(redis_url, "profile.events", tenant.tenant_id, event, event_id=event_id)  # redelivered
    await settled(tenant, redis_url, "c-last")

    [grant] = await grants(tenant, 1, customer_id="c-1")
    assert (grant.trigger_id, grant.campaign_id, grant.source_event_id) == (
        trigger.trigger_id,
        campaign.campaign_id,
        event_id,
    )
    assert grant.reward.points.points == 100 and grant.state == reward_pb2.REWARD_GRANT_STATE_PENDING
    statistics = await tenant.stub.GetCampaignStatistics(
        api.GetCampaignStatisticsRequest(campaign_id=campaign.campaign_id), metadata=tenant.metadata
    )
    assert statistics.statistics.reward_grant_count == 2  # c-1 once, and settled()'s marker
    [announced] = [e for e in await granted_events(redis_url, tenant.tenant_id) if e.customer_id == "c-1"]
    assert (announced.grant_id, announced.program_id, announced.reward.points.points) == (
        grant.grant_id,
        "club",
        100,
    )


async def test_the_nth_event_of_a_period_is_rewarded_within_the_limits(tenant, redis_url):
    campaign = await event_campaign(tenant)
    # Every 2nd tier change to GOLD in a calendar month, at most twice per customer.
    await create(
        tenant,
        trigger_pb2.Trigger(
            campaign_id=campaign.campaign_id,
            display_name="Gold twice",
            event_type="tier.changed",
            property_filters=[
                trigger_pb2.PropertyFilter(
                    property="to_tier",
                    operator=trigger_pb2.PROPERTY_OPERATOR_EQUALS,
                    value=trigger_pb2.PropertyValue(string_value="GOLD"),
                )
            ],
            occurrence=trigger_pb2.OccurrenceRule(
                nth=2, period=trigger_pb2.OCCURRENCE_PERIOD_CALENDAR_MONTH, repeat=True
            ),
            reward=points(50),
            max_rewards_per_customer=2,
        ),
    )
    await create(tenant, welcome(campaign.campaign_id))  # for settled()
    january = datetime(2030, 1, 10, tzinfo=UTC)
    for day, to_tier in enumerate(["GOLD", "SILVER", "GOLD", "GOLD", "GOLD", "GOLD", "GOLD"]):
        change = ledger_events.TierChanged(customer_id="c-1", to_tier=to_tier)
        await publish(redis_url, "ledger.events", tenant.tenant_id, change, at=january + timedelta(days=day))
    # February starts counting again: its 1st match is not rewarded, and the cap is reached anyway.
    for day in range(2):
        change = ledger_events.TierChanged(customer_id="c-1", to_tier="GOLD")
        await publish(
            redis_url, "ledger.events", tenant.tenant_id, change, at=datetime(2030, 2, 1 + day, tzinfo=UTC)
        )
    await settled(tenant, redis_url, "c-last")

    # Six GOLD changes in January: the 2nd and 4th rewarded, the 6th over the cap of 2.
    assert len([g for g in await grants(tenant, 2, customer_id="c-1")]) == 2


async def test_a_trigger_of_a_paused_campaign_or_a_disabled_trigger_rewards_nothing(tenant, redis_url):
    paused = await event_campaign(tenant)
    await create(tenant, welcome(paused.campaign_id))
    await tenant.pause(paused.campaign_id)
    live = await event_campaign(tenant)
    disabled = await create(tenant, welcome(live.campaign_id, state=trigger_pb2.TRIGGER_STATE_DISABLED))
    marker = await create(tenant, welcome(live.campaign_id, display_name="Marker"))

    await settled(tenant, redis_url, "c-1")
    [grant] = await grants(tenant, 1)
    assert grant.trigger_id == marker.trigger_id != disabled.trigger_id


async def test_admin_rpcs_get_list_update_with_etag_and_delete(tenant):
    campaign = await event_campaign(tenant)
    first = await create(tenant, welcome(campaign.campaign_id))
    second = await create(tenant, welcome(campaign.campaign_id, display_name="Second"))
    got = await tenant.stub.GetTrigger(
        api.GetTriggerRequest(trigger_id=first.trigger_id), metadata=tenant.metadata
    )
    assert got.trigger == first

    page = await tenant.stub.ListTriggers(api.ListTriggersRequest(page_size=1), metadata=tenant.metadata)
    rest = await tenant.stub.ListTriggers(
        api.ListTriggersRequest(page_size=1, page_token=page.next_page_token), metadata=tenant.metadata
    )
    assert {page.triggers[0].trigger_id, rest.triggers[0].trigger_id} == {first.trigger_id, second.trigger_id}
    assert not rest.next_page_token

    change = trigger_pb2.Trigger(trigger_id=first.trigger_id, display_name="Renamed", etag=first.etag)
    mask = field_mask_pb2.FieldMask(paths=["display_name"])
    updated = (
        await tenant.stub.UpdateTrigger(
            api.UpdateTriggerRequest(idempotency_key=key(), trigger=change, update_mask=mask),
            metadata=tenant.metadata,
        )
    ).trigger
    assert (updated.display_name, updated.etag, updated.reward) == ("Renamed", "2", first.reward)
    stale = await rpc_failure(
        tenant.stub.UpdateTrigger(
            api.UpdateTriggerRequest(idempotency_key=key(), trigger=change, update_mask=mask),
            metadata=tenant.metadata,
        )
    )
    assert stale.code == grpc.StatusCode.ABORTED

    await tenant.stub.DeleteTrigger(
        api.DeleteTriggerRequest(idempotency_key=key(), trigger_id=first.trigger_id), metadata=tenant.metadata
    )
    gone = await rpc_failure(
        tenant.stub.GetTrigger(api.GetTriggerRequest(trigger_id=first.trigger_id), metadata=tenant.metadata)
    )
    assert (gone.code, gone.reason) == (grpc.StatusCode.NOT_FOUND, "TRIGGER_NOT_FOUND")


async def test_another_tenants_trigger_is_not_found_and_its_campaign_cannot_be_used(tenant, other_tenant):
    campaign = await event_campaign(tenant)
    trigger = await create(tenant, welcome(campaign.campaign_id))
    hidden = await rpc_failure(
        other_tenant.stub.GetTrigger(
            api.GetTriggerRequest(trigger_id=trigger.trigger_id), metadata=other_tenant.metadata
        )
    )
    unknown = await rpc_failure(
        other_tenant.stub.GetTrigger(
            api.GetTriggerRequest(trigger_id=str(uuid.uuid4())), metadata=other_tenant.metadata
        )
    )
    assert (
        (hidden.code, hidden.reason)
        == (unknown.code, unknown.reason)
        == (grpc.StatusCode.NOT_FOUND, "TRIGGER_NOT_FOUND")
    )
    borrowed = await rpc_failure(create(other_tenant, welcome(campaign.campaign_id)))
    assert (borrowed.code, borrowed.reason) == (grpc.StatusCode.NOT_FOUND, "CAMPAIGN_NOT_FOUND")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_type": "purchase.teleported"}, "trigger.event_type"),  # a platform namespace, no such event
        ({"event_type": "Not An Event"}, "trigger.event_type"),
        ({"display_name": ""}, "trigger.display_name"),
        ({"reward": reward_pb2.Reward()}, "trigger.actions"),
        ({"reward": points(0)}, "trigger.reward.points.points"),
        ({"cooldown": Duration(seconds=0, nanos=0)}, "trigger.cooldown"),
        ({"cooldown": Duration(seconds=400 * 86_400)}, "trigger.cooldown"),
        ({"occurrence": trigger_pb2.OccurrenceRule(nth=0, period=1)}, "trigger.occurrence.nth"),
        (
            {
                "property_filters": [
                    trigger_pb2.PropertyFilter(
                        property="rating",
                        operator=trigger_pb2.PROPERTY_OPERATOR_GREATER_THAN,
                        value=trigger_pb2.PropertyValue(string_value="4"),
                    )
                ]
            },
            "trigger.property_filters[0].value",
        ),
        (
            {"reward": reward_pb2.Reward(voucher=reward_pb2.VoucherReward(campaign_id=str(uuid.uuid4())))},
            "trigger.reward.voucher.campaign_id",
        ),
    ],
)
async def test_a_trigger_that_cannot_work_is_refused_with_its_field(tenant, change, field):
    campaign = await event_campaign(tenant)
    trigger = welcome(campaign.campaign_id)
    for name, value in change.items():
        if isinstance(value, list):
            getattr(trigger, name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(trigger, name).CopyFrom(value)
        else:
            setattr(trigger, name, value)
    failure = await rpc_failure(create(tenant, trigger))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    listed = await tenant.stub.ListTriggers(api.ListTriggersRequest(), metadata=tenant.metadata)
    assert not listed.triggers


async def test_three_purchases_in_february_over_20_earn_500_points_once(tenant, redis_url):
    campaign = await event_campaign(tenant)
    await create(
        tenant,
        trigger_pb2.Trigger(
            campaign_id=campaign.campaign_id,
            display_name="3 purchases in February",
            event_type="purchase.committed",
            property_filters=[
                trigger_pb2.PropertyFilter(
                    property="net_total",
                    operator=trigger_pb2.PROPERTY_OPERATOR_GREATER_THAN_OR_EQUALS,
                    value=trigger_pb2.PropertyValue(int_value=2000),
                )
            ],
            occurrence=trigger_pb2.OccurrenceRule(nth=3, period=trigger_pb2.OCCURRENCE_PERIOD_CALENDAR_MONTH),
            reward=points(500),
        ),
    )
    await create(tenant, welcome(campaign.campaign_id))  # for settled()
    totals = [2500, 900, 3000, 2000, 4000, 5000]  # the 900 does not count; the 4th match is past the 3rd
    for day, total in enumerate(totals):
        purchase = gateway_events.PurchaseCommitted(
            checkout_id=f"chk-{day}",
            customer_id="c-1",
            net_total=money_pb2.Money(currency_code="EUR", amount_minor=total),
        )
        await publish(
            redis_url, "gateway.events", tenant.tenant_id, purchase, at=datetime(2030, 2, 3 + day, tzinfo=UTC)
        )
    await settled(tenant, redis_url, "c-last")
    [grant] = await grants(tenant, 1, customer_id="c-1")
    assert grant.reward.points.points == 500


async def test_an_apps_activity_type_is_a_trigger_event_and_the_platforms_own_names_are_not(
    tenant, redis_url
):
    campaign = await event_campaign(tenant)
    reviews = await create(
        tenant,
        trigger_pb2.Trigger(
            campaign_id=campaign.campaign_id,
            display_name="Two reviews",
            event_type="review.written",
            property_filters=[
                trigger_pb2.PropertyFilter(
                    property="rating",
                    operator=trigger_pb2.PROPERTY_OPERATOR_GREATER_THAN,
                    value=trigger_pb2.PropertyValue(int_value=0),
                )
            ],
            occurrence=trigger_pb2.OccurrenceRule(nth=2, period=trigger_pb2.OCCURRENCE_PERIOD_CAMPAIGN),
            reward=points(50),
        ),
    )
    await create(tenant, welcome(campaign.campaign_id))
    for number in range(2):
        activity = gateway_events.ActivityRecorded(
            event_id=f"a-{number}",
            customer_id="c-1",
            activity_type="review.written",
            properties={"rating": gateway_customer.AttributeValue(int_value=5)},
        )
        await publish(redis_url, "gateway.events", tenant.tenant_id, activity)
    await settled(tenant, redis_url, "c-last")
    [grant] = await grants(tenant, 1, customer_id="c-1")
    assert grant.trigger_id == reviews.trigger_id

    fake = await rpc_failure(create(tenant, welcome(campaign.campaign_id, event_type="reward.granted")))
    assert fake.fields == ["trigger.event_type"]
