"""Earning rules and burn policies through the real server: CRUD with etags and validation, stored
rules earning base and tier points in EvaluateBasket (on every replica after a change), and the
campaign state events on the promotion stream."""

import asyncio

import grpc
from google.protobuf import field_mask_pb2
from redis.asyncio import Redis

from loyalty.promotion.v1 import (
    earning_pb2,
    evaluation_pb2,
    events_pb2,
    promotion_service_pb2 as api,
)
from tests.conftest import rpc_failure
from tests.service.promotion.helpers import basket, eur, key, percent_off

CUSTOMER = evaluation_pb2.CustomerContext(customer_id="c-1", tier_id="gold", program_id="p1")


def one_per_euro(**fields) -> earning_pb2.EarningRule:
    fields.setdefault("program_id", "p1")
    fields.setdefault("display_name", "1 point per euro")
    return earning_pb2.EarningRule(rate=earning_pb2.PointsRate(points=1, per_amount=eur(100)), **fields)


async def create_rule(tenant, rule) -> earning_pb2.EarningRule:
    response = await tenant.stub.CreateEarningRule(
        api.CreateEarningRuleRequest(idempotency_key=key(), earning_rule=rule), metadata=tenant.metadata
    )
    return response.earning_rule


async def points_of(tenant, basket_pb) -> evaluation_pb2.PointsEarning:
    response = await tenant.stub.EvaluateBasket(
        api.EvaluateBasketRequest(basket=basket_pb, customer=CUSTOMER), metadata=tenant.metadata
    )
    return response.result.points_earning


async def eventually_points(tenant, basket_pb, expected: int) -> evaluation_pb2.PointsEarning:
    for _ in range(100):
        earning = await points_of(tenant, basket_pb)
        if earning.total_points == expected:
            return earning
        await asyncio.sleep(0.05)
    raise AssertionError(f"points stayed {earning.total_points}, expected {expected}")


async def test_a_stored_rule_earns_base_and_tier_points_and_its_changes_apply(tenant):
    rule = await create_rule(
        tenant,
        one_per_euro(tier_multipliers=[earning_pb2.TierMultiplier(tier_id="gold", multiplier_bps=15000)]),
    )
    assert rule.earning_rule_id and rule.etag == "1"
    assert rule.state == earning_pb2.EARNING_RULE_STATE_ENABLED
    cart = basket(("A", 2, 1050))  # 21.00 EUR
    earning = await eventually_points(tenant, cart, 31)
    sources = sorted((e.source, e.points, e.earning_rule_id) for e in earning.entries)
    assert sources == [
        (evaluation_pb2.EARNING_SOURCE_BASE, 21, rule.earning_rule_id),
        (evaluation_pb2.EARNING_SOURCE_TIER_MULTIPLIER, 10, rule.earning_rule_id),
    ]
    rule.rate.points = 2
    updated = await tenant.stub.UpdateEarningRule(
        api.UpdateEarningRuleRequest(
            idempotency_key=key(), earning_rule=rule, update_mask=field_mask_pb2.FieldMask(paths=["rate"])
        ),
        metadata=tenant.metadata,
    )
    assert updated.earning_rule.etag == "2"
    await eventually_points(tenant, cart, 63)
    stale = await rpc_failure(
        tenant.stub.DeleteEarningRule(
            api.DeleteEarningRuleRequest(
                idempotency_key=key(), earning_rule_id=rule.earning_rule_id, etag="1"
            ),
            metadata=tenant.metadata,
        )
    )
    assert (stale.code, stale.reason) == (grpc.StatusCode.ABORTED, "CONCURRENT_MODIFICATION")
    await tenant.stub.DeleteEarningRule(
        api.DeleteEarningRuleRequest(idempotency_key=key(), earning_rule_id=rule.earning_rule_id, etag="2"),
        metadata=tenant.metadata,
    )
    await eventually_points(tenant, cart, 0)
    gone = await rpc_failure(
        tenant.stub.GetEarningRule(
            api.GetEarningRuleRequest(earning_rule_id=rule.earning_rule_id), metadata=tenant.metadata
        )
    )
    assert (gone.code, gone.reason) == (grpc.StatusCode.NOT_FOUND, "EARNING_RULE_NOT_FOUND")


async def test_rules_list_by_priority_and_programme_and_another_tenant_sees_none(tenant, other_tenant):
    low = await create_rule(tenant, one_per_euro(priority=1))
    high = await create_rule(tenant, one_per_euro(priority=9))
    await create_rule(tenant, one_per_euro(program_id="p2"))
    first = await tenant.stub.ListEarningRules(
        api.ListEarningRulesRequest(program_id="p1", page_size=1), metadata=tenant.metadata
    )
    assert [r.earning_rule_id for r in first.earning_rules] == [high.earning_rule_id]
    second = await tenant.stub.ListEarningRules(
        api.ListEarningRulesRequest(program_id="p1", page_size=1, page_token=first.next_page_token),
        metadata=tenant.metadata,
    )
    assert [r.earning_rule_id for r in second.earning_rules] == [low.earning_rule_id]
    assert second.next_page_token == ""
    theirs = await other_tenant.stub.ListEarningRules(
        api.ListEarningRulesRequest(), metadata=other_tenant.metadata
    )
    assert list(theirs.earning_rules) == []
    hidden = await rpc_failure(
        other_tenant.stub.GetEarningRule(
            api.GetEarningRuleRequest(earning_rule_id=low.earning_rule_id), metadata=other_tenant.metadata
        )
    )
    assert (hidden.code, hidden.reason) == (grpc.StatusCode.NOT_FOUND, "EARNING_RULE_NOT_FOUND")


async def test_a_rule_that_cannot_work_is_refused_naming_the_field(tenant):
    bad = one_per_euro()
    bad.rate.points = 0
    failure = await rpc_failure(
        tenant.stub.CreateEarningRule(
            api.CreateEarningRuleRequest(idempotency_key=key(), earning_rule=bad), metadata=tenant.metadata
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EFFECT")
    assert failure.fields == ["earning_rule.rate"]
    no_programme = await rpc_failure(
        tenant.stub.CreateEarningRule(
            api.CreateEarningRuleRequest(idempotency_key=key(), earning_rule=one_per_euro(program_id="")),
            metadata=tenant.metadata,
        )
    )
    assert no_programme.fields == ["earning_rule.program_id"]


async def test_a_burn_policy_is_disabled_until_set_then_kept_with_its_etag(tenant):
    initial = await tenant.stub.GetBurnPolicy(
        api.GetBurnPolicyRequest(program_id="p1"), metadata=tenant.metadata
    )
    assert (initial.burn_policy.enabled, initial.burn_policy.etag) == (False, "0")
    policy = earning_pb2.BurnPolicy(
        program_id="p1",
        enabled=True,
        values=[earning_pb2.PointsValue(points=100, value=eur(100))],
        step_points=100,
        max_basket_share_bps=5000,
    )
    saved = await tenant.stub.UpdateBurnPolicy(
        api.UpdateBurnPolicyRequest(idempotency_key=key(), burn_policy=policy), metadata=tenant.metadata
    )
    assert (saved.burn_policy.enabled, saved.burn_policy.etag, saved.burn_policy.step_points) == (
        True,
        "1",
        100,
    )
    read = await tenant.stub.GetBurnPolicy(
        api.GetBurnPolicyRequest(program_id="p1"), metadata=tenant.metadata
    )
    assert read.burn_policy == saved.burn_policy
    policy.max_basket_share_bps = 20000
    failure = await rpc_failure(
        tenant.stub.UpdateBurnPolicy(
            api.UpdateBurnPolicyRequest(idempotency_key=key(), burn_policy=policy), metadata=tenant.metadata
        )
    )
    assert (failure.code, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["burn_policy.max_basket_share_bps"],
    )


async def published(redis_url: str, tenant_id: str, count: int) -> list[tuple[str, str]]:
    redis = Redis.from_url(redis_url)
    try:
        for _ in range(200):
            entries = [
                (f[b"type"].decode(), f[b"key"].decode(), f[b"payload"])
                for _, f in await redis.xrange("promotion.events")
                if f[b"tenant"].decode() == tenant_id
            ]
            if len(entries) >= count:
                return entries
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    raise AssertionError(f"only {len(entries)} events were published")


async def test_activating_pausing_and_archiving_publish_campaign_events(tenant, redis_url):
    campaign = await tenant.live_campaign(percent_off(1000))
    await tenant.pause(campaign.campaign_id)
    await tenant.stub.ArchiveCampaign(
        api.ArchiveCampaignRequest(idempotency_key=key(), campaign_id=campaign.campaign_id),
        metadata=tenant.metadata,
    )
    events = await published(redis_url, tenant.tenant_id, 3)
    assert [(kind, k) for kind, k, _ in events] == [
        ("campaign.activated", campaign.campaign_id),
        ("campaign.paused", campaign.campaign_id),
        ("campaign.archived", campaign.campaign_id),
    ]
    activated = events_pb2.CampaignActivated.FromString(events[0][2])
    assert activated.state == campaign.state
