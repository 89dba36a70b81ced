"""ListCustomerOffers through the real server: automatic promotions the customer's audience admits
and codes assigned to them, minus what budgets and customer limits refuse, with uses left and,
given a basket, whether each applies and what it gives."""

import grpc
import pytest

from loyalty.common.v1 import errors_pb2 as err
from loyalty.promotion.v1 import (
    campaign_pb2,
    condition_pb2,
    offer_pb2,
    promotion_service_pb2 as api,
)
from tests.conftest import rpc_failure
from tests.service.promotion.helpers import Codes, basket, customer, percent_off


@pytest.fixture
def codes(tenant) -> Codes:
    return Codes(tenant)


async def wallet(codes: Codes, customer_id: str, basket_pb=None, *kinds):
    request = api.ListCustomerOffersRequest(customer=customer(customer_id), kinds=list(kinds))
    if basket_pb is not None:
        request.basket.CopyFrom(basket_pb)
    return (await codes.stub.ListCustomerOffers(request, metadata=codes.metadata)).offers


async def test_the_wallet_has_open_promotions_and_assigned_codes_until_used_up(codes, tenant):
    everyone = await tenant.live_campaign(percent_off(500, skus=["A"]))
    vip_only = await tenant.live_campaign(
        percent_off(2000),
        audience=campaign_pb2.Audience(segments=condition_pb2.SegmentCondition(segment_ids=["vip"])),
    )
    vouchers = await codes.voucher_campaign(budget=campaign_pb2.Budget(max_redemptions_per_customer=1))
    mine = await codes.voucher(vouchers.campaign_id, "MINE-1", holder_customer_id="c-w")
    await codes.voucher(vouchers.campaign_id, "THEIRS-1", holder_customer_id="c-other")
    offers = await wallet(codes, "c-w")
    listed = {(o.kind, o.campaign_id, o.code) for o in offers}
    assert (offer_pb2.OFFER_KIND_PROMOTION, everyone.campaign_id, "") in listed
    assert (offer_pb2.OFFER_KIND_VOUCHER, vouchers.campaign_id, "MINE-1") in listed
    assert all(o.campaign_id != vip_only.campaign_id for o in offers)
    assert all(o.code != "THEIRS-1" for o in offers)
    voucher_offer = next(o for o in offers if o.code == "MINE-1")
    assert voucher_offer.remaining_redemptions == 1 and voucher_offer.voucher_id == mine.voucher_id
    checkout_id = "co-wallet-1"
    await codes.reserve(checkout_id, basket(("A", 1, 1000)), "MINE-1", customer_id="c-w")
    await codes.commit(checkout_id)
    after = await wallet(codes, "c-w", None, offer_pb2.OFFER_KIND_VOUCHER)
    assert [o.code for o in after] == []


async def test_with_a_basket_each_offer_says_whether_it_applies(codes, tenant):
    sku_a = await tenant.live_campaign(percent_off(1000, skus=["A"]))
    sku_b = await tenant.live_campaign(percent_off(1000, skus=["B"], min_quantity=2))
    offers = await wallet(codes, "c-q", basket(("A", 1, 1000), ("B", 1, 500)))
    by_campaign = {o.campaign_id: o.qualification for o in offers}
    assert by_campaign[sku_a.campaign_id].qualified
    assert by_campaign[sku_a.campaign_id].estimated_discount.amount_minor == 100
    assert not by_campaign[sku_b.campaign_id].qualified
    assert by_campaign[sku_b.campaign_id].reason == err.ERROR_REASON_CONDITIONS_NOT_MET


async def test_an_anonymous_wallet_is_refused(codes):
    failure = await rpc_failure(
        codes.stub.ListCustomerOffers(api.ListCustomerOffersRequest(), metadata=codes.metadata)
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["customer.customer_id"])
