"""Templates: the locale fallback chain, the check on save and strict rendering.

Rendering uses Jinja2's SandboxedEnvironment (templates are written by tenants' marketers, so they
may not reach Python internals) with StrictUndefined: a variable the template uses but nobody gave
raises instead of rendering empty, so a message is never sent with a hole in it. HTML bodies are
autoescaped (a customer's name cannot inject markup); subjects and text bodies are not (they are
not HTML, escaping would show `&amp;` to the reader).
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from jinja2 import (
    StrictUndefined,
    Template as JinjaTemplate,
    TemplateError,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    pass_context,
)
from jinja2.sandbox import SandboxedEnvironment

from loyalty_notification.domain.model import Channel, Rendered, Template, Variant

LOCALE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,4}$")
TEXT_FIELDS = ("subject", "body")
HTML_FIELDS = ("html_body",)
# Currencies without minor units (ISO 4217 exponent 0); the rest shown here have 2.
ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "CLP", "ISK", "VND", "HUF"})


@dataclass(frozen=True)
class Money:
    """A template's money value: integer minor units and an ISO 4217 code."""

    currency_code: str
    units: int


def _separator(locale: str) -> str:
    language = locale.split("-")[0].lower()
    return {"de": ".", "pt": ".", "es": ".", "it": ".", "nl": ".", "fr": "\u202f"}.get(language, ",")


def _number(value: int, locale: str) -> str:
    return f"{value:,}".replace(",", _separator(locale))


def _money(value: Money, locale: str) -> str:
    if value.currency_code in ZERO_DECIMAL_CURRENCIES:
        return f"{_number(value.units, locale)} {value.currency_code}"
    whole, cents = divmod(abs(value.units), 100)
    decimal = "," if _separator(locale) != "," else "."
    sign = "-" if value.units < 0 else ""
    return f"{sign}{_number(whole, locale)}{decimal}{cents:02d} {value.currency_code}"


@lru_cache(maxsize=256)
def _cldr_locale(tag: str) -> Locale:
    """The CLDR locale for a BCP 47 tag, else its language's, else English (a tag the check on
    save accepted may still be one CLDR has no data for)."""
    for candidate in (tag, tag.split("-")[0]):
        try:
            return Locale.parse(candidate, sep="-")
        except (UnknownLocaleError, ValueError):
            continue
    return Locale("en")


def _date(value: date | datetime, locale: str) -> str:
    """The calendar date in the locale's long form ("31. Dezember 2030"); a datetime's own date,
    in its own zone (an event's time arrives converted to the customer's zone)."""
    day = value.date() if isinstance(value, datetime) else value
    return format_date(day, format="long", locale=_cldr_locale(locale))


def _environment(autoescape: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=autoescape)
    # Filters take the variant's locale from the render's globals (`_locale`).
    env.filters["number"] = _with_locale(_number)
    env.filters["money"] = _with_locale(_money)
    env.filters["date"] = _with_locale(_date)
    return env


def _with_locale(formatter):
    @pass_context
    def apply(context, value):
        return formatter(value, context.get("_locale", "en"))

    return apply


TEXT = _environment(autoescape=False)
HTML = _environment(autoescape=True)


def _environment_for(field: str) -> SandboxedEnvironment:
    return HTML if field in HTML_FIELDS else TEXT


# Compiling is what rendering costs (a millisecond or more per body); a template's bodies are
# compiled once per process. Bounded: the least recently used fall out.
@lru_cache(maxsize=2048)
def _compiled(field: str, source: str) -> JinjaTemplate:
    return _environment_for(field).from_string(source)


@lru_cache(maxsize=2048)
def _variables_of(field: str, source: str) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(_environment_for(field).parse(source)))


@dataclass(frozen=True)
class SyntaxProblem:
    field: str  # e.g. "variants[1].html_body"
    description: str


def syntax_problems(variants: tuple[Variant, ...]) -> list[SyntaxProblem]:
    """Every variant field that does not compile (syntax, unknown filter), with its line."""
    problems = []
    for index, variant in enumerate(variants):
        for name in (*TEXT_FIELDS, *HTML_FIELDS):
            source = getattr(variant, name)
            try:
                _environment_for(name).from_string(source)
            except TemplateSyntaxError as error:
                problems.append(
                    SyntaxProblem(f"variants[{index}].{name}", f"line {error.lineno}: {error.message}")
                )
            except TemplateError as error:
                problems.append(SyntaxProblem(f"variants[{index}].{name}", str(error.message)))
    return problems


def locale_chain(requested: str, default_locale: str) -> list[str]:
    """`pt-BR` -> [`pt-BR`, `pt`, the template's default]: each tag, then shorter prefixes."""
    chain: list[str] = []
    parts = requested.split("-") if requested else []
    for length in range(len(parts), 0, -1):
        chain.append("-".join(parts[:length]))
    chain.append(default_locale)
    return list(dict.fromkeys(tag.lower() for tag in chain if tag))


def choose_variant(template: Template, channel: Channel, locale: str) -> Variant | None:
    """The variant for the channel in the first locale of the chain that has one."""
    by_locale = {v.locale.lower(): v for v in template.variants if v.channel is channel}
    for tag in locale_chain(locale, template.default_locale):
        if tag in by_locale:
            return by_locale[tag]
    return None


def channels_of(template: Template) -> list[Channel]:
    """The template's channels in the contract's enum order."""
    present = {v.channel for v in template.variants}
    return [channel for channel in Channel if channel in present]


def referenced_variables(variant: Variant) -> set[str]:
    names: set[str] = set()
    for name in (*TEXT_FIELDS, *HTML_FIELDS):
        names |= _variables_of(name, getattr(variant, name))
    return names


class MissingVariables(Exception):
    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


def render(variant: Variant, variables: Mapping[str, Any]) -> Rendered:
    """Every field of the variant, strictly: MissingVariables names what was not given (a top-level
    variable, or an attribute such as `customer.tier` that the value lacks)."""
    missing = sorted(referenced_variables(variant) - set(variables))
    if missing:
        raise MissingVariables(missing)
    values = {**variables, "_locale": variant.locale}
    out = {}
    for name in (*TEXT_FIELDS, *HTML_FIELDS):
        try:
            out[name] = _compiled(name, getattr(variant, name)).render(values)
        except UndefinedError as error:
            raise MissingVariables([str(error.message)]) from None
    return Rendered(out["subject"], out["body"], out["html_body"], variant.locale)
