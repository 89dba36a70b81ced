"""Attribute rules, profile copies and CSV uploads, without a database."""

import pytest

from loyalty.common.v1 import date_pb2
from loyalty.profile.v1 import profile_pb2
from loyalty.segmentation.v1 import condition_pb2 as c
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_segmentation.domain import profiles, rules, uploads

TYPES = {"city": "string", "shoe_size": "int", "vip": "bool", "member_since": "date", "ratio": "decimal"}


def attribute(name, op, value=None, values=()):
    condition = c.AttributeCondition(attribute=name, operator=op, values=list(values))
    if value is not None:
        condition.value.CopyFrom(value)
    return c.Condition(attribute=condition)


def test_attribute_names_and_values_are_bound_and_casts_guarded():
    rule = attribute("shoe_size", c.COMPARISON_OPERATOR_GREATER_THAN, c.Value(int_value=42))
    rules.validate(rule, attributes=TYPES)
    compiled = rules.compile_rule(rule, 4, TYPES)
    assert compiled.values == ["shoe_size", 42]
    assert "shoe_size" not in compiled.sql and "42" not in compiled.sql
    assert "jsonb_typeof(m.attributes -> $4::text) = 'number'" in compiled.sql
    assert compiled.needs == set()


def test_consents_and_text_operators_compile_case_insensitively():
    rule = c.Condition(
        all_of=c.ConditionList(
            conditions=[
                attribute("consent.email.marketing", c.COMPARISON_OPERATOR_EQUALS, c.Value(bool_value=True)),
                attribute("city", c.COMPARISON_OPERATOR_CONTAINS, c.Value(string_value="Wien")),
            ]
        )
    )
    rules.validate(rule, attributes=TYPES)
    compiled = rules.compile_rule(rule, 1, TYPES)
    assert compiled.values == ["email.marketing", True, "city", "Wien"]
    assert "lower(" in compiled.sql


@pytest.mark.parametrize(
    ("rule", "reason", "field"),
    [
        (attribute("unknown", c.COMPARISON_OPERATOR_EXISTS), Reason.SEGMENT_ATTRIBUTE_UNKNOWN, "attribute"),
        (
            attribute("consent.email.spam", c.COMPARISON_OPERATOR_EXISTS),
            Reason.SEGMENT_ATTRIBUTE_UNKNOWN,
            "attribute",
        ),
        (
            attribute("vip", c.COMPARISON_OPERATOR_GREATER_THAN, c.Value(bool_value=True)),
            Reason.ATTRIBUTE_TYPE_MISMATCH,
            "operator",
        ),
        (
            attribute("city", c.COMPARISON_OPERATOR_EQUALS, c.Value(int_value=1)),
            Reason.ATTRIBUTE_TYPE_MISMATCH,
            "value",
        ),
        (
            attribute(
                "member_since",
                c.COMPARISON_OPERATOR_LESS_THAN,
                c.Value(date_value=date_pb2.Date(year=2030, month=13, day=1)),
            ),
            Reason.SEGMENT_RULE_INVALID,
            "value",
        ),
        (
            attribute("ratio", c.COMPARISON_OPERATOR_BETWEEN, values=[c.Value(int_value=1)]),
            Reason.SEGMENT_RULE_INVALID,
            "values",
        ),
        (attribute("city", c.COMPARISON_OPERATOR_IN), Reason.SEGMENT_RULE_INVALID, "values"),
    ],
)
def test_a_bad_attribute_condition_names_its_field_and_reason(rule, reason, field):
    with pytest.raises(InvalidArgument) as raised:
        rules.validate(rule, attributes=TYPES)
    assert raised.value.reason == reason
    assert raised.value.violations[0].field == f"segment.rule.attribute.{field}"


def test_a_profile_copy_keeps_what_rules_read_and_no_names():
    customer = profile_pb2.Customer(
        customer_id="id",
        given_name="Anna",
        birth_date=date_pb2.Date(year=1990, month=2, day=3),
        locale="de-AT",
        attributes={
            "city": profile_pb2.AttributeValue(string_value="Wien"),
            "ratio": profile_pb2.AttributeValue(decimal_value="1.50"),
            "bad": profile_pb2.AttributeValue(decimal_value="NaN"),
            "since": profile_pb2.AttributeValue(date_value=date_pb2.Date(year=2020, month=1, day=2)),
        },
        consents=[
            profile_pb2.Consent(
                channel=profile_pb2.CONSENT_CHANNEL_SMS,
                purpose=profile_pb2.CONSENT_PURPOSE_MARKETING,
                granted=True,
            )
        ],
    )
    copy = profiles.profile_of(customer)
    assert copy.attributes == {"city": "Wien", "ratio": "1.50", "since": "2020-01-02"}
    assert copy.kinds == {"city": "string", "ratio": "decimal", "since": "date"}
    assert copy.consents == {"sms.marketing": True}
    assert (copy.birth_date.isoformat(), copy.locale, copy.enrolled_at) == ("1990-02-03", "de-AT", None)
    assert "Anna" not in repr(copy)


def test_an_upload_reports_rows_by_number():
    parsed = uploads.parse(b"id,customer_id\n1,a\n2,\n3,a\n4,b\n")
    assert parsed.customers == {"a": 2, "b": 5}
    assert parsed.problems == [(3, "", "empty customer id"), (4, "a", "duplicate row")]


@pytest.mark.parametrize("content", [b"", b"customer_id", b"name\nx\n", b"\xff"])
def test_an_unusable_upload_is_refused(content):
    with pytest.raises(InvalidArgument) as raised:
        uploads.parse(content)
    assert raised.value.reason == Reason.SEGMENT_UPLOAD_INVALID


def test_an_upload_has_at_most_its_rows():
    content = b"customer_id\n" + b"".join(b"c%d\n" % i for i in range(uploads.MAX_ROWS + 1))
    with pytest.raises(InvalidArgument, match="at most"):
        uploads.parse(content)
