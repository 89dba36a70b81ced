"""Referrals at enrolment through the gateway and the real services: the referee reward on an accepted
code, the referrer's once the referee's first purchase commits; the referrer's own device, many
referees from one device and the programme's cap per referrer refused, and nothing granted for them."""

import asyncio
import uuid

import pytest
from google.protobuf import duration_pb2

from loyalty.common.v1 import customer_pb2, errors_pb2 as err
from loyalty.fraud.v1 import (
    assessment_pb2,
    fraud_service_pb2 as fraud_api,
    fraud_service_pb2_grpc,
    rule_pb2,
)
from loyalty.gateway.v1 import checkout_service_pb2 as api, customer_service_pb2 as customer_api
from loyalty.promotion.v1 import (
    campaign_pb2,
    promotion_service_pb2 as promotion_api,
    promotion_service_pb2_grpc,
    reward_pb2,
)
from loyalty_runtime.testing import internal_metadata
from tests.service.gateway.conftest import provision
from tests.service.gateway.test_gateway_checkout import basket
from tests.service.gateway.test_gateway_points import balance
from tests.service.promotion.helpers import Client, percent_off

REFEREE_POINTS, REFERRER_POINTS = 200, 500


@pytest.fixture
async def tenant(shop, services):
    return await provision(shop, services)


def points(tenant, amount: int) -> reward_pb2.Reward:
    return reward_pb2.Reward(points=reward_pb2.PointsReward(program_id=tenant.program_id, points=amount))


async def programme(services, tenant, **settings) -> tuple[Client, campaign_pb2.Campaign]:
    stub = promotion_service_pb2_grpc.PromotionServiceStub(services["promotion"].channel)
    promotion = Client(services["promotion"], tenant.tenant_id, stub)
    campaign = await promotion.create_campaign(
        type=campaign_pb2.CAMPAIGN_TYPE_REFERRAL,
        referral=campaign_pb2.ReferralSettings(
            first_purchase_only=True,
            referee_reward=points(tenant, REFEREE_POINTS),
            referrer_reward=points(tenant, REFERRER_POINTS),
            **settings,
        ),
    )
    await promotion.add_promotion(campaign.campaign_id, percent_off(1000))  # the referee's checkout benefit
    return promotion, await promotion.activate(campaign.campaign_id)


async def referral_code(promotion: Client, campaign_id: str, referrer: str) -> str:
    created = await promotion.stub.CreateReferralCode(
        promotion_api.CreateReferralCodeRequest(
            idempotency_key=uuid.uuid4().hex, campaign_id=campaign_id, referrer_customer_id=referrer
        ),
        metadata=promotion.metadata,
    )
    return created.referral_code.code


async def fraud_rules(services, tenant) -> fraud_service_pb2_grpc.FraudServiceStub:
    """Decline a referral between parties sharing a fingerprint, and a third referee from one device."""
    stub = fraud_service_pb2_grpc.FraudServiceStub(services["fraud"].channel)
    metadata = internal_metadata(services["fraud"].server.settings, tenant.tenant_id)
    for pattern in (
        rule_pb2.PatternRule(kind=rule_pb2.PATTERN_KIND_REFERRAL_SHARED_FINGERPRINT),
        rule_pb2.PatternRule(
            kind=rule_pb2.PATTERN_KIND_REFERRAL_DEVICE_REFEREES,
            window=duration_pb2.Duration(seconds=86400),
            max_value=2,
        ),
    ):
        await stub.CreateRule(
            fraud_api.CreateRuleRequest(
                idempotency_key=uuid.uuid4().hex,
                rule=rule_pb2.Rule(
                    display_name=rule_pb2.PatternKind.Name(pattern.kind),
                    pattern=pattern,
                    action=assessment_pb2.DECISION_DECLINE,
                    score=100,
                    reason=err.ERROR_REASON_REFERRAL_SELF_DEALING,
                ),
            ),
            metadata=metadata,
        )
    stub.metadata = metadata
    return stub


async def enrol(shop, tenant, code: str = "", device: str = "") -> customer_api.EnrolCustomerResponse:
    return await shop.customers.EnrolCustomer(
        customer_api.EnrolCustomerRequest(
            idempotency_key=uuid.uuid4().hex,
            identifiers=[
                {"type": customer_pb2.IDENTIFIER_TYPE_EMAIL, "value": f"{uuid.uuid4().hex[:10]}@example.com"}
            ],
            given_name="Ada",
            referral_code=code,
            signals={"device_id": device} if device else None,
        ),
        metadata=tenant.till_auth,
    )


async def points_reach(services, tenant, customer_id: str, expected: int) -> int:
    """The customer's balance once the rewards' events have been handled (or what it is after 15 s)."""
    found = 0
    for _ in range(300):
        found = await balance(services, tenant, customer_id)
        if found >= expected:
            break
        await asyncio.sleep(0.05)
    return found


async def test_an_accepted_referral_rewards_the_referee_and_then_the_referrer_once(shop, services, tenant):
    promotion, campaign = await programme(services, tenant)
    referrer = (await enrol(shop, tenant)).customer.customer_id
    code = await referral_code(promotion, campaign.campaign_id, referrer)

    referee = await enrol(shop, tenant, code.lower(), device="phone-of-bea")
    assert (referee.referral_accepted, referee.referral_reason) == (True, 0)
    referee_id = referee.customer.customer_id
    assert await points_reach(services, tenant, referee_id, REFEREE_POINTS) == REFEREE_POINTS
    assert await balance(services, tenant, referrer) == 0  # no purchase yet

    for _ in range(2):  # the first purchase converts; the second converts nothing more
        committed = await shop.checkout.CommitCheckout(
            api.CommitCheckoutRequest(
                checkout_id=uuid.uuid4().hex, customer={"customer_id": referee_id}, basket=basket()
            ),
            metadata=tenant.till_auth,
        )
        assert committed.checkout.result.customer_id == referee_id
    assert await points_reach(services, tenant, referrer, REFERRER_POINTS) == REFERRER_POINTS
    await asyncio.sleep(0.5)
    assert await balance(services, tenant, referrer) == REFERRER_POINTS
    conversions = await promotion.stub.ListReferralConversions(
        promotion_api.ListReferralConversionsRequest(campaign_id=campaign.campaign_id),
        metadata=promotion.metadata,
    )
    assert [(c.referrer_customer_id, c.referee_customer_id) for c in conversions.conversions] == [
        (referrer, referee_id)
    ]


async def test_self_dealing_device_farms_and_the_cap_are_refused(shop, services, tenant):
    fraud = await fraud_rules(services, tenant)
    promotion, campaign = await programme(
        services, tenant, max_referrals_per_period=3, referral_period=campaign_pb2.LIMIT_PERIOD_DAY
    )
    referrer = (await enrol(shop, tenant)).customer.customer_id
    code = await referral_code(promotion, campaign.campaign_id, referrer)
    # The referrer shops from their phone: fraud has seen that device on them.
    await shop.checkout.CommitCheckout(
        api.CommitCheckoutRequest(
            checkout_id=uuid.uuid4().hex,
            customer={"customer_id": referrer},
            basket=basket(),
            signals={"device_id": "phone-of-cy"},
        ),
        metadata=tenant.till_auth,
    )

    own_device = await enrol(shop, tenant, code, device="phone-of-cy")
    assert (own_device.referral_accepted, own_device.referral_reason) == (
        False,
        err.ERROR_REASON_FRAUD_DECLINED,
    )
    own_code = await shop.customers.EnrolCustomer(
        customer_api.EnrolCustomerRequest(
            idempotency_key=uuid.uuid4().hex,
            identifiers=[{"type": customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, "value": uuid.uuid4().hex}],
            referral_code="REF-NOT-A-CODE",
        ),
        metadata=tenant.till_auth,
    )
    assert own_code.referral_reason == err.ERROR_REASON_VOUCHER_NOT_FOUND

    farm = [await enrol(shop, tenant, code, device="farm-tablet") for _ in range(3)]
    assert [(f.referral_accepted, f.referral_reason) for f in farm] == [
        (True, 0),
        (True, 0),
        (False, err.ERROR_REASON_FRAUD_DECLINED),
    ]
    third = await enrol(shop, tenant, code, device="another-phone")
    capped = await enrol(shop, tenant, code, device="yet-another-phone")
    assert (third.referral_accepted, capped.referral_accepted) == (True, False)
    assert capped.referral_reason == err.ERROR_REASON_REFERRAL_CAP_REACHED

    refused = [own_device, farm[2], capped]
    await points_reach(services, tenant, third.customer.customer_id, REFEREE_POINTS)
    for enrolled in refused:
        assert await balance(services, tenant, enrolled.customer.customer_id) == 0
    declined = await fraud.ListAssessments(
        fraud_api.ListAssessmentsRequest(
            kind=assessment_pb2.ASSESSMENT_KIND_REFERRAL, decision=assessment_pb2.DECISION_DECLINE
        ),
        metadata=fraud.metadata,
    )
    assert sorted(a.customer_id for a in declined.assessments) == sorted(
        [own_device.customer.customer_id, farm[2].customer.customer_id]
    )
    assert {r.reason for a in declined.assessments for r in a.reasons} == {
        err.ERROR_REASON_REFERRAL_SELF_DEALING
    }
