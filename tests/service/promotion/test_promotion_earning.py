"""Earning rules and burn policies through the real server: CRUD with etags and validation, stored
rules earning base and tier points in EvaluateBasket (on every replica after a change), and the
campaign state events on the promotion stream."""

import asyncio

import grpc
from google.protobuf import field_mask_pb2
from redis.asyncio import Redis

from loyalty.common.v1 import errors_pb2 as err
from loyalty.promotion.v1 import (
    earning_pb2,
    evaluation_pb2,
    events_pb2,
    promotion_service_pb2 as api,
    redemption_pb2,
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


async def set_burn(tenant, **fields) -> None:
    policy = earning_pb2.BurnPolicy(
        program_id="p1", enabled=True, values=[earning_pb2.PointsValue(points=100, value=eur(100))], **fields
    )
    await tenant.stub.UpdateBurnPolicy(
        api.UpdateBurnPolicyRequest(idempotency_key=key(), burn_policy=policy), metadata=tenant.metadata
    )


async def burned(tenant, basket_pb, points: int, balance: int = 10_000) -> evaluation_pb2.EvaluationResult:
    customer = evaluation_pb2.CustomerContext(customer_id="c-b", program_id="p1", points_balance=balance)
    for _ in range(100):
        response = await tenant.stub.EvaluateBasket(
            api.EvaluateBasketRequest(basket=basket_pb, customer=customer, points_to_burn=points),
            metadata=tenant.metadata,
        )
        if response.result.HasField("points_burn") and response.result.points_burn.program_id:
            return response.result
        await asyncio.sleep(0.05)
    raise AssertionError("the burn policy never reached the catalog")


async def test_points_pay_within_the_policy_and_the_lines_add_up(tenant):
    await create_rule(tenant, one_per_euro())
    await set_burn(tenant, step_points=100, max_basket_share_bps=5000)
    cart = basket(("A", 1, 1000), ("B", 2, 1000))  # 30.00
    result = await burned(tenant, cart, 2_550)
    burn = result.points_burn
    # Half of 30.00 may be paid: 1,500 points; the request is clamped to it, in steps of 100.
    assert (burn.applied_points, burn.applied_value.amount_minor, burn.max_burnable_points) == (
        1500,
        1500,
        1500,
    )
    assert burn.reason == err.ERROR_REASON_INVALID_AMOUNT
    assert result.points_discount.amount_minor == 1500 and result.total_payable.amount_minor == 1500
    assert (
        sum(line.discount_total.amount_minor for line in result.lines) == result.total_discount.amount_minor
    )
    assert sum(line.points_burned for line in result.lines) == 1500
    # Base points earn on what was paid in money: 15.00.
    assert result.points_earning.total_points == 15
    poor = await burned(tenant, cart, 1000, balance=250)
    assert (poor.points_burn.applied_points, poor.points_burn.reason) == (
        200,
        err.ERROR_REASON_INSUFFICIENT_BALANCE,
    )


async def test_a_return_gives_the_burned_points_back_in_proportion(tenant):
    await set_burn(tenant)
    cart = basket(("A", 4, 1000))
    await burned(tenant, cart, 1000)  # the policy is in the catalog
    customer = evaluation_pb2.CustomerContext(customer_id="c-r", program_id="p1", points_balance=5000)
    checkout_id = f"co-burn-{key()[:8]}"
    reserved = await tenant.stub.ReserveRedemptions(
        api.ReserveRedemptionsRequest(
            checkout_id=checkout_id, basket=cart, customer=customer, points_to_burn=1000
        ),
        metadata=tenant.metadata,
    )
    assert reserved.reservation.result.points_burn.applied_points == 1000
    await tenant.stub.CommitRedemptions(
        api.CommitRedemptionsRequest(checkout_id=checkout_id), metadata=tenant.metadata
    )
    returned = await tenant.stub.ReverseRedemptions(
        api.ReverseRedemptionsRequest(
            checkout_id=checkout_id,
            return_id="r1",
            lines=[redemption_pb2.ReturnLine(line_id="l0", quantity=1)],
        ),
        metadata=tenant.metadata,
    )
    assert (returned.reversal.points_to_refund, returned.reversal.refund_amount.amount_minor) == (250, 750)
