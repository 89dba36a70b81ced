"""Compiling a tenant's live campaigns into an in-memory Catalog: condition trees to closures, CEL
precompiled, effects bound, and an index so a basket only meets promotions that could match it.

Index: every promotion is filed under ONE kind of key, the most selective it has:
  code     a voucher / referral campaign: found only when a code unlocks it;
  sku / category / brand   a line filter the promotion cannot do without (a required
           line_quantity / line_spend condition, or the filters of all its effects);
  store / segment / channel   a required audience or condition leaf;
  always   the rest (basket-wide offers), met by every basket."""

from collections.abc import Sequence
from dataclasses import dataclass, field

from loyalty.promotion.v1 import (
    campaign_pb2,
    condition_pb2,
    earning_pb2,
    promotion_pb2,
    settings_pb2,
)
from loyalty_promotion.engine.burn import CompiledBurn, compile_burn
from loyalty_promotion.engine.conditions import CompiledCondition, compile_condition
from loyalty_promotion.engine.earning import CompiledRule, compile_rule
from loyalty_promotion.engine.effects import CompiledEffect, compile_effect
from loyalty_promotion.engine.model import Violation
from loyalty_promotion.engine.schedule import CompiledSchedule, compile_schedule


@dataclass(frozen=True)
class CampaignInput:
    """One campaign as the service stores it: the Campaign message, its promotions, and its
    campaign-level eligibility. `audience` is a condition tree for the campaign's channels,
    stores, segments (any / all / none via SegmentCondition.match) and customer conditions;
    None = everyone. `requires_code` = applies only when a PresentedCode unlocks it; None =
    derived from campaign.type (VOUCHER and REFERRAL need a code)."""

    campaign: campaign_pb2.Campaign
    promotions: Sequence[promotion_pb2.Promotion]
    audience: condition_pb2.Condition | None = None
    requires_code: bool | None = None

    @property
    def needs_code(self) -> bool:
        if self.requires_code is not None:
            return self.requires_code
        return self.campaign.type in (campaign_pb2.CAMPAIGN_TYPE_VOUCHER, campaign_pb2.CAMPAIGN_TYPE_REFERRAL)


@dataclass(eq=False)
class CompiledCampaign:
    campaign_id: str
    priority: int
    mode: int
    group: str
    needs_code: bool
    schedule: CompiledSchedule
    audience: CompiledCondition
    promotions: list["CompiledPromotion"] = field(default_factory=list)

    @property
    def exclusive(self) -> bool:
        return self.mode == campaign_pb2.STACKING_MODE_EXCLUSIVE

    @property
    def universal(self) -> bool:
        return self.mode == campaign_pb2.STACKING_MODE_UNIVERSAL


@dataclass(eq=False)
class CompiledPromotion:
    campaign: CompiledCampaign
    promotion_id: str
    display_name: str
    condition: CompiledCondition
    effects: tuple[CompiledEffect, ...]
    customer_message: promotion_pb2.LocalizedText
    hint_message: promotion_pb2.LocalizedText
    # Evaluation order: item-level before basket-level, then campaign and promotion priority.
    order: tuple
    # Position in that order over the whole catalog (set by compile_catalog): a cheap sort key.
    rank: int = 0

    @property
    def money_effects(self) -> tuple[CompiledEffect, ...]:
        return tuple(e for e in self.effects if e.level != "points")


@dataclass
class Catalog:
    """Compiled and read-only once built; hold it per tenant and rebuild it on any change.
    `rejected` maps a left-out campaign id to its violations."""

    settings: settings_pb2.PromotionSettings
    tz: str
    campaigns: dict[str, CompiledCampaign]
    index: dict[tuple, list[CompiledPromotion]]
    always: list[CompiledPromotion]
    earning_rules: list[CompiledRule]
    rejected: dict[str, list[Violation]] = field(default_factory=dict)
    # The limits the service enforces at reservation (and reports in evaluation): campaign id ->
    # its Budget, for campaigns with any limit; promotion id -> max_redemptions_per_customer.
    budgets: dict[str, campaign_pb2.Budget] = field(default_factory=dict)
    promotion_limits: dict[str, int] = field(default_factory=dict)
    # Referral campaigns' settings (who may use a referral code), by campaign id.
    referrals: dict[str, campaign_pb2.ReferralSettings] = field(default_factory=dict)
    # Enabled burn policies by programme.
    burn_policies: dict[str, CompiledBurn] = field(default_factory=dict)

    @property
    def promotion_count(self) -> int:
        return sum(len(c.promotions) for c in self.campaigns.values())


def compile_catalog(
    campaigns: Sequence[CampaignInput],
    settings: settings_pb2.PromotionSettings,
    *,
    earning_rules: Sequence[earning_pb2.EarningRule] = (),
    burn_policies: Sequence[earning_pb2.BurnPolicy] = (),
    tz: str = "UTC",
) -> Catalog:
    """Compiles live campaigns (the caller passes those in state ACTIVE or SCHEDULED; the engine
    checks the schedule at each evaluation) and the enabled earning rules."""
    from loyalty_promotion.engine.validation import validate_campaign, validate_earning_rule

    catalog = Catalog(settings, tz or settings.time_zone or "UTC", {}, {}, [], [])
    for item in campaigns:
        violations = validate_campaign(item)
        if violations:
            catalog.rejected[item.campaign.campaign_id] = violations
            continue
        compiled = _compile_campaign(item, settings)
        catalog.campaigns[compiled.campaign_id] = compiled
        if item.campaign.HasField("referral"):
            catalog.referrals[compiled.campaign_id] = item.campaign.referral
        if _limited(item.campaign.budget):
            catalog.budgets[compiled.campaign_id] = item.campaign.budget
        for promotion in item.promotions:
            if promotion.max_redemptions_per_customer:
                catalog.promotion_limits[promotion.promotion_id] = promotion.max_redemptions_per_customer
        for promotion in compiled.promotions:
            keys = _index_keys(item, promotion)
            if not keys:
                catalog.always.append(promotion)
            for key in keys:
                catalog.index.setdefault(key, []).append(promotion)
    everything = sorted((p for c in catalog.campaigns.values() for p in c.promotions), key=lambda p: p.order)
    for rank, promotion in enumerate(everything):
        promotion.rank = rank
    for rule in earning_rules:
        if rule.state == earning_pb2.EARNING_RULE_STATE_DISABLED or validate_earning_rule(rule):
            continue
        catalog.earning_rules.append(compile_rule(rule))
    for policy in burn_policies:
        compiled_burn = compile_burn(policy)
        if compiled_burn is not None:
            catalog.burn_policies[policy.program_id] = compiled_burn
    return catalog


def _limited(budget: campaign_pb2.Budget) -> bool:
    return bool(
        budget.max_discount.amount_minor
        or budget.max_points
        or budget.max_redemptions
        or budget.max_redemptions_per_customer
        or budget.max_redemptions_per_customer_per_period
        or budget.max_redemptions_per_store
    )


def _compile_campaign(item: CampaignInput, settings: settings_pb2.PromotionSettings) -> CompiledCampaign:
    campaign = item.campaign
    compiled = CompiledCampaign(
        campaign.campaign_id,
        campaign.priority,
        campaign.stacking.mode or campaign_pb2.STACKING_MODE_STACKABLE,
        campaign.stacking.exclusivity_group,
        item.needs_code,
        compile_schedule(campaign.schedule if campaign.HasField("schedule") else None),
        compile_condition(item.audience),
    )
    for promotion in item.promotions:
        if promotion.state == promotion_pb2.PROMOTION_STATE_DISABLED:
            continue
        effects = tuple(compile_effect(e, settings) for e in promotion.effects)
        money = [e for e in effects if e.level != "points"]
        level = 1 if money and all(e.level == "basket" for e in money) else 0
        compiled.promotions.append(
            CompiledPromotion(
                compiled,
                promotion.promotion_id,
                promotion.display_name,
                compile_condition(promotion.condition if promotion.HasField("condition") else None),
                effects,
                promotion.customer_message,
                promotion.hint_message,
                (
                    level,
                    -campaign.priority,
                    -promotion.priority,
                    campaign.campaign_id,
                    promotion.promotion_id,
                ),
            )
        )
    return compiled


def _index_keys(item: CampaignInput, promotion: CompiledPromotion) -> list[tuple]:
    if item.needs_code:
        return [("code", promotion.campaign.campaign_id)]
    anchored = [f.anchors for f in promotion.condition.required_filters if f.anchors]
    if anchored:
        return min(anchored, key=len)
    effect_filters = [f for e in promotion.effects for f in e.filters[:1]]
    gives_anyway = any(
        e.kind == "free_item" or (e.points is not None and e.points.WhichOneof("award") == "fixed_points")
        for e in promotion.effects
    )
    if effect_filters and not gives_anyway and all(f.anchors for f in effect_filters):
        return sorted({key for f in effect_filters for key in f.anchors})
    for tree in (item.audience, promotion_condition(item, promotion)):
        keys = _audience_keys(tree)
        if keys:
            return keys
    return []


def promotion_condition(item: CampaignInput, promotion: CompiledPromotion) -> condition_pb2.Condition | None:
    for message in item.promotions:
        if message.promotion_id == promotion.promotion_id and message.HasField("condition"):
            return message.condition
    return None


def _audience_keys(tree: condition_pb2.Condition | None) -> list[tuple]:
    """Keys from a required store, segment (any) or channel leaf, most selective first."""
    if tree is None or tree.WhichOneof("kind") is None:
        return []
    leaves = list(tree.all_of.conditions) if tree.WhichOneof("kind") == "all_of" else [tree]
    for kind in ("store", "customer_segment", "channel"):
        for leaf in leaves:
            if leaf.WhichOneof("kind") != kind:
                continue
            if kind == "store":
                return [("store", s) for s in leaf.store.store_ids]
            if kind == "customer_segment" and leaf.customer_segment.match in (
                0,
                condition_pb2.SEGMENT_MATCH_ANY,
                condition_pb2.SEGMENT_MATCH_ALL,
            ):
                return [("segment", s) for s in leaf.customer_segment.segment_ids]
            if kind == "channel":
                return [("channel", c) for c in leaf.channel.channels]
    return []
