"""EvaluateBasket through gRPC: the promotion server's CPU per call, beside the runtime's bare-call
cost (a bare grpc.aio echo and the runtime's full-stack echo) measured in the same run. A benchmark,
never a timed test: compare ratios within one run.

    make bench BENCH=bench/promotion/bench_service.py
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/loyalty_bench REDIS_URL=redis://127.0.0.1:6379/0 \\
        python bench/promotion/bench_service.py [--campaigns 300] [--calls 2000] [--rounds 3] [--concurrency 8]

The promotion server runs in a process of its own (`python -m loyalty_promotion serve`, default
settings) on a migrated database of its own. The tenant gets `--campaigns` live campaigns of one
promotion each, created through the API, in this mix (most touch few SKUs): 85% 10% off one to
three SKUs of 5,000; 10% 2+ units of one SKU, 15% off; 4% 5% off a category of 50; 1% 2% off the
whole basket over 50.00. Baskets are 1 and 20 lines of random SKUs and categories (seeded, the same
every run), so a 20-line basket meets the basket-wide and category promotions and a few SKU ones.
Server CPU is user + system time from /proc, per call, median of the rounds; the catalog is
compiled before the rounds (warm-up), so the figures are the steady state of a replica. The
"in-process" rows split one call's engine work (decode, evaluate, encode) measured here on the same
catalog, compiled from the same database, so the rest of the server figure is gRPC and the runtime.
"""

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import uvloop

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.promotion.v1 import (
    campaign_pb2,
    condition_pb2,
    effect_pb2,
    promotion_pb2,
    promotion_service_pb2 as api,
    promotion_service_pb2_grpc,
)
from loyalty_devstack.benchkit import service_process
from loyalty_devstack.infra import Infra, create_database, drop_database, plain_url
from loyalty_promotion import app, engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))
from bench_runtime import METADATA, TENANT, TOKEN, cpu_per_call, echo_rows, warm

SKUS = [f"sku-{n}" for n in range(5000)]
CATEGORIES = [f"cat-{n}" for n in range(50)]


def _promotion(rng: random.Random) -> promotion_pb2.Promotion:
    kind = rng.random()
    if kind < 0.85:
        line_filter = condition_pb2.LineFilter(skus=rng.sample(SKUS, rng.randint(1, 3)))
        effect = effect_pb2.PercentOffEffect(percent_bps=1000, line_filter=line_filter)
        return promotion_pb2.Promotion(display_name="sku", effects=[effect_pb2.Effect(percent_off=effect)])
    if kind < 0.95:
        line_filter = condition_pb2.LineFilter(skus=[rng.choice(SKUS)])
        condition = condition_pb2.Condition(
            line_quantity=condition_pb2.LineQuantityCondition(line_filter=line_filter, min_quantity=2)
        )
        effect = effect_pb2.PercentOffEffect(percent_bps=1500, line_filter=line_filter)
        return promotion_pb2.Promotion(
            display_name="multi", condition=condition, effects=[effect_pb2.Effect(percent_off=effect)]
        )
    if kind < 0.99:
        line_filter = condition_pb2.LineFilter(categories=[rng.choice(CATEGORIES)])
        effect = effect_pb2.PercentOffEffect(percent_bps=500, line_filter=line_filter)
        return promotion_pb2.Promotion(
            display_name="category", effects=[effect_pb2.Effect(percent_off=effect)]
        )
    condition = condition_pb2.Condition(
        basket_subtotal=condition_pb2.BasketSubtotalCondition(
            min_subtotal=money_pb2.Money(currency_code="EUR", amount_minor=5000)
        )
    )
    effect = effect_pb2.PercentOffEffect(percent_bps=200)
    return promotion_pb2.Promotion(
        display_name="basket", condition=condition, effects=[effect_pb2.Effect(percent_off=effect)]
    )


def _basket(rng: random.Random, lines: int) -> basket_pb2.Basket:
    items = []
    for n in range(lines):
        quantity, price = rng.randint(1, 3), rng.randint(99, 2999)
        items.append(
            basket_pb2.LineItem(
                line_id=f"l{n}",
                sku=rng.choice(SKUS),
                categories=[rng.choice(CATEGORIES)],
                quantity=quantity,
                unit_price=money_pb2.Money(currency_code="EUR", amount_minor=price),
                line_total=money_pb2.Money(currency_code="EUR", amount_minor=price * quantity),
            )
        )
    return basket_pb2.Basket(currency_code="EUR", lines=items, channel=basket_pb2.CHANNEL_STORE)


async def _campaigns(stub, count: int, rng: random.Random) -> None:
    async def one(n: int) -> None:
        created = await stub.CreateCampaign(
            api.CreateCampaignRequest(
                idempotency_key=uuid.uuid4().hex, campaign=campaign_pb2.Campaign(display_name=f"c{n}")
            ),
            metadata=METADATA,
        )
        promotion = _promotion(rng)
        promotion.campaign_id = created.campaign.campaign_id
        await stub.CreatePromotion(
            api.CreatePromotionRequest(idempotency_key=uuid.uuid4().hex, promotion=promotion),
            metadata=METADATA,
        )
        await stub.ActivateCampaign(
            api.ActivateCampaignRequest(
                idempotency_key=uuid.uuid4().hex, campaign_id=created.campaign.campaign_id
            ),
            metadata=METADATA,
        )

    for start in range(0, count, 20):
        await asyncio.gather(*(one(n) for n in range(start, min(count, start + 20))))


def in_process_rows(catalog, requests: list, repeat: int = 200) -> dict[str, tuple[float, float]]:
    """Microseconds per call of the engine's three steps on this process's CPU."""
    now = datetime.now(UTC)
    payloads = [r.SerializeToString() for r in requests]
    timings = {"decode": 0.0, "evaluate": 0.0, "encode": 0.0}
    for n in range(repeat):
        started = time.process_time()
        request = api.EvaluateBasketRequest.FromString(payloads[n % len(payloads)])
        basket, customer = engine.decode_basket(request.basket), engine.decode_customer(request.customer)
        decoded = time.process_time()
        evaluation = engine.evaluate(catalog, basket, customer, [], now)
        evaluated = time.process_time()
        api.EvaluateBasketResponse(result=engine.encode_evaluation(evaluation)).SerializeToString()
        timings["decode"] += decoded - started
        timings["evaluate"] += evaluated - decoded
        timings["encode"] += time.process_time() - evaluated
    return {f"  in-process {step}": (total / repeat * 1e6, 0.0) for step, total in timings.items()}


async def promotion_rows(args, database_url: str, redis_url: str) -> dict[str, tuple[float, float]]:
    server = service_process("promotion", database_url, redis_url, internal_token=TOKEN)
    rows = {}
    try:
        channel = await server.channel()
        stub = promotion_service_pb2_grpc.PromotionServiceStub(channel)
        rng = random.Random(8)
        await _campaigns(stub, args.campaigns, rng)
        for lines in (1, 20):
            baskets = [api.EvaluateBasketRequest(basket=_basket(rng, lines)) for _ in range(64)]

            async def evaluate(number: int, baskets=baskets):
                await stub.EvaluateBasket(baskets[number % len(baskets)], metadata=METADATA, timeout=10)

            await warm(evaluate)
            label = f"EvaluateBasket {lines} line{'s' if lines > 1 else ''}"
            rows[label] = await cpu_per_call(server, evaluate, args.calls, args.concurrency, args.rounds)
            sample = await stub.EvaluateBasket(baskets[0], metadata=METADATA)
            rows[label] += (len(sample.result.applied_promotions),)
            connection = await asyncpg.connect(database_url)
            try:
                catalog = await app.build_catalog(connection, TENANT, datetime.now(UTC))
            finally:
                await connection.close()
            rows |= {
                f"{step}, {lines} line(s)": row for step, row in in_process_rows(catalog, baskets).items()
            }
        await channel.close()
    finally:
        server.stop()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaigns", type=int, default=300)
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    args.rate = 0.0
    base_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/loyalty_bench")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    infra = Infra(postgres_url=base_url, redis_url=redis_url)
    scratch = f"{base_url.rpartition('/')[2].split('?')[0]}_{uuid.uuid4().hex[:8]}"
    await create_database(infra, scratch)
    database_url = plain_url(base_url, scratch)
    try:
        rows = await echo_rows(args, database_url, redis_url)
        rows |= await promotion_rows(args, database_url, redis_url)
    finally:
        await drop_database(infra, scratch)
    report(rows, args)


def report(rows: dict[str, tuple], args) -> None:
    bare = rows["bare grpc.aio echo"][0]
    print(
        f"python {sys.version.split()[0]} at {os.path.realpath(sys.executable)}; {os.cpu_count()} CPUs; "
        f"{args.campaigns} live campaigns; {args.calls} calls x {args.rounds} rounds at concurrency {args.concurrency}"
    )
    print(f"{'':<28}{'server CPU us/call':>20}{'x bare echo':>13}{'calls/s':>10}{'applied':>9}")
    for label, (cpu, rate, *applied) in rows.items():
        shown_rate = f"{rate:.0f}" if rate else ""
        print(f"{label:<28}{cpu:>20.0f}{cpu / bare:>13.2f}{shown_rate:>10}{applied[0] if applied else '':>9}")
    print(
        f"EvaluateBasket 20 lines minus runtime echo: {rows['EvaluateBasket 20 lines'][0] - rows['runtime echo (full stack)'][0]:.0f} us"
    )


if __name__ == "__main__":
    uvloop.run(main())
