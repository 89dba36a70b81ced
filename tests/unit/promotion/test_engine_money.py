"""Rounding modes, allocation edges and currency exponents."""

import pytest

from loyalty.promotion.v1 import effect_pb2 as epb, settings_pb2 as spb
from loyalty_promotion.engine.money import allocate, exponent, format_amount, round_div
from tests.unit.promotion.builders import (
    amount_off,
    basket,
    campaign,
    discounts,
    line,
    percent,
    promo,
    run,
    settings,
)


@pytest.mark.parametrize(
    ("num", "den", "mode", "expected"),
    [
        (25, 10, spb.ROUNDING_MODE_HALF_UP, 3),
        (25, 10, spb.ROUNDING_MODE_HALF_EVEN, 2),
        (35, 10, spb.ROUNDING_MODE_HALF_EVEN, 4),
        (29, 10, spb.ROUNDING_MODE_TRUNCATE, 2),
        (29, 10, spb.ROUNDING_MODE_FLOOR, 2),
        (21, 10, spb.ROUNDING_MODE_CEILING, 3),
        (24, 10, spb.ROUNDING_MODE_HALF_UP, 2),
        (26, 10, spb.ROUNDING_MODE_HALF_EVEN, 3),
        (30, 10, spb.ROUNDING_MODE_CEILING, 3),
        (25, 10, spb.ROUNDING_MODE_UNSPECIFIED, 3),  # default: half up
    ],
)
def test_rounding(num, den, mode, expected):
    assert round_div(num, den, mode) == expected


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        (1, [100, 100, 100], [1, 0, 0]),  # one minor unit over three equal lines: the first line
        (2, [100, 100, 100], [1, 1, 0]),
        (100, [1, 1, 1], [34, 33, 33]),
        (10, [1, 2, 7], [1, 2, 7]),
        (5, [0, 0], [5, 0]),
        (7, [3, 0, 4], [3, 0, 4]),
        (1, [1, 2], [0, 1]),  # the larger remainder wins
    ],
)
def test_allocation(total, weights, expected):
    assert allocate(total, weights) == expected
    assert sum(allocate(total, weights)) == total


def test_one_minor_unit_over_three_lines_in_a_basket():
    evaluation = run(
        [campaign("c", promo("p", amount_off(1)))],
        basket(line("1", "A", 100), line("2", "B", 100), line("3", "C", 100)),
    )
    assert discounts(evaluation) == {"1": 1}


def test_tenant_rounding_mode_decides_a_half_cent():
    one = basket(line("1", "A", 25))
    assert run([campaign("c", promo("p", percent(1000)))], one).discount == 3  # 2.5 -> 3
    assert (
        run(
            [campaign("c", promo("p", percent(1000)))],
            one,
            config=settings(discount_rounding=spb.ROUNDING_MODE_HALF_EVEN),
        ).discount
        == 2
    )
    assert (
        run(
            [campaign("c", promo("p", percent(1000)))],
            one,
            config=settings(discount_rounding=spb.ROUNDING_MODE_TRUNCATE),
        ).discount
        == 2
    )


def test_per_line_or_per_promotion_rounding_is_a_tenant_default():
    lines = basket(line("1", "A", 15), line("2", "B", 15))
    assert run([campaign("c", promo("p", percent(1000)))], lines).discount == 3  # 10 % of 30
    per_line = settings(default_discount_scope=epb.DISCOUNT_SCOPE_LINE)
    assert run([campaign("c", promo("p", percent(1000)))], lines, config=per_line).discount == 4  # 2 + 2


def test_a_discount_larger_than_the_line_stops_at_zero():
    evaluation = run(
        [campaign("c", promo("p", amount_off(700, mode=epb.AMOUNT_OFF_MODE_PER_UNIT)))],
        basket(line("1", "A", 500, 2)),
    )
    assert evaluation.lines[0].final_total == 0 and evaluation.discount == 1000


@pytest.mark.parametrize(
    ("currency", "price", "discount"),
    [("JPY", 1005, 101), ("BHD", 1005, 101), ("EUR", 1005, 101), ("KWD", 7, 1)],
)
def test_zero_and_three_decimal_currencies(currency, price, discount):
    evaluation = run(
        [campaign("c", promo("p", percent(1000)))],
        basket(line("1", "A", price, currency=currency), currency=currency),
    )
    assert evaluation.discount == discount


def test_exponents_and_formats():
    assert (exponent("EUR"), exponent("JPY"), exponent("BHD"), exponent("XXX"), exponent("EURO")) == (
        2,
        0,
        3,
        None,
        None,
    )
    assert format_amount(1250, "EUR") == "12.50 EUR"
    assert format_amount(1250, "JPY") == "1250 JPY"
    assert format_amount(1250, "BHD") == "1.250 BHD"
