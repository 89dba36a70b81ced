"""Codes and redemptions through gRPC against a promotion server in a process of its own: generating
1,000,000 unique codes (a background job chain, COPY underneath; wall time until GetVoucherBatch says
SUCCEEDED, and the server's CPU), and reserve + commit of one checkout per call pair: commits per
second and server CPU per pair, for one hot generic code (every checkout locks the same voucher
row) and for 200 different codes. A benchmark, never a timed test.

    make bench BENCH=bench/promotion/bench_codes.py
    python bench/promotion/bench_codes.py [--codes 1000000] [--calls 1000] [--rounds 2] [--concurrency 32]
"""

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import uvloop

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.promotion.v1 import (
    campaign_pb2,
    effect_pb2,
    promotion_pb2,
    promotion_service_pb2 as api,
    promotion_service_pb2_grpc,
    voucher_pb2,
)
from loyalty_devstack.benchkit import scratch_database, service_process

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))
from bench_runtime import METADATA, TOKEN, cpu_per_call, warm

BASKET = basket_pb2.Basket(
    currency_code="EUR",
    lines=[
        basket_pb2.LineItem(
            line_id="l0",
            sku="sku-1",
            quantity=2,
            unit_price=money_pb2.Money(currency_code="EUR", amount_minor=1250),
            line_total=money_pb2.Money(currency_code="EUR", amount_minor=2500),
        )
    ],
)


def key() -> str:
    return uuid.uuid4().hex


async def voucher_campaign(stub) -> str:
    created = await stub.CreateCampaign(
        api.CreateCampaignRequest(
            idempotency_key=key(),
            campaign=campaign_pb2.Campaign(display_name="bench", type=campaign_pb2.CAMPAIGN_TYPE_VOUCHER),
        ),
        metadata=METADATA,
    )
    campaign_id = created.campaign.campaign_id
    promotion = promotion_pb2.Promotion(
        campaign_id=campaign_id,
        display_name="10% off",
        effects=[effect_pb2.Effect(percent_off=effect_pb2.PercentOffEffect(percent_bps=1000))],
    )
    await stub.CreatePromotion(
        api.CreatePromotionRequest(idempotency_key=key(), promotion=promotion), metadata=METADATA
    )
    await stub.ActivateCampaign(
        api.ActivateCampaignRequest(idempotency_key=key(), campaign_id=campaign_id), metadata=METADATA
    )
    return campaign_id


async def generation_row(server, stub, count: int) -> tuple[float, float]:
    campaign_id = await voucher_campaign(stub)
    cpu, started = server.cpu_seconds(), time.perf_counter()
    response = await stub.GenerateVouchers(
        api.GenerateVouchersRequest(
            idempotency_key=key(),
            campaign_id=campaign_id,
            count=count,
            pattern=voucher_pb2.CodePattern(pattern="BENCH-####-####-##"),
        ),
        metadata=METADATA,
        timeout=60,
    )
    batch = response.batch
    while batch.state == voucher_pb2.VOUCHER_BATCH_STATE_RUNNING:
        await asyncio.sleep(0.2)
        batch = (
            await stub.GetVoucherBatch(api.GetVoucherBatchRequest(batch_id=batch.batch_id), metadata=METADATA)
        ).batch
    if batch.state != voucher_pb2.VOUCHER_BATCH_STATE_SUCCEEDED or batch.created_count != count:
        raise RuntimeError(f"generation ended {batch}")
    return time.perf_counter() - started, server.cpu_seconds() - cpu


async def redemption_rows(server, stub, args) -> dict[str, tuple[float, float]]:
    rows = {}
    hot = await voucher_campaign(stub)
    await stub.CreateVoucher(
        api.CreateVoucherRequest(
            idempotency_key=key(), voucher=voucher_pb2.Voucher(campaign_id=hot, code="HOTCODE")
        ),
        metadata=METADATA,
    )
    spread = await voucher_campaign(stub)
    codes = [f"SPREAD-{n:03d}" for n in range(200)]
    for code in codes:
        await stub.CreateVoucher(
            api.CreateVoucherRequest(
                idempotency_key=key(), voucher=voucher_pb2.Voucher(campaign_id=spread, code=code)
            ),
            metadata=METADATA,
        )
    for label, pick in (
        ("one hot generic code", lambda n: "HOTCODE"),
        ("200 different codes", lambda n: codes[n % 200]),
    ):

        async def reserve_commit(number: int, pick=pick) -> None:
            checkout_id = f"bench-{uuid.uuid4().hex}"
            reserved = await stub.ReserveRedemptions(
                api.ReserveRedemptionsRequest(checkout_id=checkout_id, basket=BASKET, codes=[pick(number)]),
                metadata=METADATA,
                timeout=30,
            )
            if not reserved.reservation.redemptions:
                raise RuntimeError(f"the code was refused: {reserved.reservation.result.codes}")
            await stub.CommitRedemptions(
                api.CommitRedemptionsRequest(checkout_id=checkout_id), metadata=METADATA, timeout=30
            )

        await warm(reserve_commit, 100)
        rows[f"reserve+commit, {label}"] = await cpu_per_call(
            server, reserve_commit, args.calls, args.concurrency, args.rounds
        )
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=1000, help="reserve+commit pairs per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    async with scratch_database() as (database_url, redis_url):
        server = service_process(
            "promotion",
            database_url,
            redis_url,
            internal_token=TOKEN,
            settings={"JOB_POLL_SECONDS": "0.1", "MAX_CONCURRENT_CALLS": "256"},
        )
        try:
            channel = await server.channel()
            stub = promotion_service_pb2_grpc.PromotionServiceStub(channel)
            wall, cpu = await generation_row(server, stub, args.codes)
            rows = await redemption_rows(server, stub, args)
            await channel.close()
        finally:
            server.stop()
    print(f"python {sys.version.split()[0]} at {sys.executable}; {os.cpu_count()} CPUs")
    print(f"GenerateVouchers {args.codes:,} codes: {wall:.1f} s wall until SUCCEEDED, server CPU {cpu:.1f} s")
    print(f"{'':<40}{'server CPU us/pair':>20}{'commits/s':>11}   (concurrency {args.concurrency})")
    for label, (cpu_us, rate) in rows.items():
        print(f"{label:<40}{cpu_us:>20.0f}{rate:>11.0f}")


if __name__ == "__main__":
    uvloop.run(main())
