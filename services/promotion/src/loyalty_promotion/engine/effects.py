"""Effects compiled once per catalog. Each computes, for the basket as it stands (what is left of
every line after the promotions applied before it), the discount it gives per line; the
evaluator caps and applies it. Unit effects work on groups of equal units (value, line, count) so
a line of 1,000 units costs no more than a line of one."""

from collections.abc import Callable
from dataclasses import dataclass, field

from loyalty.promotion.v1 import effect_pb2 as epb, settings_pb2 as spb
from loyalty_promotion.engine.conditions import EVERYTHING, LineFilter, compile_filter
from loyalty_promotion.engine.expressions import ExpressionError, compile_expression
from loyalty_promotion.engine.facts import Facts
from loyalty_promotion.engine.model import FreeItem
from loyalty_promotion.engine.money import BPS, allocate, percent_of


@dataclass
class Proposal:
    """What an effect would give: amount and units per line index, free items to add, and when it
    gives nothing because the basket falls short, the shortfall (for a hint)."""

    amounts: dict[int, int] = field(default_factory=dict)
    units: dict[int, int] = field(default_factory=dict)
    free_items: list[FreeItem] = field(default_factory=list)
    units_short: int = 0
    amount_short: int = 0

    def add(self, index: int, amount: int, units: int = 0) -> None:
        if amount > 0:
            self.amounts[index] = self.amounts.get(index, 0) + amount
            self.units[index] = self.units.get(index, 0) + units

    @property
    def total(self) -> int:
        return sum(self.amounts.values())


@dataclass(frozen=True)
class Work:
    """The basket as it stands for one effect: what is left of each line, and the settings."""

    facts: Facts
    remaining: list[int]
    settings: spb.PromotionSettings
    # Lines a ONE_PER_LINE policy closed to further promotions.
    closed: frozenset[int]

    @property
    def rounding(self) -> int:
        return self.settings.discount_rounding or spb.ROUNDING_MODE_HALF_UP

    @property
    def original_base(self) -> bool:
        return self.settings.discount_base == spb.DISCOUNT_BASE_ORIGINAL_PRICE

    def lines(self, line_filter: LineFilter) -> list[int]:
        return [i for i in self.facts.matching(line_filter) if i not in self.closed and self.remaining[i] > 0]

    def base(self, index: int) -> int:
        """The amount a percentage of this line is computed on (tenant's discount_base)."""
        return self.facts.lines[index].line_total if self.original_base else self.remaining[index]

    def unit_groups(self, indexes: list[int]) -> list[tuple[int, int, int]]:
        """(value of one unit, line index, units) for the lines; on REMAINING_PRICE the units of a
        discounted line share what is left of it (the first ones carry the odd minor units)."""
        groups = []
        for index in indexes:
            line = self.facts.lines[index]
            units = line.units
            if self.original_base:
                groups.append(
                    (line.unit_price if line.quantity_milli == 0 else line.line_total, index, units)
                )
                continue
            each, odd = divmod(self.remaining[index], units)
            if odd:
                groups.append((each + 1, index, odd))
            if units - odd:
                groups.append((each, index, units - odd))
        return groups


def cheapest_first(groups):
    """Ties on value: the earlier basket line first (RULES.md: "cheapest")."""
    return sorted(groups, key=lambda g: (g[0], g[1]))


def dearest_first(groups):
    return sorted(groups, key=lambda g: (-g[0], g[1]))


def take(groups, count: int):
    """Split sorted groups into the first `count` units and the rest."""
    taken, rest = [], []
    for value, index, units in groups:
        now = min(units, count)
        if now:
            taken.append((value, index, now))
        if units - now:
            rest.append((value, index, units - now))
        count -= now
    return taken, rest


def discount_units(proposal: Proposal, groups, bps: int, rounding: int) -> None:
    for value, index, units in groups:
        proposal.add(index, percent_of(value, bps, rounding) * units, units)


def spread(proposal: Proposal, total: int, indexes: list[int], weights: list[int]) -> None:
    for index, share in zip(indexes, allocate(total, weights), strict=True):
        proposal.add(index, share)


@dataclass(frozen=True)
class CompiledEffect:
    kind: str
    # "item", "basket" or "points" (evaluation order: item-level before basket-level).
    level: str
    compute: Callable[[Work], Proposal]
    max_discount: int | None
    filters: tuple[LineFilter, ...]
    # Points effects only.
    points: epb.PointsBonusEffect | None = None


def _percent_off(message: epb.PercentOffEffect, default_scope: int):
    line_filter = compile_filter(message.line_filter)
    scope = message.scope or default_scope or epb.DISCOUNT_SCOPE_BASKET

    def compute(work: Work) -> Proposal:
        proposal = Proposal()
        indexes = work.lines(line_filter)
        bases = [work.base(i) for i in indexes]
        if scope == epb.DISCOUNT_SCOPE_LINE:
            for index, base in zip(indexes, bases, strict=True):
                proposal.add(index, percent_of(base, message.percent_bps, work.rounding))
        else:
            spread(proposal, percent_of(sum(bases), message.percent_bps, work.rounding), indexes, bases)
        return proposal

    cap = message.max_discount.amount_minor if message.HasField("max_discount") else None
    return compute, line_filter, cap


def _amount_off(message: epb.AmountOffEffect):
    line_filter = compile_filter(message.line_filter)
    amount = message.amount.amount_minor

    def compute(work: Work) -> Proposal:
        proposal = Proposal()
        indexes = work.lines(line_filter)
        if message.mode == epb.AMOUNT_OFF_MODE_PER_UNIT:
            units_left = message.max_units or None
            for index in indexes:
                units = (
                    work.facts.lines[index].units
                    if units_left is None
                    else min(units_left, work.facts.lines[index].units)
                )
                proposal.add(index, min(amount * units, work.remaining[index]), units)
                if units_left is not None:
                    units_left -= units
                    if units_left <= 0:
                        break
            return proposal
        lefts = [work.remaining[i] for i in indexes]
        spread(proposal, min(amount, sum(lefts)), indexes, lefts)
        return proposal

    return compute, line_filter, None


def _fixed_price(message: epb.FixedPriceEffect):
    line_filter = compile_filter(message.line_filter)
    price, bundle = message.price.amount_minor, max(1, message.bundle_quantity)

    def compute(work: Work) -> Proposal:
        proposal = Proposal()
        groups = dearest_first(work.unit_groups(work.lines(line_filter)))
        available = sum(g[2] for g in groups)
        bundles = available // bundle
        if message.max_applications:
            bundles = min(bundles, message.max_applications)
        if bundles == 0:
            proposal.units_short = bundle - available
        if bundle == 1:
            chosen, _ = take(groups, bundles)
            for value, index, units in chosen:
                proposal.add(index, max(0, value - price) * units, units)
            return proposal
        for _ in range(bundles):  # the dearest units make the bundles: the best for the customer
            chosen, groups = take(groups, bundle)
            saving = sum(value * units for value, _, units in chosen) - price
            if saving <= 0:
                break
            for (_, index, units), share in zip(
                chosen, allocate(saving, [v * u for v, _, u in chosen]), strict=True
            ):
                proposal.add(index, share, units)
        return proposal

    return compute, line_filter, None


def _buy_x_get_y(message: epb.BuyXGetYEffect):
    buy_filter = compile_filter(message.buy_filter)
    same = not message.HasField("get_filter")
    get_filter = buy_filter if same else compile_filter(message.get_filter)
    buy, get, bps = message.buy_quantity, message.get_quantity, message.get_discount_bps

    def compute(work: Work) -> Proposal:
        proposal = Proposal()
        if same:
            groups = work.unit_groups(work.lines(buy_filter))
            available = sum(g[2] for g in groups)
            applications = available // (buy + get)
            if message.max_applications:
                applications = min(applications, message.max_applications)
            if applications == 0:
                proposal.units_short = buy + get - available
            got, _ = take(cheapest_first(groups), applications * get)
            discount_units(proposal, got, bps, work.rounding)
            return proposal
        return _buy_x_get_y_two_pools(work, proposal)

    def _buy_x_get_y_two_pools(work: Work, proposal: Proposal) -> Proposal:
        buy_pool = dearest_first(work.unit_groups(work.lines(buy_filter)))
        get_pool = cheapest_first(work.unit_groups(work.lines(get_filter)))
        used: dict[int, int] = {}  # line index -> units used as bought or got
        applications, got_all = 0, []

        def free_units(pool):
            return [(v, i, u - used.get(i, 0)) for v, i, u in pool if u - used.get(i, 0) > 0]

        while not message.max_applications or applications < message.max_applications:
            bought, _ = take(free_units(buy_pool), buy)
            if sum(g[2] for g in bought) < buy:
                if applications == 0:
                    proposal.units_short = buy - sum(g[2] for g in bought)
                break
            for _, index, units in bought:
                used[index] = used.get(index, 0) + units
            got, _ = take(free_units(get_pool), get)
            if sum(g[2] for g in got) < get:
                break
            for _, index, units in got:
                used[index] = used.get(index, 0) + units
            got_all.extend(got)
            applications += 1
        discount_units(proposal, got_all, bps, work.rounding)
        return proposal

    return compute, buy_filter, None, get_filter


def _free_item(message: epb.FreeItemEffect):
    sku_filter = compile_filter(None)

    def compute(work: Work) -> Proposal:
        proposal = Proposal()
        indexes = [i for i in work.lines(sku_filter) if work.facts.lines[i].sku == message.sku]
        got, _ = take(cheapest_first(work.unit_groups(indexes)), message.quantity)
        discount_units(proposal, got, BPS, work.rounding)
        missing = message.quantity - sum(g[2] for g in got)
        if missing > 0:
            proposal.free_items.append(
                FreeItem(message.sku, missing, message.display_name or message.sku, "", "")
            )
        return proposal

    return compute, EVERYTHING, None


def _every_nth(message: epb.EveryNthUnitEffect):
    line_filter = compile_filter(message.line_filter)

    def compute(work: Work) -> Proposal:
        proposal = Proposal()
        groups = work.unit_groups(work.lines(line_filter))
        available = sum(g[2] for g in groups)
        count = available // message.n
        if message.max_applications:
            count = min(count, message.max_applications)
        if count == 0:
            proposal.units_short = message.n - available
        got, _ = take(cheapest_first(groups), count)
        discount_units(proposal, got, message.discount_bps, work.rounding)
        return proposal

    return compute, line_filter, None


def _cheapest_item(message: epb.CheapestItemEffect):
    line_filter = compile_filter(message.line_filter)
    units = message.units or 1
    minimum = message.min_units or units + 1

    def compute(work: Work) -> Proposal:
        proposal = Proposal()
        groups = work.unit_groups(work.lines(line_filter))
        available = sum(g[2] for g in groups)
        if available < minimum:
            proposal.units_short = minimum - available
            return proposal
        got, _ = take(cheapest_first(groups), units)
        discount_units(proposal, got, message.discount_bps, work.rounding)
        return proposal

    return compute, line_filter, None


def _tiered_spend(message: epb.TieredSpendEffect):
    line_filter = compile_filter(message.line_filter)
    tiers = sorted(message.tiers, key=lambda t: t.min_spend.amount_minor)

    def compute(work: Work) -> Proposal:
        proposal = Proposal()
        indexes = work.lines(line_filter)
        bases = [work.base(i) for i in indexes]
        spend = sum(work.facts.lines[i].line_total for i in indexes)
        usable = [t for t in tiers if t.min_spend.currency_code == work.facts.basket.currency]
        reached = [t for t in usable if t.min_spend.amount_minor <= spend]
        if not reached:
            if usable:
                proposal.amount_short = usable[0].min_spend.amount_minor - spend
            return proposal
        tier = reached[-1]
        if tier.percent_bps:
            total = percent_of(sum(bases), tier.percent_bps, work.rounding)
        else:
            total = min(tier.amount_off.amount_minor, sum(work.remaining[i] for i in indexes))
        spread(proposal, total, indexes, bases)
        return proposal

    return compute, line_filter, None


def _shipping(message: epb.ShippingDiscountEffect):
    skus = frozenset(message.shipping_skus)
    line_filter = LineFilter(
        skus, frozenset() if skus else frozenset({"shipping"}), *(frozenset() for _ in range(4))
    )

    def compute(work: Work) -> Proposal:
        proposal = Proposal()
        for index in work.lines(line_filter):
            proposal.add(index, percent_of(work.base(index), message.percent_bps, work.rounding))
        return proposal

    return compute, line_filter, None


def _formula(message: epb.FormulaDiscountEffect):
    line_filter = compile_filter(message.line_filter)
    expression = compile_expression(message.cel, formula=True)

    def compute(work: Work) -> Proposal:
        proposal = Proposal()
        shared = {name: work.facts.cel_variable(name) for name in expression.variables - {"line"}}
        for index in work.lines(line_filter):
            activation = dict(shared, line=work.facts.line_activation(index, remaining=work.remaining[index]))
            value = expression.run(activation)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ExpressionError("the formula did not give a number")
            proposal.add(index, max(0, min(int(value), work.remaining[index])))
        return proposal

    return compute, line_filter, None


def _no_money(_: Work) -> Proposal:
    return Proposal()


def compile_effect(message: epb.Effect, settings: spb.PromotionSettings) -> CompiledEffect:
    """Compiles a validated effect (validation.py refuses unknown kinds and bad values)."""
    kind = message.WhichOneof("kind")
    cap = message.max_discount.amount_minor if message.HasField("max_discount") else None
    if kind == "points_bonus":
        return CompiledEffect(
            kind,
            "points",
            _no_money,
            None,
            (compile_filter(message.points_bonus.line_filter),),
            message.points_bonus,
        )
    inner = getattr(message, kind)
    if kind == "percent_off":
        compute, line_filter, own_cap = _percent_off(inner, settings.default_discount_scope)
    else:
        built = _BUILDERS[kind](inner)
        compute, line_filter, own_cap = built[0], built[1], built[2]
    caps = [c for c in (cap, own_cap) if c is not None]
    filters = (line_filter,) if kind != "buy_x_get_y" else (line_filter, built[3])
    basket_wide = line_filter == EVERYTHING and (
        kind in ("percent_off", "tiered_spend")
        or (kind == "amount_off" and inner.mode != epb.AMOUNT_OFF_MODE_PER_UNIT)
    )
    level = "basket" if basket_wide or kind == "shipping" else "item"
    return CompiledEffect(kind, level, compute, min(caps) if caps else None, filters)


_BUILDERS = {
    "amount_off": _amount_off,
    "fixed_price": _fixed_price,
    "buy_x_get_y": _buy_x_get_y,
    "free_item": _free_item,
    "every_nth_unit": _every_nth,
    "cheapest_item": _cheapest_item,
    "tiered_spend": _tiered_spend,
    "shipping": _shipping,
    "formula": _formula,
}
KNOWN_EFFECTS = frozenset(_BUILDERS) | {"percent_off", "points_bonus"}
