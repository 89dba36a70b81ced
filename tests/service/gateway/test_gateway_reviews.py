"""Fraud's REVIEW and degraded answers at commit, through the gateway and the real services: a review
lets the purchase through with its points pending; approving the case matures them, rejecting it voids
them. With fraud's Redis cut the answer is degraded, and the tenant's policy for checkouts decides."""

import asyncio
import uuid

import pytest

from loyalty.fraud.v1 import (
    assessment_pb2,
    fraud_service_pb2 as fraud_api,
    fraud_service_pb2_grpc,
    review_pb2,
    rule_pb2,
)
from loyalty.gateway.v1 import checkout_pb2 as pb, checkout_service_pb2_grpc
from loyalty.ledger.v1 import ledger_service_pb2 as ledger_api, ledger_service_pb2_grpc
from loyalty_fraud.service import DEFINITION as FRAUD
from loyalty_gateway.service import DEFINITION as GATEWAY
from loyalty_runtime.testing import internal_metadata, running_service
from tests.proxy import TcpProxy
from tests.service.gateway.test_gateway_checkout import commit_request, enrol
from tests.service.gateway.test_gateway_points import earning_tenant

EARNED = 6  # the default basket (6.20 EUR) at 1 point per euro


@pytest.fixture
async def tenant(shop, services):
    return await earning_tenant(shop, services)


def fraud_of(services, tenant):
    stub = fraud_service_pb2_grpc.FraudServiceStub(services["fraud"].channel)
    stub.metadata = internal_metadata(services["fraud"].server.settings, tenant.tenant_id)
    return stub


async def review_large_earns(fraud) -> None:
    await fraud.CreateRule(
        fraud_api.CreateRuleRequest(
            idempotency_key=uuid.uuid4().hex,
            rule=rule_pb2.Rule(
                display_name="earns above 5 points",
                applies_to=[assessment_pb2.ASSESSMENT_KIND_CHECKOUT],
                threshold=rule_pb2.ThresholdRule(metric=rule_pb2.THRESHOLD_METRIC_POINTS_EARNED, max_value=5),
                action=assessment_pb2.DECISION_REVIEW,
                score=100,
            ),
        ),
        metadata=fraud.metadata,
    )


async def points(services, tenant, customer_id: str) -> tuple[int, int]:
    """(available, pending) in the tenant's programme."""
    stub = ledger_service_pb2_grpc.LedgerServiceStub(services["ledger"].channel)
    found = await stub.GetAccount(
        ledger_api.GetAccountRequest(program_id=tenant.program_id, customer_id=customer_id),
        metadata=internal_metadata(services["ledger"].server.settings, tenant.tenant_id),
    )
    return found.account.balance.available, found.account.balance.pending


async def eventually(services, tenant, customer_id: str, expected: tuple[int, int]) -> tuple[int, int]:
    found = (0, 0)
    for _ in range(300):
        found = await points(services, tenant, customer_id)
        if found == expected:
            break
        await asyncio.sleep(0.05)
    return found


async def resolve(fraud, customer_id: str, resolution: int) -> None:
    (case,) = (
        await fraud.ListReviewCases(
            fraud_api.ListReviewCasesRequest(
                customer_id=customer_id, state=review_pb2.REVIEW_CASE_STATE_OPEN
            ),
            metadata=fraud.metadata,
        )
    ).review_cases
    await fraud.ResolveReviewCase(
        fraud_api.ResolveReviewCaseRequest(
            idempotency_key=uuid.uuid4().hex, review_case_id=case.review_case_id, resolution=resolution
        ),
        metadata=fraud.metadata,
    )


@pytest.mark.parametrize(
    ("resolution", "after"),
    [(review_pb2.REVIEW_CASE_STATE_APPROVED, (EARNED, 0)), (review_pb2.REVIEW_CASE_STATE_REJECTED, (0, 0))],
)
async def test_a_reviewed_purchase_goes_through_with_points_pending_until_the_case_is_resolved(
    shop, services, tenant, resolution, after
):
    fraud = fraud_of(services, tenant)
    await review_large_earns(fraud)
    customer_id = await enrol(shop, tenant)
    committed = await shop.checkout.CommitCheckout(
        commit_request(uuid.uuid4().hex, customer_id), metadata=tenant.till_auth
    )
    assert committed.checkout.state == pb.CHECKOUT_STATE_COMMITTED
    assert committed.checkout.result.points.points_to_earn == EARNED
    assert await points(services, tenant, customer_id) == (0, EARNED)
    await resolve(fraud, customer_id, resolution)
    assert await eventually(services, tenant, customer_id, after) == after


@pytest.fixture
async def cut_fraud(services, shop_settings):
    """A fraud server whose Redis can be cut, and a gateway calling it."""
    fraud_settings = services["fraud"].server.settings
    proxy = await TcpProxy.to(fraud_settings.redis_url).start()
    proxied = fraud_settings.model_copy(update={"redis_url": proxy.url_for(fraud_settings.redis_url)})
    async with running_service(FRAUD, proxied) as fraud:
        settings = shop_settings.model_copy(update={"fraud_target": fraud.address})
        async with running_service(GATEWAY, settings) as gateway:
            gateway.checkout = checkout_service_pb2_grpc.CheckoutServiceStub(gateway.channel)
            gateway.proxy = proxy
            yield gateway
    await proxy.close()


@pytest.mark.parametrize(
    ("policy", "state", "pending"),
    [
        (assessment_pb2.DECISION_UNSPECIFIED, pb.CHECKOUT_STATE_COMMITTED, 0),
        (assessment_pb2.DECISION_REVIEW, pb.CHECKOUT_STATE_COMMITTED, EARNED),
        (assessment_pb2.DECISION_DECLINE, pb.CHECKOUT_STATE_DECLINED, 0),
    ],
)
async def test_with_frauds_counters_down_the_tenants_checkout_policy_decides(
    shop, services, tenant, cut_fraud, policy, state, pending
):
    fraud = fraud_of(services, tenant)
    await fraud.CreateRule(  # a rule needing counters: without Redis it is skipped, the answer degraded
        fraud_api.CreateRuleRequest(
            idempotency_key=uuid.uuid4().hex,
            rule=rule_pb2.Rule(
                display_name="checkouts per customer",
                velocity=rule_pb2.VelocityRule(
                    key=rule_pb2.VELOCITY_KEY_CUSTOMER, window={"seconds": 3600}, max_count=100
                ),
                action=assessment_pb2.DECISION_DECLINE,
            ),
        ),
        metadata=fraud.metadata,
    )
    await fraud.UpdateFraudSettings(
        fraud_api.UpdateFraudSettingsRequest(
            idempotency_key=uuid.uuid4().hex,
            settings=rule_pb2.FraudSettings(degraded_checkout_decision=policy),
            update_mask={"paths": ["degraded_checkout_decision"]},
        ),
        metadata=fraud.metadata,
    )
    customer_id = await enrol(shop, tenant)
    await cut_fraud.proxy.cut()
    committed = await cut_fraud.checkout.CommitCheckout(
        commit_request(uuid.uuid4().hex, customer_id), metadata=tenant.till_auth
    )
    assert committed.checkout.state == state
    earned = EARNED if state == pb.CHECKOUT_STATE_COMMITTED else 0
    assert await points(services, tenant, customer_id) == (earned - pending, pending)
    await cut_fraud.proxy.restore()
