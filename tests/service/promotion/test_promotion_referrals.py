"""Referral programmes through the real server: one code per referrer (get-or-create), the
referee's benefit at checkout, self-referral and repeat customers refused, and a conversion per
committed referee checkout, confirmed at once or after the programme's delay, cancelled by a
rollback."""

import asyncio
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2

from loyalty.common.v1 import errors_pb2 as err
from loyalty.promotion.v1 import (
    campaign_pb2,
    evaluation_pb2,
    promotion_service_pb2 as api,
    referral_pb2,
)
from tests.conftest import rpc_failure
from tests.service.promotion.helpers import basket, key, percent_off

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
