"""Bulk codes through the real server: generation from a pattern (inline for small batches, a chain
of jobs with progress for large ones, COPY underneath, never a duplicate), patterns too small for
the count refused, and imports reporting each bad row while the good ones land."""

import asyncio

import asyncpg
import grpc
import pytest

from loyalty.promotion.v1 import promotion_service_pb2 as api, voucher_pb2
from tests.conftest import rpc_failure
from tests.service.promotion.helpers import Codes, basket, key


@pytest.fixture
def codes(tenant) -> Codes:
    return Codes(tenant)


def generate(codes: Codes, campaign_id: str, count: int, pattern: str, charset: str = "", **fields):
    return codes.stub.GenerateVouchers(
        api.GenerateVouchersRequest(
            idempotency_key=key(),
            campaign_id=campaign_id,
            count=count,
            pattern=voucher_pb2.CodePattern(pattern=pattern, charset=charset),
            **fields,
        ),
        metadata=codes.metadata,
    )


async def test_a_small_batch_is_made_at_once_and_its_codes_work(codes):
    campaign = await codes.voucher_campaign()
    batch = (await generate(codes, campaign.campaign_id, 50, "SPRING-####-####")).batch
    assert (batch.state, batch.requested_count, batch.created_count) == (
        voucher_pb2.VOUCHER_BATCH_STATE_SUCCEEDED,
        50,
        50,
    )
    listed = await codes.stub.ListVouchers(
        api.ListVouchersRequest(campaign_id=campaign.campaign_id, batch_id=batch.batch_id),
        metadata=codes.metadata,
    )
    made = [v.code for v in listed.vouchers]
    assert len(set(made)) == 50 and all(c.startswith("SPRING-") and len(c) == 16 for c in made)
    assert not any(ch in c[7:] for c in made for ch in "01IO")
    result = await codes.evaluate(basket(("A", 1, 1000)), made[0].lower())
    assert result.codes[0].accepted


async def test_one_code_per_holder_is_assigned_to_them(codes):
    campaign = await codes.voucher_campaign()
    batch = (
        await generate(
            codes, campaign.campaign_id, 0, "VIP-######", holder_customer_ids=["c-1", "c-2", "c-1"]
        )
    ).batch
    assert batch.created_count == 2
    mine = await codes.stub.ListVouchers(
        api.ListVouchersRequest(campaign_id=campaign.campaign_id, holder_customer_id="c-2"),
        metadata=codes.metadata,
    )
    assert len(mine.vouchers) == 1 and mine.vouchers[0].holder_customer_id == "c-2"


async def test_a_pattern_too_small_for_the_count_is_refused(codes):
    campaign = await codes.voucher_campaign()
    failure = await rpc_failure(generate(codes, campaign.campaign_id, 1_000_000, "####", "0123456789"))
    assert (failure.code, failure.reason, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "CODE_PATTERN_TOO_SMALL",
        ["pattern.pattern"],
    )
    bad = await rpc_failure(generate(codes, campaign.campaign_id, 10, "NO-SLOTS"))
    assert (bad.code, bad.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["pattern.pattern"])


async def test_a_large_batch_runs_as_jobs_with_progress_and_no_duplicate(codes, promotion_settings):
    campaign = await codes.voucher_campaign()
    batch = (await generate(codes, campaign.campaign_id, 25_000, "BIG-########")).batch
    assert batch.state == voucher_pb2.VOUCHER_BATCH_STATE_RUNNING
    for _ in range(300):
        progress = await codes.stub.GetVoucherBatch(
            api.GetVoucherBatchRequest(batch_id=batch.batch_id), metadata=codes.metadata
        )
        if progress.batch.state == voucher_pb2.VOUCHER_BATCH_STATE_SUCCEEDED:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the batch did not finish")
    assert progress.batch.created_count == 25_000
    connection = await asyncpg.connect(promotion_settings.database_url.replace("+asyncpg", ""))
    try:
        count, distinct = await connection.fetchrow(
            "SELECT count(*), count(DISTINCT code) FROM promotion.vouchers WHERE tenant_id = $1 AND batch_id = $2",
            codes.client.tenant_id,
            batch.batch_id,
        )
    finally:
        await connection.close()
    assert count == distinct == 25_000


async def test_an_import_lands_good_rows_and_reports_each_bad_one(codes):
    campaign = await codes.voucher_campaign()
    await codes.voucher(campaign.campaign_id, "TAKEN")
    response = await codes.stub.ImportVouchers(
        api.ImportVouchersRequest(
            idempotency_key=key(),
            campaign_id=campaign.campaign_id,
            vouchers=[
                voucher_pb2.VoucherImport(code="EXT-1"),
                voucher_pb2.VoucherImport(code="ext-1"),
                voucher_pb2.VoucherImport(code="BAD CODE"),
                voucher_pb2.VoucherImport(code="TAKEN"),
                voucher_pb2.VoucherImport(code="EXT-2", holder_customer_id="c-9"),
            ],
        ),
        metadata=codes.metadata,
    )
    assert (response.batch.created_count, response.batch.rejected_count) == (2, 3)
    assert [r.code for r in response.rejections] == ["ext-1", "BAD CODE", "TAKEN"]
    assert (await codes.get_voucher(code="ext-2")).holder_customer_id == "c-9"
