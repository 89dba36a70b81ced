"""Segment references (what a rule refers to, cycles, dependency layers) and the tenant's time zone
in compiled rules, without a database."""

import pytest
from hypothesis import given, strategies as st

from loyalty.segmentation.v1 import condition_pb2 as c
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_segmentation.domain import rules

A, B, C, D = (f"00000000-0000-0000-0000-00000000000{i}" for i in range(1, 5))


def member_of(segment_id: str) -> c.Condition:
    return c.Condition(segment=c.SegmentReferenceCondition(segment_id=segment_id))


def test_references_are_found_under_and_or_not():
    rule = c.Condition(
        all_of=c.ConditionList(
            conditions=[
                member_of(A),
                c.Condition(any_of=c.ConditionList(conditions=[member_of(B)])),
                c.Condition(negation=c.NotCondition(condition=member_of(C))),
            ]
        )
    )
    assert rules.references(rule) == {A, B, C}
    rules.validate(rule, segments={A, B, C})


def test_an_unknown_segment_is_a_field_violation():
    rule = c.Condition(any_of=c.ConditionList(conditions=[member_of(A), member_of(B)]))
    with pytest.raises(InvalidArgument) as raised:
        rules.validate(rule, segments={A})
    assert raised.value.reason is Reason.SEGMENT_NOT_FOUND
    assert [v.field for v in raised.value.violations] == [
        "segment.rule.any_of.conditions[1].segment.segment_id"
    ]


def test_membership_compiles_to_a_bound_exists_over_the_members():
    compiled = rules.compile_rule(c.Condition(negation=c.NotCondition(condition=member_of(A))), 6)
    assert compiled.values == [A]
    assert compiled.sql == (
        "(NOT EXISTS (SELECT 1 FROM segmentation.segment_members r WHERE r.tenant_id = $1"
        " AND r.segment_id = $6::uuid AND r.customer_id = m.customer_id))"
    )


def test_a_cycle_is_found_with_its_way_back():
    graph = {A: {B}, B: {C}, C: set(), D: {A}}
    assert rules.find_cycle(C, {D}, graph) == [C, D, A, B, C]
    assert rules.find_cycle(A, {A}, graph) == [A, A]
    assert rules.find_cycle(C, {B}, {B: set()}) is None
    assert rules.find_cycle(A, {B, C}, {B: {C}, C: set()}) is None


def test_layers_order_segments_after_those_they_refer_to():
    graph = {A: {B, "static"}, B: {C}, C: set(), D: {C}}
    assert rules.layers(graph) == [[C], [B, D], [A]]
    assert rules.layers({A: set(), B: set()}) == [[A, B]]
    assert rules.dependents({C}, graph) == {B, D}


@given(st.lists(st.lists(st.integers(0, 7), max_size=3), min_size=1, max_size=8))
def test_every_layer_refers_only_to_earlier_layers(edges):
    # Edges only to lower numbers: acyclic, as saves keep it.
    names = [f"s{i}" for i in range(len(edges))]
    graph = {names[i]: {names[t] for t in targets if t < i} for i, targets in enumerate(edges)}
    placed: dict[str, int] = {}
    for depth, layer in enumerate(rules.layers(graph)):
        for node in layer:
            assert all(placed[t] < depth for t in graph[node])
            placed[node] = depth
    assert set(placed) == set(graph)


def test_calendar_computations_bind_the_tenant_time_zone_once():
    age = c.Condition(
        attribute=c.AttributeCondition(
            attribute="age",
            operator=c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS,
            value=c.Value(int_value=18),
        )
    )
    recency = c.Condition(
        metric=c.MetricCondition(
            metric=c.CUSTOMER_METRIC_DAYS_SINCE_LAST_PURCHASE,
            operator=c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS,
            value=c.Value(int_value=90),
        )
    )
    compiled = rules.compile_rule(
        c.Condition(all_of=c.ConditionList(conditions=[age, recency])), 4, {}, "Europe/Berlin"
    )
    assert compiled.values == ["Europe/Berlin", 18, 90]
    assert compiled.sql.count("AT TIME ZONE $4::text") == 3
    assert "UTC" not in compiled.sql
    # A rule without calendar computations binds no zone.
    assert rules.compile_rule(member_of(A), 4, {}, "Europe/Berlin").values == [A]


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc", "Europe/Berlin" + "x" * 60])
def test_an_unknown_time_zone_is_refused(name):
    with pytest.raises(InvalidArgument) as raised:
        rules.check_time_zone(name)
    assert raised.value.violations[0].field == "settings.time_zone"


def test_an_empty_time_zone_is_utc():
    rules.check_time_zone("")
    rules.check_time_zone("America/New_York")
