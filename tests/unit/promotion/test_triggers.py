"""Trigger rules, pure: filters over event properties, counting periods in the tenant's time zone,
which match is rewarded, limits and cooldowns, and what a trigger may not say."""

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from hypothesis import given, strategies as st

from loyalty.promotion.v1 import reward_pb2, trigger_pb2 as tpb
from loyalty_promotion.domain import triggers as rules

EVENTS = frozenset({"customer.created", "tier.changed"})
operands = st.one_of(st.text(max_size=5), st.integers(-5, 5), st.booleans())


def value(operand) -> tpb.PropertyValue:
    if isinstance(operand, bool):
        return tpb.PropertyValue(bool_value=operand)
    if isinstance(operand, int):
        return tpb.PropertyValue(int_value=operand)
    return tpb.PropertyValue(string_value=operand)


def trigger(*filters: tpb.PropertyFilter, **fields) -> tpb.Trigger:
    fields.setdefault("reward", reward_pb2.Reward(points=reward_pb2.PointsReward(points=10)))
    return tpb.Trigger(
        display_name="t",
        event_type="tier.changed",
        state=tpb.TRIGGER_STATE_ENABLED,
        property_filters=filters,
        **fields,
    )


def only(operator: int, operand=None, *, values=()) -> tpb.Trigger:
    item = tpb.PropertyFilter(property="p", operator=operator, values=[value(v) for v in values])
    if operand is not None:
        item.value.CopyFrom(value(operand))
    return trigger(item)


@given(operands, st.one_of(st.none(), operands))
def test_equals_and_not_equals_split_every_event_and_types_never_mix(operand, actual):
    properties = {} if actual is None else {"p": actual}
    equals = rules.filters_hold(only(tpb.PROPERTY_OPERATOR_EQUALS, operand), properties)
    differs = rules.filters_hold(only(tpb.PROPERTY_OPERATOR_NOT_EQUALS, operand), properties)
    assert equals != differs
    assert equals == (actual is not None and type(actual) is type(operand) and actual == operand)


@given(st.integers(-5, 5), st.one_of(st.integers(-5, 5), st.booleans(), st.text(max_size=2)))
def test_ordering_compares_integers_only(bound, actual):
    holds = rules.filters_hold(only(tpb.PROPERTY_OPERATOR_GREATER_THAN, bound), {"p": actual})
    assert holds == (type(actual) is int and actual > bound)


def test_in_and_exists():
    assert rules.filters_hold(only(tpb.PROPERTY_OPERATOR_IN, values=["GOLD", "PLATINUM"]), {"p": "GOLD"})
    assert not rules.filters_hold(only(tpb.PROPERTY_OPERATOR_IN, values=["GOLD"]), {"p": "SILVER"})
    assert rules.filters_hold(only(tpb.PROPERTY_OPERATOR_EXISTS), {"p": ""})
    assert not rules.filters_hold(only(tpb.PROPERTY_OPERATOR_EXISTS), {})


@pytest.mark.parametrize(
    ("period", "moment", "zone", "key"),
    [
        # 23:30 UTC on 31 January is already February in Berlin, still January in New York.
        (
            tpb.OCCURRENCE_PERIOD_CALENDAR_MONTH,
            datetime(2030, 1, 31, 23, 30, tzinfo=UTC),
            "Europe/Berlin",
            "M2030-02",
        ),
        (
            tpb.OCCURRENCE_PERIOD_CALENDAR_MONTH,
            datetime(2030, 1, 31, 23, 30, tzinfo=UTC),
            "America/New_York",
            "M2030-01",
        ),
        (
            tpb.OCCURRENCE_PERIOD_CALENDAR_DAY,
            datetime(2030, 3, 1, 5, tzinfo=UTC),
            "Pacific/Auckland",
            "D2030-03-01",
        ),
        # ISO weeks: 31 December 2029 (a Monday) is in week 1 of 2030.
        (tpb.OCCURRENCE_PERIOD_CALENDAR_WEEK, datetime(2029, 12, 31, 12, tzinfo=UTC), "UTC", "W2030-01"),
        (tpb.OCCURRENCE_PERIOD_CALENDAR_YEAR, datetime(2030, 12, 31, 23, tzinfo=UTC), "Asia/Tokyo", "Y2031"),
        (tpb.OCCURRENCE_PERIOD_CAMPAIGN, datetime(2030, 1, 1, tzinfo=UTC), "UTC", "campaign"),
    ],
)
def test_periods_are_calendar_periods_where_the_shop_is(period, moment, zone, key):
    assert rules.period_of(period, moment, zone) == key


@pytest.mark.parametrize(
    ("nth", "repeat", "rewarded"),
    [(1, False, {1}), (3, False, {3}), (3, True, {3, 6, 9}), (1, True, set(range(1, 10)))],
)
def test_which_matches_are_rewarded(nth, repeat, rewarded):
    rule = trigger(
        occurrence=tpb.OccurrenceRule(nth=nth, period=tpb.OCCURRENCE_PERIOD_CALENDAR_MONTH, repeat=repeat)
    )
    assert {count for count in range(1, 10) if rules.nth_is_rewarded(rule, count)} == rewarded
    assert all(rules.nth_is_rewarded(trigger(), count) for count in range(1, 5))  # no rule: every match


def test_limits_and_cooldown():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    capped = trigger(max_rewards_per_customer=2)
    assert rules.limits_allow(capped, 1, now, now) and not rules.limits_allow(capped, 2, now, now)
    cooled = trigger(cooldown=Duration(seconds=7 * 86_400))
    assert not rules.limits_allow(cooled, 5, now - timedelta(days=6), now)
    assert rules.limits_allow(cooled, 5, now - timedelta(days=7), now)
    assert rules.limits_allow(cooled, 0, None, now)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"event_type": "unknown.event"}, "trigger.event_type"),
        ({"state": 7}, "trigger.state"),
        ({"display_name": " "}, "trigger.display_name"),
        ({"max_rewards_per_customer": -1}, "trigger.max_rewards_per_customer"),
        ({"occurrence": tpb.OccurrenceRule(nth=2)}, "trigger.occurrence.period"),
    ],
)
def test_what_a_trigger_may_not_say(fields, field):
    base = trigger()
    candidate = tpb.Trigger()
    candidate.CopyFrom(base)
    for name, item in fields.items():
        if hasattr(item, "CopyFrom"):
            getattr(candidate, name).CopyFrom(item)
        else:
            setattr(candidate, name, item)
    assert [v.field for v in rules.violations(candidate, EVENTS.__contains__)] == [field]
    assert rules.violations(base, EVENTS.__contains__) == []


def test_in_needs_values_and_exists_needs_none():
    empty_in = only(tpb.PROPERTY_OPERATOR_IN)
    assert [v.field for v in rules.violations(empty_in, EVENTS.__contains__)] == [
        "trigger.property_filters[0].values"
    ]
    assert rules.violations(only(tpb.PROPERTY_OPERATOR_EXISTS), EVENTS.__contains__) == []
