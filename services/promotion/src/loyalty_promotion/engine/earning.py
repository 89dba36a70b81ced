"""Points: the base earning rules (per line, the matching rule of highest priority), the tier
multiplier of that rule, and the bonus-points effects of promotions. Every figure is computed
once over a sum of line amounts, rounded once (PromotionSettings.points_rounding, default FLOOR),
then allocated to lines by largest remainder."""

from dataclasses import dataclass

from loyalty.promotion.v1 import earning_pb2, evaluation_pb2 as evpb, settings_pb2 as spb
from loyalty_promotion.engine.conditions import (
    CompiledCondition,
    LineFilter,
    compile_condition,
    compile_filter,
)
from loyalty_promotion.engine.facts import Facts
from loyalty_promotion.engine.model import PointsEntry
from loyalty_promotion.engine.money import BPS, allocate, round_div
from loyalty_promotion.engine.schedule import CompiledSchedule, compile_schedule


@dataclass(frozen=True)
class CompiledRule:
    rule_id: str
    program_id: str
    points: int
    per_amount: int
    currency: str
    base: int
    line_filter: LineFilter
    condition: CompiledCondition
    schedule: CompiledSchedule
    tier_multipliers: dict[str, int]
    priority: int


def compile_rule(rule: earning_pb2.EarningRule) -> CompiledRule:
    return CompiledRule(
        rule.earning_rule_id,
        rule.program_id,
        rule.rate.points,
        rule.rate.per_amount.amount_minor,
        rule.rate.per_amount.currency_code,
        rule.base or earning_pb2.EARNING_BASE_AMOUNT_PAID,
        compile_filter(rule.line_filter),
        compile_condition(rule.condition if rule.HasField("condition") else None),
        compile_schedule(rule.schedule if rule.HasField("schedule") else None),
        {m.tier_id: m.multiplier_bps for m in rule.tier_multipliers},
        rule.priority,
    )


def points_rounding(settings: spb.PromotionSettings) -> int:
    return settings.points_rounding or spb.ROUNDING_MODE_FLOOR


def base_points(
    rules: list[CompiledRule],
    facts: Facts,
    paid: list[int],
    settings: spb.PromotionSettings,
    cash: list[int] | None = None,
) -> list[PointsEntry]:
    """Base and tier-multiplier entries. `paid` = each line's amount after promotions, `cash` =
    after the points burned as payment too (EARNING_BASE_AMOUNT_PAID; default: `paid`)."""
    cash = paid if cash is None else cash
    live = [
        r
        for r in rules
        if r.currency == facts.basket.currency and r.schedule.open_at(facts) and r.condition.test(facts)
    ]
    live.sort(key=lambda r: (-r.priority, r.rule_id))
    by_rule: dict[str, list[int]] = {}
    chosen: dict[str, CompiledRule] = {}
    matched = {id(r): set(facts.matching(r.line_filter)) for r in live}
    for index in range(len(facts.lines)):
        rule = next((r for r in live if index in matched[id(r)]), None)
        if rule is not None:
            by_rule.setdefault(rule.rule_id, []).append(index)
            chosen[rule.rule_id] = rule
    entries = []
    mode = points_rounding(settings)
    for rule_id in sorted(by_rule):
        rule, indexes = chosen[rule_id], by_rule[rule_id]
        amounts = [_base_amount(rule.base, facts.lines[i].line_total, paid[i], cash[i]) for i in indexes]
        points = round_div(sum(amounts) * rule.points, rule.per_amount, mode)
        if points > 0:
            entries.append(
                _entry(evpb.EARNING_SOURCE_BASE, points, facts, indexes, amounts, earning_rule_id=rule_id)
            )
        multiplier = rule.tier_multipliers.get(facts.customer.tier_id, BPS) if facts.customer.tier_id else BPS
        extra = round_div(points * (multiplier - BPS), BPS, mode) if multiplier > BPS else 0
        if extra > 0:
            entries.append(
                _entry(
                    evpb.EARNING_SOURCE_TIER_MULTIPLIER,
                    extra,
                    facts,
                    indexes,
                    amounts,
                    earning_rule_id=rule_id,
                    tier_id=facts.customer.tier_id,
                )
            )
    return entries


def _base_amount(base: int, line_total: int, paid: int, cash: int) -> int:
    if base == earning_pb2.EARNING_BASE_BEFORE_DISCOUNTS:
        return line_total
    return paid if base == earning_pb2.EARNING_BASE_AFTER_PROMOTIONS else cash


def _entry(
    source: int, points: int, facts: Facts, indexes: list[int], weights: list[int], **ids
) -> PointsEntry:
    shares = allocate(points, weights)
    return PointsEntry(
        source,
        points,
        by_line={facts.lines[i].line_id: s for i, s in zip(indexes, shares, strict=True)},
        **ids,
    )


def bonus_points(
    bonus,
    facts: Facts,
    paid: list[int],
    base_by_line: dict[str, int],
    settings: spb.PromotionSettings,
    indexes: list[int],
    *,
    campaign_id: str,
    promotion_id: str,
) -> PointsEntry | None:
    """A PointsBonusEffect over its matching lines (after discounts); None when it gives nothing."""
    if not indexes:
        return None
    mode = points_rounding(settings)
    award = bonus.WhichOneof("award")
    weights = [paid[i] for i in indexes]
    if award == "fixed_points":
        total = bonus.fixed_points
    elif award == "multiplier_bps":
        weights = [base_by_line.get(facts.lines[i].line_id, 0) for i in indexes]
        total = round_div(sum(weights) * max(0, bonus.multiplier_bps - BPS), BPS, mode)
    elif award == "rate":
        if bonus.rate.per_amount.currency_code != facts.basket.currency:
            return None
        total = round_div(sum(weights) * bonus.rate.points, bonus.rate.per_amount.amount_minor, mode)
    else:  # points_per_unit
        weights = [facts.lines[i].units * bonus.points_per_unit for i in indexes]
        total = sum(weights)
    if bonus.max_points:
        total = min(total, bonus.max_points)
    if total <= 0:
        return None
    return _entry(
        evpb.EARNING_SOURCE_PROMOTION,
        total,
        facts,
        indexes,
        weights,
        campaign_id=campaign_id,
        promotion_id=promotion_id,
    )
