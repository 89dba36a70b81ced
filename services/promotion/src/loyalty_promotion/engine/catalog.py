"""Compiling a tenant's live campaigns into an in-memory, indexed Catalog."""

from collections.abc import Sequence
from dataclasses import dataclass, field

from loyalty.promotion.v1 import campaign_pb2, condition_pb2, earning_pb2, promotion_pb2, settings_pb2


@dataclass(frozen=True)
class CampaignInput:
    """One campaign as the service stores it: the Campaign message, its promotions, and its
    campaign-level eligibility. `audience` is a condition tree for the campaign's channels,
    stores, segments (any / all / none via SegmentCondition.match) and customer conditions;
    None = everyone. `requires_code` = a voucher/referral campaign (applies only when a
    PresentedCode unlocks it); by default derived from campaign.type."""

    campaign: campaign_pb2.Campaign
    promotions: Sequence[promotion_pb2.Promotion]
    audience: condition_pb2.Condition | None = None
    requires_code: bool | None = None


@dataclass
class Catalog:
    """Compiled, immutable once built. `rejected` lists campaign ids left out with why."""

    settings: settings_pb2.PromotionSettings
    tz: str
    rejected: dict[str, list] = field(default_factory=dict)


def compile_catalog(
    campaigns: Sequence[CampaignInput],
    settings: settings_pb2.PromotionSettings,
    *,
    earning_rules: Sequence[earning_pb2.EarningRule] = (),
    tz: str = "UTC",
) -> Catalog:
    """Compile live campaigns and enabled earning rules; see the package docstring."""
    raise NotImplementedError
