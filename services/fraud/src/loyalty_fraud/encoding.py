"""Between the contract's messages and the domain's shapes: requests into `Action`s and rules,
verdicts into `Assessment`s. Decoding checks what a field means (a hash is 64 hex digits, an IP
parses, a POS operation names its terminal) and names the field it refuses."""

import hashlib
from dataclasses import dataclass
from datetime import datetime

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


# --- rules ----------------------------------------------------------------------------------------

DEFAULT_REASON = {"velocity": Reason.VELOCITY_LIMIT, "threshold": Reason.THRESHOLD_EXCEEDED}


def _velocity(velocity: rpb.VelocityRule) -> model.Velocity:
    key = VELOCITY_KEYS.decode(velocity.key, "rule.velocity.key")
    window_ms = velocity.window.seconds * 1000 + velocity.window.nanos // 1_000_000
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
        raise _invalid("rule.velocity", "a rule is either a velocity or a threshold rule")
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
    return model.Rule(
        rule.rule_id,
        RULE_STATES.decode_or(rule.state, model.RuleState.ENABLED),
        frozenset(KINDS.decode(k, "rule.applies_to") for k in rule.applies_to),
        DECISIONS.decode_or(rule.action, None),
        rule.score,
        rule.reason or DEFAULT_REASON[kind].value,
        velocity=velocity,
        threshold=threshold,
        # Counters start afresh when what is counted, or over which window, changes.
        generation=f"{velocity.window_ms}{velocity.measure.value[0]}" if velocity else "",
    )


# --- settings -------------------------------------------------------------------------------------

DEGRADED_FIELDS = {
    model.Kind.CHECKOUT: "degraded_checkout_decision",
    model.Kind.REDEMPTION: "degraded_redemption_decision",
    model.Kind.EARN: "degraded_earn_decision",
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
