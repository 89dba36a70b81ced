"""Evaluation of one basket against a Catalog: select candidates through the index, test them,
resolve stacking, apply effects in the defined order, compute points, explain the rest.
Pure and deterministic: the same catalog and input give the same Evaluation."""

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from loyalty.common.v1 import errors_pb2 as err
from loyalty.promotion.v1 import evaluation_pb2 as evpb, settings_pb2 as spb
from loyalty_promotion.engine.catalog import Catalog, CompiledCampaign, CompiledPromotion
from loyalty_promotion.engine.conditions import TRUE
from loyalty_promotion.engine.earning import base_points, bonus_points
from loyalty_promotion.engine.effects import Proposal, Work
from loyalty_promotion.engine.expressions import ExpressionError
from loyalty_promotion.engine.facts import Facts
from loyalty_promotion.engine.hints import localized, qualify_hint
from loyalty_promotion.engine.model import (
    Applied,
    Basket,
    Candidate,
    CodeOutcome,
    CustomerContext,
    Evaluation,
    FreeItem,
    LineDiscount,
    LineOutcome,
    PointsEntry,
    PresentedCode,
)
from loyalty_promotion.engine.money import allocate, percent_of

DEFAULT_EXACT_LIMIT = 10
DEFAULT_MAX_CODES = 5


@dataclass
class Outcome:
    """The result of applying one set of promotions in order."""

    remaining: list[int]
    discounts: list[list[LineDiscount]]
    free_items: list[FreeItem] = field(default_factory=list)
    applied: list[tuple[CompiledPromotion, int]] = field(default_factory=list)
    skipped: list[Candidate] = field(default_factory=list)

    @property
    def discount(self) -> int:
        return sum(d.amount for line in self.discounts for d in line)


def evaluate(
    catalog: Catalog,
    basket: Basket,
    customer: CustomerContext,
    codes: Sequence[PresentedCode],
    now: datetime,
    blocked: Mapping[str, int] | None = None,
) -> Evaluation:
    """See the package docstring. `basket` comes from `decode_basket` (already validated).
    `blocked` maps a campaign or promotion id to the ErrorReason it must not apply for (a spent
    budget, a customer's used-up limit: the service knows those, the engine reports them)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    settings = catalog.settings
    code_outcomes, accepted = _screen_codes(catalog, codes, settings)
    facts = Facts(basket, customer, accepted, now, catalog.tz)
    qualified, candidates = _qualify(catalog, facts, blocked or {})
    chosen, lost = _select(qualified, facts, settings)
    outcome = _apply([p for p in qualified if p.campaign in chosen], facts, settings)
    candidates += [
        Candidate(p.campaign.campaign_id, p.promotion_id, err.ERROR_REASON_NOT_STACKABLE)
        for p in qualified
        if p.campaign in lost
    ]
    candidates += outcome.skipped
    paid = outcome.remaining
    points, applied = _points(catalog, facts, outcome, paid, settings)
    return Evaluation(
        currency=basket.currency,
        subtotal=basket.subtotal,
        discount=outcome.discount,
        lines=tuple(
            LineOutcome(
                line.line_id,
                line.line_total,
                tuple(outcome.discounts[i]),
                sum(e.by_line.get(line.line_id, 0) for e in points),
            )
            for i, line in enumerate(basket.lines)
        ),
        free_items=tuple(outcome.free_items),
        applied=applied,
        points=tuple(points),
        program_id=customer.program_id or next((r.program_id for r in catalog.earning_rules), ""),
        candidates=tuple(sorted(candidates, key=lambda c: (c.campaign_id, c.promotion_id))),
        codes=tuple(_code_results(code_outcomes, accepted, applied, candidates)),
        now=now,
    )


def _screen_codes(catalog: Catalog, codes: Sequence[PresentedCode], settings: spb.PromotionSettings):
    """Deduplicates codes, applies the per-basket limit, and keeps those unlocking a live campaign."""
    limit = settings.max_codes_per_basket or DEFAULT_MAX_CODES
    outcomes: list[CodeOutcome] = []
    accepted: dict[str, str] = {}
    seen: set[str] = set()
    for code in codes:
        if code.code in seen:
            continue
        seen.add(code.code)
        if code.rejection:
            outcomes.append(CodeOutcome(code.code, False, code.rejection, code.campaign_id))
        elif len(accepted) >= limit:
            outcomes.append(
                CodeOutcome(
                    code.code,
                    False,
                    err.ERROR_REASON_NOT_STACKABLE,
                    code.campaign_id,
                    "Too many codes in one basket",
                )
            )
        elif code.campaign_id not in catalog.campaigns:
            outcomes.append(
                CodeOutcome(code.code, False, err.ERROR_REASON_CAMPAIGN_INACTIVE, code.campaign_id)
            )
        else:
            accepted[code.code] = code.campaign_id
            outcomes.append(CodeOutcome(code.code, True, 0, code.campaign_id))
    return outcomes, accepted


def _candidates(catalog: Catalog, facts: Facts) -> list[CompiledPromotion]:
    found: dict[int, CompiledPromotion] = {p.rank: p for p in catalog.always}
    keys: set[tuple] = {("store", facts.basket.store_id), ("channel", facts.basket.channel)}
    keys.update(("code", campaign_id) for campaign_id in facts.unlocked_campaigns)
    keys.update(("segment", s) for s in facts.customer.segment_ids)
    for line in facts.lines:
        keys.add(("sku", line.sku))
        keys.update(("category", c) for c in line.categories)
        if line.brand:
            keys.add(("brand", line.brand))
    index = catalog.index
    for key in keys:
        for promotion in index.get(key, ()):
            found[promotion.rank] = promotion
    return [found[rank] for rank in sorted(found)]


def _qualify(
    catalog: Catalog, facts: Facts, blocked: Mapping[str, int] = MappingProxyType({})
) -> tuple[list[CompiledPromotion], list[Candidate]]:
    """Candidates whose campaign is open and whose conditions hold (on prices before discounts).
    The loop runs for every candidate of every basket: hence the fast paths."""
    qualified, rejected = [], []
    campaign_reasons: dict[int, int] = {}
    for promotion in _candidates(catalog, facts):
        campaign = promotion.campaign
        try:
            reason = campaign_reasons.get(id(campaign))
            if reason is None:
                reason = campaign_reasons[id(campaign)] = blocked.get(
                    campaign.campaign_id
                ) or _campaign_reason(campaign, facts)
            reason = reason or blocked.get(promotion.promotion_id, 0)
            if reason:
                rejected.append(Candidate(campaign.campaign_id, promotion.promotion_id, reason))
                continue
            if promotion.condition is TRUE:
                qualified.append(promotion)
                continue
            verdict = _promotion_verdict(promotion, facts)
        except ExpressionError:
            rejected.append(
                Candidate(campaign.campaign_id, promotion.promotion_id, err.ERROR_REASON_EXPRESSION_FAILED)
            )
            continue
        if verdict is None:
            qualified.append(promotion)
        else:
            rejected.append(verdict)
    return qualified, rejected


def _campaign_reason(campaign: CompiledCampaign, facts: Facts) -> int:
    if not campaign.schedule.open_at(facts):
        return err.ERROR_REASON_CAMPAIGN_INACTIVE
    if campaign.needs_code and campaign.campaign_id not in facts.unlocked_campaigns:
        return err.ERROR_REASON_CODE_REQUIRED
    if campaign.audience is TRUE:
        return 0
    facts.current_campaign = campaign.campaign_id
    facts.touched_pending = False
    if not campaign.audience.test(facts):
        return err.ERROR_REASON_CONDITIONS_NOT_MET
    return err.ERROR_REASON_PAYMENT_METHOD_PENDING if facts.touched_pending else 0


def _promotion_verdict(promotion: CompiledPromotion, facts: Facts) -> Candidate | None:
    """None when the promotion qualifies; else why not, with a hint for a near miss."""
    campaign = promotion.campaign
    facts.current_campaign = campaign.campaign_id
    facts.touched_pending = False
    condition = promotion.condition
    if condition.test(facts):
        if facts.touched_pending:
            return Candidate(
                campaign.campaign_id,
                promotion.promotion_id,
                err.ERROR_REASON_PAYMENT_METHOD_PENDING,
                "Depends on the payment method",
                pending=True,
            )
        return None
    amount, units = 0, 0
    if condition.gaps and all(test(facts) for test in condition.others):
        for gap in condition.gaps:
            missing = gap.measure(facts)
            if gap.kind == "amount":
                amount = max(amount, missing)
            else:
                units = max(units, missing)
    hint = qualify_hint(promotion, facts, amount, units) if amount or units else ""
    return Candidate(
        campaign.campaign_id, promotion.promotion_id, err.ERROR_REASON_CONDITIONS_NOT_MET, hint, amount, units
    )


def _select(qualified: list[CompiledPromotion], facts: Facts, settings: spb.PromotionSettings):
    """Which qualifying campaigns apply together: one per exclusivity group, and an exclusive one
    shuts out every stackable one (universal ones always stay). PRIORITY: the highest priority
    wins each conflict; BEST_FOR_CUSTOMER: the combination giving the largest discount, tried
    exhaustively up to best_combination_exact_limit conflicting campaigns, greedily beyond."""
    campaigns = list(dict.fromkeys(p.campaign for p in qualified))
    groups: dict[str, list[CompiledCampaign]] = {}
    for campaign in campaigns:
        if campaign.group:
            groups.setdefault(campaign.group, []).append(campaign)
    free = [c for c in campaigns if not c.group]
    if settings.campaign_selection == spb.CAMPAIGN_SELECTION_BEST_FOR_CUSTOMER:
        chosen = _best(qualified, campaigns, free, groups, facts, settings)
    else:
        chosen = _option(
            free + [min(members, key=_rank) for _, members in sorted(groups.items())], by_priority=True
        )[0]
    return frozenset(chosen), frozenset(campaigns) - frozenset(chosen)


def _rank(campaign: CompiledCampaign):
    return (-campaign.priority, campaign.campaign_id)


def _option(members: list[CompiledCampaign], *, by_priority: bool) -> list[list[CompiledCampaign]]:
    """Campaigns (already one per group) -> the sets that may apply together. With exclusives
    present: by priority, the top exclusive with the universals; otherwise each exclusive with
    the universals, and the stackables with the universals, as alternatives."""
    exclusives = sorted((c for c in members if c.exclusive), key=_rank)
    universals = [c for c in members if c.universal]
    if not exclusives:
        return [members]
    if by_priority:
        return [[exclusives[0], *universals]]
    stackables = [c for c in members if not c.exclusive]
    return [[e, *universals] for e in exclusives] + [stackables]


def _best(qualified, campaigns, free, groups, facts, settings) -> list[CompiledCampaign]:
    limit = settings.best_combination_exact_limit or DEFAULT_EXACT_LIMIT
    conflicting = sum(len(m) for m in groups.values()) + sum(1 for c in free if c.exclusive)
    ordered_groups = [sorted(members, key=_rank) for _, members in sorted(groups.items())]
    if conflicting <= limit:
        choices = itertools.product(*ordered_groups)
    else:  # greedy: in each group the member worth most alone
        choices = [
            tuple(
                max(members, key=lambda c: (_worth(qualified, [c], facts, settings), -c.priority))
                for members in ordered_groups
            )
        ]
    best, best_value = None, None
    for choice in choices:
        for option in _option(free + list(choice), by_priority=False):
            value = _worth(qualified, option, facts, settings)
            if best_value is None or value > best_value:
                best, best_value = option, value
    return best or []


def _worth(qualified, option, facts, settings) -> int:
    chosen = set(option)
    return _apply([p for p in qualified if p.campaign in chosen], facts, settings).discount


def _apply(promotions: list[CompiledPromotion], facts: Facts, settings: spb.PromotionSettings) -> Outcome:
    """Applies promotions in order (item-level first, then priority); each effect sees what is
    left of the lines after the ones before it. Caps: the effect's max_discount, then what is
    left of each line, then the tenant's basket ceiling."""
    lines = facts.lines
    outcome = Outcome([line.line_total for line in lines], [[] for _ in lines])
    ceiling = (
        percent_of(facts.basket.subtotal, settings.max_basket_discount_bps, spb.ROUNDING_MODE_FLOOR)
        if settings.max_basket_discount_bps
        else None
    )
    one_per_line = settings.line_discounts == spb.LINE_DISCOUNT_POLICY_ONE_PER_LINE
    closed: set[int] = set()
    limit = settings.max_promotions_per_basket
    for promotion in promotions:
        campaign = promotion.campaign
        if limit and len(outcome.applied) >= limit:
            outcome.skipped.append(
                Candidate(
                    campaign.campaign_id, promotion.promotion_id, err.ERROR_REASON_PROMOTION_LIMIT_REACHED
                )
            )
            continue
        code = next((c for c, cid in sorted(facts.accepted_codes.items()) if cid == campaign.campaign_id), "")
        try:
            given, short = _apply_promotion(
                promotion, facts, settings, outcome, frozenset(closed), ceiling, code
            )
        except ExpressionError:
            outcome.skipped.append(
                Candidate(campaign.campaign_id, promotion.promotion_id, err.ERROR_REASON_EXPRESSION_FAILED)
            )
            continue
        if given is None:
            units, amount = short
            reason = (
                err.ERROR_REASON_CONDITIONS_NOT_MET
                if units or amount
                else err.ERROR_REASON_NOTHING_TO_DISCOUNT
            )
            outcome.skipped.append(
                Candidate(
                    campaign.campaign_id,
                    promotion.promotion_id,
                    reason,
                    qualify_hint(promotion, facts, amount, units) if units or amount else "",
                    amount,
                    units,
                )
            )
            continue
        outcome.applied.append((promotion, given))
        if one_per_line:
            closed.update(i for i, line in enumerate(outcome.discounts) if line)
    return outcome


def _apply_promotion(promotion, facts, settings, outcome, closed, ceiling, code):
    """Applies one promotion's effects; returns (discount given or None if it gave nothing, shortfall)."""
    staged_remaining = list(outcome.remaining)
    staged: list[tuple[int, int, int]] = []  # (line index, amount, units)
    free_items: list[FreeItem] = []
    units_short = amount_short = 0
    for effect in promotion.money_effects:
        proposal = effect.compute(Work(facts, staged_remaining, settings, closed))
        units_short, amount_short = (
            max(units_short, proposal.units_short),
            max(amount_short, proposal.amount_short),
        )
        amounts = _capped(proposal, staged_remaining, effect.max_discount)
        for index, amount in amounts.items():
            staged_remaining[index] -= amount
            staged.append((index, amount, proposal.units.get(index, 0)))
        free_items.extend(
            FreeItem(
                f.sku,
                f.quantity,
                f.display_name,
                promotion.campaign.campaign_id,
                promotion.promotion_id,
                code,
            )
            for f in proposal.free_items
        )
    if ceiling is not None:
        staged = _within_ceiling(staged, ceiling - outcome.discount)
    given = sum(amount for _, amount, _ in staged)
    has_points = len(promotion.money_effects) < len(promotion.effects)
    if given == 0 and not free_items and not has_points:
        return None, (units_short, amount_short)
    campaign_id = promotion.campaign.campaign_id
    for index, amount, units in staged:
        if amount > 0:
            outcome.remaining[index] -= amount
            outcome.discounts[index].append(
                LineDiscount(campaign_id, promotion.promotion_id, amount, code, units)
            )
    outcome.free_items.extend(free_items)
    return given, (0, 0)


def _capped(proposal: Proposal, remaining: list[int], cap: int | None) -> dict[int, int]:
    amounts = {
        i: min(a, remaining[i]) for i, a in sorted(proposal.amounts.items()) if min(a, remaining[i]) > 0
    }
    total = sum(amounts.values())
    if cap is not None and total > cap:
        indexes = list(amounts)
        amounts = dict(zip(indexes, allocate(cap, [amounts[i] for i in indexes]), strict=True))
    return amounts


def _within_ceiling(staged, room: int):
    total = sum(a for _, a, _ in staged)
    if total <= room:
        return staged
    shares = allocate(max(0, room), [a for _, a, _ in staged])
    return [(i, share, u) for (i, _, u), share in zip(staged, shares, strict=True)]


def _points(
    catalog: Catalog, facts: Facts, outcome: Outcome, paid: list[int], settings: spb.PromotionSettings
):
    """Base, tier and bonus points (anonymous baskets earn none), and the applied list."""
    entries: list[PointsEntry] = []
    program = facts.customer.program_id
    if not facts.customer.anonymous:
        rules = [r for r in catalog.earning_rules if not program or r.program_id == program]
        entries = base_points(rules, facts, paid, settings)
    base_by_line: dict[str, int] = {}
    for entry in entries:
        if entry.source == evpb.EARNING_SOURCE_BASE:
            for line_id, points in entry.by_line.items():
                base_by_line[line_id] = base_by_line.get(line_id, 0) + points
    applied = []
    for promotion, discount in outcome.applied:
        campaign_id = promotion.campaign.campaign_id
        points = 0
        for effect in promotion.effects:
            if effect.points is None or facts.customer.anonymous:
                continue
            indexes = [i for i in facts.matching(effect.filters[0])]
            entry = bonus_points(
                effect.points,
                facts,
                paid,
                base_by_line,
                settings,
                indexes,
                campaign_id=campaign_id,
                promotion_id=promotion.promotion_id,
            )
            if entry is not None:
                entries.append(entry)
                points += entry.points
        code = next((c for c, cid in sorted(facts.accepted_codes.items()) if cid == campaign_id), "")
        applied.append(
            Applied(
                campaign_id,
                promotion.promotion_id,
                discount,
                points,
                code,
                localized(promotion.customer_message, facts.customer.locale) or promotion.display_name,
            )
        )
    return entries, tuple(applied)


def _code_results(
    outcomes: list[CodeOutcome], accepted: dict[str, str], applied, candidates
) -> list[CodeOutcome]:
    """An accepted code whose campaign gave nothing is reported rejected with the reason."""
    gave = {a.campaign_id for a in applied}
    reasons = {}
    for candidate in candidates:
        reasons.setdefault(candidate.campaign_id, candidate)
    results = []
    for outcome in outcomes:
        if outcome.accepted and outcome.campaign_id not in gave:
            candidate = reasons.get(outcome.campaign_id)
            reason = candidate.reason if candidate else err.ERROR_REASON_CONDITIONS_NOT_MET
            outcome = CodeOutcome(
                outcome.code, False, reason, outcome.campaign_id, candidate.hint if candidate else ""
            )
        results.append(outcome)
    return results


def conflicting_campaigns(
    catalog: Catalog, campaign_id: str, baskets: Sequence[Basket], customer: CustomerContext, now: datetime
) -> list[str]:
    """Live campaigns competing with campaign_id on any of the baskets: both qualify and one
    excludes the other (exclusive, same exclusivity group) or both discount the same line."""
    target = catalog.campaigns.get(campaign_id)
    if target is None:
        return []
    found: set[str] = set()
    codes = {f"simulate:{cid}": cid for cid in catalog.campaigns}
    for basket in baskets:
        facts = Facts(basket, customer, codes, now, catalog.tz)
        qualified, _ = _qualify(catalog, facts)
        mine = [p for p in qualified if p.campaign is target]
        if not mine:
            continue
        my_lines = _lines_touched(mine, facts, catalog.settings)
        for other in dict.fromkeys(p.campaign for p in qualified if p.campaign is not target):
            excludes = (
                (target.exclusive and not other.universal)
                or (other.exclusive and not target.universal)
                or (bool(target.group) and target.group == other.group)
            )
            theirs = _lines_touched([p for p in qualified if p.campaign is other], facts, catalog.settings)
            if excludes or my_lines & theirs:
                found.add(other.campaign_id)
    return sorted(found)


def _lines_touched(promotions, facts, settings) -> set[int]:
    outcome = _apply(promotions, facts, settings)
    return {i for i, line in enumerate(outcome.discounts) if line}


@dataclass(frozen=True, slots=True)
class OfferCandidate:
    """An automatic promotion the customer may use now (its campaign is open and its audience
    admits them in this basket's channel and store)."""

    campaign_id: str
    promotion_id: str
    display_name: str
    message: str
    start: datetime | None
    end: datetime | None


def customer_offers(
    catalog: Catalog, basket: Basket, customer: CustomerContext, now: datetime
) -> list[OfferCandidate]:
    """The automatic promotions (no code needed) open to this customer now, for a wallet. A
    campaign whose audience depends on the payment method counts as open (the tender is unknown)."""
    facts = Facts(basket, customer, {}, now, catalog.tz)
    found = []
    for campaign in catalog.campaigns.values():
        if campaign.needs_code:
            continue
        if _campaign_reason(campaign, facts) not in (0, err.ERROR_REASON_PAYMENT_METHOD_PENDING):
            continue
        for promotion in campaign.promotions:
            found.append(
                OfferCandidate(
                    campaign.campaign_id,
                    promotion.promotion_id,
                    promotion.display_name,
                    localized(promotion.customer_message, customer.locale) or promotion.display_name,
                    campaign.schedule.start,
                    campaign.schedule.end,
                )
            )
    return found
