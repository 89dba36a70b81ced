"""Codes that match without their dashes, where the tenant says so (ignore_dashes_in_codes): stored
without them, looked up without them, one code whatever dashes it is presented with; switching it on
rewrites the tenant's codes (refused while two differ only by dashes) and no code written at the same
moment keeps a dash; without the setting, dashes count."""

import asyncio

import grpc
import pytest

from loyalty.common.v1 import errors_pb2 as err
from loyalty.promotion.v1 import promotion_service_pb2 as api, settings_pb2, voucher_pb2
from tests.conftest import rpc_failure
from tests.service.promotion.helpers import Codes, basket, key

CART = basket(("A", 1, 1000))


@pytest.fixture
def codes(tenant) -> Codes:
    return Codes(tenant)


def ignore_dashes(codes: Codes, on: bool = True):
    return codes.stub.UpdatePromotionSettings(
        api.UpdatePromotionSettingsRequest(
            idempotency_key=key(),
            settings=settings_pb2.PromotionSettings(ignore_dashes_in_codes=on),
            update_mask={"paths": ["ignore_dashes_in_codes"]},
        ),
        metadata=codes.metadata,
    )


async def stored_codes(codes: Codes, campaign_id: str) -> list[str]:
    listed = await codes.stub.ListVouchers(
        api.ListVouchersRequest(campaign_id=campaign_id, page_size=1000), metadata=codes.metadata
    )
    return sorted(v.code for v in listed.vouchers)


def create(codes: Codes, campaign_id: str, code: str):
    return codes.stub.CreateVoucher(
        api.CreateVoucherRequest(
            idempotency_key=key(), voucher=voucher_pb2.Voucher(campaign_id=campaign_id, code=code)
        ),
        metadata=codes.metadata,
    )


def generate_five(codes: Codes, campaign_id: str):
    return codes.stub.GenerateVouchers(
        api.GenerateVouchersRequest(
            idempotency_key=key(),
            campaign_id=campaign_id,
            count=5,
            pattern=voucher_pb2.CodePattern(pattern="GEN-####"),
        ),
        metadata=codes.metadata,
    )


async def test_with_dashes_ignored_abc_123_and_abc123_are_one_code(codes):
    await ignore_dashes(codes)
    campaign = await codes.voucher_campaign()
    voucher = await codes.voucher(campaign.campaign_id, " abc-123 ")
    assert voucher.code == "ABC123"
    for presented in ("ABC123", "abc-123", "A-B-C-1-2-3"):
        assert (await codes.get_voucher(code=presented)).voucher_id == voucher.voucher_id
        result = await codes.evaluate(CART, presented)
        assert [(c.code, c.accepted) for c in result.codes] == [(presented, True)]
        assert result.promotion_discount.amount_minor == 100
    taken = await rpc_failure(create(codes, campaign.campaign_id, "ABC123"))
    assert (taken.code, taken.reason) == (grpc.StatusCode.ALREADY_EXISTS, "VOUCHER_CODE_TAKEN")
    imported = await codes.stub.ImportVouchers(
        api.ImportVouchersRequest(
            idempotency_key=key(),
            campaign_id=campaign.campaign_id,
            vouchers=[voucher_pb2.VoucherImport(code=c) for c in ("XY-1", "X-Y1", "ABC-12-3")],
        ),
        metadata=codes.metadata,
    )
    assert imported.batch.created_count == 1
    assert [(r.code, r.message) for r in imported.rejections] == [
        ("X-Y1", "duplicate code in this request"),
        ("ABC-12-3", "the tenant has this code already"),
    ]
    assert await stored_codes(codes, campaign.campaign_id) == ["ABC123", "XY1"]


async def test_without_the_setting_dashes_count(codes):
    campaign = await codes.voucher_campaign()
    dashed = await codes.voucher(campaign.campaign_id, "XYZ-1")
    plain = await codes.voucher(campaign.campaign_id, "XYZ1")
    assert dashed.voucher_id != plain.voucher_id
    assert (await codes.get_voucher(code="xyz-1")).voucher_id == dashed.voucher_id
    unknown = await codes.evaluate(CART, "XY-Z1")
    assert [(c.accepted, c.reason) for c in unknown.codes] == [(False, err.ERROR_REASON_VOUCHER_NOT_FOUND)]


async def test_switching_it_on_rewrites_the_codes_and_generated_codes_follow(codes):
    campaign = await codes.voucher_campaign()
    old = await codes.voucher(campaign.campaign_id, "OLD-CODE-1")
    before = await generate_five(codes, campaign.campaign_id)
    assert before.batch.created_count == 5
    assert sum("-" in c for c in await stored_codes(codes, campaign.campaign_id)) == 6
    await ignore_dashes(codes)
    assert (await codes.get_voucher(code="OLD-CODE1")).voucher_id == old.voucher_id
    after = await generate_five(codes, campaign.campaign_id)
    assert after.batch.created_count == 5
    stored = await stored_codes(codes, campaign.campaign_id)
    assert len(stored) == 11 and not any("-" in c for c in stored)
    assert sum(c.startswith("GEN") and len(c) == 7 for c in stored) == 10
    # Switched off again, codes keep the form they are stored in.
    await ignore_dashes(codes, on=False)
    assert (await codes.get_voucher(code="OLDCODE1")).voucher_id == old.voucher_id


async def test_switching_it_on_is_refused_while_two_codes_differ_only_by_dashes(codes):
    campaign = await codes.voucher_campaign()
    await codes.voucher(campaign.campaign_id, "DUP-1")
    await codes.voucher(campaign.campaign_id, "DUP1")
    await codes.voucher(campaign.campaign_id, "OTHER-1")
    refused = await rpc_failure(ignore_dashes(codes))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CODES_COLLIDE_WITHOUT_DASHES",
    )
    assert refused.fields == ["settings.ignore_dashes_in_codes"]
    assert await stored_codes(codes, campaign.campaign_id) == ["DUP-1", "DUP1", "OTHER-1"]
    settings = await codes.stub.GetPromotionSettings(
        api.GetPromotionSettingsRequest(), metadata=codes.metadata
    )
    assert not settings.settings.ignore_dashes_in_codes and settings.settings.etag == "0"


async def test_no_code_written_while_it_is_switched_on_keeps_a_dash(codes):
    campaign = await codes.voucher_campaign()
    writes = [create(codes, campaign.campaign_id, f"RACE-{i}") for i in range(24)]
    switched, *created = await asyncio.gather(ignore_dashes(codes), *writes, return_exceptions=True)
    assert not isinstance(switched, Exception), switched
    assert not any(isinstance(c, Exception) for c in created)
    stored = await stored_codes(codes, campaign.campaign_id)
    assert len(stored) == 24 and not any("-" in c for c in stored)
