"""Points as payment: clamped to the request, the balance, the policy's share and step, refused
below the minimum; the value never exceeds what the points are worth, and the lines' shares add
up exactly (hypothesis), after promotions and never on excluded lines."""

from hypothesis import given, strategies as st

from loyalty.common.v1 import errors_pb2 as err
from loyalty.promotion.v1 import earning_pb2, settings_pb2
from loyalty_promotion.engine import CustomerContext, compile_catalog, encode_evaluation, evaluate
from tests.unit.promotion.builders import NOW, basket, campaign, line, money, percent, promo

BUYER = CustomerContext(customer_id="c1", program_id="p1", points_balance=100_000)


def catalog(campaigns=(), **policy):
    policy.setdefault("values", [earning_pb2.PointsValue(points=100, value=money(100))])
    burn = earning_pb2.BurnPolicy(program_id="p1", enabled=True, **policy)
    return compile_catalog(list(campaigns), settings_pb2.PromotionSettings(), burn_policies=[burn])


def test_burning_pays_what_promotions_left_and_skips_excluded_lines():
    cat = catalog([campaign("c", promo("p", percent(5000)))])
    cart = basket(line("l0", "A", 1000), line("l1", "GIFT", 5000, excluded=True))
    result = encode_evaluation(evaluate(cat, cart, BUYER, [], NOW, points_to_burn=10_000))
    assert (result.points_burn.applied_points, result.points_burn.reason) == (
        500,
        err.ERROR_REASON_INVALID_AMOUNT,
    )
    assert [line.points_burned for line in result.lines] == [500, 0]
    assert result.total_payable.amount_minor == 5000


def test_below_the_minimum_nothing_is_burned_and_anonymous_baskets_burn_nothing():
    cat = catalog(min_points=500)
    cart = basket(line("l0", "A", 1000))
    small = evaluate(cat, cart, BUYER, [], NOW, points_to_burn=400).burn
    assert (small.points, small.reason) == (0, err.ERROR_REASON_INVALID_AMOUNT)
    anonymous = evaluate(cat, cart, CustomerContext(), [], NOW, points_to_burn=400).burn
    assert anonymous.points == 0
    assert evaluate(cat, cart, BUYER, [], NOW).burn.points == 0


@given(
    prices=st.lists(st.integers(0, 5000), min_size=1, max_size=6),
    requested=st.integers(0, 20_000),
    balance=st.integers(0, 20_000),
    step=st.integers(0, 300),
    share=st.integers(0, 10_000),
    rate=st.tuples(st.integers(1, 500), st.integers(1, 300)),
)
def test_a_burn_never_overpays_and_its_lines_add_up(prices, requested, balance, step, share, rate):
    cat = catalog(
        values=[earning_pb2.PointsValue(points=rate[0], value=money(rate[1]))],
        step_points=step,
        max_basket_share_bps=share,
    )
    cart = basket(*[line(f"l{i}", f"S{i}", p) for i, p in enumerate(prices)])
    customer = CustomerContext(customer_id="c1", program_id="p1", points_balance=balance)
    evaluation = evaluate(cat, cart, customer, [], NOW, points_to_burn=requested)
    burn = evaluation.burn
    assert burn.points <= min(requested, balance) and burn.points % max(1, step) == 0
    assert burn.value * rate[0] <= burn.points * rate[1]
    assert burn.value <= (sum(prices) * share // 10_000 if share else sum(prices))
    assert sum(p for p, _ in burn.by_line.values()) == burn.points
    assert sum(v for _, v in burn.by_line.values()) == burn.value
    result = encode_evaluation(evaluation)
    assert (
        sum(line.discount_total.amount_minor for line in result.lines) == result.total_discount.amount_minor
    )
    assert all(line.final_total.amount_minor >= 0 for line in result.lines)
