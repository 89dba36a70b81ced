"""Rule validation and compilation, without a database: every value is bound, never spliced."""

import pytest

from loyalty.common.v1 import money_pb2
from loyalty.segmentation.v1 import condition_pb2 as c
from loyalty_runtime.errors import InvalidArgument
from loyalty_segmentation.domain import rules


def count_at_least(n: int, window=c.METRIC_WINDOW_LIFETIME) -> c.Condition:
    return c.Condition(
        metric=c.MetricCondition(
            metric=c.CUSTOMER_METRIC_PURCHASE_COUNT,
            window=window,
            operator=c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS,
            value=c.Value(int_value=n),
        )
    )


def test_values_are_bound_parameters_numbered_from_the_first():
    rule = c.Condition(
        all_of=c.ConditionList(
            conditions=[count_at_least(3), c.Condition(negation=c.NotCondition(condition=count_at_least(7)))]
        )
    )
    compiled = rules.compile_rule(rule, 4)
    sql, values = compiled.sql, compiled.values
    assert values == [3, 7]
    assert compiled.needs == {"purchases_life"}
    assert "$4" in sql and "$5" in sql and "3" not in sql.replace("$", "") and "7" not in sql
    assert (
        sql == "(COALESCE(m.purchases_life >= $4, false) AND (NOT COALESCE(m.purchases_life >= $5, false)))"
    )


def test_empty_lists_follow_and_or_identities():
    assert rules.compile_rule(c.Condition(all_of=c.ConditionList()), 1).sql == "true"
    assert rules.compile_rule(c.Condition(any_of=c.ConditionList()), 1).sql == "false"


def test_between_and_in_bind_every_operand():
    between = c.Condition(
        metric=c.MetricCondition(
            metric=c.CUSTOMER_METRIC_PURCHASE_SPEND,
            window=c.METRIC_WINDOW_LAST_90_DAYS,
            operator=c.COMPARISON_OPERATOR_BETWEEN,
            values=[c.Value(money_value=money_pb2.Money(amount_minor=m)) for m in (100, 500)],
        )
    )
    rules.validate(between)
    compiled = rules.compile_rule(between, 4)
    assert (compiled.sql, compiled.values) == ("COALESCE(m.spend_90 BETWEEN $4 AND $5, false)", [100, 500])
    assert compiled.needs == {"spend_90"}


@pytest.mark.parametrize(
    ("condition", "field"),
    [
        (c.Condition(), "segment.rule"),
        (
            c.Condition(metric=c.MetricCondition(metric=c.CUSTOMER_METRIC_PURCHASE_COUNT)),
            "segment.rule.metric.window",
        ),
        (
            c.Condition(
                metric=c.MetricCondition(
                    metric=c.CUSTOMER_METRIC_DAYS_SINCE_LAST_PURCHASE,
                    operator=c.COMPARISON_OPERATOR_BETWEEN,
                    values=[c.Value(int_value=1)],
                )
            ),
            "segment.rule.metric.values",
        ),
        (c.Condition(negation=c.NotCondition()), "segment.rule.negation.condition"),
        (c.Condition(segment=c.SegmentReferenceCondition(segment_id="x")), "segment.rule.segment.segment_id"),
    ],
)
def test_a_malformed_rule_names_its_field(condition, field):
    with pytest.raises(InvalidArgument) as raised:
        rules.validate(condition)
    assert raised.value.violations[0].field == field


def test_too_deep_a_rule_is_refused():
    rule = count_at_least(1)
    for _ in range(rules.MAX_DEPTH):
        rule = c.Condition(negation=c.NotCondition(condition=rule))
    with pytest.raises(InvalidArgument, match="levels deep"):
        rules.validate(rule)


def test_too_many_conditions_are_refused():
    rule = c.Condition(any_of=c.ConditionList(conditions=[count_at_least(i) for i in range(rules.MAX_NODES)]))
    with pytest.raises(InvalidArgument, match="at most"):
        rules.validate(rule)
