"""The pure pattern rules: what history each reads, what an action leaves behind, the edges of each
limit, and that patterns are judged with the counters unreachable and change nothing in shadow."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, strategies as st

from loyalty_fraud.domain import patterns, rules
from loyalty_fraud.domain.model import (
    Action,
    Decision,
    Fingerprint,
    Kind,
    Pattern,
    PatternKind as P,
    Rule,
    RuleState,
    Settings,
)
from loyalty_runtime.errors import Reason

NOW = datetime(2030, 1, 1, tzinfo=UTC)
DAY = 86_400_000
H = "ab" * 32


def rule(kind: P, max_value: int, window_ms: int = DAY, min_value: int = 0, state=RuleState.ENABLED) -> Rule:
    return Rule(
        "p",
        state,
        frozenset(),
        Decision.REVIEW,
        0,
        Reason.POINTS_ANOMALY.value,
        pattern=Pattern(kind, window_ms, max_value, min_value),
    )


def action(kind=Kind.CHECKOUT, **fields) -> Action:
    fields.setdefault("customer_id", "c")
    fields.setdefault("currency", "EUR")
    return Action(kind, "s", now=NOW, **fields)


def fact(name: str, amount: int, minutes_ago: float, subject: str = "k", value: str = "", customer="c"):
    return patterns.Fact(customer, name, subject, amount, value, NOW - timedelta(minutes=minutes_ago))


def fires(rule_: Rule, act: Action, history: patterns.History) -> bool:
    return bool(patterns.fired([rule_], act, history))


def test_needs_read_only_what_the_rules_applying_use():
    earn = action(Kind.EARN, points_earned=10, store_id="s1")
    assert patterns.needs([rule(P.EARN_ABOVE_CUSTOMER_USUAL, 500)], earn).stats == (("customer", "c"),)
    assert patterns.needs([rule(P.EARN_ABOVE_STORE_USUAL, 500)], earn).stats == (("store", "s1"),)
    assert not patterns.needs([rule(P.BURN_AFTER_LARGE_EARN, 10)], earn).any  # no burn
    burn = action(points_burned=5, device_hash=H)
    takeover = patterns.needs([rule(P.BURN_NEW_DEVICE_AFTER_ACCOUNT_CHANGE, 0, 2 * DAY)], burn)
    assert (takeover.activity_ms, takeover.fingerprints) == (2 * DAY, ("c",))
    referral = action(Kind.REFERRAL, referrer_id="r", device_hash=H)
    assert patterns.needs([rule(P.REFERRAL_SHARED_FINGERPRINT, 0)], referral).fingerprints == ("r", "c")
    assert patterns.needs([rule(P.REFERRAL_DEVICE_REFEREES, 3)], referral).referrals_ms == DAY
    assert not patterns.needs([rule(P.RETURN_VALUE_SHARE, 5000)], burn).any  # not a return
    disabled = rule(P.EARN_ABOVE_CUSTOMER_USUAL, 500, state=RuleState.DISABLED)
    assert not patterns.needs([disabled], earn).any


@given(earns=st.integers(1, 50), mean=st.integers(1, 1000), multiple=st.integers(100, 2000))
def test_the_usual_fires_exactly_above_the_multiple(earns, mean, multiple):
    history = patterns.History(stats={("customer", "c"): (earns, earns * mean)})
    limit = rule(P.EARN_ABOVE_CUSTOMER_USUAL, multiple, min_value=1)
    at = mean * multiple // 100  # the largest earn not above the limit (integer points)
    assert not fires(limit, action(Kind.EARN, points_earned=at), history)
    assert fires(limit, action(Kind.EARN, points_earned=at + 1), history)


def test_the_usual_needs_enough_earns():
    history = patterns.History(stats={("customer", "c"): (4, 400)})
    assert not fires(rule(P.EARN_ABOVE_CUSTOMER_USUAL, 200), action(Kind.EARN, points_earned=10_000), history)
    history = patterns.History(stats={("customer", "c"): (5, 500)})
    assert fires(rule(P.EARN_ABOVE_CUSTOMER_USUAL, 200), action(Kind.EARN, points_earned=10_000), history)


def test_a_burn_after_a_large_earn_inside_the_window_only():
    limit = rule(P.BURN_AFTER_LARGE_EARN, 1000, window_ms=DAY)
    burn = action(points_burned=1)
    assert fires(limit, burn, patterns.History(activity=(fact("earn", 1001, 60 * 24 - 1),)))
    assert not fires(
        limit, burn, patterns.History(activity=(fact("earn", 1001, 60 * 24),))
    )  # at the edge: out
    assert not fires(limit, burn, patterns.History(activity=(fact("earn", 1000, 1),)))


def test_returns_share_counts_only_the_currency():
    limit = rule(P.RETURN_VALUE_SHARE, 5000, window_ms=30 * DAY)
    history = patterns.History(
        activity=(fact("purchase", 1000, 5, value="EUR"), fact("purchase", 9000, 5, value="USD"))
    )
    assert not fires(limit, action(Kind.RETURN, refund=500), history)
    assert fires(limit, action(Kind.RETURN, refund=501), history)


def test_what_an_action_leaves_behind():
    bought = patterns.to_record(
        action(basket_total=900, points_earned=10, points_burned=5, store_id="s", device_hash=H, card_hash=H)
    )
    assert [f.fact for f in bought.facts] == ["purchase", "earn", "burn"]
    assert bought.earns == (("customer", "c", 10), ("store", "s", 10))
    assert bought.fingerprints == (("c", Fingerprint.DEVICE, H), ("c", Fingerprint.CARD, H))
    referral = patterns.to_record(
        action(
            Kind.REFERRAL,
            referrer_id="r",
            device_hash=H,
            referrer_fingerprints=frozenset({(Fingerprint.PHONE, H)}),
        )
    )
    assert [(f.fact, f.value) for f in referral.facts] == [("referral", H)]
    assert set(referral.fingerprints) == {("r", Fingerprint.PHONE, H), ("c", Fingerprint.DEVICE, H)}
    assert patterns.to_record(action(customer_id="", basket_total=5)) == patterns.ToRecord()  # anonymous


@pytest.mark.parametrize(
    ("fields", "changed"),
    [
        (["email", "consents"], "email"),
        (["consents", "attributes"], ""),
        (["phone", "identifiers"], "identifiers, phone"),
    ],
)
def test_account_changes_are_the_fields_that_reach_or_log_into_an_account(fields, changed):
    assert patterns.account_changed(fields) == changed


def test_patterns_are_judged_without_counters_and_change_nothing_in_shadow():
    history = patterns.History(activity=(fact("earn", 5000, 1),))
    burn = action(points_burned=1)
    live = rule(P.BURN_AFTER_LARGE_EARN, 1000)
    verdict = rules.decide([live], Settings(), burn, blocked=[], counters=[], totals=None, history=history)
    assert (verdict.decision, verdict.degraded) == (Decision.REVIEW, True)
    shadow = rule(P.BURN_AFTER_LARGE_EARN, 1000, state=RuleState.SHADOW)
    verdict = rules.decide([shadow], Settings(), burn, blocked=[], counters=[], totals=[], history=history)
    assert verdict.decision == Decision.ALLOW and verdict.findings[0].detail.startswith("shadow: ")


def test_a_credential_change_the_caller_reports_counts_as_an_account_change():
    takeover = rule(P.BURN_NEW_DEVICE_AFTER_ACCOUNT_CHANGE, 0, window_ms=DAY)
    burn = {"points_burned": 10, "device_hash": H}
    inside = action(credentials_changed_at=NOW - timedelta(hours=23), **burn)
    assert patterns.fired([takeover], inside, patterns.History())[0][1].endswith(
        "23 h after a change of password or login"
    )
    outside = action(credentials_changed_at=NOW - timedelta(days=1), **burn)
    assert not fires(takeover, outside, patterns.History())
    known = patterns.History(fingerprints={"c": frozenset({(Fingerprint.DEVICE, H)})})
    assert not fires(takeover, inside, known)
