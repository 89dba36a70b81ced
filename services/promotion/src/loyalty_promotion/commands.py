"""What the servicer asks the use cases (app.py) to do, already decoded from protobuf. Campaigns and
promotions stay contract messages: the engine compiles exactly those."""

from dataclasses import dataclass
from datetime import datetime

from google.protobuf import field_mask_pb2

from loyalty.common.v1 import basket_pb2
from loyalty.promotion.v1 import (
    campaign_pb2,
    earning_pb2,
    evaluation_pb2,
    promotion_pb2,
    settings_pb2,
    trigger_pb2,
    voucher_pb2,
)
from loyalty_promotion.domain.lifecycle import Action, State


@dataclass(frozen=True)
class UpdateSettings:
    changes: settings_pb2.PromotionSettings
    mask: field_mask_pb2.FieldMask
    etag: str


@dataclass(frozen=True)
class CreateCampaign:
    campaign: campaign_pb2.Campaign


@dataclass(frozen=True)
class UpdateCampaign:
    campaign_id: str
    changes: campaign_pb2.Campaign
    mask: field_mask_pb2.FieldMask
    etag: str


@dataclass(frozen=True)
class ChangeState:
    """Activate, pause, archive or delete one campaign."""

    campaign_id: str
    action: Action
    etag: str


@dataclass(frozen=True)
class ListCampaigns:
    states: frozenset[State]
    campaign_type: int
    labels: dict[str, str]
    after: tuple[int, str] | None
    limit: int


@dataclass(frozen=True)
class CampaignPage:
    campaigns: list[campaign_pb2.Campaign]
    # (priority, campaign_id) of the last campaign when more may follow.
    last: tuple[int, str] | None


@dataclass(frozen=True)
class CreatePromotion:
    promotion: promotion_pb2.Promotion


@dataclass(frozen=True)
class UpdatePromotion:
    promotion_id: str
    changes: promotion_pb2.Promotion
    mask: field_mask_pb2.FieldMask
    etag: str


@dataclass(frozen=True)
class DeletePromotion:
    promotion_id: str
    etag: str


@dataclass(frozen=True)
class ListPromotions:
    campaign_id: str
    state: int
    after: str
    limit: int


@dataclass(frozen=True)
class GetStatistics:
    campaign_id: str
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class EvaluateBasket:
    basket: basket_pb2.Basket
    customer: evaluation_pb2.CustomerContext
    codes: tuple[str, ...]
    now: datetime | None
    points_to_burn: int = 0


@dataclass(frozen=True)
class SimulateCampaign:
    campaign_id: str
    baskets: tuple[basket_pb2.Basket, ...]
    customer: evaluation_pb2.CustomerContext
    now: datetime | None


@dataclass(frozen=True)
class UpdateEarningRule:
    earning_rule_id: str
    changes: earning_pb2.EarningRule
    mask: field_mask_pb2.FieldMask
    etag: str


@dataclass(frozen=True)
class DeleteEarningRule:
    earning_rule_id: str
    etag: str


@dataclass(frozen=True)
class ListEarningRules:
    program_id: str
    state: int
    after: tuple[int, str] | None
    limit: int


@dataclass(frozen=True)
class UpdateBurnPolicy:
    program_id: str
    changes: earning_pb2.BurnPolicy
    mask: field_mask_pb2.FieldMask
    etag: str


@dataclass(frozen=True)
class ListVouchers:
    campaign_id: str
    state: int
    holder_customer_id: str
    batch_id: str | None
    after: str | None
    limit: int


@dataclass(frozen=True)
class UpdateVoucher:
    voucher_id: str
    changes: voucher_pb2.Voucher
    mask: field_mask_pb2.FieldMask
    etag: str


@dataclass(frozen=True)
class SetVoucherEnabled:
    voucher_id: str
    enabled: bool


@dataclass(frozen=True)
class ReserveRedemptions:
    checkout_id: str
    basket: basket_pb2.Basket
    customer: evaluation_pb2.CustomerContext
    codes: tuple[str, ...]
    fingerprint: bytes
    points_to_burn: int = 0


@dataclass(frozen=True)
class ListRedemptions:
    campaign_id: str | None
    customer_id: str
    voucher_id: str | None
    state: str
    before: tuple[datetime, str] | None
    limit: int


@dataclass(frozen=True)
class ReverseRedemptions:
    checkout_id: str
    return_id: str
    lines: tuple[tuple[str, int, int], ...]
    full_return: bool
    fingerprint: bytes


@dataclass(frozen=True)
class GenerateVouchers:
    campaign_id: str
    count: int
    pattern: voucher_pb2.CodePattern
    holders: tuple[str, ...]
    max_redemptions: int
    max_redemptions_per_customer: int
    metadata: dict[str, str]
    # The request, for its validity timestamps.
    source: object


@dataclass(frozen=True)
class ImportVouchers:
    campaign_id: str
    # (row or position number, code) to import, and (number, code, why) refused while reading.
    vouchers: tuple[tuple[int, voucher_pb2.VoucherImport], ...]
    refused: tuple[tuple[int, str, str], ...] = ()
    limit: int = 1000


@dataclass(frozen=True)
class ListCustomerOffers:
    customer: evaluation_pb2.CustomerContext
    # None = no basket to qualify against.
    basket: basket_pb2.Basket | None
    kinds: tuple[int, ...]


@dataclass(frozen=True)
class CreateReferralCode:
    campaign_id: str
    referrer: str


@dataclass(frozen=True)
class ListReferralCodes:
    campaign_id: str | None
    referrer: str
    after: str | None
    limit: int


@dataclass(frozen=True)
class ListReferralConversions:
    campaign_id: str | None
    referrer: str
    referee: str
    state: str
    before: tuple[datetime, str] | None
    limit: int


@dataclass(frozen=True)
class UpdateTrigger:
    trigger_id: str
    changes: trigger_pb2.Trigger
    mask: field_mask_pb2.FieldMask
    etag: str


@dataclass(frozen=True)
class DeleteTrigger:
    trigger_id: str
    etag: str


@dataclass(frozen=True)
class ListTriggers:
    campaign_id: str | None
    event_type: str | None
    after: str | None
    limit: int


@dataclass(frozen=True)
class ListRewardGrants:
    customer_id: str | None
    campaign_id: str | None
    trigger_id: str | None
    after: tuple[datetime, str] | None
    limit: int


@dataclass(frozen=True)
class AcceptReferral:
    code: str
    referee: str
    validate_only: bool


@dataclass(frozen=True)
class ListAchievementProgress:
    customer_id: str
    campaign_id: str | None
    after: str | None
    limit: int
