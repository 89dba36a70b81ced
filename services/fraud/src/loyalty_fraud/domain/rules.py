"""The decision, from rules, counters and blocklist matches. Pure: the counters' totals come in.

Conventions: a rule fires when the measure *exceeds* its limit (velocity: with this action included),
so a limit of 5 lets the fifth action through and stops the sixth. Every assessed action counts,
declined ones included: refused attempts are exactly what a code-guessing lock-out counts, and the
lock lasts until the window has slid past them (the cool-down). Only ENABLED rules and blocklist
hits change the decision; SHADOW rules are reported and change nothing. The score is the sum of the
enabled rules' scores, capped at 1000; it decides when no rule forces a more severe decision.
"""

import ipaddress
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from functools import lru_cache

from loyalty_fraud.domain import patterns
from loyalty_fraud.domain.model import (
    MONEY_METRICS,
    Action,
    BlocklistEntry,
    BlocklistEntryType,
    Counter,
    Decision,
    Finding,
    Kind,
    Measure,
    Rule,
    RuleState,
    Settings,
    Threshold,
    ThresholdMetric,
    VelocityKey,
    Verdict,
)
from loyalty_runtime.errors import InvalidArgument, Reason

MAX_SCORE = 1000
_MS = timedelta(milliseconds=1)
DAY_MS = 86_400_000
HASH = re.compile(r"[0-9a-f]{64}")
DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


# --- the request's signals ------------------------------------------------------------------------


def require_hash(value: str, field: str) -> str:
    """A keyed hash as the gateway sends it (HMAC-SHA-256, lower-case hex), or empty."""
    if value and not HASH.fullmatch(value):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, f"{field} must be 64 lower-case hex digits", field=field
        )
    return value


def parse_ip(value: str, field: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, f"{field} is not an IP address", field=field) from None


def parse_network(value: str, field: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR range; host bits must be zero ("10.0.0.1/8" is refused, it is ambiguous)."""
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, f"{field} is not a CIDR range (e.g. 203.0.113.0/24)", field=field
        ) from None


def require_email_domain(value: str, field: str) -> str:
    if value and not DOMAIN.fullmatch(value):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, f"{field} must be a lower-case domain name", field=field
        )
    return value


def require_blocklist_value(kind: BlocklistEntryType, value: str, field: str) -> str:
    """The canonical value of an entry of `kind` (a CIDR range normalised, e.g. 2001:DB8::/32)."""
    if not value:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, f"{field} is required", field=field)
    if kind is BlocklistEntryType.IP_RANGE:
        return str(parse_network(value, field))
    if kind is BlocklistEntryType.EMAIL_DOMAIN:
        return require_email_domain(value, field)
    if kind is BlocklistEntryType.CUSTOMER:
        return value
    return require_hash(value, field)


# --- velocity -------------------------------------------------------------------------------------


def _key_values(key: VelocityKey, action: Action) -> tuple[str, ...]:
    value = {
        VelocityKey.CUSTOMER: action.customer_id,
        VelocityKey.CARD: action.card_hash,
        VelocityKey.DEVICE: action.device_hash,
        VelocityKey.IP: action.ip_hash,
        VelocityKey.TERMINAL: action.terminal_id,
        VelocityKey.STORE: action.store_id,
    }.get(key)
    if key is VelocityKey.CODE:
        return tuple(dict.fromkeys(action.codes))
    return (value,) if value else ()


def _measured(rule: Rule, action: Action) -> int | None:
    """What one action adds to the rule's window; None when the rule does not measure it."""
    velocity = rule.velocity
    if velocity.measure is Measure.COUNT:
        return 1
    if velocity.measure is Measure.POINTS:
        points = action.points_earned + action.points_burned
        return points or None
    if action.kind is Kind.EARN or action.currency != velocity.currency:
        return None
    amount = {Kind.CHECKOUT: action.basket_total, Kind.RETURN: action.refund}.get(
        action.kind, action.discount_total
    )
    return amount or None


def counters_for(rules: Iterable[Rule], action: Action) -> list[Counter]:
    """Every counter the velocity rules that apply to `action` need, one per key value."""
    counters = []
    for rule in rules:
        if rule.velocity is None or not rule.applies(action.kind):
            continue
        amount = _measured(rule, action)
        if amount is None:
            continue
        for value in _key_values(rule.velocity.key, action):
            counters.append(
                Counter(
                    rule.rule_id,
                    f"{rule.rule_id}:{rule.generation}:{rule.velocity.key.value}:{value}",
                    rule.velocity.window_ms,
                    amount,
                    rule.velocity.measure is Measure.COUNT,
                )
            )
    return counters


def _velocity_findings(
    rules: Mapping[str, Rule], counters: list[Counter], totals: list[int]
) -> list[Finding]:
    findings: dict[str, Finding] = {}
    for counter, total in zip(counters, totals, strict=True):
        rule = rules[counter.rule_id]
        velocity = rule.velocity
        if total > velocity.limit and counter.rule_id not in findings:
            detail = (
                f"{total} {velocity.measure.value} per {velocity.key.value} in {velocity.window_ms // 1000} s"
                f" (limit {velocity.limit})"
            )
            findings[counter.rule_id] = _finding(rule, detail)
    return list(findings.values())


# --- thresholds -----------------------------------------------------------------------------------


def _metric(threshold: Threshold, action: Action) -> int | None:
    """The single action's value for the metric; None when it does not apply."""
    metric = threshold.metric
    if metric in MONEY_METRICS and action.currency != threshold.currency:
        return None
    if metric is ThresholdMetric.BASKET_TOTAL:
        return action.basket_total if action.kind is not Kind.EARN else None
    if metric is ThresholdMetric.DISCOUNT_TOTAL:
        return action.discount_total if action.kind is not Kind.EARN else None
    if metric is ThresholdMetric.POINTS_EARNED:
        return action.points_earned
    if metric is ThresholdMetric.POINTS_BURNED:
        return action.points_burned
    if metric is ThresholdMetric.CODE_COUNT:
        return len(action.codes)
    return None


def _threshold_fires(threshold: Threshold, action: Action) -> str | None:
    """Why the threshold fires, or None."""
    if threshold.metric is ThresholdMetric.DISCOUNT_SHARE_BPS:
        # discount / basket > limit / 10000, in integers.
        if action.kind is Kind.EARN or action.basket_total <= 0:
            return None
        if action.discount_total * 10_000 > threshold.limit * action.basket_total:
            return f"discount {action.discount_total} of basket {action.basket_total} (limit {threshold.limit} bps)"
        return None
    if threshold.metric is ThresholdMetric.BURN_ACCOUNT_AGE_DAYS:
        if action.points_burned <= 0 or action.enrolled_at is None or action.now is None:
            return None
        age_ms = (action.now - action.enrolled_at) // _MS
        if age_ms < threshold.limit * DAY_MS:
            return f"burn of {action.points_burned} points {age_ms // DAY_MS} days after enrolment"
        return None
    value = _metric(threshold, action)
    if value is not None and value > threshold.limit:
        return f"{threshold.metric.value} {value} (limit {threshold.limit})"
    return None


def _threshold_findings(rules: Iterable[Rule], action: Action) -> list[Finding]:
    findings = []
    for rule in rules:
        if rule.threshold is None or not rule.applies(action.kind):
            continue
        detail = _threshold_fires(rule.threshold, action)
        if detail is not None:
            findings.append(_finding(rule, detail))
    return findings


# --- blocklists -----------------------------------------------------------------------------------


def blocklist_lookups(action: Action) -> list[tuple[BlocklistEntryType, str]]:
    """The exact values the repository looks up (ranges are matched in memory)."""
    candidates = [
        (BlocklistEntryType.CUSTOMER, action.customer_id),
        (BlocklistEntryType.CUSTOMER, action.referrer_id),
        (BlocklistEntryType.CARD, action.card_hash),
        (BlocklistEntryType.DEVICE, action.device_hash),
        (BlocklistEntryType.IP, action.ip_hash),
        (BlocklistEntryType.EMAIL_DOMAIN, action.email_domain),
    ]
    return list(dict.fromkeys((kind, value) for kind, value in candidates if value))


def blocklist_matches(entries: Iterable[BlocklistEntry], action: Action) -> list[BlocklistEntry]:
    exact = set(blocklist_lookups(action))
    matches = []
    for entry in entries:
        if entry.expire_at is not None and action.now is not None and entry.expire_at <= action.now:
            continue
        if entry.type is BlocklistEntryType.IP_RANGE:
            if action.ip_address is not None and _in_range(action.ip_address, entry.value):
                matches.append(entry)
        elif (entry.type, entry.value) in exact:
            matches.append(entry)
    return matches


@lru_cache(maxsize=65_536)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr)


def _in_range(address, cidr: str) -> bool:
    network = _network(cidr)  # parsed once per process: every assessment with an IP checks every range
    return address.version == network.version and address in network


# --- the decision ---------------------------------------------------------------------------------


def _finding(rule: Rule, detail: str) -> Finding:
    shadow = rule.state is RuleState.SHADOW
    return Finding(
        rule.reason,
        rule.score,
        ("shadow: " if shadow else "") + detail,
        rule_id=rule.rule_id,
        action=rule.action,
        shadow=shadow,
    )


def _blocklist_finding(entry: BlocklistEntry) -> Finding:
    return Finding(
        Reason.BLOCKLISTED.value,
        MAX_SCORE,
        f"{entry.type.value} is blocklisted",
        entry_id=entry.entry_id,
        action=Decision.DECLINE,
    )


def decide(
    rules: list[Rule],
    settings: Settings,
    action: Action,
    *,
    blocked: list[BlocklistEntry],
    counters: list[Counter],
    totals: list[int] | None,
    history: patterns.History | None = None,
) -> Verdict:
    """The verdict on `action`; `totals` None means the counters were unreachable (degraded). The
    pattern rules need no counters: they are judged in degraded mode too."""
    by_id = {rule.rule_id: rule for rule in rules}
    findings = [_blocklist_finding(entry) for entry in blocked]
    findings += _threshold_findings(rules, action)
    findings += [
        _finding(rule, detail)
        for rule, detail in patterns.fired(rules, action, history or patterns.History())
    ]
    skipped: tuple[str, ...] = ()
    if totals is None:
        skipped = tuple(sorted({c.rule_id for c in counters}))
    else:
        findings += _velocity_findings(by_id, counters, totals)
    live = [f for f in findings if not f.shadow]
    score = min(MAX_SCORE, sum(f.score for f in live))
    forced = max((f.action for f in live if f.action is not None), default=Decision.ALLOW)
    by_score = _score_decision(score, settings)
    if by_score > forced:
        findings.append(Finding(Reason.RISK_SCORE.value, 0, f"risk score {score}", action=by_score))
    ordered = sorted(findings, key=lambda f: (f.shadow, -(f.action or 0), -f.score))
    return Verdict(
        max(forced, by_score),
        score,
        tuple(ordered),
        degraded=totals is None,
        skipped_rule_ids=skipped,
        degraded_policy=settings.degraded_policy(action.kind) if totals is None else None,
    )


def _score_decision(score: int, settings: Settings) -> Decision:
    if score >= settings.decline_threshold:
        return Decision.DECLINE
    if score >= settings.review_threshold:
        return Decision.REVIEW
    return Decision.ALLOW


# --- rules as configured --------------------------------------------------------------------------


def validate_rule(rule: Rule) -> None:
    """What the contract cannot say about a rule."""
    if not 0 <= rule.score <= MAX_SCORE:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "score must be 0 to 1000", field="rule.score")
    if rule.velocity is not None:
        if rule.velocity.window_ms <= 0:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "the window must be positive", field="rule.velocity.window"
            )
        if rule.velocity.limit < 0:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "the limit must not be negative", field="rule.velocity"
            )
    if rule.threshold is not None and rule.threshold.limit < 0:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "the limit must not be negative", field="rule.threshold"
        )


def validate_settings(settings: Settings) -> None:
    if not 0 < settings.review_threshold <= MAX_SCORE:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "review_threshold must be 1 to 1000", field="settings.review_threshold"
        )
    if not settings.review_threshold <= settings.decline_threshold <= MAX_SCORE:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            "decline_threshold must be between review_threshold and 1000",
            field="settings.decline_threshold",
        )
