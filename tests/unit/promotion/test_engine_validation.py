"""Campaigns that cannot work are refused with field violations; bad baskets name the line."""

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.common.v1 import basket_pb2
from loyalty.promotion.v1 import condition_pb2 as cpb, effect_pb2 as epb, schedule_pb2
from loyalty_promotion.engine import (
    MAX_LINES,
    BasketInvalid,
    compile_catalog,
    decode_basket,
    validate_basket,
    validate_campaign,
)
from tests.unit.promotion.builders import campaign, line, money, percent, promo, settings


def deep(levels):
    node = cpb.Condition(first_purchase=cpb.FirstPurchaseCondition())
    for _ in range(levels - 1):
        node = cpb.Condition(negation=cpb.NotCondition(condition=node))
    return node


def window(start_seconds, end_seconds):
    return schedule_pb2.Schedule(
        start_time=Timestamp(seconds=start_seconds), end_time=Timestamp(seconds=end_seconds)
    )


CASES = [
    ("unknown effect", campaign("c", promo("p", epb.Effect())), "promotions[0].effects[0]", 322),
    ("no effect", campaign("c", promo("p")), "promotions[0].effects", 322),
    (
        "percent above 100 %",
        campaign("c", promo("p", percent(10001))),
        "promotions[0].effects[0].percent_off.percent_bps",
        323,
    ),
    (
        "percent zero",
        campaign("c", promo("p", percent(0))),
        "promotions[0].effects[0].percent_off.percent_bps",
        323,
    ),
    (
        "cel does not compile",
        campaign(
            "c",
            promo(
                "p",
                percent(10),
                condition=cpb.Condition(expression=cpb.ExpressionCondition(cel="basket.subtotal >")),
            ),
        ),
        "promotions[0].condition.expression.cel",
        320,
    ),
    (
        "cel unknown field",
        campaign(
            "c",
            promo(
                "p",
                percent(10),
                condition=cpb.Condition(expression=cpb.ExpressionCondition(cel="basket.total > 5")),
            ),
        ),
        "promotions[0].condition.expression.cel",
        320,
    ),
    (
        "cel unknown variable",
        campaign(
            "c",
            promo(
                "p",
                percent(10),
                condition=cpb.Condition(expression=cpb.ExpressionCondition(cel="order.total > 5")),
            ),
        ),
        "promotions[0].condition.expression.cel",
        320,
    ),
    (
        "cel condition not a bool",
        campaign(
            "c",
            promo(
                "p",
                percent(10),
                condition=cpb.Condition(expression=cpb.ExpressionCondition(cel="basket.subtotal")),
            ),
        ),
        "promotions[0].condition.expression.cel",
        320,
    ),
    (
        "formula not a number",
        campaign("c", promo("p", epb.Effect(formula=epb.FormulaDiscountEffect(cel="line.sku")))),
        "promotions[0].effects[0].formula.cel",
        320,
    ),
    (
        "window ends before it starts",
        campaign("c", promo("p", percent(10)), schedule=window(2000, 1000)),
        "schedule.end_time",
        324,
    ),
    (
        "recurring window empty",
        campaign(
            "c",
            promo(
                "p",
                percent(10),
                condition=cpb.Condition(
                    time_window=cpb.TimeWindowCondition(
                        windows=[schedule_pb2.RecurringWindow(start_minute=600, end_minute=600)]
                    )
                ),
            ),
        ),
        "promotions[0].condition.time_window.windows[0]",
        324,
    ),
    (
        "unknown time zone",
        campaign(
            "c",
            promo(
                "p",
                percent(10),
                condition=cpb.Condition(
                    time_window=cpb.TimeWindowCondition(
                        windows=[schedule_pb2.RecurringWindow(start_minute=1, end_minute=60)],
                        time_zone="Mars/Olympus",
                    )
                ),
            ),
        ),
        "promotions[0].condition.time_window.time_zone",
        324,
    ),
    (
        "bogo without reward",
        campaign(
            "c",
            promo("p", epb.Effect(buy_x_get_y=epb.BuyXGetYEffect(buy_quantity=2, get_discount_bps=10000))),
        ),
        "promotions[0].effects[0].buy_x_get_y.get_quantity",
        325,
    ),
    (
        "bogo without discount",
        campaign("c", promo("p", epb.Effect(buy_x_get_y=epb.BuyXGetYEffect(buy_quantity=2, get_quantity=1)))),
        "promotions[0].effects[0].buy_x_get_y.get_discount_bps",
        325,
    ),
    (
        "free item without sku",
        campaign("c", promo("p", epb.Effect(free_item=epb.FreeItemEffect(quantity=1)))),
        "promotions[0].effects[0].free_item.sku",
        325,
    ),
    (
        "tree too deep",
        campaign("c", promo("p", percent(10), condition=deep(9))),
        "promotions[0].condition",
        326,
    ),
    (
        "amount in an unknown currency",
        campaign("c", promo("p", epb.Effect(amount_off=epb.AmountOffEffect(amount=money(5, "EURO"))))),
        "promotions[0].effects[0].amount_off.amount.currency_code",
        329,
    ),
    (
        "negative amount",
        campaign("c", promo("p", epb.Effect(amount_off=epb.AmountOffEffect(amount=money(-5))))),
        "promotions[0].effects[0].amount_off.amount.amount_minor",
        327,
    ),
    (
        "every nth needs n of 2 or more",
        campaign("c", promo("p", epb.Effect(every_nth_unit=epb.EveryNthUnitEffect(n=1, discount_bps=10)))),
        "promotions[0].effects[0].every_nth_unit.n",
        325,
    ),
    (
        "points without an award",
        campaign("c", promo("p", epb.Effect(points_bonus=epb.PointsBonusEffect()))),
        "promotions[0].effects[0].points_bonus",
        325,
    ),
    (
        "tier with both percent and amount",
        campaign(
            "c",
            promo(
                "p",
                epb.Effect(
                    tiered_spend=epb.TieredSpendEffect(
                        tiers=[epb.SpendTier(min_spend=money(1), percent_bps=10, amount_off=money(1))]
                    )
                ),
            ),
        ),
        "promotions[0].effects[0].tiered_spend.tiers[0]",
        327,
    ),
    (
        "audience checked too",
        campaign("c", promo("p", percent(10)), audience=cpb.Condition()),
        "audience",
        322,
    ),
]


@pytest.mark.parametrize(("item", "field", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_campaign_violation(item, field, reason):
    violations = validate_campaign(item)
    assert [(v.field, v.reason) for v in violations] == [(field, reason)], violations
    assert all(v.description for v in violations)
    catalog = compile_catalog([item], settings())
    assert item.campaign.campaign_id in catalog.rejected and not catalog.campaigns


def test_a_deep_tree_at_the_limit_is_fine():
    assert validate_campaign(campaign("c", promo("p", percent(10), condition=deep(8)))) == []


def raw(*lines, currency="EUR"):
    return basket_pb2.Basket(currency_code=currency, lines=list(lines))


BASKET_CASES = [
    ("negative quantity", raw(line("1", "A", 100, -1, total=-100)), "basket.lines[0].quantity", 328),
    (
        "negative price",
        raw(line("1", "A", 100), line("2", "B", -5)),
        "basket.lines[1].unit_price.amount_minor",
        328,
    ),
    (
        "unknown currency",
        raw(line("1", "A", 100, currency="XYZ"), currency="XYZ"),
        "basket.currency_code",
        329,
    ),
    (
        "mixed currency",
        raw(line("1", "A", 100), line("2", "B", 100, currency="USD")),
        "basket.lines[1].unit_price.currency_code",
        330,
    ),
    ("duplicate line id", raw(line("1", "A", 100), line("1", "B", 100)), "basket.lines[1].line_id", 328),
    ("total not price x quantity", raw(line("1", "A", 100, 2, total=150)), "basket.lines[0].line_total", 328),
    ("too many lines", raw(*[line(str(i), "A", 1) for i in range(MAX_LINES + 1)]), "basket.lines", 331),
]


@pytest.mark.parametrize(
    ("message", "field", "reason"), [c[1:] for c in BASKET_CASES], ids=[c[0] for c in BASKET_CASES]
)
def test_basket_violation(message, field, reason):
    violations = validate_basket(message)
    assert (field, reason) in [(v.field, v.reason) for v in violations], violations
    with pytest.raises(BasketInvalid) as raised:
        decode_basket(message)
    assert raised.value.violations == violations


def test_a_good_basket_has_no_violation():
    assert validate_basket(raw(line("1", "A", 100, 3), line("2", "CHEESE", 1999, milli=250, total=500))) == []


def _scheduled(start: str, end: str, *windows, zone: str = "") -> list:
    from datetime import datetime

    from google.protobuf import timestamp_pb2

    from loyalty.promotion.v1 import schedule_pb2

    schedule = schedule_pb2.Schedule(time_zone=zone, recurring_windows=list(windows))
    schedule.start_time.CopyFrom(
        timestamp_pb2.Timestamp(seconds=int(datetime.fromisoformat(start).timestamp()))
    )
    schedule.end_time.CopyFrom(timestamp_pb2.Timestamp(seconds=int(datetime.fromisoformat(end).timestamp())))
    from loyalty_promotion.engine.validation import _schedule

    found = []
    _schedule(schedule, "schedule", found)
    return [(v.field, v.reason) for v in found]


def test_recurring_windows_that_never_fall_inside_the_range_are_refused():
    from loyalty.common.v1 import errors_pb2 as err
    from loyalty.promotion.v1 import schedule_pb2

    friday_evening = schedule_pb2.RecurringWindow(days=[5], start_minute=17 * 60, end_minute=19 * 60)
    # Monday 2026-12-07 10:00-12:00 Berlin: no Friday in it.
    never = _scheduled(
        "2026-12-07T10:00:00+01:00", "2026-12-07T12:00:00+01:00", friday_evening, zone="Europe/Berlin"
    )
    assert never == [("schedule.recurring_windows", err.ERROR_REASON_INVALID_WINDOW)]
    # Friday 18:00-18:30 Berlin meets the window; so does a range of 8 days or more.
    assert (
        _scheduled(
            "2026-12-11T18:00:00+01:00", "2026-12-11T18:30:00+01:00", friday_evening, zone="Europe/Berlin"
        )
        == []
    )
    assert _scheduled("2026-12-07T00:00:00+00:00", "2026-12-15T00:00:00+00:00", friday_evening) == []
    # Without a zone, any zone counts: Friday 04:00 UTC is Friday 18:00 at UTC+14.
    assert _scheduled("2026-12-11T04:00:00+00:00", "2026-12-11T05:00:00+00:00", friday_evening) == []
    # A window crossing midnight counts on the day after too (Fri 22:00 - Sat 02:00).
    late = schedule_pb2.RecurringWindow(days=[5], start_minute=22 * 60, end_minute=120)
    assert _scheduled("2026-12-12T01:00:00+00:00", "2026-12-12T01:30:00+00:00", late, zone="UTC") == []
    assert _scheduled("2026-12-12T03:00:00+00:00", "2026-12-12T04:00:00+00:00", late, zone="UTC") != []


def test_a_window_ending_before_it_starts_is_refused():
    from loyalty.common.v1 import errors_pb2 as err

    assert _scheduled("2026-12-07T10:00:00+00:00", "2026-12-07T09:00:00+00:00") == [
        ("schedule.end_time", err.ERROR_REASON_INVALID_WINDOW)
    ]
