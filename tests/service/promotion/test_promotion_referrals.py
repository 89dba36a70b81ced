"""Referral programmes through the real server: one code per referrer (get-or-create), the
referee's benefit at checkout, self-referral and repeat customers refused, and a conversion per
committed referee checkout, confirmed at once or after the programme's delay, cancelled by a
rollback."""

import asyncio
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2
from redis.asyncio import Redis

from loyalty.common.v1 import errors_pb2 as err, money_pb2
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.promotion.v1 import (
    campaign_pb2,
    evaluation_pb2,
    events_pb2,
    promotion_service_pb2 as api,
    referral_pb2,
    reward_pb2,
)
from tests.conftest import rpc_failure
from tests.service.promotion.helpers import basket, key, percent_off
from tests.service.promotion.test_promotion_triggers import publish

CART = basket(("A", 1, 1000))


async def programme(tenant, **settings) -> campaign_pb2.Campaign:
    campaign = await tenant.create_campaign(
        type=campaign_pb2.CAMPAIGN_TYPE_REFERRAL,
        referral=campaign_pb2.ReferralSettings(first_purchase_only=True, **settings),
    )
    await tenant.add_promotion(campaign.campaign_id, percent_off(1500))
    return await tenant.activate(campaign.campaign_id)


async def referral_code(tenant, campaign_id: str, referrer: str):
    return await tenant.stub.CreateReferralCode(
        api.CreateReferralCodeRequest(
            idempotency_key=key(), campaign_id=campaign_id, referrer_customer_id=referrer
        ),
        metadata=tenant.metadata,
    )


def reserve(tenant, checkout_id: str, code: str, customer_id: str, purchases: int = 0):
    return tenant.stub.ReserveRedemptions(
        api.ReserveRedemptionsRequest(
            checkout_id=checkout_id,
            basket=CART,
            codes=[code],
            customer=evaluation_pb2.CustomerContext(
                customer_id=customer_id, lifetime_purchase_count=purchases
            ),
        ),
        metadata=tenant.metadata,
    )


async def conversions(tenant, campaign_id: str):
    response = await tenant.stub.ListReferralConversions(
        api.ListReferralConversionsRequest(campaign_id=campaign_id), metadata=tenant.metadata
    )
    return list(response.conversions)


@pytest.fixture
async def referral(tenant):
    return await programme(tenant)


async def test_a_referrer_has_one_code_and_a_new_referee_gets_the_benefit(tenant, referral):
    first = await referral_code(tenant, referral.campaign_id, "alice")
    again = await referral_code(tenant, referral.campaign_id, "alice")
    assert first.created and not again.created
    assert again.referral_code.code == first.referral_code.code and first.referral_code.code.startswith(
        "REF-"
    )
    code = first.referral_code.code
    checkout_id = f"co-{uuid.uuid4().hex[:8]}"
    reserved = (await reserve(tenant, checkout_id, code.lower(), "bob")).reservation
    assert reserved.result.promotion_discount.amount_minor == 150
    await tenant.stub.CommitRedemptions(
        api.CommitRedemptionsRequest(checkout_id=checkout_id), metadata=tenant.metadata
    )
    (conversion,) = await conversions(tenant, referral.campaign_id)
    assert (conversion.referrer_customer_id, conversion.referee_customer_id, conversion.state) == (
        "alice",
        "bob",
        referral_pb2.REFERRAL_CONVERSION_STATE_CONFIRMED,
    )
    listed = await tenant.stub.ListReferralCodes(
        api.ListReferralCodesRequest(referrer_customer_id="alice"), metadata=tenant.metadata
    )
    assert [(c.code, c.conversion_count) for c in listed.referral_codes] == [(code, 1)]


async def test_self_referral_and_repeat_customers_are_refused(tenant, referral):
    code = (await referral_code(tenant, referral.campaign_id, "carol")).referral_code.code
    own = (await reserve(tenant, f"co-{uuid.uuid4().hex[:8]}", code, "carol")).reservation
    assert own.result.codes[0].reason == err.ERROR_REASON_REFERRAL_SELF_REFERRAL
    repeat = (await reserve(tenant, f"co-{uuid.uuid4().hex[:8]}", code, "dave", purchases=3)).reservation
    assert repeat.result.codes[0].reason == err.ERROR_REASON_REFERRAL_NOT_ELIGIBLE
    assert not own.redemptions and not repeat.redemptions


async def test_a_delayed_conversion_is_pending_and_a_rollback_cancels_it(tenant):
    delayed = await programme(tenant, confirmation_delay=duration_pb2.Duration(seconds=3600))
    code = (await referral_code(tenant, delayed.campaign_id, "erin")).referral_code.code
    checkout_id = f"co-{uuid.uuid4().hex[:8]}"
    await reserve(tenant, checkout_id, code, "frank")
    await tenant.stub.CommitRedemptions(
        api.CommitRedemptionsRequest(checkout_id=checkout_id), metadata=tenant.metadata
    )
    (pending,) = await conversions(tenant, delayed.campaign_id)
    assert pending.state == referral_pb2.REFERRAL_CONVERSION_STATE_PENDING
    await tenant.stub.RollbackRedemptions(
        api.RollbackRedemptionsRequest(checkout_id=checkout_id), metadata=tenant.metadata
    )
    (cancelled,) = await conversions(tenant, delayed.campaign_id)
    assert cancelled.state == referral_pb2.REFERRAL_CONVERSION_STATE_CANCELLED


async def test_referral_codes_need_a_referral_campaign(tenant):
    campaign = await tenant.create_campaign()
    failure = await rpc_failure(referral_code(tenant, campaign.campaign_id, "x"))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["campaign_id"])
    await asyncio.sleep(0)


# --- acceptance at enrolment ---


def accept(tenant, code: str, referee: str, *, validate_only: bool = False, key_: str = ""):
    return tenant.stub.AcceptReferral(
        api.AcceptReferralRequest(
            idempotency_key=key_ or key(), code=code, referee_customer_id=referee, validate_only=validate_only
        ),
        metadata=tenant.metadata,
    )


def points(n: int) -> reward_pb2.Reward:
    return reward_pb2.Reward(points=reward_pb2.PointsReward(points=n))


async def referral_events(redis_url: str, tenant: str, event_type: bytes) -> list:
    redis = Redis.from_url(redis_url)
    try:
        return [
            fields[b"payload"]
            for _, fields in await redis.xrange("promotion.events")
            if fields[b"type"] == event_type and fields[b"tenant"].decode() == tenant
        ]
    finally:
        await redis.aclose()


async def test_an_enrolment_is_accepted_once_and_refused_for_the_referrer_and_unknown_codes(
    tenant, redis_url
):
    rewarded = await programme(tenant, referee_reward=points(200), referrer_reward=points(500))
    code = (await referral_code(tenant, rewarded.campaign_id, "ann")).referral_code.code
    checked = await accept(tenant, code.lower(), "ben", validate_only=True)
    assert (checked.accepted, checked.referrer_customer_id, checked.referee_grant_id) == (True, "ann", "")
    first = await accept(tenant, f" {code} ", "ben", key_="enrol-ben")
    again = await accept(tenant, f" {code} ", "ben", key_="enrol-ben")
    retried = await accept(tenant, code, "ben")
    assert first.accepted and first.referee_grant_id
    assert again == first and retried == first
    own = await accept(tenant, code, "ann")
    unknown = await accept(tenant, "REF-NOPE", "cid")
    assert (own.accepted, own.reason) == (False, err.ERROR_REASON_REFERRAL_SELF_REFERRAL)
    assert (unknown.accepted, unknown.reason) == (False, err.ERROR_REASON_VOUCHER_NOT_FOUND)
    other = (await referral_code(tenant, rewarded.campaign_id, "dora")).referral_code.code
    twice = await accept(tenant, other, "ben")
    assert (twice.accepted, twice.reason) == (False, err.ERROR_REASON_REFERRAL_NOT_ELIGIBLE)
    granted = [
        events_pb2.RewardGranted.FromString(p)
        for p in await referral_events(redis_url, tenant.tenant_id, b"reward.granted")
    ]
    assert [(g.customer_id, g.reward.points.points, g.program_id) for g in granted] == [
        ("ben", 200, rewarded.program_id)
    ]


async def test_the_cap_per_referrer_and_period_holds_under_concurrent_enrolments(tenant):
    capped = await programme(
        tenant, max_referrals_per_period=3, referral_period=campaign_pb2.LIMIT_PERIOD_MONTH
    )
    code = (await referral_code(tenant, capped.campaign_id, "gus")).referral_code.code
    answers = await asyncio.gather(*(accept(tenant, code, f"referee-{n}") for n in range(12)))
    assert sum(a.accepted for a in answers) == 3
    assert {a.reason for a in answers if not a.accepted} == {err.ERROR_REASON_REFERRAL_CAP_REACHED}
    checked = await accept(tenant, code, "one-more", validate_only=True)
    assert (checked.accepted, checked.reason) == (False, err.ERROR_REASON_REFERRAL_CAP_REACHED)


async def test_a_cap_needs_its_period(tenant):
    failure = await rpc_failure(
        tenant.create_campaign(
            type=campaign_pb2.CAMPAIGN_TYPE_REFERRAL,
            referral=campaign_pb2.ReferralSettings(max_referrals_per_period=3),
        )
    )
    assert (failure.code, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["campaign.referral.referral_period"],
    )


async def test_the_referees_first_qualifying_purchase_converts_and_rewards_the_referrer_once(
    tenant, redis_url
):
    rewarded = await programme(
        tenant,
        referrer_reward=points(500),
        min_purchase=money_pb2.Money(currency_code="EUR", amount_minor=2000),
    )
    code = (await referral_code(tenant, rewarded.campaign_id, "hal")).referral_code.code
    assert (await accept(tenant, code, "ivy")).accepted
    for checkout_id, total in (("small", 900), ("big", 2500), ("later", 3000)):
        purchase = gateway_events.PurchaseCommitted(
            checkout_id=checkout_id,
            customer_id="ivy",
            net_total=money_pb2.Money(currency_code="EUR", amount_minor=total),
        )
        await publish(redis_url, "gateway.events", tenant.tenant_id, purchase)
    async with asyncio.timeout(15):
        while not (found := await conversions(tenant, rewarded.campaign_id)):
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the later purchase is handled too, and converts nothing
    found = await conversions(tenant, rewarded.campaign_id)
    assert [(c.checkout_id, c.referrer_customer_id, c.state) for c in found] == [
        ("big", "hal", referral_pb2.REFERRAL_CONVERSION_STATE_CONFIRMED)
    ]
    granted = [
        events_pb2.RewardGranted.FromString(p)
        for p in await referral_events(redis_url, tenant.tenant_id, b"reward.granted")
    ]
    assert [(g.customer_id, g.reward.points.points) for g in granted] == [("hal", 500)]
