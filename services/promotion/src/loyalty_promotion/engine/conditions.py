"""Condition trees compiled to closures once per catalog. A compiled node is `test(facts) -> bool`;
threshold leaves also report how far the basket is from them (for till hints)."""

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from loyalty.promotion.v1 import condition_pb2 as cpb
from loyalty_promotion.engine.expressions import Expression, ExpressionError, compile_expression
from loyalty_promotion.engine.facts import Facts

MAX_DEPTH = 8
MAX_NODES = 100

Test = Callable[[Facts], bool]


@dataclass(frozen=True)
class LineFilter:
    """A compiled LineFilter. Shipping lines match only a filter that names them explicitly."""

    skus: frozenset[str]
    categories: frozenset[str]
    brands: frozenset[str]
    excluded_skus: frozenset[str]
    excluded_categories: frozenset[str]
    excluded_brands: frozenset[str]

    @property
    def anchors(self) -> list[tuple[str, str]]:
        """Index keys a matching line must carry one of; empty = matches unanchored lines too."""
        if self.skus:
            return [("sku", s) for s in self.skus]
        if self.categories:
            return [("category", c) for c in self.categories]
        if self.brands:
            return [("brand", b) for b in self.brands]
        return []

    def matches(self, line, categories: frozenset[str], shipping: bool) -> bool:
        if line.excluded:
            return False
        if self.skus and line.sku not in self.skus:
            return False
        if self.categories and self.categories.isdisjoint(categories):
            return False
        if self.brands and line.brand not in self.brands:
            return False
        if shipping and not (line.sku in self.skus or "shipping" in self.categories):
            return False
        return not (
            line.sku in self.excluded_skus
            or line.brand in self.excluded_brands
            or not self.excluded_categories.isdisjoint(categories)
        )


EVERYTHING = LineFilter(*(frozenset() for _ in range(6)))


def compile_filter(message: cpb.LineFilter | None) -> LineFilter:
    if message is None:
        return EVERYTHING
    return LineFilter(
        frozenset(message.skus),
        frozenset(message.categories),
        frozenset(message.brands),
        frozenset(message.excluded_skus),
        frozenset(message.excluded_categories),
        frozenset(message.excluded_brands),
    )


@dataclass(frozen=True)
class Gap:
    """A threshold leaf: how much spend or how many units are missing (0 = met)."""

    kind: str  # "amount" or "units"
    measure: Callable[[Facts], int]


@dataclass(frozen=True)
class CompiledCondition:
    test: Test
    # Threshold leaves that must all hold (the root, or direct children of a root all_of).
    gaps: tuple[Gap, ...]
    # The other required leaves: when these hold and only gaps fail, the basket is a near miss.
    others: tuple[Test, ...]
    # Line filters a matching basket must contain a line of (for the index); empty = none known.
    required_filters: tuple[LineFilter, ...]
    uses_payment_method: bool


def always(_: Facts) -> bool:
    return True


TRUE = CompiledCondition(always, (), (), (), False)


def compile_condition(message: cpb.Condition | None) -> CompiledCondition:
    """Compiles a validated tree (validation.py refuses what would not compile)."""
    if message is None or message.WhichOneof("kind") is None:
        return TRUE
    state = {"payment": False}
    root_test = _node(message, state)
    children = list(message.all_of.conditions) if message.WhichOneof("kind") == "all_of" else [message]
    gaps, others, filters = [], [], []
    for child in children:
        gap = _gap(child)
        if gap is not None:
            gaps.append(gap)
        else:
            others.append(_node(child, {"payment": False}))
        kind = child.WhichOneof("kind")
        if kind == "line_quantity" and child.line_quantity.min_quantity > 0:
            filters.append(compile_filter(child.line_quantity.line_filter))
        if kind == "line_spend" and child.line_spend.min_spend.amount_minor > 0:
            filters.append(compile_filter(child.line_spend.line_filter))
    return CompiledCondition(root_test, tuple(gaps), tuple(others), tuple(filters), state["payment"])


def _node(message: cpb.Condition, state: dict) -> Test:
    kind = message.WhichOneof("kind")
    builder = _BUILDERS[kind]
    return builder(getattr(message, kind), state)


def _all_of(message, state) -> Test:
    tests = tuple(_node(child, state) for child in message.conditions)
    return lambda facts: all(test(facts) for test in tests)


def _any_of(message, state) -> Test:
    tests = tuple(_node(child, state) for child in message.conditions)
    return lambda facts: any(test(facts) for test in tests)


def _negation(message, state) -> Test:
    inner = _node(message.condition, state)
    return lambda facts: not inner(facts)


def _money_matches(money, facts: Facts) -> bool:
    return money.currency_code == facts.basket.currency


def _basket_subtotal(message, _state) -> Test:
    has_min, has_max = message.HasField("min_subtotal"), message.HasField("max_subtotal")

    def test(facts: Facts) -> bool:
        subtotal = facts.eligible_subtotal
        if has_min and (
            not _money_matches(message.min_subtotal, facts) or subtotal < message.min_subtotal.amount_minor
        ):
            return False
        return not (
            has_max
            and (
                not _money_matches(message.max_subtotal, facts)
                or subtotal > message.max_subtotal.amount_minor
            )
        )

    return test


def _units(facts: Facts, line_filter: LineFilter) -> int:
    return sum(facts.lines[i].units for i in facts.matching(line_filter))


def _spend(facts: Facts, line_filter: LineFilter) -> int:
    return sum(facts.lines[i].line_total for i in facts.matching(line_filter))


def _line_quantity(message, _state) -> Test:
    line_filter, minimum = compile_filter(message.line_filter), message.min_quantity
    return lambda facts: _units(facts, line_filter) >= minimum


def _line_spend(message, _state) -> Test:
    line_filter, minimum = compile_filter(message.line_filter), message.min_spend
    return lambda facts: _money_matches(minimum, facts) and _spend(facts, line_filter) >= minimum.amount_minor


def _gap(message: cpb.Condition) -> Gap | None:
    kind = message.WhichOneof("kind")
    if kind == "line_quantity":
        line_filter, minimum = (
            compile_filter(message.line_quantity.line_filter),
            message.line_quantity.min_quantity,
        )
        return Gap("units", lambda facts: max(0, minimum - _units(facts, line_filter)))
    if kind == "line_spend":
        line_filter, minimum = (
            compile_filter(message.line_spend.line_filter),
            message.line_spend.min_spend.amount_minor,
        )
        return Gap("amount", lambda facts: max(0, minimum - _spend(facts, line_filter)))
    if (
        kind == "basket_subtotal"
        and message.basket_subtotal.HasField("min_subtotal")
        and not message.basket_subtotal.HasField("max_subtotal")
    ):
        minimum = message.basket_subtotal.min_subtotal.amount_minor
        return Gap("amount", lambda facts: max(0, minimum - facts.eligible_subtotal))
    return None


def _segment(message, _state) -> Test:
    wanted = frozenset(message.segment_ids)
    mode = message.match
    if mode == cpb.SEGMENT_MATCH_NONE:
        return lambda facts: wanted.isdisjoint(facts.customer.segment_ids)
    if mode == cpb.SEGMENT_MATCH_ALL:
        return lambda facts: not facts.customer.anonymous and wanted <= facts.customer.segment_ids
    return lambda facts: not facts.customer.anonymous and not wanted.isdisjoint(facts.customer.segment_ids)


def _tier(message, _state) -> Test:
    tiers = frozenset(message.tier_ids)
    return lambda facts: not facts.customer.anonymous and facts.customer.tier_id in tiers


def _channel(message, _state) -> Test:
    channels = frozenset(message.channels)
    return lambda facts: facts.basket.channel in channels


def _store(message, _state) -> Test:
    stores = frozenset(message.store_ids)
    return lambda facts: facts.basket.store_id in stores


def in_windows(windows, local) -> bool:
    """Weekly windows in local wall time. A window crossing midnight belongs to the day it starts
    on. On a DST change the wall clock decides: the repeated autumn hour is inside a 01:00-02:00
    window twice, and a spring window inside the skipped hour does not occur that day."""
    minute = local.hour * 60 + local.minute
    day = local.isoweekday()
    previous_day = 7 if day == 1 else day - 1
    for window in windows:
        days = window.days
        start, end = window.start_minute, window.end_minute
        if start < end:
            if (not days or day in days) and start <= minute < end:
                return True
        elif ((not days or day in days) and minute >= start) or (
            (not days or previous_day in days) and minute < end
        ):
            return True
    return False


def _time_window(message, _state) -> Test:
    windows, tz = tuple(message.windows), message.time_zone
    return lambda facts: in_windows(windows, facts.local(tz))


def _first_purchase(_message, _state) -> Test:
    return lambda facts: not facts.customer.anonymous and facts.customer.lifetime_purchase_count == 0


def attribute_value(value: cpb.AttributeValue):
    kind = value.WhichOneof("kind")
    if kind == "date_value":
        return date(value.date_value.year, value.date_value.month, value.date_value.day)
    return getattr(value, kind) if kind else None


def _comparable(left, right) -> bool:
    numbers = (int, float)
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool)
    if isinstance(left, numbers) and isinstance(right, numbers):
        return True
    return type(left) is type(right)


_COMPARE = {
    cpb.ATTRIBUTE_OPERATOR_EQUALS: lambda a, b: a == b,
    cpb.ATTRIBUTE_OPERATOR_LESS_THAN: lambda a, b: a < b,
    cpb.ATTRIBUTE_OPERATOR_LESS_OR_EQUAL: lambda a, b: a <= b,
    cpb.ATTRIBUTE_OPERATOR_GREATER_THAN: lambda a, b: a > b,
    cpb.ATTRIBUTE_OPERATOR_GREATER_OR_EQUAL: lambda a, b: a >= b,
}


def _customer_attribute(message, _state) -> Test:
    name, operator = message.attribute, message.operator
    if operator == cpb.ATTRIBUTE_OPERATOR_IS_SET:
        return lambda facts: facts.customer.attributes.get(name) is not None
    if operator == cpb.ATTRIBUTE_OPERATOR_IN:
        values = tuple(attribute_value(v) for v in message.values)
        return lambda facts: any(
            _comparable(facts.customer.attributes.get(name), v) and facts.customer.attributes.get(name) == v
            for v in values
        )
    expected = attribute_value(message.value)
    if operator == cpb.ATTRIBUTE_OPERATOR_NOT_EQUALS:
        return lambda facts: (
            not (
                _comparable(facts.customer.attributes.get(name), expected)
                and facts.customer.attributes.get(name) == expected
            )
        )
    compare = _COMPARE[operator]

    def test(facts: Facts) -> bool:
        actual = facts.customer.attributes.get(name)
        return actual is not None and _comparable(actual, expected) and compare(actual, expected)

    return test


def days_to_birthday(birth: date, today: date) -> int:
    """Days from today to the next birthday (0 = today); 29 February is 28 February in other years."""

    def in_year(year: int) -> date:
        if birth.month == 2 and birth.day == 29 and not calendar.isleap(year):
            return date(year, 2, 28)
        return birth.replace(year=year)

    upcoming = in_year(today.year)
    if upcoming < today:
        upcoming = in_year(today.year + 1)
    return (upcoming - today).days


def _birthday(message, _state) -> Test:
    within = message.within_days

    def test(facts: Facts) -> bool:
        birth = facts.customer.birth_date
        return (
            not facts.customer.anonymous
            and birth is not None
            and days_to_birthday(birth, facts.local_date()) <= within
        )

    return test


def _payment_method(message, state) -> Test:
    state["payment"] = True
    methods = frozenset(message.methods)

    def test(facts: Facts) -> bool:
        if not facts.basket.payment_method:
            facts.touched_pending = True
            return True
        return facts.basket.payment_method in methods

    return test


def _code_present(message, _state) -> Test:
    codes = frozenset(message.codes)
    if not codes:
        return lambda facts: facts.current_campaign in facts.unlocked_campaigns
    return lambda facts: not codes.isdisjoint(facts.accepted_codes)


def _expression(message, _state) -> Test:
    expression: Expression = compile_expression(message.cel, formula=False)

    def test(facts: Facts) -> bool:
        result = expression.run(facts.cel_context(expression.variables))
        if not isinstance(result, bool):
            raise ExpressionError("the expression did not give true or false")
        return result

    return test


_BUILDERS = {
    "all_of": _all_of,
    "any_of": _any_of,
    "negation": _negation,
    "basket_subtotal": _basket_subtotal,
    "line_quantity": _line_quantity,
    "line_spend": _line_spend,
    "customer_segment": _segment,
    "tier": _tier,
    "channel": _channel,
    "store": _store,
    "time_window": _time_window,
    "first_purchase": _first_purchase,
    "customer_attribute": _customer_attribute,
    "birthday": _birthday,
    "payment_method": _payment_method,
    "code_present": _code_present,
    "expression": _expression,
}
KNOWN_KINDS = frozenset(_BUILDERS)


def tree_size(message: cpb.Condition, depth: int = 1) -> tuple[int, int]:
    """(deepest level, node count) of a tree."""
    kind = message.WhichOneof("kind")
    children = []
    if kind in ("all_of", "any_of"):
        children = list(getattr(message, kind).conditions)
    elif kind == "negation":
        children = [message.negation.condition]
    deepest, count = depth, 1
    for child in children:
        child_depth, child_count = tree_size(child, depth + 1)
        deepest, count = max(deepest, child_depth), count + child_count
    return deepest, count
