"""Properties over random baskets and a fixed mix of promotions: discounts never negative and never
above the basket or a line, allocations exact, points allocated exactly, evaluation
deterministic, and adding an item never removes a discount the basket already had — except
under the documented rules that can (RULES.md: exclusivity and best-for-customer re-selection,
max promotions per basket, basket ceiling, one-per-line, "cheapest" effects moving to the new
unit), which this catalog leaves out on purpose."""

from hypothesis import given, settings as hsettings, strategies as st

from loyalty.promotion.v1 import condition_pb2 as cpb, effect_pb2 as epb
from loyalty_promotion.engine import PresentedCode, compile_catalog, evaluate
from tests.unit.promotion.builders import (
    CUSTOMER,
    NOW,
    amount_off,
    basket,
    campaign,
    earning_rule,
    lf,
    line,
    money,
    percent,
    promo,
    settings,
)

SKUS = ["A", "B", "C", "LEM", "OIL"]
MONOTONE = [
    campaign("pct", promo("p", percent(1000, lf(skus=["A", "B"])))),
    campaign("amt", promo("a", amount_off(250, lf(skus=["C"]), mode=epb.AMOUNT_OFF_MODE_PER_UNIT))),
    campaign(
        "spend",
        promo(
            "s",
            percent(500),
            condition=cpb.Condition(basket_subtotal=cpb.BasketSubtotalCondition(min_subtotal=money(3000))),
        ),
    ),
    campaign("pts", promo("x", epb.Effect(points_bonus=epb.PointsBonusEffect(fixed_points=50)))),
]
MIXED = [
    *MONOTONE,
    campaign(
        "bogo",
        promo(
            "b",
            epb.Effect(
                buy_x_get_y=epb.BuyXGetYEffect(
                    buy_filter=lf(skus=["LEM"]), buy_quantity=2, get_quantity=1, get_discount_bps=10000
                )
            ),
        ),
    ),
    campaign("cheap", promo("c", epb.Effect(cheapest_item=epb.CheapestItemEffect(discount_bps=5000)))),
    campaign(
        "bundle",
        promo(
            "f",
            epb.Effect(
                fixed_price=epb.FixedPriceEffect(
                    line_filter=lf(skus=["OIL"]), price=money(999), bundle_quantity=2
                )
            ),
        ),
    ),
    campaign(
        "excl",
        promo(
            "e",
            percent(3000),
            condition=cpb.Condition(line_quantity=cpb.LineQuantityCondition(min_quantity=6)),
        ),
        mode=2,
    ),
    campaign("big", promo("g", amount_off(100000))),
]
RULES = [earning_rule()]
CATALOG = compile_catalog(MIXED, settings(), earning_rules=RULES)
MONOTONE_CATALOG = compile_catalog(MONOTONE, settings(), earning_rules=RULES)

lines_strategy = st.lists(
    st.tuples(st.sampled_from(SKUS), st.integers(0, 5000), st.integers(1, 5)), min_size=1, max_size=8
)


def build(items):
    return basket(*[line(str(i), sku, price, qty) for i, (sku, price, qty) in enumerate(items)])


@hsettings(max_examples=150, deadline=None)
@given(lines_strategy)
def test_discounts_are_bounded_and_allocations_exact(items):
    the_basket = build(items)
    evaluation = evaluate(CATALOG, the_basket, CUSTOMER, [], NOW)
    assert 0 <= evaluation.discount <= the_basket.subtotal
    assert sum(ln.discount_total for ln in evaluation.lines) == evaluation.discount
    for outcome in evaluation.lines:
        assert 0 <= outcome.discount_total <= outcome.line_total
        assert all(d.amount > 0 for d in outcome.discounts)
    assert sum(a.discount for a in evaluation.applied) == evaluation.discount
    assert sum(ln.points for ln in evaluation.lines) == evaluation.points_total
    for entry in evaluation.points:
        assert sum(entry.by_line.values()) == entry.points >= 0


@hsettings(max_examples=60, deadline=None)
@given(lines_strategy)
def test_evaluation_is_deterministic(items):
    the_basket = build(items)
    assert evaluate(CATALOG, the_basket, CUSTOMER, [PresentedCode("X", rejection=300)], NOW) == evaluate(
        CATALOG, the_basket, CUSTOMER, [PresentedCode("X", rejection=300)], NOW
    )
    reordered = compile_catalog(list(reversed(MIXED)), settings(), earning_rules=RULES)
    assert (
        evaluate(reordered, the_basket, CUSTOMER, [], NOW).lines
        == evaluate(CATALOG, the_basket, CUSTOMER, [], NOW).lines
    )


@hsettings(max_examples=150, deadline=None)
@given(lines_strategy, st.tuples(st.sampled_from(SKUS), st.integers(0, 5000), st.integers(1, 5)))
def test_adding_an_item_never_removes_a_discount(items, extra):
    before = evaluate(MONOTONE_CATALOG, build(items), CUSTOMER, [], NOW)
    after = evaluate(MONOTONE_CATALOG, build([*items, extra]), CUSTOMER, [], NOW)
    had = {(a.campaign_id, a.promotion_id) for a in before.applied}
    assert had <= {(a.campaign_id, a.promotion_id) for a in after.applied}
    # Per promotion the discount never shrinks; per line, allocation may move a minor unit.
    gave_after = {a.promotion_id: a.discount for a in after.applied}
    for applied in before.applied:
        assert gave_after[applied.promotion_id] >= applied.discount
    assert after.discount >= before.discount
