"""Points through the whole checkout: promotion's earning rule decides, the ledger records (earn in
the saga's one SettleCheckout), returns reverse exactly what the returned lines earned. Burning waits
for promotion's evaluation to apply burn policies (they are stored, not applied yet)."""

import asyncio
import uuid

import pytest

from loyalty.gateway.v1 import checkout_pb2 as pb, checkout_service_pb2 as api
from loyalty.ledger.v1 import ledger_service_pb2 as ledger_api, ledger_service_pb2_grpc
from loyalty.promotion.v1 import (
    earning_pb2,
    promotion_service_pb2 as promotion_api,
    promotion_service_pb2_grpc,
)
from loyalty_runtime.testing import internal_metadata
from tests.service.gateway.conftest import provision
from tests.service.gateway.test_gateway_checkout import basket, commit_request, enrol


def eur(amount: int) -> dict:
    return {"currency_code": "EUR", "amount_minor": amount}


@pytest.fixture
async def tenant(shop, services):
    return await earning_tenant(shop, services)


async def earning_tenant(shop, services, **provisioned):
    """A provisioned tenant whose programme earns 1 point per euro and burns 100 points for a euro."""
    tenant = await provision(shop, services, **provisioned)
    stub = promotion_service_pb2_grpc.PromotionServiceStub(services["promotion"].channel)
    metadata = internal_metadata(services["promotion"].server.settings, tenant.tenant_id)
    rule = earning_pb2.EarningRule(
        program_id=tenant.program_id,
        display_name="1 point per euro",
        rate={"points": 1, "per_amount": eur(100)},
    )
    await stub.CreateEarningRule(
        promotion_api.CreateEarningRuleRequest(idempotency_key=uuid.uuid4().hex, earning_rule=rule),
        metadata=metadata,
    )
    policy = earning_pb2.BurnPolicy(
        program_id=tenant.program_id,
        enabled=True,
        values=[{"points": 100, "value": eur(100)}],
        step_points=100,
        max_basket_share_bps=5000,
    )
    await stub.UpdateBurnPolicy(
        promotion_api.UpdateBurnPolicyRequest(idempotency_key=uuid.uuid4().hex, burn_policy=policy),
        metadata=metadata,
    )
    probe = promotion_api.EvaluateBasketRequest(
        customer={"customer_id": "probe", "program_id": tenant.program_id, "points_balance": 1000},
        basket=basket(),
    )
    for _ in range(100):  # the rule and the policy reach the evaluation catalogue shortly
        evaluated = await stub.EvaluateBasket(probe, metadata=metadata)
        if evaluated.result.points_earning.total_points:
            break
        await asyncio.sleep(0.05)
    return tenant


async def balance(services, tenant, customer_id: str) -> int:
    stub = ledger_service_pb2_grpc.LedgerServiceStub(services["ledger"].channel)
    account = await stub.GetAccount(
        ledger_api.GetAccountRequest(program_id=tenant.program_id, customer_id=customer_id),
        metadata=internal_metadata(services["ledger"].server.settings, tenant.tenant_id),
    )
    return account.account.balance.available


async def test_earned_points_are_posted_once_and_returns_reverse_exactly_what_the_lines_earned(
    shop, services, tenant
):
    customer_id = await enrol(shop, tenant)
    checkout_id = uuid.uuid4().hex
    request = commit_request(checkout_id, customer_id, basket=basket(("tv", 3, 10_001), ("cable", 1, 999)))
    first, second = await asyncio.gather(
        shop.checkout.CommitCheckout(request, metadata=tenant.till_auth),
        shop.checkout.CommitCheckout(request, metadata=tenant.till_auth),
    )
    result = first.checkout.result
    earned = result.points.points_to_earn
    assert earned == sum(line.points_to_earn for line in result.lines) > 0
    assert second.checkout.result == result
    steps = {s.name: s.state for s in first.checkout.steps}
    assert steps[pb.SAGA_STEP_NAME_EARN_POINTS] == pb.SAGA_STEP_STATE_SUCCEEDED
    assert await balance(services, tenant, customer_id) == earned
    assert result.points.balance_after == earned

    returns = []
    for n, lines in enumerate(([{"line_id": "l0", "quantity": 1}], [{"line_id": "l0", "quantity": 1}], None)):
        fields = {"lines": lines} if lines else {"full_return": True}
        answer = await shop.checkout.ReturnItems(
            api.ReturnItemsRequest(checkout_id=checkout_id, return_id=f"r{n}", **fields),
            metadata=tenant.till_auth,
        )
        returns.append(answer.checkout_return)
    assert sum(r.points_reversed for r in returns) == earned
    assert sum(r.refund_amount.amount_minor for r in returns) == result.total_payable.amount_minor
    assert await balance(services, tenant, customer_id) == 0


async def test_points_to_burn_are_only_what_promotion_allows(shop, services, tenant):
    """Promotion clamps the burn (its evaluation applies no burn policy yet): nothing is held or
    burned, and the sale still commits and earns."""
    customer_id = await enrol(shop, tenant)
    answer = await shop.checkout.CommitCheckout(
        commit_request(uuid.uuid4().hex, customer_id, points_to_burn=500), metadata=tenant.till_auth
    )
    assert answer.checkout.result.points.points_burned == 0
    steps = {s.name: s.state for s in answer.checkout.steps}
    assert steps[pb.SAGA_STEP_NAME_HOLD_POINTS] == pb.SAGA_STEP_STATE_SKIPPED
