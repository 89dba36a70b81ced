"""Achievements, delays and clawback on triggers, pure: what they may say (checked on save), what an
event contributes to an achievement, and how far a customer has come.

An achievement measures matching events per customer: their COUNT, the SUM of a property, or the
number of DISTINCT values of a property (a list property such as a purchase's "categories" gives
each of its values). With a `window`, only events within it count (a rolling window, "spend 500 in
30 days"), else the whole campaign. A return takes back what it refunds: a purchase refunded in full
no longer counts, and a SUM of "net_total" loses the refunded amount."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from loyalty.promotion.v1 import trigger_pb2 as tpb
from loyalty_runtime.errors import FieldViolation as Violation

MAX_DELAY = timedelta(days=365)
MAX_WINDOW = timedelta(days=366)
MAX_TARGET = 10**12
MAX_DISTINCT_VALUES = 100
MAX_VALUE = 128
# The property a SUM of money measures, which a refund reduces.
REFUNDED_PROPERTY = "net_total"
MEASURES = (tpb.ACHIEVEMENT_MEASURE_COUNT, tpb.ACHIEVEMENT_MEASURE_SUM, tpb.ACHIEVEMENT_MEASURE_DISTINCT)


def violations(trigger: tpb.Trigger, listenable, prefix: str = "trigger.") -> list[Violation]:
    """Everything wrong with the trigger's achievement, clawback and delay, each with its field."""
    found: list[Violation] = []
    if trigger.HasField("achievement"):
        found += _achievement_violations(trigger, prefix + "achievement.")
    if trigger.clawback not in tpb.ClawbackPolicy.values():
        found.append(Violation(prefix + "clawback", "unknown clawback policy"))
    elif trigger.clawback == tpb.CLAWBACK_POLICY_POINTS and not trigger.HasField("achievement"):
        found.append(Violation(prefix + "clawback", "only an achievement's reward can be clawed back"))
    if trigger.HasField("delay") and not timedelta(0) < trigger.delay.ToTimedelta() <= MAX_DELAY:
        found.append(Violation(prefix + "delay", "must be more than zero and at most a year"))
    if trigger.cancel_on_event_type:
        if not trigger.HasField("delay"):
            found.append(Violation(prefix + "cancel_on_event_type", "only a delayed reward can be cancelled"))
        elif not listenable(trigger.cancel_on_event_type):
            found.append(Violation(prefix + "cancel_on_event_type", "must be an event triggers listen to"))
    return found


def _achievement_violations(trigger: tpb.Trigger, prefix: str) -> list[Violation]:
    rule = trigger.achievement
    found = []
    if trigger.HasField("occurrence"):
        found.append(Violation(prefix[:-1], "an achievement replaces the occurrence rule: set one of them"))
    if rule.measure not in MEASURES:
        found.append(Violation(prefix + "measure", "COUNT, SUM or DISTINCT is required"))
    elif rule.measure == tpb.ACHIEVEMENT_MEASURE_COUNT and rule.property:
        found.append(Violation(prefix + "property", "COUNT measures no property"))
    elif rule.measure != tpb.ACHIEVEMENT_MEASURE_COUNT and not 0 < len(rule.property) <= MAX_VALUE:
        found.append(Violation(prefix + "property", "SUM and DISTINCT need the property they measure"))
    if not 1 <= rule.target <= MAX_TARGET:
        found.append(Violation(prefix + "target", f"must be 1..{MAX_TARGET}"))
    if rule.HasField("window") and not timedelta(0) < rule.window.ToTimedelta() <= MAX_WINDOW:
        found.append(Violation(prefix + "window", "must be more than zero and at most a year"))
    return found


@dataclass(frozen=True)
class Contribution:
    """What one event adds: `value` (DISTINCT; '' otherwise) and `amount` (SUM; 0 otherwise)."""

    value: str
    amount: int


def contributions(rule: tpb.AchievementRule, properties: Mapping[str, object]) -> list[Contribution]:
    """What the event contributes; [] when it lacks the measured property (it does not count)."""
    if rule.measure == tpb.ACHIEVEMENT_MEASURE_COUNT:
        return [Contribution("", 0)]
    measured = properties.get(rule.property)
    if rule.measure == tpb.ACHIEVEMENT_MEASURE_SUM:
        if isinstance(measured, int) and not isinstance(measured, bool) and measured > 0:
            return [Contribution("", measured)]
        return []
    values = measured if isinstance(measured, tuple | list) else (measured,)
    distinct = {str(value)[:MAX_VALUE] for value in values if isinstance(value, str | int) and value != ""}
    return [Contribution(value, 0) for value in sorted(distinct)[:MAX_DISTINCT_VALUES]]


@dataclass(frozen=True)
class Counted:
    """A stored contribution: its event's time, and what returns refunded of its purchase."""

    source_event_id: str
    value: str
    amount: int
    occurred_at: datetime
    refundable: int
    refunded: int


def progress(rule: tpb.AchievementRule, counted: Sequence[Counted], as_of: datetime) -> int:
    """How far the customer has come as of `as_of`: within the window, less what returns undid."""
    start = as_of - rule.window.ToTimedelta() if rule.HasField("window") else None
    live = [c for c in counted if (start is None or c.occurred_at > start) and c.occurred_at <= as_of]
    live = [c for c in live if not (c.refundable and c.refunded >= c.refundable)]
    if rule.measure == tpb.ACHIEVEMENT_MEASURE_SUM:
        refunds = rule.property == REFUNDED_PROPERTY
        return sum(max(c.amount - (c.refunded if refunds else 0), 0) for c in live)
    if rule.measure == tpb.ACHIEVEMENT_MEASURE_DISTINCT:
        return len({c.value for c in live})
    return len({c.source_event_id for c in live})
