"""Between the contract's messages and the domain's shapes: requests into `Action`s and rules,
verdicts into `Assessment`s. Decoding checks what a field means (a hash is 64 hex digits, an IP
parses, a POS operation names its terminal) and names the field it refuses."""

import hashlib
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.duration_pb2 import Duration

from loyalty.common.v1 import basket_pb2, errors_pb2
from loyalty.fraud.v1 import (
    assessment_pb2 as apb,
    blocklist_pb2 as bpb,
    fraud_service_pb2 as api,
    rule_pb2 as rpb,
)
from loyalty_fraud.domain import model
from loyalty_fraud.domain.rules import parse_ip, require_email_domain, require_hash
from loyalty_runtime.enums import EnumCodec
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.protobuf import moment, timestamp

KINDS = EnumCodec(apb.AssessmentKind, model.Kind)
DECISIONS = EnumCodec(apb.Decision, model.Decision)
RULE_STATES = EnumCodec(rpb.RuleState, model.RuleState)
VELOCITY_KEYS = EnumCodec(rpb.VelocityKey, model.VelocityKey)
METRICS = EnumCodec(rpb.ThresholdMetric, model.ThresholdMetric)
BLOCKLIST_TYPES = EnumCodec(bpb.BlocklistEntryType, model.BlocklistEntryType)
PATTERN_KINDS = EnumCodec(rpb.PatternKind, model.PatternKind)
MAX_WINDOW_MS = 90 * 86_400_000


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(Reason.INVALID_ARGUMENT, description, field=field)


def fingerprint(request) -> bytes:
    """The request without `dry_run`: a dry run and the real call may share a key."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("dry_run")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


# --- requests into actions ------------------------------------------------------------------------


def _amount(money, field: str, currency: str) -> int:
    if money.amount_minor < 0:
        raise _invalid(f"{field}.amount_minor", f"{field} must not be negative")
    if money.amount_minor and money.currency_code != currency:
        raise _invalid(f"{field}.currency_code", f"{field} must be in the basket's currency")
    return money.amount_minor


def _points(value: int, field: str) -> int:
    if value < 0:
        raise _invalid(field, f"{field} must not be negative")
    return value


def _signals(signals: apb.RiskSignals, channel: int = 0) -> dict:
    """The signals' fields of an Action; a POS (store) operation must name its terminal."""
    pos = basket_pb2.CHANNEL_STORE in (channel, signals.channel)
    if pos and not signals.terminal_id:
        raise _invalid("signals.terminal_id", "a store (POS) operation needs its terminal id")
    return {
        "card_hash": require_hash(signals.card_hash, "signals.card_hash"),
        "device_hash": require_hash(signals.device_hash, "signals.device_hash"),
        "ip_hash": require_hash(signals.ip_hash, "signals.ip_hash"),
        "ip_address": parse_ip(signals.ip_address, "signals.ip_address"),
        "email_domain": require_email_domain(signals.email_domain, "signals.email_domain"),
        "terminal_id": signals.terminal_id,
        "store_id": signals.store_id,
        "enrolled_at": moment(signals, "customer_enrol_time"),
        "credentials_changed_at": moment(signals, "credential_change_time"),
    }


def checkout_action(request: api.AssessCheckoutRequest) -> model.Action:
    if not request.checkout_id:
        raise _invalid("checkout_id", "checkout_id is required")
    basket = request.basket
    currency = basket.currency_code or request.discount_total.currency_code
    signals = _signals(request.signals, basket.channel)
    if not signals["store_id"]:
        signals["store_id"] = basket.store_id
    return model.Action(
        model.Kind.CHECKOUT,
        request.checkout_id,
        customer_id=request.customer_id,
        currency=currency,
        basket_total=_amount(basket.subtotal, "basket.subtotal", currency),
        discount_total=_amount(request.discount_total, "discount_total", currency),
        points_earned=_points(request.points_to_earn, "points_to_earn"),
        points_burned=_points(request.points_to_burn, "points_to_burn"),
        codes=tuple(request.codes),
        **signals,
    )


def redemption_action(request: api.AssessRedemptionRequest) -> model.Action:
    if not request.idempotency_key:
        raise _invalid("idempotency_key", "idempotency_key is required")
    if not request.code:
        raise _invalid("code", "code is required")
    currency = request.basket_total.currency_code or request.discount.currency_code
    return model.Action(
        model.Kind.REDEMPTION,
        request.idempotency_key,
        customer_id=request.customer_id,
        currency=currency,
        basket_total=_amount(request.basket_total, "basket_total", currency),
        discount_total=_amount(request.discount, "discount", currency),
        codes=(request.code,),
        **_signals(request.signals),
    )


def earn_action(request: api.AssessEarnRequest) -> model.Action:
    if not request.idempotency_key:
        raise _invalid("idempotency_key", "idempotency_key is required")
    if request.source == api.EARN_SOURCE_UNSPECIFIED:
        raise _invalid("source", "source (the kind of earn) is required")
    if not request.customer_id:
        raise _invalid("customer_id", "customer_id is required")
    return model.Action(
        model.Kind.EARN,
        request.idempotency_key,
        customer_id=request.customer_id,
        points_earned=_points(request.points, "points"),
        **_signals(request.signals),
    )


def return_action(request: api.AssessReturnRequest) -> model.Action:
    if not request.idempotency_key:
        raise _invalid("idempotency_key", "idempotency_key is required")
    if not request.customer_id:
        raise _invalid("customer_id", "customer_id is required")
    if not request.checkout_id:
        raise _invalid("checkout_id", "checkout_id (the purchase returned) is required")
    currency = request.refund.currency_code
    if not currency:
        raise _invalid("refund.currency_code", "the refund's currency is required")
    return model.Action(
        model.Kind.RETURN,
        request.idempotency_key,
        customer_id=request.customer_id,
        currency=currency,
        returned_checkout_id=request.checkout_id,
        refund=_amount(request.refund, "refund", currency),
        points_reversed=_points(request.points_to_reverse, "points_to_reverse"),
        **_signals(request.signals),
    )


def _fingerprints(party: apb.PartyFingerprints, field: str) -> frozenset:
    found = {
        (model.Fingerprint.PHONE, require_hash(party.phone_hash, f"{field}.phone_hash")),
        (model.Fingerprint.EMAIL, require_hash(party.email_hash, f"{field}.email_hash")),
    }
    found |= {
        (model.Fingerprint.DEVICE, require_hash(h, f"{field}.device_hashes")) for h in party.device_hashes
    }
    found |= {(model.Fingerprint.CARD, require_hash(h, f"{field}.card_hashes")) for h in party.card_hashes}
    return frozenset((kind, value) for kind, value in found if value)


def referral_action(request: api.AssessReferralRequest) -> model.Action:
    if not request.idempotency_key:
        raise _invalid("idempotency_key", "idempotency_key is required")
    if not request.referrer_customer_id:
        raise _invalid("referrer_customer_id", "referrer_customer_id is required")
    if not request.referee_customer_id:
        raise _invalid("referee_customer_id", "referee_customer_id is required")
    return model.Action(
        model.Kind.REFERRAL,
        request.idempotency_key,
        customer_id=request.referee_customer_id,
        points_earned=_points(request.points, "points"),
        referrer_id=request.referrer_customer_id,
        referrer_fingerprints=_fingerprints(request.referrer, "referrer"),
        referee_fingerprints=_fingerprints(request.referee, "referee"),
        **_signals(request.signals),
    )


def enrolment_action(request: api.AssessEnrolmentRequest) -> model.Action:
    if not request.idempotency_key:
        raise _invalid("idempotency_key", "idempotency_key is required")
    if not request.customer_id:
        raise _invalid("customer_id", "customer_id is required")
    return model.Action(
        model.Kind.ENROLMENT,
        request.idempotency_key,
        customer_id=request.customer_id,
        **_signals(request.signals),
    )


# --- rules ----------------------------------------------------------------------------------------

DEFAULT_REASON = {"velocity": Reason.VELOCITY_LIMIT, "threshold": Reason.THRESHOLD_EXCEEDED}
PATTERN_REASON = {
    model.PatternKind.EARN_ABOVE_CUSTOMER_USUAL: Reason.POINTS_ANOMALY,
    model.PatternKind.EARN_ABOVE_STORE_USUAL: Reason.POINTS_ANOMALY,
    model.PatternKind.BURN_AFTER_LARGE_EARN: Reason.POINTS_ANOMALY,
    model.PatternKind.BURN_NEW_DEVICE_AFTER_ACCOUNT_CHANGE: Reason.POINTS_ANOMALY,
    model.PatternKind.RETURN_VALUE_SHARE: Reason.REFUND_ABUSE,
    model.PatternKind.RETURN_AFTER_POINTS_SPENT: Reason.REFUND_ABUSE,
    model.PatternKind.REFERRAL_SHARED_FINGERPRINT: Reason.REFERRAL_SELF_DEALING,
    model.PatternKind.REFERRAL_DEVICE_REFEREES: Reason.REFERRAL_SELF_DEALING,
}
# Kinds whose max_value must be positive to mean anything (a multiple, a share, a count).
_POSITIVE_LIMIT = frozenset(
    {
        model.PatternKind.EARN_ABOVE_CUSTOMER_USUAL,
        model.PatternKind.EARN_ABOVE_STORE_USUAL,
        model.PatternKind.RETURN_VALUE_SHARE,
        model.PatternKind.REFERRAL_DEVICE_REFEREES,
    }
)


def _duration_ms(duration) -> int:
    return duration.seconds * 1000 + duration.nanos // 1_000_000


def _pattern(pattern: rpb.PatternRule) -> model.Pattern:
    kind = PATTERN_KINDS.decode(pattern.kind, "rule.pattern.kind")
    window_ms = _duration_ms(pattern.window)
    if kind in model.WINDOWLESS_PATTERNS:
        window_ms = 0
    elif not 0 < window_ms <= MAX_WINDOW_MS:
        raise _invalid("rule.pattern.window", "the window must be positive and at most 90 days")
    if pattern.max_value < 0 or (kind in _POSITIVE_LIMIT and pattern.max_value == 0):
        raise _invalid("rule.pattern.max_value", f"{kind.value} needs a positive max_value")
    if pattern.min_value < 0:
        raise _invalid("rule.pattern.min_value", "min_value must not be negative")
    return model.Pattern(kind, window_ms, pattern.max_value, pattern.min_value)


def _velocity(velocity: rpb.VelocityRule) -> model.Velocity:
    key = VELOCITY_KEYS.decode(velocity.key, "rule.velocity.key")
    window_ms = _duration_ms(velocity.window)
    if not 0 < window_ms <= MAX_WINDOW_MS:
        raise _invalid("rule.velocity.window", "the window must be positive and at most 90 days")
    limit = velocity.WhichOneof("limit")
    if limit is None:
        raise _invalid("rule.velocity.max_count", "a limit (max_count, max_points or max_amount) is required")
    if limit == "max_amount":
        if not velocity.max_amount.currency_code:
            raise _invalid("rule.velocity.max_amount.currency_code", "the limit's currency is required")
        return model.Velocity(
            key,
            window_ms,
            model.Measure.AMOUNT,
            velocity.max_amount.amount_minor,
            velocity.max_amount.currency_code,
        )
    measure = model.Measure.COUNT if limit == "max_count" else model.Measure.POINTS
    return model.Velocity(key, window_ms, measure, getattr(velocity, limit))


def _threshold(threshold: rpb.ThresholdRule) -> model.Threshold:
    metric = METRICS.decode(threshold.metric, "rule.threshold.metric")
    limit = threshold.WhichOneof("limit")
    money = metric in model.MONEY_METRICS
    if limit != ("max_amount" if money else "max_value"):
        field = "max_amount" if money else "max_value"
        raise _invalid(f"rule.threshold.{field}", f"{metric.value} takes its limit in {field}")
    if money:
        if not threshold.max_amount.currency_code:
            raise _invalid("rule.threshold.max_amount.currency_code", "the limit's currency is required")
        return model.Threshold(metric, threshold.max_amount.amount_minor, threshold.max_amount.currency_code)
    return model.Threshold(metric, threshold.max_value)


def decode_rule(rule: rpb.Rule) -> model.Rule:
    """The domain's rule; refuses what it cannot evaluate, naming the field."""
    kind = rule.WhichOneof("kind")
    if kind is None:
        raise _invalid("rule.velocity", "a rule is a velocity, a threshold or a pattern rule")
    if rule.action not in (apb.DECISION_UNSPECIFIED, apb.DECISION_REVIEW, apb.DECISION_DECLINE):
        raise _invalid("rule.action", "a rule forces REVIEW or DECLINE, or nothing")
    if rule.score < 0 or rule.score > 1000:
        raise _invalid("rule.score", "score must be 0 to 1000")
    if rule.action == apb.DECISION_UNSPECIFIED and rule.score == 0:
        raise _invalid("rule.score", "a rule that forces nothing needs a score")
    if (
        rule.reason
        and errors_pb2.ErrorReason.Name(rule.reason).removeprefix("ERROR_REASON_") not in Reason.__members__
    ):
        raise _invalid("rule.reason", "unknown reason")
    velocity = _velocity(rule.velocity) if kind == "velocity" else None
    threshold = _threshold(rule.threshold) if kind == "threshold" else None
    pattern = _pattern(rule.pattern) if kind == "pattern" else None
    default_reason = PATTERN_REASON[pattern.kind] if pattern else DEFAULT_REASON[kind]
    return model.Rule(
        rule.rule_id,
        RULE_STATES.decode_or(rule.state, model.RuleState.ENABLED),
        frozenset(KINDS.decode(k, "rule.applies_to") for k in rule.applies_to),
        DECISIONS.decode_or(rule.action, None),
        rule.score,
        rule.reason or default_reason.value,
        velocity=velocity,
        threshold=threshold,
        pattern=pattern,
        # Counters start afresh when what is counted, or over which window, changes.
        generation=f"{velocity.window_ms}{velocity.measure.value[0]}" if velocity else "",
    )


# --- settings -------------------------------------------------------------------------------------

DEGRADED_FIELDS = {
    model.Kind.CHECKOUT: "degraded_checkout_decision",
    model.Kind.REDEMPTION: "degraded_redemption_decision",
    model.Kind.EARN: "degraded_earn_decision",
    model.Kind.RETURN: "degraded_return_decision",
    model.Kind.REFERRAL: "degraded_referral_decision",
    model.Kind.ENROLMENT: "degraded_enrolment_decision",
}


def default_settings() -> rpb.FraudSettings:
    return rpb.FraudSettings(review_threshold=500, decline_threshold=800)


def decode_settings(settings: rpb.FraudSettings) -> model.Settings:
    degraded = {
        kind: DECISIONS.decode(getattr(settings, field), field)
        for kind, field in DEGRADED_FIELDS.items()
        if getattr(settings, field)
    }
    return model.Settings(settings.review_threshold, settings.decline_threshold, degraded)


# --- code brute force -----------------------------------------------------------------------------

BRUTE_FORCE_KEYS = (
    rpb.VELOCITY_KEY_TERMINAL,
    rpb.VELOCITY_KEY_DEVICE,
    rpb.VELOCITY_KEY_CUSTOMER,
    rpb.VELOCITY_KEY_IP,
)
MAX_BRUTE_FORCE_MS = 86_400_000


def _limit(key: int, attempts: int, window_s: int, lockout_s: int) -> rpb.BruteForceLimit:
    return rpb.BruteForceLimit(
        key=key,
        max_invalid_attempts=attempts,
        window=Duration(seconds=window_s),
        lockout=Duration(seconds=lockout_s),
    )


DEFAULT_BRUTE_FORCE = rpb.BruteForcePolicy(
    limits=[
        _limit(rpb.VELOCITY_KEY_TERMINAL, 20, 600, 900),
        _limit(rpb.VELOCITY_KEY_DEVICE, 10, 600, 900),
        _limit(rpb.VELOCITY_KEY_CUSTOMER, 10, 600, 900),
    ]
)


def brute_force_policy(settings: rpb.FraudSettings) -> rpb.BruteForcePolicy:
    """The tenant's limits, or the defaults when it set none."""
    return settings.brute_force if settings.brute_force.limits else DEFAULT_BRUTE_FORCE


def validate_brute_force(policy: rpb.BruteForcePolicy) -> None:
    seen = set()
    for i, limit in enumerate(policy.limits):
        field = f"settings.brute_force.limits[{i}]"
        if limit.key not in BRUTE_FORCE_KEYS:
            raise _invalid(f"{field}.key", "a brute-force limit counts per terminal, device, customer or IP")
        if limit.key in seen:
            raise _invalid(f"{field}.key", "one limit per key")
        seen.add(limit.key)
        if limit.max_invalid_attempts <= 0:
            raise _invalid(f"{field}.max_invalid_attempts", "max_invalid_attempts must be positive")
        if not 0 < _duration_ms(limit.window) <= MAX_BRUTE_FORCE_MS:
            raise _invalid(f"{field}.window", "the window must be positive and at most a day")
        if not 0 < _duration_ms(limit.lockout) <= MAX_BRUTE_FORCE_MS:
            raise _invalid(f"{field}.lockout", "the lockout must be positive and at most a day")


def brute_force_etag(policy: rpb.BruteForcePolicy) -> str:
    return hashlib.sha256(policy.SerializeToString(deterministic=True)).hexdigest()[:16]


# --- blocklist entries ----------------------------------------------------------------------------


def decode_entry(entry: bpb.BlocklistEntry) -> model.BlocklistEntry:
    return model.BlocklistEntry(
        entry.entry_id,
        BLOCKLIST_TYPES.decode(entry.type, "entry.type"),
        entry.value,
        moment(entry, "expire_time"),
    )


# --- assessments ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assessed:
    """A verdict on an action, as recorded."""

    assessment_id: str
    action: model.Action
    verdict: model.Verdict
    dry_run: bool
    created_at: datetime
    review_case_id: str = ""


def _reason(finding: model.Finding) -> apb.DecisionReason:
    return apb.DecisionReason(
        reason=finding.reason,
        rule_id=finding.rule_id,
        blocklist_entry_id=finding.entry_id,
        score=finding.score,
        detail=finding.detail,
    )


def encode_assessment(assessed: Assessed) -> apb.Assessment:
    verdict = assessed.verdict
    return apb.Assessment(
        assessment_id=assessed.assessment_id,
        kind=KINDS.encode(assessed.action.kind),
        decision=DECISIONS.encode(verdict.decision),
        risk_score=verdict.score,
        reasons=[_reason(f) for f in verdict.findings],
        review_case_id=assessed.review_case_id,
        subject_id=assessed.action.subject_id,
        customer_id=assessed.action.customer_id,
        dry_run=assessed.dry_run,
        create_time=timestamp(assessed.created_at),
        degraded=verdict.degraded,
        skipped_rule_ids=verdict.skipped_rule_ids,
        degraded_policy=DECISIONS.encode(verdict.degraded_policy) if verdict.degraded_policy else 0,
    )
