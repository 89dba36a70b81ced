"""Vouchers through the real server: generic and unique codes of a VOUCHER campaign, lookup that
ignores case and surrounding spaces, and a stable reason for every code EvaluateBasket refuses
(another tenant's code answered exactly like an unknown one)."""

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from loyalty.common.v1 import errors_pb2 as err
from loyalty.promotion.v1 import promotion_service_pb2 as api, voucher_pb2
from tests.conftest import rpc_failure
from tests.service.promotion.helpers import Codes, basket, key

CART = basket(("A", 1, 1000))


def at(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@pytest.fixture
def codes(tenant) -> Codes:
    return Codes(tenant)


async def test_a_code_is_found_whatever_its_case_and_surrounding_spaces(codes):
    campaign = await codes.voucher_campaign()
    voucher = await codes.voucher(campaign.campaign_id, " Summer10 ")
    assert (voucher.code, voucher.type, voucher.state) == (
        "SUMMER10",
        voucher_pb2.VOUCHER_TYPE_GENERIC,
        voucher_pb2.VOUCHER_STATE_ACTIVE,
    )
    assert (await codes.get_voucher(code="  summer10")).voucher_id == voucher.voucher_id
    result = await codes.evaluate(CART, " summer10 ")
    assert [(c.code, c.accepted, c.campaign_id) for c in result.codes] == [
        (" summer10 ", True, campaign.campaign_id)
    ]
    assert result.promotion_discount.amount_minor == 100
    taken = await rpc_failure(
        codes.stub.CreateVoucher(
            api.CreateVoucherRequest(
                idempotency_key=key(),
                voucher=voucher_pb2.Voucher(campaign_id=campaign.campaign_id, code="SUMMER10"),
            ),
            metadata=codes.metadata,
        )
    )
    assert (taken.code, taken.reason) == (grpc.StatusCode.ALREADY_EXISTS, "VOUCHER_CODE_TAKEN")


async def test_a_unique_code_is_single_use_by_default_and_lists_by_campaign(codes):
    campaign = await codes.voucher_campaign()
    made = [
        await codes.voucher(campaign.campaign_id, f"U-{i}", type=voucher_pb2.VOUCHER_TYPE_UNIQUE)
        for i in range(3)
    ]
    assert {v.max_redemptions for v in made} == {1}
    first = await codes.stub.ListVouchers(
        api.ListVouchersRequest(campaign_id=campaign.campaign_id, page_size=2), metadata=codes.metadata
    )
    rest = await codes.stub.ListVouchers(
        api.ListVouchersRequest(
            campaign_id=campaign.campaign_id, page_size=2, page_token=first.next_page_token
        ),
        metadata=codes.metadata,
    )
    listed = [v.voucher_id for v in [*first.vouchers, *rest.vouchers]]
    assert sorted(listed) == sorted(v.voucher_id for v in made) and len(listed) == 3


async def test_each_refused_code_has_its_own_reason(codes, other_tenant):
    campaign = await codes.voucher_campaign()
    now = datetime.now(UTC)
    disabled = await codes.voucher(campaign.campaign_id, "OFF")
    await codes.stub.DisableVoucher(
        api.DisableVoucherRequest(idempotency_key=key(), voucher_id=disabled.voucher_id),
        metadata=codes.metadata,
    )
    await codes.voucher(campaign.campaign_id, "OLD", end_time=at(now - timedelta(days=1)))
    await codes.voucher(campaign.campaign_id, "SOON", start_time=at(now + timedelta(days=1)))
    await codes.voucher(campaign.campaign_id, "MINE", holder_customer_id="c-holder")
    other = Codes(other_tenant)
    theirs = await other.voucher_campaign()
    await other.voucher(theirs.campaign_id, "THEIRS")
    result = await codes.evaluate(CART, "NOPE", "THEIRS", "OFF", "OLD", "SOON", "MINE", customer_id="c-other")
    reasons = {c.code: (c.accepted, c.reason, c.campaign_id) for c in result.codes}
    assert reasons == {
        "NOPE": (False, err.ERROR_REASON_VOUCHER_NOT_FOUND, ""),
        "THEIRS": (False, err.ERROR_REASON_VOUCHER_NOT_FOUND, ""),
        "OFF": (False, err.ERROR_REASON_VOUCHER_DISABLED, campaign.campaign_id),
        "OLD": (False, err.ERROR_REASON_VOUCHER_EXPIRED, campaign.campaign_id),
        "SOON": (False, err.ERROR_REASON_VOUCHER_NOT_YET_VALID, campaign.campaign_id),
        "MINE": (False, err.ERROR_REASON_VOUCHER_NOT_HOLDER, campaign.campaign_id),
    }
    assert result.promotion_discount.amount_minor == 0
    holder = await codes.evaluate(CART, "MINE", customer_id="c-holder")
    assert holder.codes[0].accepted
    hidden = await rpc_failure(
        codes.stub.GetVoucher(api.GetVoucherRequest(code="THEIRS"), metadata=codes.metadata)
    )
    assert (hidden.code, hidden.reason) == (grpc.StatusCode.NOT_FOUND, "VOUCHER_NOT_FOUND")


async def test_two_codes_of_one_campaign_count_once_per_basket(codes):
    campaign = await codes.voucher_campaign()
    await codes.voucher(campaign.campaign_id, "ONE")
    await codes.voucher(campaign.campaign_id, "TWO")
    result = await codes.evaluate(CART, "ONE", "TWO")
    assert [(c.code, c.accepted, c.reason) for c in result.codes] == [
        ("ONE", True, 0),
        ("TWO", False, err.ERROR_REASON_CAMPAIGN_ALREADY_IN_BASKET),
    ]
    assert result.promotion_discount.amount_minor == 100


async def test_disable_enable_and_update_with_etags(codes):
    campaign = await codes.voucher_campaign()
    voucher = await codes.voucher(campaign.campaign_id, "EDIT")
    disabled = await codes.stub.DisableVoucher(
        api.DisableVoucherRequest(idempotency_key=key(), voucher_id=voucher.voucher_id),
        metadata=codes.metadata,
    )
    assert disabled.voucher.state == voucher_pb2.VOUCHER_STATE_DISABLED and disabled.voucher.HasField(
        "disable_time"
    )
    enabled = await codes.stub.EnableVoucher(
        api.EnableVoucherRequest(idempotency_key=key(), voucher_id=voucher.voucher_id),
        metadata=codes.metadata,
    )
    assert enabled.voucher.state == voucher_pb2.VOUCHER_STATE_ACTIVE
    change = voucher_pb2.Voucher(voucher_id=voucher.voucher_id, max_redemptions=5, etag=enabled.voucher.etag)
    updated = await codes.stub.UpdateVoucher(
        api.UpdateVoucherRequest(
            idempotency_key=key(),
            voucher=change,
            update_mask=field_mask_pb2.FieldMask(paths=["max_redemptions"]),
        ),
        metadata=codes.metadata,
    )
    assert updated.voucher.max_redemptions == 5 and updated.voucher.code == "EDIT"
    stale = await rpc_failure(
        codes.stub.UpdateVoucher(
            api.UpdateVoucherRequest(
                idempotency_key=key(),
                voucher=change,
                update_mask=field_mask_pb2.FieldMask(paths=["max_redemptions"]),
            ),
            metadata=codes.metadata,
        )
    )
    assert (stale.code, stale.reason) == (grpc.StatusCode.ABORTED, "CONCURRENT_MODIFICATION")


async def test_bad_codes_and_campaigns_are_refused_naming_the_field(codes, tenant):
    campaign = await codes.voucher_campaign()
    for code, field in (("", "voucher.code"), ("BAD CODE", "voucher.code"), ("X" * 65, "voucher.code")):
        failure = await rpc_failure(
            codes.stub.CreateVoucher(
                api.CreateVoucherRequest(
                    idempotency_key=key(),
                    voucher=voucher_pb2.Voucher(campaign_id=campaign.campaign_id, code=code),
                ),
                metadata=codes.metadata,
            )
        )
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field]), code
    automatic = await tenant.create_campaign()
    wrong = await rpc_failure(
        codes.stub.CreateVoucher(
            api.CreateVoucherRequest(
                idempotency_key=key(),
                voucher=voucher_pb2.Voucher(campaign_id=automatic.campaign_id, code="A1"),
            ),
            metadata=codes.metadata,
        )
    )
    assert (wrong.code, wrong.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["voucher.campaign_id"])
