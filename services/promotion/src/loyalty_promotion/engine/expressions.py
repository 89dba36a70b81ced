"""CEL (Common Expression Language) through the `common-expression-language` package: a sandboxed,
non-Turing-complete expression language compiled once at catalog build, never Python eval.

Variables an expression may use (RULES.md lists them): `basket` {currency, subtotal, units,
line_count, channel, store_id, payment_method}, `lines` (a list of line maps), `line` (formulas
only: the line being discounted, with `remaining`), `customer` {id, anonymous, tier, segments,
lifetime_purchase_count, first_purchase, attributes}, `now` {year, month, day, hour, minute,
weekday (1 = Monday)} in the tenant's time zone."""

import re
from dataclasses import dataclass
from typing import Any

import cel

CONDITION_VARIABLES = frozenset({"basket", "lines", "customer", "now"})
FORMULA_VARIABLES = CONDITION_VARIABLES | {"line"}


class ExpressionError(Exception):
    """A CEL expression that failed while running (division by zero, a missing attribute...)."""


@dataclass(frozen=True)
class Expression:
    source: str
    program: Any
    # The variables it reads: only those are handed to CEL (converting a variable costs time).
    variables: frozenset[str]

    def run(self, activation) -> Any:
        """activation: a dict or a cel.Context holding at least `variables`."""
        try:
            return self.program.execute(activation)
        except Exception as error:  # the binding raises several types; all mean "did not work"
            raise ExpressionError(f"{type(error).__name__}: {error}") from None


def compile_expression(source: str, *, formula: bool) -> Expression:
    """Compiles and statically checks an expression; ValueError with a sentence when it does not
    compile, uses an unknown variable or field, or gives the wrong type on sample data."""
    try:
        program = cel.compile(source)
    except Exception as error:
        raise ValueError(f"does not compile: {error}") from None
    allowed = FORMULA_VARIABLES if formula else CONDITION_VARIABLES
    # Macro variables (`lines.exists(l, ...)`) are reported as variables too.
    allowed = allowed | set(
        re.findall(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,", source)
    )
    unknown = sorted(set(program.variables()) - allowed)
    if unknown:
        raise ValueError(f"unknown variable {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    expression = Expression(source, program, frozenset(program.variables()) & FORMULA_VARIABLES)
    _dry_run(expression, formula)
    return expression


def _dry_run(expression: Expression, formula: bool) -> None:
    """Runs the expression on a sample with every known field set, so a misspelt field is refused
    on save. Attribute maps are free-form: a key read from them is added to the sample and tried
    again; with attributes involved a type error is left to run time (their types vary)."""
    sample = sample_activation()
    customer_attributes = sample["customer"]["attributes"]
    line_attributes = sample["line"]["attributes"]
    for _ in range(32):
        try:
            result = expression.program.execute(sample if formula else _without_line(sample))
        except KeyError as error:
            key = str(error.args[0]) if error.args else ""
            if not re.search(
                rf"attributes\s*(\.\s*{re.escape(key)}\b|\[\s*[\"']{re.escape(key)}[\"'])", expression.source
            ):
                raise ValueError(f"unknown field {key!r}") from None
            customer_attributes[key] = 0
            line_attributes[key] = 0
            for entry in sample["lines"]:
                entry["attributes"][key] = 0
            continue
        except ZeroDivisionError:
            return  # a run-time matter on sample data
        except Exception as error:
            if "attributes" in expression.source:
                return
            raise ValueError(f"fails on sample data: {error}") from None
        if formula and (isinstance(result, bool) or not isinstance(result, int | float)):
            raise ValueError("a discount formula must give a number (minor units)")
        if not formula and not isinstance(result, bool):
            raise ValueError("a condition must give true or false")
        return
    raise ValueError("reads too many attributes")


def _without_line(sample: dict) -> dict:
    return {key: value for key, value in sample.items() if key != "line"}


def sample_activation() -> dict:
    line = line_map("sample", "SKU", ("category",), "brand", 1, 100, 100, {}, remaining=100)
    return {
        "basket": {
            "currency": "EUR",
            "subtotal": 100,
            "units": 1,
            "line_count": 1,
            "channel": "STORE",
            "store_id": "s",
            "payment_method": "card",
        },
        "lines": [dict(line, attributes={})],
        "line": line,
        "customer": {
            "id": "c",
            "anonymous": False,
            "tier": "t",
            "segments": ["s"],
            "lifetime_purchase_count": 0,
            "first_purchase": True,
            "attributes": {},
        },
        "now": {"year": 2026, "month": 1, "day": 1, "hour": 0, "minute": 0, "weekday": 1},
    }


def line_map(
    line_id, sku, categories, brand, quantity, unit_price, line_total, attributes, *, remaining=None
) -> dict:
    entry = {
        "line_id": line_id,
        "sku": sku,
        "categories": list(categories),
        "brand": brand,
        "quantity": quantity,
        "unit_price": unit_price,
        "line_total": line_total,
        "attributes": dict(attributes),
    }
    if remaining is not None:
        entry["remaining"] = remaining
    return entry
