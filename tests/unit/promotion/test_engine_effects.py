"""Every effect, table-driven: basket in, discount per line out (amounts in cents unless said)."""

import pytest

from loyalty.promotion.v1 import effect_pb2 as epb
from tests.unit.promotion.builders import (
    amount_off,
    basket,
    campaign,
    discounts,
    lf,
    line,
    money,
    percent,
    promo,
    run,
    settings,
)

BEER = lf(skus=["BEER"])

CASES = [
    # (name, effects, lines, expected discount per line id)
    (
        "percent basket 10 %",
        [percent(1000)],
        [line("1", "A", 1000), line("2", "B", 500)],
        {"1": 100, "2": 50},
    ),
    (
        "percent on a filter",
        [percent(5000, lf(skus=["B"]))],
        [line("1", "A", 1000), line("2", "B", 500)],
        {"2": 250},
    ),
    ("percent 100 % frees the line", [percent(10000)], [line("1", "A", 999)], {"1": 999}),
    (
        "percent line scope rounds per line",
        [percent(500, scope=epb.DISCOUNT_SCOPE_LINE)],
        [line("1", "A", 10), line("2", "B", 10), line("3", "C", 10)],
        {"1": 1, "2": 1, "3": 1},
    ),
    (
        "percent basket scope rounds once",
        [percent(500, scope=epb.DISCOUNT_SCOPE_BASKET)],
        [line("1", "A", 10), line("2", "B", 10), line("3", "C", 10)],
        {"1": 1, "2": 1},
    ),
    ("percent capped per effect", [percent(5000, cap=300)], [line("1", "A", 1000)], {"1": 300}),
    (
        "amount off per basket, pro rata",
        [amount_off(300)],
        [line("1", "A", 1000), line("2", "B", 500)],
        {"1": 200, "2": 100},
    ),
    ("amount off larger than the basket", [amount_off(5000)], [line("1", "A", 1000)], {"1": 1000}),
    (
        "amount off per unit",
        [amount_off(50, BEER, mode=epb.AMOUNT_OFF_MODE_PER_UNIT)],
        [line("1", "BEER", 120, 3)],
        {"1": 150},
    ),
    (
        "amount off per unit, max units",
        [amount_off(50, BEER, mode=epb.AMOUNT_OFF_MODE_PER_UNIT, max_units=2)],
        [line("1", "BEER", 120, 3)],
        {"1": 100},
    ),
    (
        "amount off per unit never above the unit",
        [amount_off(500, BEER, mode=epb.AMOUNT_OFF_MODE_PER_UNIT)],
        [line("1", "BEER", 120, 3)],
        {"1": 360},
    ),
    (
        "fixed price per unit",
        [epb.Effect(fixed_price=epb.FixedPriceEffect(line_filter=BEER, price=money(100)))],
        [line("1", "BEER", 120, 3)],
        {"1": 60},
    ),
    (
        "fixed price leaves cheaper units alone",
        [epb.Effect(fixed_price=epb.FixedPriceEffect(price=money(150)))],
        [line("1", "A", 120), line("2", "B", 200)],
        {"2": 50},
    ),
    (
        "3 for 10.00, dearest units bundled",
        [epb.Effect(fixed_price=epb.FixedPriceEffect(price=money(1000), bundle_quantity=3))],
        [line("1", "A", 400, 2), line("2", "B", 300), line("3", "C", 100)],
        {"1": 73, "2": 27},
    ),
    (
        "buy 2 get 1 free, cheapest free",
        [epb.Effect(buy_x_get_y=epb.BuyXGetYEffect(buy_quantity=2, get_quantity=1, get_discount_bps=10000))],
        [line("1", "A", 300), line("2", "B", 200), line("3", "C", 100)],
        {"3": 100},
    ),
    (
        "buy 2 lemonades, the 3rd free, twice",
        [
            epb.Effect(
                buy_x_get_y=epb.BuyXGetYEffect(
                    buy_filter=lf(skus=["LEM"]), buy_quantity=2, get_quantity=1, get_discount_bps=10000
                )
            )
        ],
        [line("1", "LEM", 150, 7)],
        {"1": 300},
    ),
    (
        "buy X get Y on another filter",
        [
            epb.Effect(
                buy_x_get_y=epb.BuyXGetYEffect(
                    buy_filter=lf(skus=["BED"]),
                    buy_quantity=1,
                    get_filter=lf(skus=["PILLOW"]),
                    get_quantity=2,
                    get_discount_bps=5000,
                )
            )
        ],
        [line("1", "BED", 50000), line("2", "PILLOW", 2000, 3)],
        {"2": 2000},
    ),
    (
        "buy X get Y, max applications",
        [
            epb.Effect(
                buy_x_get_y=epb.BuyXGetYEffect(
                    buy_quantity=1, get_quantity=1, get_discount_bps=10000, max_applications=1
                )
            )
        ],
        [line("1", "A", 100, 4)],
        {"1": 100},
    ),
    (
        "free item in the basket",
        [epb.Effect(free_item=epb.FreeItemEffect(sku="GIFT", quantity=1))],
        [line("1", "A", 1000), line("2", "GIFT", 250, 2)],
        {"2": 250},
    ),
    (
        "every 3rd unit half price",
        [
            epb.Effect(
                every_nth_unit=epb.EveryNthUnitEffect(
                    line_filter=lf(categories=["xxl"]), n=3, discount_bps=5000
                )
            )
        ],
        [line("1", "A", 1000, 2, categories=["xxl"]), line("2", "B", 600, 4, categories=["xxl"])],
        {"2": 600},
    ),
    (
        "cheapest item free",
        [epb.Effect(cheapest_item=epb.CheapestItemEffect(discount_bps=10000))],
        [line("1", "A", 500), line("2", "B", 300), line("3", "C", 300)],
        {"2": 300},
    ),
    (
        "cheapest needs more than one unit",
        [epb.Effect(cheapest_item=epb.CheapestItemEffect(discount_bps=10000))],
        [line("1", "A", 500)],
        {},
    ),
    (
        "tiered spend: 10 % over 100",
        [
            epb.Effect(
                tiered_spend=epb.TieredSpendEffect(
                    tiers=[
                        epb.SpendTier(min_spend=money(10000), percent_bps=1000),
                        epb.SpendTier(min_spend=money(20000), percent_bps=1500),
                    ]
                )
            )
        ],
        [line("1", "A", 15000)],
        {"1": 1500},
    ),
    (
        "tiered spend: 15 % over 200",
        [
            epb.Effect(
                tiered_spend=epb.TieredSpendEffect(
                    tiers=[
                        epb.SpendTier(min_spend=money(10000), percent_bps=1000),
                        epb.SpendTier(min_spend=money(20000), percent_bps=1500),
                    ]
                )
            )
        ],
        [line("1", "A", 25000)],
        {"1": 3750},
    ),
    (
        "tiered spend with an amount",
        [
            epb.Effect(
                tiered_spend=epb.TieredSpendEffect(
                    tiers=[epb.SpendTier(min_spend=money(5000), amount_off=money(500))]
                )
            )
        ],
        [line("1", "A", 3000), line("2", "B", 3000)],
        {"1": 250, "2": 250},
    ),
    (
        "free shipping",
        [epb.Effect(shipping=epb.ShippingDiscountEffect(percent_bps=10000))],
        [line("1", "A", 3000), line("2", "SHIP", 495, categories=["shipping"])],
        {"2": 495},
    ),
    (
        "a basket percentage skips the shipping line",
        [percent(1000)],
        [line("1", "A", 3000), line("2", "SHIP", 495, categories=["shipping"])],
        {"1": 300},
    ),
    (
        "formula: half the margin",
        [epb.Effect(formula=epb.FormulaDiscountEffect(cel="line.attributes.margin / 2"))],
        [line("1", "A", 1000, margin=300), line("2", "B", 500, margin=101)],
        {"1": 150, "2": 50},
    ),
    (
        "formula clamped to the line",
        [epb.Effect(formula=epb.FormulaDiscountEffect(cel="line.remaining * 3"))],
        [line("1", "A", 100)],
        {"1": 100},
    ),
    (
        "excluded lines get nothing",
        [percent(5000)],
        [line("1", "TOBACCO", 1000, excluded=True), line("2", "B", 100)],
        {"2": 50},
    ),
    (
        "a weighed line counts as one unit",
        [amount_off(10, mode=epb.AMOUNT_OFF_MODE_PER_UNIT)],
        [line("1", "CHEESE", 2345, milli=1500, total=3518)],
        {"1": 10},
    ),
]


@pytest.mark.parametrize(("effects", "lines", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_effect(effects, lines, expected):
    evaluation = run([campaign("c", promo("p", *effects))], basket(*lines))
    assert discounts(evaluation) == expected
    assert evaluation.discount == sum(expected.values())


def test_free_item_not_in_the_basket_is_returned_for_the_till():
    evaluation = run(
        [
            campaign(
                "c",
                promo(
                    "p",
                    epb.Effect(free_item=epb.FreeItemEffect(sku="GIFT", quantity=2, display_name="Tote bag")),
                ),
            )
        ],
        basket(line("1", "A", 1000), line("2", "GIFT", 250)),
    )
    assert discounts(evaluation) == {"2": 250}
    assert [(f.sku, f.quantity, f.display_name) for f in evaluation.free_items] == [("GIFT", 1, "Tote bag")]


def test_the_free_unit_is_reported_with_its_quantity():
    evaluation = run(
        [
            campaign(
                "c",
                promo(
                    "p",
                    epb.Effect(
                        buy_x_get_y=epb.BuyXGetYEffect(buy_quantity=2, get_quantity=1, get_discount_bps=10000)
                    ),
                ),
            )
        ],
        basket(line("1", "A", 100, 3)),
    )
    (discount,) = evaluation.lines[0].discounts
    assert (discount.amount, discount.quantity, discount.promotion_id) == (100, 1, "p")


def test_a_formula_failing_at_run_time_does_not_apply_and_says_why():
    evaluation = run(
        [
            campaign(
                "c",
                promo(
                    "p",
                    epb.Effect(
                        formula=epb.FormulaDiscountEffect(cel="line.line_total / (line.quantity - 1)")
                    ),
                ),
            )
        ],
        basket(line("1", "A", 1000)),
    )
    assert evaluation.discount == 0
    assert [(c.promotion_id, c.reason) for c in evaluation.candidates] == [("p", 321)]


def test_effects_of_one_promotion_apply_in_order_on_what_is_left():
    evaluation = run(
        [campaign("c", promo("p", amount_off(100), percent(1000)))], basket(line("1", "A", 1000))
    )
    assert discounts(evaluation) == {"1": 190}


def test_a_second_percentage_on_the_original_price_when_the_tenant_says_so():
    two = [
        campaign("a", promo("p1", percent(1000)), priority=2),
        campaign("b", promo("p2", percent(1000)), priority=1),
    ]
    assert run(two, basket(line("1", "A", 1000))).discount == 190
    assert run(two, basket(line("1", "A", 1000)), config=settings(discount_base=2)).discount == 200
