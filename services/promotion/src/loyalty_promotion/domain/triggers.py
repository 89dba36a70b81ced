"""Trigger rules, pure: what a trigger may say (checked on save), whether an event matches it, which
counting period the event falls in, and whether this match earns a reward.

A trigger counts matching events per customer and period (`OccurrenceRule`: reward the nth, and with
`repeat` every further multiple of it); it rewards at most `max_rewards_per_customer` times over its
life and not again within its `cooldown`. Periods are calendar periods in the tenant's time zone, so
"3 purchases in February" means February where the shop is."""

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from loyalty.promotion.v1 import trigger_pb2 as tpb
from loyalty_runtime.errors import FieldViolation as Violation

MAX_COOLDOWN = timedelta(days=366)
MAX_FILTERS = 20
MAX_NTH = 1_000
MAX_NAME = 200
# A property value the filters compare: from the event (strings, integers, booleans).
Value = str | int | bool


def violations(
    trigger: tpb.Trigger, listenable: Callable[[str], bool], prefix: str = "trigger."
) -> list[Violation]:
    """Everything wrong with a trigger as a marketer saved it, each with its field."""
    found: list[Violation] = []

    def wrong(field: str, description: str) -> None:
        found.append(Violation(prefix + field, description))

    if not trigger.display_name.strip() or len(trigger.display_name) > MAX_NAME:
        wrong("display_name", f"a name of 1 to {MAX_NAME} characters is required")
    if not listenable(trigger.event_type):
        wrong("event_type", "must be an event of the platform triggers listen to, or an app's activity type")
    if trigger.state not in (tpb.TRIGGER_STATE_ENABLED, tpb.TRIGGER_STATE_DISABLED):
        wrong("state", "must be ENABLED or DISABLED")
    if len(trigger.property_filters) > MAX_FILTERS:
        wrong("property_filters", f"at most {MAX_FILTERS} filters")
    for index, item in enumerate(trigger.property_filters[:MAX_FILTERS]):
        found += _filter_violations(item, f"{prefix}property_filters[{index}].")
    if trigger.HasField("occurrence"):
        occurrence = trigger.occurrence
        if not 1 <= occurrence.nth <= MAX_NTH:
            wrong("occurrence.nth", f"must be 1..{MAX_NTH}")
        if occurrence.period not in tpb.OccurrencePeriod.values() or occurrence.period == 0:
            wrong("occurrence.period", "a period is required")
    if trigger.max_rewards_per_customer < 0:
        wrong("max_rewards_per_customer", "must be 0 (no limit) or more")
    if trigger.HasField("cooldown"):
        cooldown = trigger.cooldown.ToTimedelta()
        if not timedelta(0) < cooldown <= MAX_COOLDOWN:
            wrong("cooldown", "must be more than zero and at most a year")
    return found


def _filter_violations(item: tpb.PropertyFilter, prefix: str) -> list[Violation]:
    found = []
    if not item.property or len(item.property) > MAX_NAME:
        found.append(
            Violation(prefix + "property", f"a property name of 1 to {MAX_NAME} characters is required")
        )
    operator = item.operator
    if operator not in tpb.PropertyOperator.values() or operator == tpb.PROPERTY_OPERATOR_UNSPECIFIED:
        found.append(Violation(prefix + "operator", "an operator is required"))
    elif operator == tpb.PROPERTY_OPERATOR_IN:
        if not item.values or any(_operand(v) is None for v in item.values):
            found.append(Violation(prefix + "values", "IN needs values, each with one kind set"))
    elif operator != tpb.PROPERTY_OPERATOR_EXISTS:
        operand = _operand(item.value)
        if operand is None:
            found.append(Violation(prefix + "value", "a value is required"))
        elif operator in ORDERED and isinstance(operand, str | bool):
            found.append(Violation(prefix + "value", "ordering compares integers only"))
    return found


def _operand(value: tpb.PropertyValue) -> Value | None:
    """The operand's value (money compares by its minor units); None when no kind is set."""
    kind = value.WhichOneof("kind")
    if kind == "money_value":
        return value.money_value.amount_minor
    return getattr(value, kind) if kind else None


ORDERED = {
    tpb.PROPERTY_OPERATOR_LESS_THAN: lambda left, right: left < right,
    tpb.PROPERTY_OPERATOR_LESS_THAN_OR_EQUALS: lambda left, right: left <= right,
    tpb.PROPERTY_OPERATOR_GREATER_THAN: lambda left, right: left > right,
    tpb.PROPERTY_OPERATOR_GREATER_THAN_OR_EQUALS: lambda left, right: left >= right,
}


def filters_hold(trigger: tpb.Trigger, properties: Mapping[str, Value]) -> bool:
    """All property filters hold for the event's properties. A missing property, or one of
    another type than the operand, fails every filter but NOT_EQUALS."""
    return all(_holds(item, properties) for item in trigger.property_filters)


def _holds(item: tpb.PropertyFilter, properties: Mapping[str, Value]) -> bool:
    present = item.property in properties
    if item.operator == tpb.PROPERTY_OPERATOR_EXISTS:
        return present
    actual = properties.get(item.property)
    if item.operator == tpb.PROPERTY_OPERATOR_IN:
        return present and any(_same(actual, _operand(v)) for v in item.values)
    expected = _operand(item.value)
    if item.operator == tpb.PROPERTY_OPERATOR_EQUALS:
        return present and _same(actual, expected)
    if item.operator == tpb.PROPERTY_OPERATOR_NOT_EQUALS:
        return not (present and _same(actual, expected))
    compare = ORDERED.get(item.operator)
    ints = isinstance(actual, int) and not isinstance(actual, bool) and isinstance(expected, int)
    return bool(present and compare and ints and compare(actual, expected))


def _same(left: Value | None, right: Value | None) -> bool:
    return type(left) is type(right) and left == right  # True is not 1


def period_of(period: int, occurred_at: datetime, time_zone: str) -> str:
    """The counting period the event falls in, as a key: the calendar day, ISO week, month or year
    in the tenant's time zone, or the whole campaign."""
    local = occurred_at.astimezone(ZoneInfo(time_zone or "UTC"))
    if period == tpb.OCCURRENCE_PERIOD_CALENDAR_DAY:
        return local.strftime("D%Y-%m-%d")
    if period == tpb.OCCURRENCE_PERIOD_CALENDAR_WEEK:
        year, week, _ = local.isocalendar()
        return f"W{year}-{week:02d}"
    if period == tpb.OCCURRENCE_PERIOD_CALENDAR_MONTH:
        return local.strftime("M%Y-%m")
    if period == tpb.OCCURRENCE_PERIOD_CALENDAR_YEAR:
        return local.strftime("Y%Y")
    return "campaign"


def counting_period(trigger: tpb.Trigger, occurred_at: datetime, time_zone: str) -> str:
    if not trigger.HasField("occurrence"):
        return "campaign"
    return period_of(trigger.occurrence.period, occurred_at, time_zone)


def nth_is_rewarded(trigger: tpb.Trigger, count: int) -> bool:
    """Whether the `count`-th matching event of a period earns the reward."""
    if not trigger.HasField("occurrence"):
        return True
    nth = trigger.occurrence.nth
    return count == nth or (trigger.occurrence.repeat and count % nth == 0)


def limits_allow(trigger: tpb.Trigger, rewards: int, last_reward_at: datetime | None, now: datetime) -> bool:
    """Whether the customer may be rewarded again: under the lifetime cap and past the cooldown."""
    if trigger.max_rewards_per_customer and rewards >= trigger.max_rewards_per_customer:
        return False
    if trigger.HasField("cooldown") and last_reward_at is not None:
        return now - last_reward_at >= trigger.cooldown.ToTimedelta()
    return True
