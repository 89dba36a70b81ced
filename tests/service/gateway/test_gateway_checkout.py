"""Checkout through the gateway against the real services: identify, enrol, preview (degraded when
segmentation is down, codes locked after too many unknown ones), reserve, commit (retries and
concurrent commits: one effect; the same id with another basket refused; a downstream down mid-commit,
then back: the retry finishes), cancel, bad input, another tenant's ids."""

import asyncio
import uuid

import grpc
import pytest

from loyalty.common.v1 import basket_pb2, customer_pb2
from loyalty.fraud.v1 import fraud_service_pb2 as fraud_api, fraud_service_pb2_grpc
from loyalty.gateway.v1 import (
    checkout_pb2 as pb,
    checkout_service_pb2 as api,
    customer_service_pb2 as customer_api,
)
from loyalty_gateway.service import DEFINITION
from loyalty_runtime.testing import internal_metadata, running_service
from tests.conftest import rpc_failure
from tests.service.gateway.conftest import DOWNSTREAM, bearer, provision

STEP = pb.SagaStepName
STEP_STATE = pb.SagaStepState


def basket(*lines, currency: str = "EUR") -> basket_pb2.Basket:
    items = [
        basket_pb2.LineItem(
            line_id=f"l{n}",
            sku=sku,
            quantity=quantity,
            unit_price={"currency_code": currency, "amount_minor": price},
            line_total={"currency_code": currency, "amount_minor": price * quantity},
        )
        for n, (sku, quantity, price) in enumerate(lines or [("milk", 2, 150), ("bread", 1, 320)])
    ]
    return basket_pb2.Basket(currency_code=currency, lines=items)


@pytest.fixture
async def tenant(shop, services):
    return await provision(shop, services)


async def enrol(shop, tenant, email: str | None = None) -> str:
    response = await shop.customers.EnrolCustomer(
        customer_api.EnrolCustomerRequest(
            idempotency_key=uuid.uuid4().hex,
            identifiers=[
                {"type": customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, "value": email or uuid.uuid4().hex[:16]}
            ],
            given_name="Ada",
        ),
        metadata=tenant.till_auth,
    )
    return response.customer.customer_id


def commit_request(checkout_id: str, customer_id: str = "", **fields) -> api.CommitCheckoutRequest:
    request = api.CommitCheckoutRequest(
        checkout_id=checkout_id, basket=fields.pop("basket", basket()), **fields
    )
    if customer_id:
        request.customer.customer_id = customer_id
    return request


async def test_identify_enrol_and_preview(shop, tenant):
    card = uuid.uuid4().hex[:16]
    customer_id = await enrol(shop, tenant, card)
    found = await shop.customers.IdentifyCustomer(
        customer_api.IdentifyCustomerRequest(
            customer={"identifier": {"type": customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, "value": card}}
        ),
        metadata=tenant.till_auth,
    )
    assert (found.customer.customer_id, found.customer.given_name) == (customer_id, "Ada")
    assert found.customer.balance.program_id == tenant.program_id

    preview = await shop.checkout.PreviewCheckout(
        api.PreviewCheckoutRequest(customer={"customer_id": customer_id}, basket=basket()),
        metadata=tenant.till_auth,
    )
    result = preview.result
    assert (result.customer_id, result.subtotal.amount_minor, result.total_payable.amount_minor) == (
        customer_id,
        620,
        620,
    )
    assert [line.line_id for line in result.lines] == ["l0", "l1"] and not result.degraded

    anonymous = await shop.checkout.PreviewCheckout(
        api.PreviewCheckoutRequest(basket=basket()), metadata=tenant.till_auth
    )
    assert anonymous.result.customer_id == "" and anonymous.result.total_payable.amount_minor == 620


async def test_preview_is_degraded_not_failed_while_segmentation_is_down(shop_settings, tenant):
    dead = shop_settings.model_copy(update={"segmentation_target": "127.0.0.1:1"})
    async with running_service(DEFINITION, dead) as replica:
        from loyalty.gateway.v1 import checkout_service_pb2_grpc

        customer_id = await enrol(tenant.gateway, tenant)
        stub = checkout_service_pb2_grpc.CheckoutServiceStub(replica.channel)
        preview = await stub.PreviewCheckout(
            api.PreviewCheckoutRequest(customer={"customer_id": customer_id}, basket=basket()),
            metadata=tenant.till_auth,
        )
    assert preview.result.degraded and list(preview.result.degraded_services) == ["segmentation"]
    assert preview.result.total_payable.amount_minor == 620


async def test_unknown_codes_lock_out_codes_for_the_key(shop, tenant):
    limit = (
        20  # fraud's default per terminal (BruteForcePolicy), the tightest one a till without a customer has
    )
    for n in range(limit + 1):
        preview = await shop.checkout.PreviewCheckout(
            api.PreviewCheckoutRequest(basket=basket(), codes=[f"GUESS{n}"]), metadata=tenant.till_auth
        )
        assert (
            preview.result.codes[0].reason == "ERROR_REASON_VOUCHER_NOT_FOUND"
            or preview.result.codes[0].reason == 300
        )
    locked = await shop.checkout.PreviewCheckout(
        api.PreviewCheckoutRequest(basket=basket(), codes=["REAL"]), metadata=tenant.till_auth
    )
    assert [(c.code, c.accepted, c.reason) for c in locked.result.codes] == [("REAL", False, 603)]


async def fraud_assessments(services, tenant, checkout_id: str) -> int:
    stub = fraud_service_pb2_grpc.FraudServiceStub(services["fraud"].channel)
    listed = await stub.ListAssessments(
        fraud_api.ListAssessmentsRequest(),
        metadata=internal_metadata(services["fraud"].server.settings, tenant.tenant_id),
    )
    return sum(1 for a in listed.assessments if a.subject_id == checkout_id)


async def test_reserve_then_commit_and_retries_answer_the_first_result(shop, services, tenant):
    customer_id = await enrol(shop, tenant)
    checkout_id = uuid.uuid4().hex
    reserve = api.ReserveCheckoutRequest(
        checkout_id=checkout_id, customer={"customer_id": customer_id}, basket=basket()
    )
    reserved = await shop.checkout.ReserveCheckout(reserve, metadata=tenant.till_auth)
    assert reserved.checkout.state == pb.CHECKOUT_STATE_RESERVED and reserved.checkout.HasField("expire_time")
    steps = {s.name: s.state for s in reserved.checkout.steps}
    assert steps[STEP.SAGA_STEP_NAME_ASSESS_FRAUD] == STEP_STATE.SAGA_STEP_STATE_SUCCEEDED

    request = commit_request(checkout_id, customer_id, receipt_number="R-1")
    first, second = await asyncio.gather(
        shop.checkout.CommitCheckout(request, metadata=tenant.till_auth),
        shop.checkout.CommitCheckout(request, metadata=tenant.till_auth),
    )
    assert first.checkout.state == second.checkout.state == pb.CHECKOUT_STATE_COMMITTED
    assert first.checkout.result == second.checkout.result
    again = await shop.checkout.CommitCheckout(request, metadata=tenant.till_auth)
    assert again.checkout.commit_time == first.checkout.commit_time
    assert await fraud_assessments(services, tenant, checkout_id) == 1

    other = commit_request(checkout_id, customer_id, basket=basket(("milk", 3, 150)))
    failure = await rpc_failure(shop.checkout.CommitCheckout(other, metadata=tenant.till_auth))
    assert (failure.code, failure.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    cancel = await rpc_failure(
        shop.checkout.CancelCheckout(
            api.CancelCheckoutRequest(checkout_id=checkout_id), metadata=tenant.till_auth
        )
    )
    assert (cancel.code, cancel.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CHECKOUT_ALREADY_COMMITTED")


async def test_concurrent_commits_without_a_reservation_make_one_checkout(shop, services, tenant):
    customer_id = await enrol(shop, tenant)
    checkout_id = uuid.uuid4().hex
    request = commit_request(checkout_id, customer_id)
    answers = await asyncio.gather(
        *(shop.checkout.CommitCheckout(request, metadata=tenant.till_auth) for _ in range(4))
    )
    assert {a.checkout.state for a in answers} == {pb.CHECKOUT_STATE_COMMITTED}
    assert len({a.checkout.commit_time.ToNanoseconds() for a in answers}) == 1
    assert await fraud_assessments(services, tenant, checkout_id) == 1


async def test_a_cancelled_reservation_stays_cancelled(shop, tenant):
    checkout_id = uuid.uuid4().hex
    await shop.checkout.ReserveCheckout(
        api.ReserveCheckoutRequest(checkout_id=checkout_id, basket=basket()), metadata=tenant.till_auth
    )
    cancelled = await shop.checkout.CancelCheckout(
        api.CancelCheckoutRequest(checkout_id=checkout_id, reason="card declined"), metadata=tenant.till_auth
    )
    assert cancelled.checkout.state == pb.CHECKOUT_STATE_CANCELLED
    again = await shop.checkout.CommitCheckout(commit_request(checkout_id), metadata=tenant.till_auth)
    assert again.checkout.state == pb.CHECKOUT_STATE_CANCELLED


async def voucher(services, tenant, code: str, uses: int) -> None:
    from loyalty.promotion.v1 import promotion_service_pb2_grpc
    from tests.service.promotion.helpers import Client, Codes

    stub = promotion_service_pb2_grpc.PromotionServiceStub(services["promotion"].channel)
    codes = Codes(Client(services["promotion"], tenant.tenant_id, stub))
    campaign = await codes.voucher_campaign()
    await codes.voucher(campaign.campaign_id, code, max_redemptions=uses)


async def test_a_code_is_reserved_committed_and_given_back_by_cancel_and_return(shop, services, tenant):
    await voucher(services, tenant, "SPRING10", uses=1)
    held = uuid.uuid4().hex
    reserved = await shop.checkout.ReserveCheckout(
        api.ReserveCheckoutRequest(checkout_id=held, basket=basket(), codes=["SPRING10"]),
        metadata=tenant.till_auth,
    )
    assert reserved.checkout.result.codes[0].accepted
    rival = await shop.checkout.CommitCheckout(
        commit_request(uuid.uuid4().hex, codes=["SPRING10"]), metadata=tenant.till_auth
    )
    assert [(c.accepted, c.reason) for c in rival.checkout.result.codes] == [
        (False, 301)
    ]  # VOUCHER_EXHAUSTED
    assert rival.checkout.result.total_payable.amount_minor == 620
    await shop.checkout.CancelCheckout(api.CancelCheckoutRequest(checkout_id=held), metadata=tenant.till_auth)

    sold = uuid.uuid4().hex
    committed = await shop.checkout.CommitCheckout(
        commit_request(sold, codes=["SPRING10"]), metadata=tenant.till_auth
    )
    result = committed.checkout.result
    assert committed.checkout.state == pb.CHECKOUT_STATE_COMMITTED and result.codes[0].accepted
    assert result.total_discount.amount_minor == 62 and result.total_payable.amount_minor == 558
    assert sum(line.discount_total.amount_minor for line in result.lines) == 62
    steps = {s.name: s.state for s in committed.checkout.steps}
    assert steps[STEP.SAGA_STEP_NAME_COMMIT_REDEMPTIONS] == STEP_STATE.SAGA_STEP_STATE_SUCCEEDED

    returned = await shop.checkout.ReturnItems(
        api.ReturnItemsRequest(checkout_id=sold, return_id="r1", full_return=True), metadata=tenant.till_auth
    )
    assert returned.checkout_return.refund_amount.amount_minor == 558
    assert len(returned.checkout_return.reinstated_codes) == 1
    again = await shop.checkout.CommitCheckout(
        commit_request(uuid.uuid4().hex, codes=["SPRING10"]), metadata=tenant.till_auth
    )
    assert again.checkout.result.codes[0].accepted


async def test_a_changed_total_is_refused_and_compensated(shop, services, tenant):
    await voucher(services, tenant, "ONCE", uses=1)
    checkout_id = uuid.uuid4().hex
    request = commit_request(
        checkout_id, codes=["ONCE"], expected_total_payable={"currency_code": "EUR", "amount_minor": 600}
    )
    failure = await rpc_failure(shop.checkout.CommitCheckout(request, metadata=tenant.till_auth))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONDITIONS_NOT_MET")
    replay = await rpc_failure(shop.checkout.CommitCheckout(request, metadata=tenant.till_auth))
    assert replay.reason == "CONDITIONS_NOT_MET"
    # The code's one use was rolled back, so another checkout gets it.
    other = await shop.checkout.CommitCheckout(
        commit_request(uuid.uuid4().hex, codes=["ONCE"]), metadata=tenant.till_auth
    )
    assert other.checkout.result.codes[0].accepted


async def test_a_downstream_down_mid_commit_leaves_work_a_retry_finishes(shop_settings, services, tenant):
    """A fraud replica of its own stops answering: the commit is UNAVAILABLE and stays PROCESSING;
    fraud comes back on the same port and the same commit finishes, once."""
    from loyalty.gateway.v1 import checkout_service_pb2_grpc

    fraud_settings = services["fraud"].server.settings
    async with running_service(DOWNSTREAM["fraud"], fraud_settings) as fraud:
        port = fraud.server.port
        gateway_settings = shop_settings.model_copy(update={"fraud_target": f"127.0.0.1:{port}"})
        async with running_service(DEFINITION, gateway_settings) as replica:
            stub = checkout_service_pb2_grpc.CheckoutServiceStub(replica.channel)
            await fraud.server.stop(grace=0, drain=0)
            checkout_id = uuid.uuid4().hex
            request = commit_request(checkout_id)
            down = await rpc_failure(stub.CommitCheckout(request, metadata=tenant.till_auth))
            assert (down.code, down.reason) == (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
            pending = await stub.GetCheckout(
                api.GetCheckoutRequest(checkout_id=checkout_id), metadata=tenant.till_auth
            )
            assert pending.checkout.state == pb.CHECKOUT_STATE_PROCESSING
            restarted = fraud_settings.model_copy(update={"grpc_port": port})
            async with running_service(DOWNSTREAM["fraud"], restarted):
                done = await retry_until_answered(stub.CommitCheckout, request, tenant.till_auth)
                assert done.checkout.state == pb.CHECKOUT_STATE_COMMITTED
    assert await fraud_assessments(services, tenant, checkout_id) == 1


async def retry_until_answered(method, request, metadata, attempts: int = 50):
    """What a till does with UNAVAILABLE: the same request again, shortly after (the gateway's channel
    reconnects with backoff)."""
    for _ in range(attempts - 1):
        try:
            return await method(request, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            # ABORTED: another replica's lease on the saga has not run out yet.
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED):
                raise
            await asyncio.sleep(0.1)
    return await method(request, metadata=metadata)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (basket_pb2.Basket(currency_code="EUR"), "INVALID_LINE"),
        (basket(("milk", -1, 150)), "INVALID_LINE"),
        (basket(("milk", 1, -5)), "INVALID_AMOUNT"),
        (basket(currency="USD"), "CURRENCY_MISMATCH"),
        # Over the tenant's line limit (100 unless its settings say more), then over the contract's.
        (basket(*[("x", 1, 1)] * 101), "TOO_MANY_LINES"),
        (basket(*[("x", 1, 1)] * 501), "INVALID_ARGUMENT"),
    ],
)
async def test_bad_baskets_are_refused_and_nothing_is_recorded(shop, tenant, bad, reason):
    checkout_id = uuid.uuid4().hex
    failure = await rpc_failure(
        shop.checkout.CommitCheckout(commit_request(checkout_id, basket=bad), metadata=tenant.till_auth)
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    missing = await rpc_failure(
        shop.checkout.GetCheckout(api.GetCheckoutRequest(checkout_id=checkout_id), metadata=tenant.till_auth)
    )
    assert missing.code == grpc.StatusCode.NOT_FOUND


async def test_a_huge_request_is_refused_without_a_hang(shop, tenant):
    huge = commit_request(uuid.uuid4().hex, receipt_number="x" * (5 * 1024 * 1024))
    failure = await rpc_failure(shop.checkout.CommitCheckout(huge, metadata=tenant.till_auth, timeout=5))
    assert failure.code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)


async def test_another_tenants_checkouts_and_customers_look_unknown(shop, services, tenant):
    other = await provision(shop, services)
    customer_id = await enrol(shop, tenant)
    checkout_id = uuid.uuid4().hex
    await shop.checkout.CommitCheckout(commit_request(checkout_id, customer_id), metadata=tenant.till_auth)
    failure = await rpc_failure(
        shop.checkout.GetCheckout(api.GetCheckoutRequest(checkout_id=checkout_id), metadata=other.till_auth)
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "CHECKOUT_NOT_FOUND")
    failure = await rpc_failure(
        shop.checkout.PreviewCheckout(
            api.PreviewCheckoutRequest(customer={"customer_id": customer_id}, basket=basket()),
            metadata=other.till_auth,
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
    # The same checkout id is another tenant's own, new checkout.
    own = await shop.checkout.CommitCheckout(commit_request(checkout_id), metadata=other.till_auth)
    assert own.checkout.state == pb.CHECKOUT_STATE_COMMITTED and own.checkout.customer_id == ""


async def test_checkout_needs_the_checkout_scope(shop, tenant):
    failure = await rpc_failure(
        shop.checkout.PreviewCheckout(api.PreviewCheckoutRequest(basket=basket()), metadata=tenant.auth)
    )
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    failure = await rpc_failure(
        shop.checkout.PreviewCheckout(api.PreviewCheckoutRequest(basket=basket()), metadata=bearer("lk_nope"))
    )
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED


async def test_partial_returns_refund_in_proportion_and_never_twice(shop, tenant):
    checkout_id = uuid.uuid4().hex
    sale = basket(("milk", 3, 100), ("bread", 1, 320))
    await shop.checkout.CommitCheckout(commit_request(checkout_id, basket=sale), metadata=tenant.till_auth)

    def returning(return_id: str, **fields):
        return api.ReturnItemsRequest(checkout_id=checkout_id, return_id=return_id, **fields)

    first = await shop.checkout.ReturnItems(
        returning("r1", lines=[{"line_id": "l0", "quantity": 1}]), metadata=tenant.till_auth
    )
    assert first.checkout_return.refund_amount.amount_minor == 100
    replay = await shop.checkout.ReturnItems(
        returning("r1", lines=[{"line_id": "l0", "quantity": 1}]), metadata=tenant.till_auth
    )
    assert replay.checkout_return == first.checkout_return
    reused = await rpc_failure(
        shop.checkout.ReturnItems(
            returning("r1", lines=[{"line_id": "l1", "quantity": 1}]), metadata=tenant.till_auth
        )
    )
    assert (reused.code, reused.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    too_many = await rpc_failure(
        shop.checkout.ReturnItems(
            returning("r2", lines=[{"line_id": "l0", "quantity": 3}]), metadata=tenant.till_auth
        )
    )
    assert (too_many.code, too_many.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "RETURN_EXCEEDS_LINE")
    rest = await shop.checkout.ReturnItems(returning("r3", full_return=True), metadata=tenant.till_auth)
    assert rest.checkout_return.refund_amount.amount_minor == 200 + 320
    assert [r.return_id for r in rest.checkout.returns] == ["r1", "r3"]
    nothing = await rpc_failure(
        shop.checkout.ReturnItems(returning("r4", full_return=True), metadata=tenant.till_auth)
    )
    assert nothing.reason == "RETURN_EXCEEDS_LINE"
    unknown = await rpc_failure(
        shop.checkout.ReturnItems(
            api.ReturnItemsRequest(checkout_id="nope", return_id="r"), metadata=tenant.till_auth
        )
    )
    assert unknown.code == grpc.StatusCode.NOT_FOUND


async def test_concurrent_returns_of_the_same_units_give_back_once(shop, tenant):
    checkout_id = uuid.uuid4().hex
    await shop.checkout.CommitCheckout(
        commit_request(checkout_id, basket=basket(("milk", 1, 100))), metadata=tenant.till_auth
    )
    calls = [
        shop.checkout.ReturnItems(
            api.ReturnItemsRequest(checkout_id=checkout_id, return_id=f"r{n}", full_return=True),
            metadata=tenant.till_auth,
        )
        for n in range(4)
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    refunds = [
        o.checkout_return.refund_amount.amount_minor for o in outcomes if not isinstance(o, BaseException)
    ]
    assert refunds == [100]
    assert all(o.code() == grpc.StatusCode.INVALID_ARGUMENT for o in outcomes if isinstance(o, BaseException))


async def test_the_wallet_shows_balance_vouchers_and_offers(shop, services, tenant):
    from loyalty.promotion.v1 import promotion_service_pb2_grpc
    from tests.service.promotion.helpers import Client, percent_off

    customer_id = await enrol(shop, tenant)
    promotion = Client(
        services["promotion"],
        tenant.tenant_id,
        promotion_service_pb2_grpc.PromotionServiceStub(services["promotion"].channel),
    )
    await promotion.live_campaign(percent_off(500), display_name="Five off")
    answer = await shop.customers.GetWallet(
        customer_api.GetWalletRequest(customer={"customer_id": customer_id}), metadata=tenant.till_auth
    )
    wallet = answer.wallet
    assert (wallet.customer_id, wallet.balance.program_id, wallet.balance.available_points) == (
        customer_id,
        tenant.program_id,
        0,
    )
    assert [o.display_name for o in wallet.offers] == ["5% off"] and wallet.offers[0].campaign_id
    failure = await rpc_failure(
        shop.customers.GetWallet(
            customer_api.GetWalletRequest(customer={"customer_id": str(uuid.uuid4())}),
            metadata=tenant.till_auth,
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")


async def test_a_customer_token_identifies_at_the_till_until_it_expires(shop, services, tenant):
    customer_id = await enrol(shop, tenant)
    request = customer_api.CreateCustomerTokenRequest(
        idempotency_key=uuid.uuid4().hex, customer={"customer_id": customer_id}, ttl={"seconds": 1}
    )
    issued = await shop.customers.CreateCustomerToken(request, metadata=tenant.till_auth)
    again = await shop.customers.CreateCustomerToken(request, metadata=tenant.till_auth)
    assert issued.customer_token.startswith("ct_") and again.customer_token == issued.customer_token
    lookup = {"customer_token": issued.customer_token}
    found = await shop.customers.IdentifyCustomer(
        customer_api.IdentifyCustomerRequest(customer=lookup), metadata=tenant.till_auth
    )
    assert found.customer.customer_id == customer_id
    other = await provision(shop, services)
    for auth in (other.till_auth,):
        failure = await rpc_failure(
            shop.customers.IdentifyCustomer(
                customer_api.IdentifyCustomerRequest(customer=lookup), metadata=auth
            )
        )
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
    await asyncio.sleep(1.2)
    expired = await rpc_failure(
        shop.checkout.PreviewCheckout(
            api.PreviewCheckoutRequest(customer=lookup, basket=basket()), metadata=tenant.till_auth
        )
    )
    assert (expired.code, expired.reason) == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
