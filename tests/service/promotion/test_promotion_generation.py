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


async def test_codes_go_out_and_come_in_as_csv(codes):
    campaign = await codes.voucher_campaign()
    await generate(codes, campaign.campaign_id, 25, "CSV-######")
    pages, token = [], ""
    while True:
        page = await codes.stub.ExportVouchers(
            api.ExportVouchersRequest(campaign_id=campaign.campaign_id, page_size=10, page_token=token),
            metadata=codes.metadata,
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            break
    text = "".join(p.csv for p in pages)
    lines = text.strip().split("\r\n")
    assert lines[0].startswith("code,type,state,holder_customer_id")
    assert len(lines) == 26 and sum(p.row_count for p in pages) == 25
    assert all(line.split(",")[1:3] == ["unique", "active"] for line in lines[1:])
    other = await codes.voucher_campaign()
    upload = (
        "code,holder_customer_id,max_redemptions,end_time\r\n"
        "NEW-1,c-1,2,2030-01-01T00:00:00Z\r\n"
        "NEW-2,,x,\r\n"
        f"{lines[1].split(',')[0]},,,\r\n"
        "NEW-3,,,2030-01-01\r\n"
        "new-1,,,\r\n"
    )
    imported = await codes.stub.ImportVouchersCsv(
        api.ImportVouchersCsvRequest(idempotency_key=key(), campaign_id=other.campaign_id, csv=upload),
        metadata=codes.metadata,
    )
    assert imported.batch.created_count == 1
    assert [(r.row, r.code) for r in imported.rejections] == [
        (2, "NEW-2"),
        (3, lines[1].split(",")[0]),
        (4, "NEW-3"),
        (5, "new-1"),
    ]
    landed = await codes.get_voucher(code="new-1")
    assert (landed.holder_customer_id, landed.max_redemptions, landed.end_time.seconds) == (
        "c-1",
        2,
        1893456000,
    )
    refused = await rpc_failure(
        codes.stub.ImportVouchersCsv(
            api.ImportVouchersCsvRequest(
                idempotency_key=key(), campaign_id=other.campaign_id, csv="nope\r\n1\r\n"
            ),
            metadata=codes.metadata,
        )
    )
    assert (refused.code, refused.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["csv"])


async def test_an_import_of_a_thousand_codes_passes_the_contracts_limits(codes):
    campaign = await codes.voucher_campaign()
    response = await codes.stub.ImportVouchers(
        api.ImportVouchersRequest(
            idempotency_key=key(),
            campaign_id=campaign.campaign_id,
            vouchers=[voucher_pb2.VoucherImport(code=f"K-{n:04d}") for n in range(1000)],
        ),
        metadata=codes.metadata,
    )
    assert response.batch.created_count == 1000
