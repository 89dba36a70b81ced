"""Promotion engine, in process: evaluations per second and p50 / p99 latency for baskets of 1, 20
and 200 lines against 10, 1,000 and 10,000 active promotions. A benchmark, never a timed test.

    python bench/promotion/bench_engine.py [--seconds 2] [--promotions 10 1000 10000] [--lines 1 20 200]

The mix (seeded, the same every run), per promotion, drawn from a catalogue of 50,000 SKUs in 2,000
categories and 1,000 brands, with 300 stores and 200 segments:
  58 % one to five SKUs: percent off (LINE or BASKET scope), amount off per unit, fixed price,
       buy 2 get 1, every 3rd half price, double points;
  15 % one or two categories or a brand: percent off with a cap, cheapest item half price,
       a CEL formula "at most half the margin" on some;
   8 % voucher campaigns (need a code; the basket presents one);
   8 % audience-targeted basket offers: a segment (4 %) or a store (4 %), with a spend
       threshold or a tier / first-purchase / CEL condition;
   1 % (at most 5: a tenant runs few at once) basket-wide: tiered spend, spend-and-get-points, free shipping;
  10 % of all campaigns exclusive or in one of 20 exclusivity groups; priorities 0-9;
  every campaign scheduled over the run's date, 10 % with a weekly window that is open now.
Promotions and baskets both draw 30 % of their SKUs from the 2,000 most popular (popular SKUs
carry more offers, as in real catalogues); the customer is gold, in 5
segments, and presents one voucher code. One base earning rule with a gold multiplier.
Each cell evaluates several different baskets round-robin, after a warm-up.
"""

import argparse
import platform
import random
import statistics
import sys
import time
import zlib
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.promotion.v1 import (
    campaign_pb2,
    condition_pb2 as cpb,
    earning_pb2,
    effect_pb2 as epb,
    promotion_pb2,
    schedule_pb2,
    settings_pb2,
)
from loyalty_promotion.engine import (
    CampaignInput,
    CustomerContext,
    PresentedCode,
    compile_catalog,
    decode_basket,
    evaluate,
)

SKUS, CATEGORIES, BRANDS, STORES, SEGMENTS = 50_000, 2_000, 1_000, 300, 200
NOW = datetime(2026, 6, 12, 17, 30, tzinfo=UTC)
# Popular SKUs: promotions and baskets both favour the first 2,000 SKUs.
HOT = 2_000


def money(amount):
    return money_pb2.Money(currency_code="EUR", amount_minor=amount)


def sku(rng):
    return f"S{rng.randrange(HOT) if rng.random() < 0.3 else rng.randrange(SKUS)}"


def category_of(sku_name):
    return f"cat{zlib.crc32(sku_name.encode()) % CATEGORIES}"


def brand_of(sku_name):
    return f"brand{(zlib.crc32(sku_name.encode()) // 7) % BRANDS}"


def stamp(moment):
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def sku_effect(rng, skus):
    line_filter = cpb.LineFilter(skus=skus)
    kind = rng.randrange(6)
    if kind == 0:
        return epb.Effect(
            percent_off=epb.PercentOffEffect(
                percent_bps=rng.choice([500, 1000, 2000]), line_filter=line_filter, scope=rng.choice([1, 2])
            )
        )
    if kind == 1:
        return epb.Effect(
            amount_off=epb.AmountOffEffect(
                amount=money(rng.choice([20, 50, 100])),
                mode=epb.AMOUNT_OFF_MODE_PER_UNIT,
                line_filter=line_filter,
            )
        )
    if kind == 2:
        return epb.Effect(
            fixed_price=epb.FixedPriceEffect(
                line_filter=line_filter,
                price=money(rng.choice([199, 499, 999])),
                bundle_quantity=rng.choice([1, 3]),
            )
        )
    if kind == 3:
        return epb.Effect(
            buy_x_get_y=epb.BuyXGetYEffect(
                buy_filter=line_filter, buy_quantity=2, get_quantity=1, get_discount_bps=10000
            )
        )
    if kind == 4:
        return epb.Effect(
            every_nth_unit=epb.EveryNthUnitEffect(line_filter=line_filter, n=3, discount_bps=5000)
        )
    return epb.Effect(points_bonus=epb.PointsBonusEffect(multiplier_bps=20000, line_filter=line_filter))


def category_effect(rng):
    line_filter = (
        cpb.LineFilter(categories=[f"cat{rng.randrange(CATEGORIES)}" for _ in range(rng.choice([1, 2]))])
        if rng.random() < 0.7
        else cpb.LineFilter(brands=[f"brand{rng.randrange(BRANDS)}"])
    )
    kind = rng.randrange(3)
    if kind == 0:
        return epb.Effect(
            percent_off=epb.PercentOffEffect(percent_bps=1500, line_filter=line_filter),
            max_discount=money(2000),
        )
    if kind == 1:
        return epb.Effect(cheapest_item=epb.CheapestItemEffect(line_filter=line_filter, discount_bps=5000))
    return epb.Effect(
        formula=epb.FormulaDiscountEffect(line_filter=line_filter, cel="line.attributes.margin / 2")
    )


def audience_condition(rng):
    return rng.choice(
        [
            cpb.Condition(
                basket_subtotal=cpb.BasketSubtotalCondition(
                    min_subtotal=money(rng.choice([2000, 5000, 10000]))
                )
            ),
            cpb.Condition(tier=cpb.TierCondition(tier_ids=["gold", "platinum"])),
            cpb.Condition(first_purchase=cpb.FirstPurchaseCondition()),
            cpb.Condition(
                expression=cpb.ExpressionCondition(cel="basket.units >= 5 && customer.tier == 'gold'")
            ),
        ]
    )


def build_campaign(rng, number, globals_left):
    cid = f"c{number}"
    draw = rng.random()
    audience, condition, needs_code = None, None, False
    if draw < 0.58:
        effect = sku_effect(rng, [sku(rng) for _ in range(rng.randint(1, 5))])
    elif draw < 0.73:
        effect = category_effect(rng)
    elif draw < 0.81:
        needs_code, effect = True, epb.Effect(amount_off=epb.AmountOffEffect(amount=money(500)))
    elif draw < 0.89:
        key = (
            cpb.Condition(
                customer_segment=cpb.SegmentCondition(segment_ids=[f"seg{rng.randrange(SEGMENTS)}"])
            )
            if draw < 0.85
            else cpb.Condition(store=cpb.StoreCondition(store_ids=[f"st{rng.randrange(STORES)}"]))
        )
        audience = cpb.Condition(all_of=cpb.ConditionList(conditions=[key]))
        condition, effect = (
            audience_condition(rng),
            epb.Effect(percent_off=epb.PercentOffEffect(percent_bps=500)),
        )
    elif globals_left[0] > 0:
        globals_left[0] -= 1
        effect = rng.choice(
            [
                epb.Effect(
                    tiered_spend=epb.TieredSpendEffect(
                        tiers=[
                            epb.SpendTier(min_spend=money(10000), percent_bps=1000),
                            epb.SpendTier(min_spend=money(20000), percent_bps=1500),
                        ]
                    )
                ),
                epb.Effect(points_bonus=epb.PointsBonusEffect(fixed_points=200)),
                epb.Effect(shipping=epb.ShippingDiscountEffect(percent_bps=10000)),
            ]
        )
        condition = cpb.Condition(basket_subtotal=cpb.BasketSubtotalCondition(min_subtotal=money(5000)))
    else:
        effect = sku_effect(rng, [sku(rng)])
    windows = (
        [schedule_pb2.RecurringWindow(start_minute=17 * 60, end_minute=20 * 60)] if rng.random() < 0.1 else []
    )
    schedule = schedule_pb2.Schedule(
        start_time=stamp(datetime(2026, 1, 1, tzinfo=UTC)),
        end_time=stamp(datetime(2027, 1, 1, tzinfo=UTC)),
        time_zone="Europe/Berlin",
        recurring_windows=windows,
    )
    mode, group = campaign_pb2.STACKING_MODE_STACKABLE, ""
    if rng.random() < 0.1:
        if rng.random() < 0.5:
            mode = campaign_pb2.STACKING_MODE_EXCLUSIVE
        else:
            group = f"g{rng.randrange(20)}"
    message = campaign_pb2.Campaign(
        campaign_id=cid,
        priority=rng.randrange(10),
        schedule=schedule,
        stacking=campaign_pb2.StackingPolicy(mode=mode, exclusivity_group=group),
    )
    promotion = promotion_pb2.Promotion(
        promotion_id=f"p{number}", display_name=f"offer {number}", condition=condition, effects=[effect]
    )
    return CampaignInput(message, [promotion], audience=audience, requires_code=needs_code)


def build_catalog(count, rng):
    globals_left = [min(5, max(1, count // 100))]
    campaigns = [build_campaign(rng, n, globals_left) for n in range(count)]
    rules = [
        earning_pb2.EarningRule(
            earning_rule_id="base",
            program_id="p",
            state=earning_pb2.EARNING_RULE_STATE_ENABLED,
            rate=earning_pb2.PointsRate(points=1, per_amount=money(100)),
            tier_multipliers=[earning_pb2.TierMultiplier(tier_id="gold", multiplier_bps=15000)],
        )
    ]
    started = time.perf_counter()
    catalog = compile_catalog(
        campaigns,
        settings_pb2.PromotionSettings(time_zone="Europe/Berlin"),
        earning_rules=rules,
        tz="Europe/Berlin",
    )
    assert not catalog.rejected, list(catalog.rejected.items())[:3]
    voucher = next((c.campaign.campaign_id for c in campaigns if c.requires_code), "")
    return catalog, time.perf_counter() - started, voucher


def build_basket(lines, rng):
    items = []
    for n in range(lines):
        name = sku(rng)
        price, qty = rng.randrange(50, 5000), rng.choice([1, 1, 1, 2, 3, 6])
        items.append(
            basket_pb2.LineItem(
                line_id=str(n),
                sku=name,
                categories=[category_of(name)],
                brand=brand_of(name),
                quantity=qty,
                unit_price=money(price),
                line_total=money(price * qty),
                attributes={"margin": price * qty // 3},
            )
        )
    return decode_basket(
        basket_pb2.Basket(
            currency_code="EUR",
            lines=items,
            store_id=f"st{rng.randrange(STORES)}",
            channel=basket_pb2.CHANNEL_STORE,
        )
    )


def measure(catalog, baskets, customer, codes, seconds):
    for b in baskets[:5]:
        evaluate(catalog, b, customer, codes, NOW)
    timings, candidates = [], []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline or len(timings) < 50:
        b = baskets[i % len(baskets)]
        start = time.perf_counter_ns()
        result = evaluate(catalog, b, customer, codes, NOW)
        timings.append(time.perf_counter_ns() - start)
        candidates.append(len(result.applied) + len(result.candidates))
        i += 1
    timings.sort()
    p50 = timings[len(timings) // 2] / 1e6
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))] / 1e6
    return len(timings) / (sum(timings) / 1e9), p50, p99, statistics.mean(candidates)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--promotions", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--lines", type=int, nargs="+", default=[1, 20, 200])
    args = parser.parse_args()
    print(
        f"# promotion engine, in process; Python {platform.python_version()} on {platform.machine()}, {args.seconds}s per cell"
    )
    customer = CustomerContext(
        customer_id="cust",
        tier_id="gold",
        segment_ids=frozenset(f"seg{i}" for i in range(5)),
        lifetime_purchase_count=4,
    )
    print(
        f"{'promotions':>10} {'lines':>6} {'eval/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'candidates':>10} {'compile s':>9}"
    )
    results = {}
    for count in args.promotions:
        catalog, compile_seconds, voucher = build_catalog(count, random.Random(count))
        codes = [PresentedCode("VOUCHER", campaign_id=voucher)] if voucher else []
        for lines in args.lines:
            rng = random.Random(lines)
            baskets = [build_basket(lines, rng) for _ in range(16)]
            rate, p50, p99, seen = measure(catalog, baskets, customer, codes, args.seconds)
            results[(count, lines)] = p99
            print(
                f"{count:>10} {lines:>6} {rate:>9.0f} {p50:>8.3f} {p99:>8.3f} {seen:>10.1f} {compile_seconds:>9.2f}",
                flush=True,
            )
    if (10, 20) in results and (10000, 20) in results:
        print(
            f"# 20 lines: p99 at 10,000 promotions = {results[(10000, 20)] / results[(10, 20)]:.2f}x p99 at 10 (target <= 2x)"
        )
    if (1000, 20) in results:
        print(f"# 20 lines vs 1,000 promotions p99 = {results[(1000, 20)]:.3f} ms (target <= 1 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
