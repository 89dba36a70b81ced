"""The pure rules: each rule fires one above its limit and not at it; counters per key value; the
decision from forced actions, scores and shadow rules; blocklist matching with CIDR edges."""

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, strategies as st

from loyalty_fraud.domain import rules
from loyalty_fraud.domain.model import (
    Action,
    BlocklistEntry,
    BlocklistEntryType,
    Decision,
    Kind,
    Measure,
    Rule,
    RuleState,
    Settings,
    Threshold,
    ThresholdMetric,
    Velocity,
    VelocityKey,
)
from loyalty_runtime.errors import InvalidArgument, Reason

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def rule(
    rule_id="r",
    *,
    velocity=None,
    threshold=None,
    action=Decision.DECLINE,
    score=0,
    state=RuleState.ENABLED,
    kinds=(),
):
    reason = Reason.VELOCITY_LIMIT.value if velocity else Reason.THRESHOLD_EXCEEDED.value
    return Rule(rule_id, state, frozenset(kinds), action, score, reason, velocity, threshold, "g")


def action(**fields) -> Action:
    fields.setdefault("kind", Kind.CHECKOUT)
    fields.setdefault("currency", "EUR")
    return Action(subject_id="s", now=NOW, **fields)


def verdict(rule_list, act, totals=(), blocked=(), settings=None):
    counters = rules.counters_for(rule_list, act)
    settings = settings or Settings()
    return rules.decide(
        rule_list,
        settings,
        act,
        blocked=list(blocked),
        counters=counters,
        totals=None if totals is None else list(totals),
    )


# --- velocity ---


def test_one_counter_per_key_value_and_none_without_a_value():
    by_code = rule(velocity=Velocity(VelocityKey.CODE, 60_000, Measure.COUNT, 3))
    by_card = rule("card", velocity=Velocity(VelocityKey.CARD, 60_000, Measure.COUNT, 3))
    counters = rules.counters_for([by_code, by_card], action(codes=("A", "B", "A")))
    assert [c.slot for c in counters] == ["r:g:code:A", "r:g:code:B"]


def test_measures():
    points = rule(velocity=Velocity(VelocityKey.CUSTOMER, 1000, Measure.POINTS, 10))
    amount = rule(velocity=Velocity(VelocityKey.CUSTOMER, 1000, Measure.AMOUNT, 10, "EUR"))
    act = action(customer_id="c", points_earned=7, points_burned=3, basket_total=250)
    assert [c.amount for c in rules.counters_for([points, amount], act)] == [10, 250]
    assert rules.counters_for([amount], action(customer_id="c", basket_total=250, currency="USD")) == []


@pytest.mark.parametrize(("total", "fires"), [(5, False), (6, True)])
def test_velocity_fires_above_the_limit(total, fires):
    limited = rule(velocity=Velocity(VelocityKey.CUSTOMER, 1000, Measure.COUNT, 5))
    result = verdict([limited], action(customer_id="c"), totals=[total])
    assert result.decision == (Decision.DECLINE if fires else Decision.ALLOW)


def test_unreachable_counters_skip_the_velocity_rules_only():
    limited = rule("v", velocity=Velocity(VelocityKey.CUSTOMER, 1000, Measure.COUNT, 0))
    big = rule("t", threshold=Threshold(ThresholdMetric.POINTS_EARNED, 100), action=Decision.REVIEW)
    settings = Settings(degraded={Kind.CHECKOUT: Decision.DECLINE})
    result = verdict(
        [limited, big], action(customer_id="c", points_earned=101), totals=None, settings=settings
    )
    assert (result.decision, result.degraded, result.skipped_rule_ids) == (Decision.REVIEW, True, ("v",))
    assert result.degraded_policy is Decision.DECLINE


# --- thresholds ---

THRESHOLDS = [
    (ThresholdMetric.BASKET_TOTAL, "basket_total"),
    (ThresholdMetric.DISCOUNT_TOTAL, "discount_total"),
    (ThresholdMetric.POINTS_EARNED, "points_earned"),
    (ThresholdMetric.POINTS_BURNED, "points_burned"),
]


@pytest.mark.parametrize(("metric", "field"), THRESHOLDS)
@pytest.mark.parametrize(("over", "fires"), [(0, False), (1, True)])
def test_each_threshold_fires_one_above_its_limit(metric, field, over, fires):
    limit = 1000
    threshold = rule(threshold=Threshold(metric, limit, "EUR"))
    result = verdict([threshold], action(**{field: limit + over}))
    assert (result.decision is Decision.DECLINE) is fires


@pytest.mark.parametrize(("codes", "fires"), [(2, False), (3, True)])
def test_code_count(codes, fires):
    result = verdict(
        [rule(threshold=Threshold(ThresholdMetric.CODE_COUNT, 2))], action(codes=tuple("ABC"[:codes]))
    )
    assert (result.decision is Decision.DECLINE) is fires


@pytest.mark.parametrize(("discount", "fires"), [(8000, False), (8001, True)])
def test_discount_share_in_integers(discount, fires):
    result = verdict(
        [rule(threshold=Threshold(ThresholdMetric.DISCOUNT_SHARE_BPS, 8000))],
        action(basket_total=10_000, discount_total=discount),
    )
    assert (result.decision is Decision.DECLINE) is fires


@pytest.mark.parametrize(
    ("age", "fires"), [(timedelta(days=7), False), (timedelta(days=7) - timedelta(milliseconds=1), True)]
)
def test_a_burn_soon_after_enrolment(age, fires):
    young = rule(threshold=Threshold(ThresholdMetric.BURN_ACCOUNT_AGE_DAYS, 7))
    result = verdict([young], action(points_burned=10, enrolled_at=NOW - age))
    assert (result.decision is Decision.DECLINE) is fires
    assert verdict([young], action(points_burned=0, enrolled_at=NOW - age)).decision is Decision.ALLOW


def test_a_rule_applies_only_to_its_kinds():
    earn_only = rule(threshold=Threshold(ThresholdMetric.POINTS_EARNED, 0), kinds=[Kind.EARN])
    assert verdict([earn_only], action(points_earned=5)).decision is Decision.ALLOW
    assert verdict([earn_only], action(kind=Kind.EARN, points_earned=5)).decision is Decision.DECLINE


# --- the decision ---


def test_score_thresholds_and_shadow_rules():
    scored = [
        rule(f"s{i}", threshold=Threshold(ThresholdMetric.CODE_COUNT, 0), action=None, score=250)
        for i in range(2)
    ]
    assert verdict(scored[:1], action(codes=("A",))).decision is Decision.ALLOW
    both = verdict(scored, action(codes=("A",)))
    assert (both.decision, both.score, both.findings[0].reason) == (
        Decision.REVIEW,
        500,
        Reason.RISK_SCORE.value,
    )
    shadow = rule("sh", threshold=Threshold(ThresholdMetric.CODE_COUNT, 0), state=RuleState.SHADOW)
    result = verdict([shadow], action(codes=("A",)))
    assert (result.decision, result.score) == (Decision.ALLOW, 0)
    assert result.findings[0].shadow


@given(st.lists(st.integers(0, 1000), max_size=8))
def test_the_score_is_the_capped_sum(scores):
    fired = [
        rule(f"r{i}", threshold=Threshold(ThresholdMetric.CODE_COUNT, 0), action=None, score=s)
        for i, s in enumerate(scores)
    ]
    result = verdict(fired, action(codes=("A",)), settings=Settings(1000, 1000))
    assert result.score == min(1000, sum(scores))


def test_the_most_severe_decision_wins_and_comes_first():
    review = rule("rv", threshold=Threshold(ThresholdMetric.CODE_COUNT, 0), action=Decision.REVIEW, score=900)
    decline = rule("dc", threshold=Threshold(ThresholdMetric.CODE_COUNT, 0), action=Decision.DECLINE, score=1)
    result = verdict([review, decline], action(codes=("A",)), settings=Settings(1000, 1000))
    assert result.decision is Decision.DECLINE
    assert [f.rule_id for f in result.findings] == ["dc", "rv"]


# --- blocklists ---


@pytest.mark.parametrize(
    ("cidr", "ip", "matches"),
    [
        ("10.0.0.0/8", "10.0.0.0", True),
        ("10.0.0.0/8", "10.255.255.255", True),
        ("10.0.0.0/8", "11.0.0.0", False),
        ("10.0.0.0/8", "9.255.255.255", False),
        ("192.0.2.7/32", "192.0.2.7", True),
        ("192.0.2.7/32", "192.0.2.8", False),
        ("2001:db8::/127", "2001:db8::1", True),
        ("2001:db8::/127", "2001:db8::2", False),
        ("0.0.0.0/0", "255.255.255.255", True),
        ("0.0.0.0/0", "::1", False),
    ],
)
def test_cidr_edges(cidr, ip, matches):
    entry = BlocklistEntry("e", BlocklistEntryType.IP_RANGE, cidr)
    act = action(ip_address=ipaddress.ip_address(ip))
    assert (rules.blocklist_matches([entry], act) == [entry]) is matches


def test_an_expired_entry_no_longer_matches():
    entry = BlocklistEntry("e", BlocklistEntryType.CUSTOMER, "c", expire_at=NOW)
    assert rules.blocklist_matches([entry], action(customer_id="c")) == []
    live = BlocklistEntry("e", BlocklistEntryType.CUSTOMER, "c", expire_at=NOW + timedelta(seconds=1))
    assert rules.blocklist_matches([live], action(customer_id="c")) == [live]


@pytest.mark.parametrize(
    ("kind", "value", "canonical"),
    [
        (BlocklistEntryType.IP_RANGE, "2001:DB8::/32", "2001:db8::/32"),
        (BlocklistEntryType.EMAIL_DOMAIN, "mail.example.com", "mail.example.com"),
        (BlocklistEntryType.CARD, "a" * 64, "a" * 64),
    ],
)
def test_blocklist_values_are_canonical(kind, value, canonical):
    assert rules.require_blocklist_value(kind, value, "entry.value") == canonical


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (BlocklistEntryType.IP_RANGE, "10.0.0.1/8"),
        (BlocklistEntryType.IP_RANGE, "::/129"),
        (BlocklistEntryType.EMAIL_DOMAIN, "localhost"),
        (BlocklistEntryType.DEVICE, "A" * 64),
    ],
)
def test_malformed_blocklist_values(kind, value):
    with pytest.raises(InvalidArgument) as raised:
        rules.require_blocklist_value(kind, value, "entry.value")
    assert raised.value.violations[0].field == "entry.value"
