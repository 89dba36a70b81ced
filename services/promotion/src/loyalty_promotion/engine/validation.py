"""What makes a campaign, an earning rule or a basket unusable, as field violations with stable
ErrorReasons (engine range 320-349). The catalog compiles only what passes."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loyalty.common.v1 import basket_pb2, errors_pb2 as err
from loyalty.promotion.v1 import condition_pb2 as cpb, earning_pb2, effect_pb2 as epb, schedule_pb2
from loyalty_promotion.engine.conditions import KNOWN_KINDS, MAX_DEPTH, MAX_NODES, tree_size
from loyalty_promotion.engine.effects import KNOWN_EFFECTS
from loyalty_promotion.engine.expressions import compile_expression
from loyalty_promotion.engine.model import MAX_LINES, Violation
from loyalty_promotion.engine.money import BPS, exponent


def validate_campaign(item) -> list[Violation]:
    """Violations of a CampaignInput; field paths are relative to the campaign
    (`schedule.end_time`, `audience...`, `promotions[2].effects[0]...`)."""
    violations: list[Violation] = []
    if item.campaign.HasField("schedule"):
        _schedule(item.campaign.schedule, "schedule", violations)
    if item.audience is not None:
        _condition_tree(item.audience, "audience", violations)
    for index, promotion in enumerate(item.promotions):
        path = f"promotions[{index}]"
        if promotion.HasField("condition"):
            _condition_tree(promotion.condition, f"{path}.condition", violations)
        if not promotion.effects:
            violations.append(
                Violation(
                    f"{path}.effects",
                    err.ERROR_REASON_UNKNOWN_EFFECT,
                    "a promotion needs at least one effect",
                )
            )
        for number, effect in enumerate(promotion.effects):
            _effect(effect, f"{path}.effects[{number}]", violations)
    return violations


def validate_earning_rule(rule: earning_pb2.EarningRule) -> list[Violation]:
    violations: list[Violation] = []
    if rule.rate.points <= 0 or rule.rate.per_amount.amount_minor <= 0:
        violations.append(
            Violation("rate", err.ERROR_REASON_INVALID_EFFECT, "points and per_amount must be positive")
        )
    _currency(rule.rate.per_amount, "rate.per_amount", violations)
    if rule.HasField("condition"):
        _condition_tree(rule.condition, "condition", violations)
    if rule.HasField("schedule"):
        _schedule(rule.schedule, "schedule", violations)
    for index, multiplier in enumerate(rule.tier_multipliers):
        if multiplier.multiplier_bps < BPS:
            violations.append(
                Violation(
                    f"tier_multipliers[{index}].multiplier_bps",
                    err.ERROR_REASON_INVALID_EFFECT,
                    "a tier multiplier is at least 10000 (1x)",
                )
            )
    return violations


def _add(violations, field, reason, description):
    violations.append(Violation(field, reason, description))


def _zone(name: str, field: str, violations) -> None:
    if not name:
        return
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        _add(violations, field, err.ERROR_REASON_INVALID_WINDOW, f"unknown time zone {name!r}")


def _schedule(schedule: schedule_pb2.Schedule, path: str, violations) -> None:
    if (
        schedule.HasField("start_time")
        and schedule.HasField("end_time")
        and schedule.end_time.ToNanoseconds() <= schedule.start_time.ToNanoseconds()
    ):
        _add(
            violations,
            f"{path}.end_time",
            err.ERROR_REASON_INVALID_WINDOW,
            "the window ends before it starts",
        )
    _zone(schedule.time_zone, f"{path}.time_zone", violations)
    before = len(violations)
    _windows(schedule.recurring_windows, f"{path}.recurring_windows", violations)
    if len(violations) == before and not _windows_occur(schedule):
        _add(
            violations,
            f"{path}.recurring_windows",
            err.ERROR_REASON_INVALID_WINDOW,
            "no recurring window falls between start_time and end_time",
        )


# Local time is UTC-12 .. UTC+14: without a schedule zone (the tenant's applies, unknown here) a
# window is checked against the range widened by that much, so only a window that never occurs in
# any zone is refused.
ANY_ZONE_BEFORE, ANY_ZONE_AFTER = timedelta(hours=12), timedelta(hours=14)


def _windows_occur(schedule: schedule_pb2.Schedule) -> bool:
    """Whether some recurring window overlaps [start_time, end_time) in local wall time. A range of
    8 days or more meets every weekday, so only shorter ones are walked, day by day."""
    if not (schedule.recurring_windows and schedule.HasField("start_time") and schedule.HasField("end_time")):
        return True
    start = schedule.start_time.ToDatetime(tzinfo=UTC)
    end = schedule.end_time.ToDatetime(tzinfo=UTC)
    if end - start >= timedelta(days=8):
        return True
    try:
        zone = ZoneInfo(schedule.time_zone) if schedule.time_zone else None
    except (ZoneInfoNotFoundError, ValueError):
        return True  # reported as an unknown zone
    if zone is None:
        first, last = (
            (start - ANY_ZONE_BEFORE).replace(tzinfo=None),
            (end + ANY_ZONE_AFTER).replace(tzinfo=None),
        )
    else:
        first, last = start.astimezone(zone).replace(tzinfo=None), end.astimezone(zone).replace(tzinfo=None)
    day = datetime(first.year, first.month, first.day) - timedelta(days=1)
    while day < last:
        for window in schedule.recurring_windows:
            if window.days and day.isoweekday() not in window.days:
                continue
            opens = day + timedelta(minutes=window.start_minute)
            closes = day + timedelta(minutes=window.end_minute, days=window.end_minute <= window.start_minute)
            if opens < last and closes > first:
                return True
        day += timedelta(days=1)
    return False


def _windows(windows, path: str, violations) -> None:
    for index, window in enumerate(windows):
        if (
            not 0 <= window.start_minute <= 1439
            or not 1 <= window.end_minute <= 1440
            or window.start_minute == window.end_minute
        ):
            _add(
                violations,
                f"{path}[{index}]",
                err.ERROR_REASON_INVALID_WINDOW,
                "start_minute is 0..1439, end_minute 1..1440, and they differ",
            )
        if any(day == 0 for day in window.days):
            _add(violations, f"{path}[{index}].days", err.ERROR_REASON_INVALID_WINDOW, "a day must be set")


def _condition_tree(tree: cpb.Condition, path: str, violations) -> None:
    depth, nodes = tree_size(tree)
    if depth > MAX_DEPTH or nodes > MAX_NODES:
        _add(
            violations,
            path,
            err.ERROR_REASON_CONDITION_TOO_DEEP,
            f"the tree has {depth} levels and {nodes} nodes; at most {MAX_DEPTH} and {MAX_NODES}",
        )
        return
    _condition(tree, path, violations)


def _condition(node: cpb.Condition, path: str, violations) -> None:
    kind = node.WhichOneof("kind")
    if kind is None or kind not in KNOWN_KINDS:
        _add(violations, path, err.ERROR_REASON_UNKNOWN_EFFECT, "a condition must set one known kind")
        return
    leaf = getattr(node, kind)
    here = f"{path}.{kind}"
    if kind in ("all_of", "any_of"):
        for index, child in enumerate(leaf.conditions):
            _condition(child, f"{here}.conditions[{index}]", violations)
    elif kind == "negation":
        _condition(leaf.condition, f"{here}.condition", violations)
    elif kind == "expression":
        try:
            compile_expression(leaf.cel, formula=False)
        except ValueError as error:
            _add(violations, f"{here}.cel", err.ERROR_REASON_EXPRESSION_INVALID, str(error))
    elif kind == "time_window":
        _zone(leaf.time_zone, f"{here}.time_zone", violations)
        _windows(leaf.windows, f"{here}.windows", violations)
    elif kind == "line_quantity" and leaf.min_quantity < 0:
        _add(violations, f"{here}.min_quantity", err.ERROR_REASON_INVALID_EFFECT, "must not be negative")
    elif kind == "line_spend":
        _money(leaf.min_spend, f"{here}.min_spend", violations)
    elif kind == "basket_subtotal":
        for name in ("min_subtotal", "max_subtotal"):
            if leaf.HasField(name):
                _money(getattr(leaf, name), f"{here}.{name}", violations)
    elif kind == "customer_attribute":
        if not leaf.attribute or leaf.operator == cpb.ATTRIBUTE_OPERATOR_UNSPECIFIED:
            _add(violations, here, err.ERROR_REASON_INVALID_EFFECT, "attribute and operator are required")
        elif (
            leaf.operator not in (cpb.ATTRIBUTE_OPERATOR_IS_SET, cpb.ATTRIBUTE_OPERATOR_IN)
            and leaf.value.WhichOneof("kind") is None
        ):
            _add(violations, f"{here}.value", err.ERROR_REASON_INVALID_EFFECT, "a value is required")
    elif kind == "birthday" and leaf.within_days < 0:
        _add(violations, f"{here}.within_days", err.ERROR_REASON_INVALID_EFFECT, "must not be negative")


def _currency(money, path: str, violations) -> bool:
    if exponent(money.currency_code) is None:
        _add(
            violations,
            f"{path}.currency_code",
            err.ERROR_REASON_UNKNOWN_CURRENCY,
            f"{money.currency_code!r} is not an ISO 4217 currency",
        )
        return False
    return True


def _money(money, path: str, violations, *, positive: bool = False) -> None:
    if _currency(money, path, violations) and (
        money.amount_minor < 0 or (positive and money.amount_minor == 0)
    ):
        _add(
            violations,
            f"{path}.amount_minor",
            err.ERROR_REASON_INVALID_EFFECT,
            "must be positive" if positive else "must not be negative",
        )


def _percent(value: int, path: str, violations) -> None:
    if not 1 <= value <= BPS:
        _add(
            violations,
            path,
            err.ERROR_REASON_PERCENT_OUT_OF_RANGE,
            f"{value} basis points is outside 1..10000 (0.01 %..100 %)",
        )


def _at_least(
    value: int, minimum: int, path: str, violations, reason=err.ERROR_REASON_INVALID_EFFECT
) -> None:
    if value < minimum:
        _add(violations, path, reason, f"must be at least {minimum}")


def _effect(effect: epb.Effect, path: str, violations) -> None:
    kind = effect.WhichOneof("kind")
    if kind is None or kind not in KNOWN_EFFECTS:
        _add(violations, path, err.ERROR_REASON_UNKNOWN_EFFECT, "an effect must set one known kind")
        return
    if effect.HasField("max_discount"):
        _money(effect.max_discount, f"{path}.max_discount", violations)
    inner = getattr(effect, kind)
    here = f"{path}.{kind}"
    _EFFECT_CHECKS[kind](inner, here, violations)


def _check_percent_off(e, here, v):
    _percent(e.percent_bps, f"{here}.percent_bps", v)
    if e.HasField("max_discount"):
        _money(e.max_discount, f"{here}.max_discount", v)


def _check_amount_off(e, here, v):
    _money(e.amount, f"{here}.amount", v, positive=True)
    _at_least(e.max_units, 0, f"{here}.max_units", v)


def _check_fixed_price(e, here, v):
    _money(e.price, f"{here}.price", v)
    _at_least(e.bundle_quantity, 0, f"{here}.bundle_quantity", v)
    _at_least(e.max_applications, 0, f"{here}.max_applications", v)


def _check_buy_x_get_y(e, here, v):
    _at_least(e.buy_quantity, 1, f"{here}.buy_quantity", v)
    _at_least(e.get_quantity, 1, f"{here}.get_quantity", v, err.ERROR_REASON_REWARD_TARGET_MISSING)
    if e.get_discount_bps == 0:
        _add(
            v,
            f"{here}.get_discount_bps",
            err.ERROR_REASON_REWARD_TARGET_MISSING,
            "what the get units receive is missing",
        )
    else:
        _percent(e.get_discount_bps, f"{here}.get_discount_bps", v)
    _at_least(e.max_applications, 0, f"{here}.max_applications", v)


def _check_free_item(e, here, v):
    if not e.sku:
        _add(v, f"{here}.sku", err.ERROR_REASON_REWARD_TARGET_MISSING, "the free item's sku is required")
    _at_least(e.quantity, 1, f"{here}.quantity", v, err.ERROR_REASON_REWARD_TARGET_MISSING)


def _check_points(e, here, v):
    award = e.WhichOneof("award")
    if award is None:
        _add(
            v,
            here,
            err.ERROR_REASON_REWARD_TARGET_MISSING,
            "set fixed_points, multiplier_bps, rate or points_per_unit",
        )
    elif award == "rate":
        _at_least(e.rate.points, 1, f"{here}.rate.points", v)
        _money(e.rate.per_amount, f"{here}.rate.per_amount", v, positive=True)
    elif award == "multiplier_bps":
        _at_least(e.multiplier_bps, BPS + 1, f"{here}.multiplier_bps", v)
    else:
        _at_least(getattr(e, award), 1, f"{here}.{award}", v)
    _at_least(e.max_points, 0, f"{here}.max_points", v)


def _check_every_nth(e, here, v):
    _at_least(e.n, 2, f"{here}.n", v, err.ERROR_REASON_REWARD_TARGET_MISSING)
    _percent(e.discount_bps, f"{here}.discount_bps", v)
    _at_least(e.max_applications, 0, f"{here}.max_applications", v)


def _check_cheapest(e, here, v):
    _percent(e.discount_bps, f"{here}.discount_bps", v)
    _at_least(e.units, 0, f"{here}.units", v)
    if e.min_units and e.min_units < max(1, e.units):
        _add(v, f"{here}.min_units", err.ERROR_REASON_INVALID_EFFECT, "must be at least units")


def _check_tiered(e, here, v):
    if not e.tiers:
        _add(v, f"{here}.tiers", err.ERROR_REASON_REWARD_TARGET_MISSING, "at least one tier")
    for index, tier in enumerate(e.tiers):
        path = f"{here}.tiers[{index}]"
        _money(tier.min_spend, f"{path}.min_spend", v)
        if bool(tier.percent_bps) == tier.HasField("amount_off"):
            _add(v, path, err.ERROR_REASON_INVALID_EFFECT, "exactly one of percent_bps and amount_off")
        elif tier.percent_bps:
            _percent(tier.percent_bps, f"{path}.percent_bps", v)
        else:
            _money(tier.amount_off, f"{path}.amount_off", v, positive=True)


def _check_shipping(e, here, v):
    _percent(e.percent_bps, f"{here}.percent_bps", v)


def _check_formula(e, here, v):
    try:
        compile_expression(e.cel, formula=True)
    except ValueError as error:
        _add(v, f"{here}.cel", err.ERROR_REASON_EXPRESSION_INVALID, str(error))


_EFFECT_CHECKS = {
    "percent_off": _check_percent_off,
    "amount_off": _check_amount_off,
    "fixed_price": _check_fixed_price,
    "buy_x_get_y": _check_buy_x_get_y,
    "free_item": _check_free_item,
    "points_bonus": _check_points,
    "every_nth_unit": _check_every_nth,
    "cheapest_item": _check_cheapest,
    "tiered_spend": _check_tiered,
    "shipping": _check_shipping,
    "formula": _check_formula,
}


def validate_basket(basket: basket_pb2.Basket) -> list[Violation]:
    """Violations of a basket, each naming `basket.<field>` or `basket.lines[i].<field>`."""
    violations: list[Violation] = []
    currency = basket.currency_code
    if exponent(currency) is None:
        _add(
            violations,
            "basket.currency_code",
            err.ERROR_REASON_UNKNOWN_CURRENCY,
            f"{currency!r} is not an ISO 4217 currency",
        )
    if len(basket.lines) > MAX_LINES:
        _add(
            violations,
            "basket.lines",
            err.ERROR_REASON_TOO_MANY_LINES,
            f"{len(basket.lines)} lines; at most {MAX_LINES}",
        )
        return violations
    seen: set[str] = set()
    for index, line in enumerate(basket.lines):
        _line(line, f"basket.lines[{index}]", currency, seen, violations)
    if basket.HasField("subtotal"):
        if basket.subtotal.currency_code and basket.subtotal.currency_code != currency:
            _add(
                violations,
                "basket.subtotal.currency_code",
                err.ERROR_REASON_CURRENCY_MISMATCH,
                "differs from the basket's currency",
            )
        elif basket.subtotal.amount_minor != sum(line.line_total.amount_minor for line in basket.lines):
            _add(
                violations,
                "basket.subtotal",
                err.ERROR_REASON_INVALID_LINE,
                "is not the sum of the line totals",
            )
    return violations


def _line(line, path: str, currency: str, seen: set[str], violations) -> None:
    if not line.line_id or line.line_id in seen:
        _add(
            violations,
            f"{path}.line_id",
            err.ERROR_REASON_INVALID_LINE,
            "a line id is required and unique in the basket",
        )
    seen.add(line.line_id)
    if line.quantity < 0 or line.quantity_milli < 0:
        _add(violations, f"{path}.quantity", err.ERROR_REASON_INVALID_LINE, "a quantity must not be negative")
    elif line.quantity == 0 and line.quantity_milli == 0:
        _add(
            violations,
            f"{path}.quantity",
            err.ERROR_REASON_INVALID_LINE,
            "set quantity, or quantity_milli for weighed goods",
        )
    for name in ("unit_price", "line_total"):
        money = getattr(line, name)
        if money.currency_code and money.currency_code != currency:
            _add(
                violations,
                f"{path}.{name}.currency_code",
                err.ERROR_REASON_CURRENCY_MISMATCH,
                f"{money.currency_code!r} differs from the basket's {currency!r}",
            )
        if money.amount_minor < 0:
            _add(
                violations,
                f"{path}.{name}.amount_minor",
                err.ERROR_REASON_INVALID_LINE,
                "a price must not be negative",
            )
    if (
        line.quantity_milli == 0
        and line.quantity > 0
        and line.unit_price.amount_minor * line.quantity != line.line_total.amount_minor
    ):
        _add(
            violations,
            f"{path}.line_total",
            err.ERROR_REASON_INVALID_LINE,
            "must be unit_price x quantity for a counted line",
        )
