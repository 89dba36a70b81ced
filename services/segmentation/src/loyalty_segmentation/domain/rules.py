"""Segment rules: validation of a Condition tree and its compilation to one SQL predicate over the
per-customer relation `m` (repository.metrics). Pure: no I/O.

Both ways of computing membership (one customer after an event, every customer after a rule change
or as time passes) run the same compiled predicate, so they cannot disagree. Every value, attribute
name and activity type is a bound parameter; the only text spliced into SQL is this module's own
column names, casts and operators. A compiled rule also says which metric columns it reads
(`needs`), so the metrics relation aggregates only those: one pass over the purchases, no more.

Attributes: the built-in fields below, `consent.<channel>.<purpose>` (true when granted), and the
tenant's custom attributes by their type (`AttributeTypes`: profile's schema as segmentation knows
it). Calendar computations (today's date for ages, relative dates and anniversaries, whole days
since a moment) use the tenant's time zone, bound as a value like any other.

A segment condition is membership of another segment, read from the materialised membership: the
referenced segment's members must be current before a rule over them is evaluated, so segments are
evaluated in dependency order (`layers`), and a rule whose references lead back to itself is refused
(`find_cycle`).
"""

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loyalty.segmentation.v1 import condition_pb2 as pb
from loyalty_runtime.errors import FieldViolation, InvalidArgument, Reason

MAX_DEPTH, MAX_NODES = 8, 200
MAX_ACTIVITY_TYPE = 100
ACTIVITIES = "segmentation.activities"
CATEGORIES = "segmentation.purchase_categories"
REDEMPTIONS = "segmentation.code_redemptions"
MEMBERS = "segmentation.segment_members"

WINDOW_SUFFIX = {
    pb.METRIC_WINDOW_LAST_7_DAYS: "7",
    pb.METRIC_WINDOW_LAST_30_DAYS: "30",
    pb.METRIC_WINDOW_LAST_90_DAYS: "90",
    pb.METRIC_WINDOW_LAST_365_DAYS: "365",
    pb.METRIC_WINDOW_LIFETIME: "life",
}
WINDOW_DAYS = {"7": 7, "30": 30, "90": 90, "365": 365}


def window_sql(column: str, suffix: str) -> str:
    """`column` falls in the window ending at $2 (now): the window's first instant excluded."""
    if suffix == "life":
        return f"{column} <= $2::timestamptz"
    return (
        f"{column} > $2::timestamptz - interval '{WINDOW_DAYS[suffix]} days' AND {column} <= $2::timestamptz"
    )


def _days_since(column: str) -> str:
    """Calendar days in the tenant's time zone ({today}: today's date there, {zone}: the zone)."""
    return f"({{today}} - ({column} AT TIME ZONE {{zone}})::date)::bigint"


@dataclass(frozen=True)
class Metric:
    """An SQL expression over `m` ({w}: the window suffix), its operand kind, whether it takes a
    window, and the metric columns it reads; a correlated count over a table `a` says which of its
    columns falls in the window ({window})."""

    expression: str
    kind: str
    windowed: bool
    needs: tuple[str, ...] = ()
    at: str = ""


METRICS = {
    pb.CUSTOMER_METRIC_PURCHASE_COUNT: Metric("m.purchases_{w}", "int", True, ("purchases_{w}",)),
    pb.CUSTOMER_METRIC_PURCHASE_SPEND: Metric("m.spend_{w}", "money", True, ("spend_{w}",)),
    # Rounded down to the minor unit; zero without purchases (metrics.proto).
    pb.CUSTOMER_METRIC_AVERAGE_ORDER_VALUE: Metric(
        "(CASE WHEN m.purchases_{w} > 0 THEN floor(m.spend_{w}::numeric / m.purchases_{w}) ELSE 0 END)",
        "money",
        True,
        ("purchases_{w}", "spend_{w}"),
    ),
    pb.CUSTOMER_METRIC_RETURN_COUNT: Metric("m.returns_{w}", "int", True, ("returns_{w}",)),
    pb.CUSTOMER_METRIC_DAYS_SINCE_LAST_PURCHASE: Metric(_days_since("m.last_at"), "int", False, ("last_at",)),
    pb.CUSTOMER_METRIC_DAYS_SINCE_FIRST_PURCHASE: Metric(
        _days_since("m.first_at"), "int", False, ("first_at",)
    ),
    pb.CUSTOMER_METRIC_DAYS_SINCE_ENROLMENT: Metric(_days_since("m.enrolled_at"), "int", False),
    # Zero for a customer never scored (no purchase).
    pb.CUSTOMER_METRIC_RFM_RECENCY_SCORE: Metric("m.rfm_recency", "int", False, ("rfm",)),
    pb.CUSTOMER_METRIC_RFM_FREQUENCY_SCORE: Metric("m.rfm_frequency", "int", False, ("rfm",)),
    pb.CUSTOMER_METRIC_RFM_MONETARY_SCORE: Metric("m.rfm_monetary", "int", False, ("rfm",)),
    # A correlated count over the activities index: its type is a bound parameter ({t}).
    pb.CUSTOMER_METRIC_ACTIVITY_COUNT: Metric(
        f"(SELECT count(*) FROM {ACTIVITIES} a WHERE a.tenant_id = $1 AND a.customer_id = m.customer_id"
        " AND ({t} = '' OR a.activity_type = {t}) AND {window})",
        "int",
        True,
        at="occurred_at",
    ),
    pb.CUSTOMER_METRIC_CATEGORY_COUNT: Metric(
        f"(SELECT count(DISTINCT a.category) FROM {CATEGORIES} a WHERE a.tenant_id = $1"
        " AND a.customer_id = m.customer_id AND {window})",
        "int",
        True,
        at="purchased_at",
    ),
    pb.CUSTOMER_METRIC_CODES_REDEEMED_COUNT: Metric(
        f"(SELECT count(*) FROM {REDEMPTIONS} a WHERE a.tenant_id = $1 AND a.customer_id = m.customer_id"
        " AND a.released_at IS NULL AND {window})",
        "int",
        True,
        at="redeemed_at",
    ),
}

COMPARISONS = {
    pb.COMPARISON_OPERATOR_EQUALS: "=",
    pb.COMPARISON_OPERATOR_NOT_EQUALS: "<>",
    pb.COMPARISON_OPERATOR_LESS_THAN: "<",
    pb.COMPARISON_OPERATOR_LESS_THAN_OR_EQUALS: "<=",
    pb.COMPARISON_OPERATOR_GREATER_THAN: ">",
    pb.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS: ">=",
}
EQUALITY = {pb.COMPARISON_OPERATOR_EQUALS, pb.COMPARISON_OPERATOR_NOT_EQUALS}
LISTS = {pb.COMPARISON_OPERATOR_IN, pb.COMPARISON_OPERATOR_NOT_IN}
PRESENCE = {pb.COMPARISON_OPERATOR_EXISTS, pb.COMPARISON_OPERATOR_NOT_EXISTS}
TEXT = {pb.COMPARISON_OPERATOR_CONTAINS, pb.COMPARISON_OPERATOR_STARTS_WITH}
BETWEEN, ANNIVERSARY = pb.COMPARISON_OPERATOR_BETWEEN, pb.COMPARISON_OPERATOR_ANNIVERSARY_WITHIN_DAYS

# Operators each kind of attribute takes, and the operand kinds ("int_value", ...) it compares with.
ORDERED = set(COMPARISONS) | {BETWEEN}
OPERATORS = {
    "string": EQUALITY | LISTS | TEXT | PRESENCE,
    "enum": EQUALITY | LISTS | PRESENCE,
    "int": ORDERED | LISTS | PRESENCE,
    "decimal": ORDERED | LISTS | PRESENCE,
    "bool": EQUALITY | PRESENCE,
    "date": ORDERED | PRESENCE | {ANNIVERSARY},
    "timestamp": ORDERED | PRESENCE,
}
OPERANDS = {
    "string": {"string_value"},
    "enum": {"string_value"},
    "int": {"int_value"},
    "decimal": {"int_value"},
    "bool": {"bool_value"},
    "date": {"date_value", "relative_days"},
    "timestamp": {"timestamp_value", "relative_days"},
}
CASTS = {"string": "text", "enum": "text", "int": "bigint", "decimal": "bigint", "bool": "boolean"}

# Built-in attributes: SQL over `m` ({today}: today's date in the tenant's time zone) and kind.
BUILT_IN = {
    "birth_date": ("m.birth_date", "date"),
    "age": ("date_part('year', age({today}, m.birth_date))::bigint", "int"),
    "locale": ("m.locale", "string"),
    "enrol_time": ("m.enrolled_at", "timestamp"),
}
CONSENT_CHANNELS = ("email", "sms", "push", "messenger")
CONSENT_PURPOSES = ("marketing", "transactional")
# A stored custom value is read as its type only when its JSON type fits (never a failed cast).
JSON_TYPES = {"int": "number", "decimal": "string", "bool": "boolean", "date": "string"}
CUSTOM_CASTS = {"int": "numeric", "decimal": "numeric", "bool": "boolean", "date": "date"}

AttributeTypes = Mapping[str, str]


@dataclass
class Compiled:
    """A predicate over `m`, the values it binds (numbered from `first_parameter`), and the metric
    columns it reads; the tenant's time zone is bound once, when a calendar computation needs it."""

    first_parameter: int
    time_zone: str = "UTC"
    values: list = field(default_factory=list)
    needs: set[str] = field(default_factory=set)
    sql: str = ""
    _zone: str = ""

    def bind(self, value, cast: str = "") -> str:
        self.values.append(value)
        number = f"${self.first_parameter + len(self.values) - 1}"
        return f"{number}::{cast}" if cast else number

    @property
    def zone(self) -> str:
        if not self._zone:
            self._zone = self.bind(self.time_zone, "text")
        return self._zone

    @property
    def today(self) -> str:
        return f"($2::timestamptz AT TIME ZONE {self.zone})::date"


@dataclass
class _Problems:
    violations: list[FieldViolation] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)

    def add(self, path: str, text: str, reason: Reason = Reason.SEGMENT_RULE_INVALID) -> None:
        self.violations.append(FieldViolation(path, text))
        self.reasons.append(reason)

    def mismatch(self, path: str, text: str) -> None:
        self.add(path, text, Reason.ATTRIBUTE_TYPE_MISMATCH)


def check_time_zone(name: str, path: str = "settings.time_zone") -> None:
    """An IANA time zone name, or empty (UTC)."""
    if not name:
        return
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "an IANA time zone such as Europe/Berlin", field=path
        ) from None
    if len(name) > 64:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "at most 64 characters", field=path)


def validate(
    rule: pb.Condition,
    path: str = "segment.rule",
    attributes: AttributeTypes | None = None,
    segments: Set[str] = frozenset(),
) -> None:
    """Refuse a rule that is malformed, too large, names an unknown attribute, metric or segment
    (`segments`: the tenant's live ones), or compares with the wrong kind of value; every problem is
    reported with its field path, nothing is saved."""
    problems = _Problems()
    nodes = _check(rule, path, 1, problems, _Known(attributes or {}, segments))
    if nodes > MAX_NODES:
        problems.add(path, f"a rule has at most {MAX_NODES} conditions")
    if problems.violations:
        raise InvalidArgument(
            problems.reasons[0], problems.violations[0].description, violations=problems.violations
        )


@dataclass(frozen=True)
class _Known:
    attributes: AttributeTypes
    segments: Set[str]


def _check(node: pb.Condition, path: str, depth: int, out: _Problems, known: _Known) -> int:
    if depth > MAX_DEPTH:
        out.add(path, f"a rule is at most {MAX_DEPTH} levels deep")
        return 1
    kind = node.WhichOneof("kind")
    if kind in ("all_of", "any_of"):
        children = getattr(node, kind).conditions
        return 1 + sum(
            _check(child, f"{path}.{kind}.conditions[{i}]", depth + 1, out, known)
            for i, child in enumerate(children)
        )
    if kind == "negation":
        if not node.negation.HasField("condition"):
            out.add(f"{path}.negation.condition", "a NOT needs a condition")
            return 1
        return 1 + _check(node.negation.condition, f"{path}.negation.condition", depth + 1, out, known)
    if kind == "metric":
        _check_metric(node.metric, f"{path}.metric", out)
    elif kind == "attribute":
        _check_attribute(node.attribute, f"{path}.attribute", out, known.attributes)
    elif kind == "segment":
        if node.segment.segment_id not in known.segments:
            out.add(f"{path}.segment.segment_id", "no such segment", Reason.SEGMENT_NOT_FOUND)
    else:
        out.add(path, "a condition must set exactly one kind")
    return 1


def _check_metric(metric: pb.MetricCondition, path: str, out: _Problems) -> None:
    if metric.metric not in METRICS:
        out.add(f"{path}.metric", "unknown or unsupported metric")
        return
    spec = METRICS[metric.metric]
    if spec.windowed and metric.window not in WINDOW_SUFFIX:
        out.add(f"{path}.window", "this metric needs a window")
    if metric.activity_type and metric.metric != pb.CUSTOMER_METRIC_ACTIVITY_COUNT:
        out.add(f"{path}.activity_type", "only the activity count takes an activity type")
    if len(metric.activity_type) > MAX_ACTIVITY_TYPE:
        out.add(f"{path}.activity_type", f"an activity type has at most {MAX_ACTIVITY_TYPE} characters")
    wanted = {"int_value"} if spec.kind == "int" else {"money_value"}
    if metric.operator not in ORDERED | LISTS:
        out.mismatch(f"{path}.operator", "this operator does not apply to a number: wrong operand")
        return
    _check_operands(metric.operator, metric.value, metric.values, wanted, path, out)


def _check_operands(operator, value: pb.Value, values, wanted: set[str], path: str, out: _Problems) -> None:
    if operator == BETWEEN and len(values) != 2:
        out.add(f"{path}.values", "BETWEEN needs exactly [low, high]")
    if operator in LISTS and not values:
        out.add(f"{path}.values", "IN / NOT_IN need at least one value")
    if operator in LISTS or operator == BETWEEN:
        operands = [(v, f"{path}.values[{i}]") for i, v in enumerate(values)]
    else:
        operands = [(value, f"{path}.value")]
    for operand_value, operand_path in operands:
        kind = operand_value.WhichOneof("kind")
        if kind not in wanted:
            out.mismatch(operand_path, f"this comparison takes a {' or '.join(sorted(wanted))} operand")
        elif kind == "date_value" and _date(operand_value.date_value) is None:
            out.add(operand_path, "not a calendar date")


def attribute_kind(name: str, attributes: AttributeTypes) -> str | None:
    """The kind of a built-in, consent or custom attribute; None when the tenant has no such one."""
    if name in BUILT_IN:
        return BUILT_IN[name][1]
    if name.startswith("consent."):
        channel, _, purpose = name.removeprefix("consent.").partition(".")
        return "bool" if channel in CONSENT_CHANNELS and purpose in CONSENT_PURPOSES else None
    return attributes.get(name)


def _check_attribute(
    condition: pb.AttributeCondition, path: str, out: _Problems, attributes: AttributeTypes
) -> None:
    kind = attribute_kind(condition.attribute, attributes)
    if kind is None:
        out.add(f"{path}.attribute", "no such attribute for this tenant", Reason.SEGMENT_ATTRIBUTE_UNKNOWN)
        return
    operator = condition.operator
    if operator not in OPERATORS[kind]:
        out.mismatch(f"{path}.operator", f"this operator does not apply to a {kind} attribute")
        return
    if operator in PRESENCE:
        return
    if operator == ANNIVERSARY:
        if condition.value.WhichOneof("kind") != "int_value" or not 1 <= condition.value.int_value <= 366:
            out.mismatch(f"{path}.value", "ANNIVERSARY_WITHIN_DAYS takes an int_value of 1 to 366 days")
        return
    _check_operands(operator, condition.value, condition.values, OPERANDS[kind], path, out)


def _date(value) -> date | None:
    try:
        return date(value.year, value.month, value.day)
    except ValueError:
        return None


def compile_rule(
    rule: pb.Condition,
    first_parameter: int,
    attributes: AttributeTypes | None = None,
    time_zone: str = "UTC",
) -> Compiled:
    """A validated rule -> SQL boolean over `m` (`.sql`), values for $first_parameter... (`.values`)
    and the metric columns it reads (`.needs`); dates in `time_zone` (an IANA name)."""
    compiled = Compiled(first_parameter, time_zone)
    compiled.sql = _sql(rule, compiled, attributes or {})
    return compiled


def _sql(node: pb.Condition, compiled: Compiled, attributes: AttributeTypes) -> str:
    kind = node.WhichOneof("kind")
    if kind == "all_of":
        return _join(node.all_of.conditions, " AND ", "true", compiled, attributes)
    if kind == "any_of":
        return _join(node.any_of.conditions, " OR ", "false", compiled, attributes)
    if kind == "negation":
        return f"(NOT {_sql(node.negation.condition, compiled, attributes)})"
    if kind == "attribute":
        return _attribute_sql(node.attribute, compiled, attributes)
    if kind == "segment":
        segment = compiled.bind(node.segment.segment_id, "uuid")
        return (
            f"EXISTS (SELECT 1 FROM {MEMBERS} r WHERE r.tenant_id = $1 AND r.segment_id = {segment}"
            " AND r.customer_id = m.customer_id)"
        )
    return _metric_sql(node.metric, compiled)


def _join(
    children: Sequence[pb.Condition], glue: str, empty: str, compiled: Compiled, attributes: AttributeTypes
) -> str:
    if not children:
        return empty
    return "(" + glue.join(_sql(child, compiled, attributes) for child in children) + ")"


def _metric_sql(metric: pb.MetricCondition, compiled: Compiled) -> str:
    spec = METRICS[metric.metric]
    suffix = WINDOW_SUFFIX.get(metric.window, "life")
    if metric.metric == pb.CUSTOMER_METRIC_ACTIVITY_COUNT:
        activity = compiled.bind(metric.activity_type, "text")
        expression = spec.expression.format(t=activity, window=window_sql("a.occurred_at", suffix))
    elif spec.at:
        expression = spec.expression.format(window=window_sql(f"a.{spec.at}", suffix))
    elif "{today}" in spec.expression:
        expression = spec.expression.format(today=compiled.today, zone=compiled.zone)
    else:
        expression = spec.expression.format(w=suffix)
    compiled.needs.update(need.format(w=suffix) for need in spec.needs)
    operands = [metric.value] if metric.operator in COMPARISONS else list(metric.values)
    return _test(expression, metric.operator, [compiled.bind(operand(v)) for v in operands])


def operand(value: pb.Value):
    kind = value.WhichOneof("kind")
    if kind == "money_value":
        return value.money_value.amount_minor
    if kind == "date_value":
        return _date(value.date_value)
    if kind == "timestamp_value":
        return value.timestamp_value.ToDatetime(tzinfo=UTC)
    return getattr(value, kind) if kind else None


def _test(expression: str, operator, operands: list[str]) -> str:
    """`expression` compared with operands that are SQL already (bound parameters, expressions)."""
    if operator in COMPARISONS:
        test = f"{expression} {COMPARISONS[operator]} {operands[0]}"
    elif operator == BETWEEN:
        test = f"{expression} BETWEEN {operands[0]} AND {operands[1]}"
    else:
        test = f"{expression} {'IN' if operator == pb.COMPARISON_OPERATOR_IN else 'NOT IN'} ({', '.join(operands)})"
    # A value a customer does not have (days since a purchase never made, an attribute never set)
    # matches no comparison, so NOT of it is true: two-valued logic, whichever path evaluates it.
    return f"COALESCE({test}, false)"


def _attribute_expression(name: str, kind: str, compiled: Compiled) -> str:
    if name in BUILT_IN:
        expression = BUILT_IN[name][0]
        return expression.format(today=compiled.today) if "{today}" in expression else expression
    if name.startswith("consent."):
        return f"(m.consents ->> {compiled.bind(name.removeprefix('consent.'), 'text')})::boolean"
    key = compiled.bind(name, "text")
    if kind in JSON_TYPES:
        return (
            f"(CASE WHEN jsonb_typeof(m.attributes -> {key}) = '{JSON_TYPES[kind]}'"
            f" THEN (m.attributes ->> {key})::{CUSTOM_CASTS[kind]} END)"
        )
    return f"(m.attributes ->> {key})"


def _attribute_sql(condition: pb.AttributeCondition, compiled: Compiled, attributes: AttributeTypes) -> str:
    kind = attribute_kind(condition.attribute, attributes)
    expression = _attribute_expression(condition.attribute, kind, compiled)
    operator = condition.operator
    if operator in PRESENCE:
        return f"({expression} IS {'NOT ' if operator == pb.COMPARISON_OPERATOR_EXISTS else ''}NULL)"
    if operator == ANNIVERSARY:
        return _anniversary(expression, compiled.bind(condition.value.int_value, "integer"), compiled.today)
    if operator in TEXT:
        needle = compiled.bind(condition.value.string_value, "text")
        if operator == pb.COMPARISON_OPERATOR_CONTAINS:
            return f"COALESCE(strpos(lower({expression}), lower({needle})) > 0, false)"
        return f"COALESCE(starts_with(lower({expression}), lower({needle})), false)"
    operands = [condition.value] if operator in COMPARISONS else list(condition.values)
    return _test(expression, operator, [_moment(v, kind, compiled) for v in operands])


def _moment(value: pb.Value, kind: str, compiled: Compiled) -> str:
    """An operand as SQL: a bound value, or "today/now plus N days" for a relative one."""
    if value.WhichOneof("kind") == "relative_days":
        days = compiled.bind(value.relative_days, "integer")
        return (
            f"({compiled.today} + {days})"
            if kind == "date"
            else f"($2::timestamptz + make_interval(days => {days}))"
        )
    return compiled.bind(operand(value), CASTS.get(kind, "date" if kind == "date" else "timestamptz"))


def _anniversary(expression: str, days: str, today: str) -> str:
    """The day and month of `expression` fall within the next `days` days, today included (a 29
    February counts on the 28th in other years)."""
    years = f"(extract(year FROM {today}) - extract(year FROM {expression}))::int"
    this_year = f"({expression} + make_interval(years => {years}))::date"
    next_year = f"({expression} + make_interval(years => {years} + 1))::date"
    upcoming = f"(CASE WHEN {this_year} >= {today} THEN {this_year} ELSE {next_year} END)"
    return f"COALESCE({upcoming} - {today} < {days}, false)"


# --- segment references ---------------------------------------------------------------------------


def references(rule: pb.Condition) -> set[str]:
    """The segment ids a rule's segment conditions name."""
    kind = rule.WhichOneof("kind")
    if kind in ("all_of", "any_of"):
        return set().union(*(references(child) for child in getattr(rule, kind).conditions))
    if kind == "negation":
        return references(rule.negation.condition)
    return {rule.segment.segment_id} if kind == "segment" else set()


Graph = Mapping[str, Set[str]]


def find_cycle(segment_id: str, refers_to: Set[str], graph: Graph) -> list[str] | None:
    """The way back to `segment_id` (from it, through its references, to it again) were it to refer
    to `refers_to` and the other segments to what `graph` says; None when there is none."""
    seen: set[str] = set()

    def walk(node: str, trail: list[str]) -> list[str] | None:
        if node == segment_id:
            return [*trail, node]
        if node in seen:
            return None
        seen.add(node)
        for target in sorted(graph.get(node, ())):
            found = walk(target, [*trail, node])
            if found:
                return found
        return None

    for target in sorted(refers_to):
        found = walk(target, [segment_id])
        if found:
            return found
    return None


def layers(graph: Graph) -> list[list[str]]:
    """The segments of `graph` in dependency order: each layer refers only to earlier layers (or to
    segments outside the graph: static lists). The graph has no cycle (refused on save)."""
    depth: dict[str, int] = {}

    def level(node: str, seen: frozenset[str]) -> int:
        if node not in depth:
            inner = [t for t in graph[node] if t in graph and t not in seen]
            depth[node] = 1 + max((level(t, seen | {node}) for t in inner), default=-1)
        return depth[node]

    for node in graph:
        level(node, frozenset())
    ordered: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for node in sorted(graph):
        ordered[depth[node]].append(node)
    return ordered


def dependents(segment_ids: Set[str], graph: Graph) -> set[str]:
    """The segments whose rules refer to any of `segment_ids` directly."""
    return {node for node, targets in graph.items() if targets & segment_ids}
