"""Redemption limits through the real server and PostgreSQL: uses per campaign per store under a
stampede (every caller released at once, exact counts afterwards), once per basket, and limits
that still hold, from PostgreSQL alone, while Redis does not answer."""

import asyncio
import uuid

import grpc
import pytest

from loyalty.common.v1 import errors_pb2 as err
from loyalty.promotion.v1 import campaign_pb2, promotion_service_pb2_grpc
from loyalty_devstack.infra import free_port
from loyalty_promotion.service import DEFINITION
from loyalty_runtime.testing import running_service
from tests.service.promotion.helpers import Client, Codes, basket, percent_off
from tests.service.promotion.test_promotion_redemptions import checkout, retried

CART = basket(("A", 1, 1000))


def at(store: str):
    cart = type(CART)()
    cart.CopyFrom(CART)
    cart.store_id = store
    return cart


@pytest.fixture
def codes(tenant) -> Codes:
    return Codes(tenant)


async def test_a_per_store_limit_holds_under_a_stampede_and_rollback_gives_a_use_back(codes, tenant):
    campaign = await tenant.live_campaign(
        percent_off(1000), budget=campaign_pb2.Budget(max_redemptions_per_store=5)
    )
    ids = [checkout() for _ in range(30)]
    results = await asyncio.gather(*(retried(lambda co=co: codes.reserve(co, at("s1"))) for co in ids))
    applied = [co for co, r in zip(ids, results, strict=True) if r.reservation.redemptions]
    assert len(applied) == 5
    refused = next(r.reservation for r in results if not r.reservation.redemptions)
    assert [(c.campaign_id, c.reason) for c in refused.result.candidates] == [
        (campaign.campaign_id, err.ERROR_REASON_STORE_LIMIT_REACHED)
    ]
    preview = await codes.evaluate(at("s1"))  # the evaluation says so before any reservation
    assert [(c.campaign_id, c.reason) for c in preview.candidates] == [
        (campaign.campaign_id, err.ERROR_REASON_STORE_LIMIT_REACHED)
    ]
    # Another store has its own five.
    elsewhere = await asyncio.gather(
        *(retried(lambda: codes.reserve(checkout(), at("s2"))) for _ in range(8))
    )
    assert sum(bool(r.reservation.redemptions) for r in elsewhere) == 5
    # Committed uses count, rolled-back ones come back.
    await codes.commit(applied[0])
    await codes.rollback(applied[1])
    again = [(await codes.reserve(checkout(), at("s1"))).reservation for _ in range(2)]
    assert [bool(r.redemptions) for r in again] == [True, False]


async def test_a_store_use_comes_back_with_a_full_return(codes, tenant):
    from loyalty.promotion.v1 import promotion_service_pb2 as api

    await tenant.live_campaign(percent_off(1000), budget=campaign_pb2.Budget(max_redemptions_per_store=1))
    co = checkout()
    assert (await codes.reserve(co, at("s9"), customer_id="c1")).reservation.redemptions
    await codes.commit(co)
    assert not (await codes.reserve(checkout(), at("s9"))).reservation.redemptions
    await codes.stub.ReverseRedemptions(
        api.ReverseRedemptionsRequest(checkout_id=co, return_id="r1", full_return=True),
        metadata=codes.metadata,
    )
    assert (await codes.reserve(checkout(), at("s9"))).reservation.redemptions


async def test_a_campaign_counts_once_per_basket_however_many_of_its_promotions_apply(codes, tenant):
    campaign = await tenant.create_campaign(budget=campaign_pb2.Budget(max_redemptions=2))
    await tenant.add_promotion(campaign.campaign_id, percent_off(1000))
    await tenant.add_promotion(campaign.campaign_id, percent_off(500))
    await tenant.activate(campaign.campaign_id)
    first = (await codes.reserve(checkout(), CART)).reservation
    assert len(first.redemptions) == 2  # two promotions of the campaign applied ...
    usage = (await tenant.get(campaign.campaign_id)).budget.usage
    assert usage.redemptions_reserved == 1  # ... and the campaign counts one redemption
    assert len((await codes.reserve(checkout(), CART)).reservation.redemptions) == 2
    assert not (await codes.reserve(checkout(), CART)).reservation.redemptions


@pytest.fixture
async def without_redis(promotion_settings):
    """A promotion server whose Redis is a port nobody listens on."""
    settings = promotion_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with running_service(DEFINITION, settings) as service:
        service.stub = promotion_service_pb2_grpc.PromotionServiceStub(service.channel)
        yield service


async def outcome(call):
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error  # a clean refusal, or an answer
        return None


async def test_without_redis_limits_hold_from_postgresql(without_redis):
    """A stampede on a code with 10 uses, a per-store limit of 6 and a per-customer limit of 1, with
    Redis unreachable: every answer is right or a clean UNAVAILABLE, and no limit is passed."""
    tenant = Client(without_redis, f"r-{uuid.uuid4().hex[:8]}")
    codes = Codes(tenant)
    campaign = await codes.voucher_campaign(
        budget=campaign_pb2.Budget(max_redemptions_per_store=6, max_redemptions_per_customer=1)
    )
    voucher = await codes.voucher(campaign.campaign_id, "NOREDIS", max_redemptions=10)

    async def sale(n: int):
        co = checkout()
        store = "s1" if n % 2 else "s2"
        reserved = await outcome(codes.reserve(co, at(store), "NOREDIS", customer_id=f"c{n % 12}"))
        if reserved is None or not reserved.reservation.redemptions:
            return reserved and reserved.reservation.result.codes[0].reason
        committed = await outcome(codes.commit(co))
        return (store, f"c{n % 12}") if committed else None

    outcomes = await asyncio.gather(*(sale(n) for n in range(40)))
    sold = [o for o in outcomes if isinstance(o, tuple)]
    used = await codes.get_voucher(voucher_id=voucher.voucher_id)
    assert used.redemption_count == len(sold) <= 10 and used.reserved_count == 0
    assert all(sum(s == store for s, _ in sold) <= 6 for store in ("s1", "s2"))
    assert len({customer for _, customer in sold}) == len(sold)  # once per customer
    assert len(sold) == 10  # twelve customers, two stores of 6: the code's 10 uses are the limit
    refusals = {o for o in outcomes if isinstance(o, int)}
    assert refusals <= {
        err.ERROR_REASON_VOUCHER_EXHAUSTED,
        err.ERROR_REASON_CUSTOMER_LIMIT_REACHED,
        err.ERROR_REASON_STORE_LIMIT_REACHED,
    }
