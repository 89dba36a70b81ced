"""Segment rules: validation of a Condition tree and its compilation to one SQL predicate over the
per-customer metrics relation `m` (repository.METRICS). Pure: no I/O.

Both ways of computing membership (one customer after an event, every customer after a rule change
or as time passes) run the same compiled predicate, so they cannot disagree. Every value is a bound
parameter; the only text spliced into SQL is this module's own column names and operators.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from loyalty.segmentation.v1 import condition_pb2 as pb
from loyalty_runtime.errors import FieldViolation, InvalidArgument, Reason

MAX_DEPTH, MAX_NODES = 8, 200

WINDOW_SUFFIX = {
    pb.METRIC_WINDOW_LAST_7_DAYS: "7",
    pb.METRIC_WINDOW_LAST_30_DAYS: "30",
    pb.METRIC_WINDOW_LAST_90_DAYS: "90",
    pb.METRIC_WINDOW_LAST_365_DAYS: "365",
    pb.METRIC_WINDOW_LIFETIME: "life",
}
WINDOW_DAYS = {"7": 7, "30": 30, "90": 90, "365": 365}

# Metric -> (SQL expression template over `m` with {w} the window suffix, operand kind, windowed).
METRICS = {
    pb.CUSTOMER_METRIC_PURCHASE_COUNT: ("m.purchases_{w}", "int", True),
    pb.CUSTOMER_METRIC_PURCHASE_SPEND: ("m.spend_{w}", "money", True),
    # Rounded down to the minor unit; zero without purchases (metrics.proto).
    pb.CUSTOMER_METRIC_AVERAGE_ORDER_VALUE: (
        "(CASE WHEN m.purchases_{w} > 0 THEN floor(m.spend_{w}::numeric / m.purchases_{w}) ELSE 0 END)",
        "money",
        True,
    ),
    pb.CUSTOMER_METRIC_RETURN_COUNT: ("m.returns_{w}", "int", True),
    pb.CUSTOMER_METRIC_DAYS_SINCE_LAST_PURCHASE: ("m.days_since_last", "int", False),
    pb.CUSTOMER_METRIC_DAYS_SINCE_FIRST_PURCHASE: ("m.days_since_first", "int", False),
}

COMPARISONS = {
    pb.COMPARISON_OPERATOR_EQUALS: "=",
    pb.COMPARISON_OPERATOR_NOT_EQUALS: "<>",
    pb.COMPARISON_OPERATOR_LESS_THAN: "<",
    pb.COMPARISON_OPERATOR_LESS_THAN_OR_EQUALS: "<=",
    pb.COMPARISON_OPERATOR_GREATER_THAN: ">",
    pb.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS: ">=",
}
LISTS = {pb.COMPARISON_OPERATOR_IN, pb.COMPARISON_OPERATOR_NOT_IN}


@dataclass
class Compiled:
    """A predicate over `m` and the values it binds, numbered from `first_parameter`."""

    first_parameter: int
    values: list[int] = field(default_factory=list)

    def bind(self, value: int) -> str:
        self.values.append(value)
        return f"${self.first_parameter + len(self.values) - 1}"


def _violation(path: str, text: str) -> FieldViolation:
    return FieldViolation(path, text)


def validate(rule: pb.Condition, path: str = "segment.rule") -> None:
    """Refuse a rule that is malformed, too large, or compares a metric with the wrong kind of
    value; every problem is reported with its field path, and nothing is saved."""
    violations: list[FieldViolation] = []
    nodes = _check(rule, path, 1, violations)
    if nodes > MAX_NODES:
        violations.append(_violation(path, f"a rule has at most {MAX_NODES} conditions"))
    if violations:
        mismatch = any("operand" in v.description for v in violations)
        raise InvalidArgument(
            Reason.ATTRIBUTE_TYPE_MISMATCH if mismatch else Reason.SEGMENT_RULE_INVALID,
            violations[0].description,
            violations=violations,
        )


def _check(node: pb.Condition, path: str, depth: int, out: list[FieldViolation]) -> int:
    if depth > MAX_DEPTH:
        out.append(_violation(path, f"a rule is at most {MAX_DEPTH} levels deep"))
        return 1
    kind = node.WhichOneof("kind")
    if kind in ("all_of", "any_of"):
        children = getattr(node, kind).conditions
        return 1 + sum(
            _check(child, f"{path}.{kind}.conditions[{i}]", depth + 1, out)
            for i, child in enumerate(children)
        )
    if kind == "negation":
        if not node.negation.HasField("condition"):
            out.append(_violation(f"{path}.negation.condition", "a NOT needs a condition"))
            return 1
        return 1 + _check(node.negation.condition, f"{path}.negation.condition", depth + 1, out)
    if kind == "metric":
        _check_metric(node.metric, f"{path}.metric", out)
        return 1
    if kind in ("attribute", "segment"):
        out.append(_violation(f"{path}.{kind}", f"{kind} conditions are not supported by this version"))
        return 1
    out.append(_violation(path, "a condition must set exactly one kind"))
    return 1


def _check_metric(metric: pb.MetricCondition, path: str, out: list[FieldViolation]) -> None:
    if metric.metric not in METRICS:
        out.append(_violation(f"{path}.metric", "unknown or unsupported metric"))
        return
    _, kind, windowed = METRICS[metric.metric]
    if windowed and metric.window not in WINDOW_SUFFIX:
        out.append(_violation(f"{path}.window", "this metric needs a window"))
    operator = metric.operator
    if operator in COMPARISONS:
        _check_operand(metric.value, kind, f"{path}.value", out)
    elif operator == pb.COMPARISON_OPERATOR_BETWEEN:
        if len(metric.values) != 2:
            out.append(_violation(f"{path}.values", "BETWEEN needs exactly [low, high]"))
        for i, value in enumerate(metric.values):
            _check_operand(value, kind, f"{path}.values[{i}]", out)
    elif operator in LISTS:
        if not metric.values:
            out.append(_violation(f"{path}.values", "IN / NOT_IN need at least one value"))
        for i, value in enumerate(metric.values):
            _check_operand(value, kind, f"{path}.values[{i}]", out)
    else:
        out.append(_violation(f"{path}.operator", "this operator does not apply to a number: wrong operand"))


def _check_operand(value: pb.Value, kind: str, path: str, out: list[FieldViolation]) -> None:
    wanted = "int_value" if kind == "int" else "money_value"
    if value.WhichOneof("kind") != wanted:
        out.append(_violation(path, f"this metric takes an {wanted} operand"))


def operand(value: pb.Value) -> int:
    return value.int_value if value.WhichOneof("kind") == "int_value" else value.money_value.amount_minor


def compile_rule(rule: pb.Condition, first_parameter: int) -> tuple[str, list[int]]:
    """A validated rule -> (SQL boolean over `m`, values for $first_parameter...)."""
    compiled = Compiled(first_parameter)
    return _sql(rule, compiled), compiled.values


def _sql(node: pb.Condition, compiled: Compiled) -> str:
    kind = node.WhichOneof("kind")
    if kind == "all_of":
        return _join(node.all_of.conditions, " AND ", "true", compiled)
    if kind == "any_of":
        return _join(node.any_of.conditions, " OR ", "false", compiled)
    if kind == "negation":
        return f"(NOT {_sql(node.negation.condition, compiled)})"
    return _metric_sql(node.metric, compiled)


def _join(children: Sequence[pb.Condition], glue: str, empty: str, compiled: Compiled) -> str:
    if not children:
        return empty
    return "(" + glue.join(_sql(child, compiled) for child in children) + ")"


def _metric_sql(metric: pb.MetricCondition, compiled: Compiled) -> str:
    template, _, windowed = METRICS[metric.metric]
    expression = template.format(w=WINDOW_SUFFIX[metric.window]) if windowed else template
    operator = metric.operator
    if operator in COMPARISONS:
        test = f"{expression} {COMPARISONS[operator]} {compiled.bind(operand(metric.value))}"
    elif operator == pb.COMPARISON_OPERATOR_BETWEEN:
        low, high = (compiled.bind(operand(v)) for v in metric.values)
        test = f"{expression} BETWEEN {low} AND {high}"
    else:
        values = ", ".join(compiled.bind(operand(v)) for v in metric.values)
        test = f"{expression} {'IN' if operator == pb.COMPARISON_OPERATOR_IN else 'NOT IN'} ({values})"
    # A metric a customer has no value for (days since a purchase never made) matches no
    # comparison, so NOT of it is true: two-valued logic, whichever path evaluates it.
    return f"COALESCE({test}, false)"
