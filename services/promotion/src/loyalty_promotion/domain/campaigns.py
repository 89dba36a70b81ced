"""Campaign edits as pure functions over the contract's messages (the engine compiles those same
messages, so the service keeps them as they are): what a new campaign starts as, what an update mask
may change, and the campaign-level eligibility (channels, stores, audience) as one condition tree."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC

from google.protobuf import field_mask_pb2

from loyalty.promotion.v1 import campaign_pb2, condition_pb2, promotion_pb2
from loyalty_promotion.domain.lifecycle import State, Window

STATE_TO_PB = {
    State.DRAFT: campaign_pb2.CAMPAIGN_STATE_DRAFT,
    State.SCHEDULED: campaign_pb2.CAMPAIGN_STATE_SCHEDULED,
    State.ACTIVE: campaign_pb2.CAMPAIGN_STATE_ACTIVE,
    State.PAUSED: campaign_pb2.CAMPAIGN_STATE_PAUSED,
    State.ENDED: campaign_pb2.CAMPAIGN_STATE_ENDED,
    State.ARCHIVED: campaign_pb2.CAMPAIGN_STATE_ARCHIVED,
}
PB_TO_STATE = {number: state for state, number in STATE_TO_PB.items()}

# What UpdateCampaign may change (the contract's list plus eligibility); program_id only in drafts.
UPDATABLE = frozenset(
    {
        "display_name",
        "description",
        "schedule",
        "budget",
        "stacking",
        "priority",
        "program_id",
        "code_pattern",
        "referral",
        "labels",
        "channels",
        "store_ids",
        "audience",
    }
)
DRAFT_ONLY = frozenset({"program_id"})
# Set by the service, never taken from a request.
OUTPUT_ONLY = ("campaign_id", "state", "create_time", "update_time", "activate_time", "etag")
PROMOTION_UPDATABLE = frozenset(
    {
        "display_name",
        "description",
        "state",
        "condition",
        "effects",
        "priority",
        "customer_message",
        "hint_message",
        "max_redemptions_per_customer",
        "labels",
    }
)
PROMOTION_OUTPUT_ONLY = ("promotion_id", "campaign_id", "create_time", "update_time", "etag")


class EditRefused(ValueError):
    """A field that may not be changed (now); `field` names it."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(description)
        self.field = field
        self.description = description


@dataclass(frozen=True)
class Violation:
    field: str
    description: str


def window_of(campaign: campaign_pb2.Campaign) -> Window:
    schedule = campaign.schedule
    return Window(
        start=schedule.start_time.ToDatetime(tzinfo=UTC) if schedule.HasField("start_time") else None,
        end=schedule.end_time.ToDatetime(tzinfo=UTC) if schedule.HasField("end_time") else None,
    )


def new_campaign(requested: campaign_pb2.Campaign) -> campaign_pb2.Campaign:
    """What CreateCampaign stores: the request without its output-only fields, as a DRAFT of type
    PROMOTION unless another type is asked for."""
    campaign = campaign_pb2.Campaign()
    campaign.CopyFrom(requested)
    for name in OUTPUT_ONLY:
        campaign.ClearField(name)
    campaign.state = campaign_pb2.CAMPAIGN_STATE_DRAFT
    if campaign.type == campaign_pb2.CAMPAIGN_TYPE_UNSPECIFIED:
        campaign.type = campaign_pb2.CAMPAIGN_TYPE_PROMOTION
    return campaign


def required_fields(campaign: campaign_pb2.Campaign, prefix: str = "campaign.") -> list[Violation]:
    """What the service itself requires besides the engine's rules."""
    violations = []
    if not campaign.display_name.strip():
        violations.append(Violation(prefix + "display_name", "a campaign needs a display name"))
    budget = campaign.budget
    for name in (
        "max_points",
        "max_redemptions",
        "max_redemptions_per_customer",
        "max_redemptions_per_customer_per_period",
        "max_redemptions_per_store",
    ):
        if getattr(budget, name) < 0:
            violations.append(Violation(f"{prefix}budget.{name}", f"{name} must not be negative"))
    if budget.max_discount.amount_minor < 0:
        violations.append(
            Violation(prefix + "budget.max_discount", "the discount budget must not be negative")
        )
    if budget.max_redemptions_per_customer_per_period and not budget.period:
        violations.append(Violation(prefix + "budget.period", "a per-period limit needs its period"))
    referral = campaign.referral
    if referral.max_referrals_per_period < 0:
        violations.append(Violation(prefix + "referral.max_referrals_per_period", "must not be negative"))
    if referral.max_referrals_per_period and not referral.referral_period:
        violations.append(Violation(prefix + "referral.referral_period", "a per-period cap needs its period"))
    return violations


def _top_level(paths: Iterable[str]) -> list[str]:
    return sorted({path.split(".", 1)[0] for path in paths})


def apply_mask(
    current: campaign_pb2.Campaign,
    changes: campaign_pb2.Campaign,
    mask: field_mask_pb2.FieldMask,
    state: State,
) -> campaign_pb2.Campaign:
    """`current` with the masked fields taken from `changes` (an empty mask = every updatable field;
    `labels.<key>` sets or removes that one label); EditRefused naming the first field that may not
    change."""
    label_keys = [path.split(".", 1)[1] for path in mask.paths if path.startswith("labels.")]
    paths = _top_level(p for p in mask.paths if not p.startswith("labels.")) or (
        [] if label_keys else sorted(UPDATABLE)
    )
    for path in paths:
        if path not in UPDATABLE:
            raise EditRefused(f"update_mask.{path}", f"{path} cannot be updated")
        if (
            path in DRAFT_ONLY
            and state is not State.DRAFT
            and getattr(changes, path) != getattr(current, path)
        ):
            raise EditRefused(f"campaign.{path}", f"{path} can only change while the campaign is a draft")
    updated = campaign_pb2.Campaign()
    updated.CopyFrom(current)
    if paths:
        field_mask_pb2.FieldMask(paths=paths).MergeMessage(
            changes, updated, replace_message_field=True, replace_repeated_field=True
        )
    for label in label_keys:
        if label in changes.labels:
            updated.labels[label] = changes.labels[label]
        else:
            updated.labels.pop(label, None)
    return updated


def apply_promotion_mask(
    current: promotion_pb2.Promotion, changes: promotion_pb2.Promotion, mask: field_mask_pb2.FieldMask
) -> promotion_pb2.Promotion:
    paths = _top_level(mask.paths) or sorted(PROMOTION_UPDATABLE)
    for path in paths:
        if path not in PROMOTION_UPDATABLE:
            raise EditRefused(f"update_mask.{path}", f"{path} cannot be updated")
    updated = promotion_pb2.Promotion()
    updated.CopyFrom(current)
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(
        changes, updated, replace_message_field=True, replace_repeated_field=True
    )
    return updated


def new_promotion(requested: promotion_pb2.Promotion, campaign_id: str) -> promotion_pb2.Promotion:
    promotion = promotion_pb2.Promotion()
    promotion.CopyFrom(requested)
    for name in PROMOTION_OUTPUT_ONLY:
        promotion.ClearField(name)
    promotion.campaign_id = campaign_id
    if promotion.state == promotion_pb2.PROMOTION_STATE_UNSPECIFIED:
        promotion.state = promotion_pb2.PROMOTION_STATE_ENABLED
    return promotion


def audience_condition(campaign: campaign_pb2.Campaign) -> condition_pb2.Condition | None:
    """Channels, stores, segments and customer conditions as one all-of tree (the engine's
    CampaignInput.audience); None when the campaign is for everyone, everywhere."""
    parts: list[condition_pb2.Condition] = []
    if campaign.channels:
        parts.append(
            condition_pb2.Condition(channel=condition_pb2.ChannelCondition(channels=campaign.channels))
        )
    if campaign.store_ids:
        parts.append(
            condition_pb2.Condition(store=condition_pb2.StoreCondition(store_ids=campaign.store_ids))
        )
    audience = campaign.audience
    if audience.segments.segment_ids:
        parts.append(condition_pb2.Condition(customer_segment=audience.segments))
    if audience.HasField("customer_condition"):
        parts.append(audience.customer_condition)
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return condition_pb2.Condition(all_of=condition_pb2.ConditionList(conditions=parts))


def enabled(promotions: Sequence[promotion_pb2.Promotion]) -> list[promotion_pb2.Promotion]:
    return [p for p in promotions if p.state != promotion_pb2.PROMOTION_STATE_DISABLED]
