"""Every condition leaf, table-driven, plus AND / OR / NOT, time zones and DST boundaries."""

from datetime import UTC, date, datetime

import pytest

from loyalty.common.v1 import basket_pb2, date_pb2
from loyalty.promotion.v1 import condition_pb2 as cpb, schedule_pb2
from loyalty_promotion.engine import CustomerContext
from tests.unit.promotion.builders import (
    CUSTOMER,
    NOW,
    basket,
    campaign,
    lf,
    line,
    money,
    percent,
    promo,
    run,
)

ANON = CustomerContext()


def applies(condition, the_basket=None, customer=CUSTOMER, now=NOW, codes=(), tz="UTC", code_campaign=False):
    the_basket = the_basket or basket(line("1", "A", 1000, 2, categories=["oil"], brand="acme"))
    evaluation = run(
        [campaign("c", promo("p", percent(1000), condition=condition), code=code_campaign)],
        the_basket,
        customer=customer,
        now=now,
        codes=codes,
        tz=tz,
    )
    return evaluation.discount > 0


def window(start, end, *days):
    return cpb.Condition(
        time_window=cpb.TimeWindowCondition(
            windows=[schedule_pb2.RecurringWindow(days=list(days), start_minute=start, end_minute=end)],
            time_zone="Europe/Berlin",
        )
    )


def attr(name, operator, **value):
    return cpb.Condition(
        customer_attribute=cpb.CustomerAttributeCondition(
            attribute=name, operator=operator, value=cpb.AttributeValue(**value)
        )
    )


WITH_ATTRS = CustomerContext(
    customer_id="c1",
    attributes={"age": 34, "city": "Berlin", "newsletter": True, "score": 7.5},
    birth_date=date(1990, 2, 14),
)

CASES = [
    ("no condition", None, {}, True),
    (
        "subtotal reached",
        cpb.Condition(basket_subtotal=cpb.BasketSubtotalCondition(min_subtotal=money(2000))),
        {},
        True,
    ),
    (
        "subtotal missed",
        cpb.Condition(basket_subtotal=cpb.BasketSubtotalCondition(min_subtotal=money(2001))),
        {},
        False,
    ),
    (
        "subtotal over the maximum",
        cpb.Condition(basket_subtotal=cpb.BasketSubtotalCondition(max_subtotal=money(1999))),
        {},
        False,
    ),
    (
        "subtotal in another currency never holds",
        cpb.Condition(basket_subtotal=cpb.BasketSubtotalCondition(min_subtotal=money(1, "USD"))),
        {},
        False,
    ),
    (
        "quantity of a category",
        cpb.Condition(
            line_quantity=cpb.LineQuantityCondition(line_filter=lf(categories=["oil"]), min_quantity=2)
        ),
        {},
        True,
    ),
    (
        "quantity short",
        cpb.Condition(
            line_quantity=cpb.LineQuantityCondition(line_filter=lf(brands=["acme"]), min_quantity=3)
        ),
        {},
        False,
    ),
    (
        "spend on a sku",
        cpb.Condition(line_spend=cpb.LineSpendCondition(line_filter=lf(skus=["A"]), min_spend=money(2000))),
        {},
        True,
    ),
    (
        "spend on an excluded sku",
        cpb.Condition(
            line_spend=cpb.LineSpendCondition(line_filter=lf(excluded_skus=["A"]), min_spend=money(1))
        ),
        {},
        False,
    ),
    ("segment any", cpb.Condition(customer_segment=cpb.SegmentCondition(segment_ids=["x", "vip"])), {}, True),
    (
        "segment all",
        cpb.Condition(
            customer_segment=cpb.SegmentCondition(segment_ids=["x", "vip"], match=cpb.SEGMENT_MATCH_ALL)
        ),
        {},
        False,
    ),
    (
        "segment none",
        cpb.Condition(customer_segment=cpb.SegmentCondition(segment_ids=["x"], match=cpb.SEGMENT_MATCH_NONE)),
        {},
        True,
    ),
    (
        "segment any, anonymous",
        cpb.Condition(customer_segment=cpb.SegmentCondition(segment_ids=["vip"])),
        {"customer": ANON},
        False,
    ),
    ("tier", cpb.Condition(tier=cpb.TierCondition(tier_ids=["gold"])), {}, True),
    ("tier, anonymous", cpb.Condition(tier=cpb.TierCondition(tier_ids=[""])), {"customer": ANON}, False),
    ("channel", cpb.Condition(channel=cpb.ChannelCondition(channels=[basket_pb2.CHANNEL_WEB])), {}, False),
    ("store", cpb.Condition(store=cpb.StoreCondition(store_ids=["s1"])), {}, True),
    (
        "first purchase, returning customer",
        cpb.Condition(first_purchase=cpb.FirstPurchaseCondition()),
        {},
        False,
    ),
    (
        "first purchase",
        cpb.Condition(first_purchase=cpb.FirstPurchaseCondition()),
        {"customer": CustomerContext(customer_id="n")},
        True,
    ),
    (
        "first purchase, anonymous",
        cpb.Condition(first_purchase=cpb.FirstPurchaseCondition()),
        {"customer": ANON},
        False,
    ),
    (
        "attribute int >=",
        attr("age", cpb.ATTRIBUTE_OPERATOR_GREATER_OR_EQUAL, int_value=30),
        {"customer": WITH_ATTRS},
        True,
    ),
    (
        "attribute int <",
        attr("age", cpb.ATTRIBUTE_OPERATOR_LESS_THAN, int_value=30),
        {"customer": WITH_ATTRS},
        False,
    ),
    (
        "attribute double vs int",
        attr("score", cpb.ATTRIBUTE_OPERATOR_GREATER_THAN, int_value=7),
        {"customer": WITH_ATTRS},
        True,
    ),
    (
        "attribute string equals",
        attr("city", cpb.ATTRIBUTE_OPERATOR_EQUALS, string_value="Berlin"),
        {"customer": WITH_ATTRS},
        True,
    ),
    (
        "attribute bool",
        attr("newsletter", cpb.ATTRIBUTE_OPERATOR_EQUALS, bool_value=True),
        {"customer": WITH_ATTRS},
        True,
    ),
    (
        "attribute type mismatch",
        attr("city", cpb.ATTRIBUTE_OPERATOR_EQUALS, int_value=1),
        {"customer": WITH_ATTRS},
        False,
    ),
    (
        "attribute missing",
        attr("pets", cpb.ATTRIBUTE_OPERATOR_EQUALS, int_value=1),
        {"customer": WITH_ATTRS},
        False,
    ),
    (
        "attribute missing, not equals",
        attr("pets", cpb.ATTRIBUTE_OPERATOR_NOT_EQUALS, int_value=1),
        {"customer": WITH_ATTRS},
        True,
    ),
    ("attribute is set", attr("city", cpb.ATTRIBUTE_OPERATOR_IS_SET), {"customer": WITH_ATTRS}, True),
    (
        "attribute in",
        cpb.Condition(
            customer_attribute=cpb.CustomerAttributeCondition(
                attribute="city",
                operator=cpb.ATTRIBUTE_OPERATOR_IN,
                values=[cpb.AttributeValue(string_value="Paris"), cpb.AttributeValue(string_value="Berlin")],
            )
        ),
        {"customer": WITH_ATTRS},
        True,
    ),
    (
        "attribute date",
        attr("since", cpb.ATTRIBUTE_OPERATOR_LESS_THAN, date_value=date_pb2.Date(year=2020, month=1, day=1)),
        {"customer": CustomerContext(customer_id="c", attributes={"since": date(2019, 5, 1)})},
        True,
    ),
    (
        "birthday within 4 days",
        cpb.Condition(birthday=cpb.BirthdayCondition(within_days=4)),
        {"customer": WITH_ATTRS},
        True,
    ),
    (
        "birthday within 3 days",
        cpb.Condition(birthday=cpb.BirthdayCondition(within_days=3)),
        {"customer": WITH_ATTRS},
        False,
    ),
    (
        "code present",
        cpb.Condition(code_present=cpb.CodePresentCondition(codes=["SPRING"])),
        {"codes": [("SPRING", "c")]},
        True,
    ),
    ("code absent", cpb.Condition(code_present=cpb.CodePresentCondition(codes=["SPRING"])), {}, False),
    (
        "cel",
        cpb.Condition(
            expression=cpb.ExpressionCondition(cel='basket.subtotal >= 2000 && customer.tier == "gold"')
        ),
        {},
        True,
    ),
    (
        "cel over lines",
        cpb.Condition(
            expression=cpb.ExpressionCondition(cel='lines.exists(l, "oil" in l.categories && l.quantity > 2)')
        ),
        {},
        False,
    ),
    (
        "cel over attributes",
        cpb.Condition(expression=cpb.ExpressionCondition(cel="customer.attributes.age > 30")),
        {"customer": WITH_ATTRS},
        True,
    ),
    (
        "and",
        cpb.Condition(
            all_of=cpb.ConditionList(
                conditions=[
                    cpb.Condition(store=cpb.StoreCondition(store_ids=["s1"])),
                    cpb.Condition(tier=cpb.TierCondition(tier_ids=["silver"])),
                ]
            )
        ),
        {},
        False,
    ),
    (
        "or",
        cpb.Condition(
            any_of=cpb.ConditionList(
                conditions=[
                    cpb.Condition(store=cpb.StoreCondition(store_ids=["s9"])),
                    cpb.Condition(tier=cpb.TierCondition(tier_ids=["gold"])),
                ]
            )
        ),
        {},
        True,
    ),
    (
        "not",
        cpb.Condition(
            negation=cpb.NotCondition(condition=cpb.Condition(first_purchase=cpb.FirstPurchaseCondition()))
        ),
        {},
        True,
    ),
    ("empty or is false", cpb.Condition(any_of=cpb.ConditionList()), {}, False),
]


@pytest.mark.parametrize(
    ("condition", "kwargs", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_condition(condition, kwargs, expected):
    assert applies(condition, **kwargs) is expected


def berlin(*args):
    from zoneinfo import ZoneInfo

    return datetime(*args, tzinfo=ZoneInfo("Europe/Berlin"))


FRIDAY = schedule_pb2.DayOfWeek.Value("DAY_OF_WEEK_FRIDAY")
SUNDAY = schedule_pb2.DayOfWeek.Value("DAY_OF_WEEK_SUNDAY")

WINDOW_CASES = [
    ("happy hour Fri 17-19, at 17:00 local", window(1020, 1140, FRIDAY), berlin(2026, 3, 6, 17, 0), True),
    ("happy hour, 18:59", window(1020, 1140, FRIDAY), berlin(2026, 3, 6, 18, 59), True),
    ("happy hour, end is exclusive", window(1020, 1140, FRIDAY), berlin(2026, 3, 6, 19, 0), False),
    (
        "happy hour, 16:00 UTC is 17:00 in Berlin",
        window(1020, 1140, FRIDAY),
        datetime(2026, 3, 6, 16, 0, tzinfo=UTC),
        True,
    ),
    (
        "happy hour, summer time: 15:00 UTC is 17:00",
        window(1020, 1140, FRIDAY),
        datetime(2026, 7, 3, 15, 0, tzinfo=UTC),
        True,
    ),
    (
        "happy hour, summer time: 16:30 UTC is 18:30",
        window(1020, 1140, FRIDAY),
        datetime(2026, 7, 3, 16, 30, tzinfo=UTC),
        True,
    ),
    ("happy hour, wrong day", window(1020, 1140, FRIDAY), berlin(2026, 3, 5, 17, 30), False),
    (
        "overnight 22-02 belongs to the day it starts",
        window(1320, 120, FRIDAY),
        berlin(2026, 3, 7, 1, 30),
        True,
    ),
    (
        "overnight, Saturday night is not Friday's",
        window(1320, 120, FRIDAY),
        berlin(2026, 3, 8, 1, 30),
        False,
    ),
    # 29 March 2026: clocks jump 02:00 -> 03:00 in Berlin; 01:30 UTC is 03:30 local.
    (
        "DST spring: skipped hour window does not occur",
        window(120, 180, SUNDAY),
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        False,
    ),
    (
        "DST spring: 00:59 UTC is 01:59 local, before the jump",
        window(60, 120, SUNDAY),
        datetime(2026, 3, 29, 0, 59, tzinfo=UTC),
        True,
    ),
    # 25 October 2026: 03:00 -> 02:00; the 02:00-03:00 wall hour happens twice.
    ("DST autumn: first 02:30", window(150, 180, SUNDAY), datetime(2026, 10, 25, 0, 30, tzinfo=UTC), True),
    ("DST autumn: second 02:30", window(150, 180, SUNDAY), datetime(2026, 10, 25, 1, 30, tzinfo=UTC), True),
    (
        "DST autumn: 02:00 UTC is 03:00 local",
        window(150, 180, SUNDAY),
        datetime(2026, 10, 25, 2, 0, tzinfo=UTC),
        False,
    ),
]


@pytest.mark.parametrize(
    ("condition", "now", "expected"), [c[1:] for c in WINDOW_CASES], ids=[c[0] for c in WINDOW_CASES]
)
def test_time_window(condition, now, expected):
    assert applies(condition, now=now) is expected


def schedule_campaign(start, end, tz="", windows=()):
    from google.protobuf.timestamp_pb2 import Timestamp

    def stamp(moment):
        ts = Timestamp()
        ts.FromDatetime(moment)
        return ts

    return schedule_pb2.Schedule(
        start_time=stamp(start), end_time=stamp(end), time_zone=tz, recurring_windows=list(windows)
    )


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (berlin(2026, 2, 1, 0, 0), True),  # "-15 % in February": local midnight is inclusive
        (berlin(2026, 1, 31, 23, 59), False),
        (berlin(2026, 2, 28, 23, 59), True),
        (berlin(2026, 3, 1, 0, 0), False),  # the end is exclusive
    ],
)
def test_campaign_schedule_in_the_tenant_time_zone(now, expected):
    sched = schedule_campaign(berlin(2026, 2, 1, 0, 0), berlin(2026, 3, 1, 0, 0))
    evaluation = run(
        [campaign("feb", promo("p", percent(1500)), schedule=sched)], basket(line("1", "OIL", 1000)), now=now
    )
    assert (evaluation.discount > 0) is expected
    if not expected:
        assert [c.reason for c in evaluation.candidates] == [304]


def test_birthday_on_29_february_counts_on_28_february():
    leap = CustomerContext(customer_id="c", birth_date=date(2000, 2, 29))
    condition = cpb.Condition(birthday=cpb.BirthdayCondition(within_days=0))
    assert applies(condition, customer=leap, now=datetime(2027, 2, 28, 12, tzinfo=UTC))
    assert not applies(condition, customer=leap, now=datetime(2027, 3, 1, 12, tzinfo=UTC))


def test_birthday_uses_the_tenant_local_date():
    customer = CustomerContext(customer_id="c", birth_date=date(1990, 2, 11))
    condition = cpb.Condition(birthday=cpb.BirthdayCondition(within_days=0))
    late_evening_utc = datetime(2026, 2, 10, 23, 30, tzinfo=UTC)  # already 11 February in Berlin
    assert applies(condition, customer=customer, now=late_evening_utc, tz="Europe/Berlin")
    assert not applies(condition, customer=customer, now=late_evening_utc, tz="UTC")


def test_payment_method_is_pending_while_previewing_and_decided_when_known():
    condition = cpb.Condition(payment_method=cpb.PaymentMethodCondition(methods=["card"]))
    preview = run(
        [campaign("c", promo("p", percent(1000), condition=condition))], basket(line("1", "A", 1000))
    )
    assert preview.discount == 0
    (candidate,) = preview.candidates
    assert candidate.pending and candidate.reason == 332
    assert applies(condition, basket(line("1", "A", 1000), payment="card"))
    assert not applies(condition, basket(line("1", "A", 1000), payment="cash"))


def test_code_present_without_codes_means_a_code_of_this_campaign():
    condition = cpb.Condition(code_present=cpb.CodePresentCondition())
    assert applies(condition, codes=[("ANY1", "c")])
    assert not applies(condition, codes=[("OTHER", "elsewhere")])


def test_a_cel_condition_failing_at_run_time_makes_only_that_promotion_not_apply():
    broken = cpb.Condition(expression=cpb.ExpressionCondition(cel="basket.subtotal / (basket.units - 2) > 1"))
    evaluation = run(
        [campaign("c", promo("bad", percent(1000), condition=broken), promo("good", percent(500)))],
        basket(line("1", "A", 1000, 2)),
    )
    assert [a.promotion_id for a in evaluation.applied] == ["good"]
    assert [(c.promotion_id, c.reason) for c in evaluation.candidates] == [("bad", 321)]


def test_near_miss_hints():
    spend = cpb.Condition(basket_subtotal=cpb.BasketSubtotalCondition(min_subtotal=money(5000)))
    evaluation = run(
        [campaign("c", promo("free-delivery", percent(1000), condition=spend))], basket(line("1", "A", 3750))
    )
    (candidate,) = evaluation.candidates
    assert (candidate.reason, candidate.amount_to_qualify, candidate.hint) == (
        306,
        1250,
        "Spend 12.50 EUR more for free-delivery",
    )
    units = cpb.Condition(line_quantity=cpb.LineQuantityCondition(line_filter=lf(skus=["A"]), min_quantity=5))
    evaluation = run(
        [
            campaign(
                "c", promo("p", percent(1000), condition=units, hint="Add {units} more items for 10 % off")
            )
        ],
        basket(line("1", "A", 100, 3)),
    )
    assert evaluation.candidates[0].hint == "Add 2 more items for 10 % off"
    assert evaluation.candidates[0].units_to_qualify == 2


def test_a_buy_x_get_y_short_of_units_hints_how_many_to_add():
    from loyalty.promotion.v1 import effect_pb2 as epb

    bogo = epb.Effect(
        buy_x_get_y=epb.BuyXGetYEffect(
            buy_filter=lf(skus=["LEM"]), buy_quantity=2, get_quantity=1, get_discount_bps=10000
        )
    )
    evaluation = run([campaign("c", promo("lemonade", bogo))], basket(line("1", "LEM", 150, 2)))
    (candidate,) = evaluation.candidates
    assert (candidate.units_to_qualify, candidate.hint) == (1, "Add 1 more item for lemonade")
