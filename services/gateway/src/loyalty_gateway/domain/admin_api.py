"""The admin API over the platform's services: which of their RPCs the gateway serves, under their own
names, and which admin roles may call each. This table is the whole policy: an RPC missing here is
not served through the gateway at all (UNIMPLEMENTED for every caller, whatever its role), which is
where the services' internal RPCs stay (EvaluateBasket, Reserve/Commit/RollbackRedemptions,
HoldPoints, SettleCheckout, Reserve/Issue/CancelCatalogueReward, Assess*, Record*, ...). An API
key with the `admin` scope counts as the admin role.

Roles: admin everything listed; marketer campaigns, promotions, earning rules, vouchers, triggers,
the reward catalogue, templates and segments; support customer lookups and accounts (and AdjustPoints, the gateway's own);
analyst read-only Get/List/Statistics/Export; auditor only the gateway's audit log.

`mutates` marks the RPCs whose success is written to the audit log.

`audit_ids` picks what the audit record names from a request or answer: the singular string fields
named `*_id` (ids the platform issued, and customer ids, which are pseudonyms), two levels deep;
never other values, which may be personal.
"""

from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from loyalty_gateway.domain.credentials import ADMIN, role_scope

PROMOTION = "loyalty.promotion.v1.PromotionService"
SEGMENTATION = "loyalty.segmentation.v1.SegmentationService"
NOTIFICATION = "loyalty.notification.v1.NotificationService"
FRAUD = "loyalty.fraud.v1.FraudService"
PROFILE = "loyalty.profile.v1.ProfileService"
LEDGER = "loyalty.ledger.v1.LedgerService"


def _roles(*names: str) -> frozenset[str]:
    return frozenset({ADMIN, role_scope("admin"), *(role_scope(n) for n in names)})


ONLY_ADMIN = _roles()
MARKETING = _roles("marketer")
MARKETING_READ = _roles("marketer", "analyst")
ANALYSIS = _roles("analyst")
SUPPORT = _roles("support")
CUSTOMER_READ = _roles("support", "analyst")


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]
    mutates: bool


def _change(roles: frozenset[str]) -> Rule:
    return Rule(roles, mutates=True)


def _read(roles: frozenset[str]) -> Rule:
    return Rule(roles, mutates=False)


TABLE: dict[str, dict[str, Rule]] = {
    PROMOTION: {
        "GetPromotionSettings": _read(MARKETING_READ),
        "UpdatePromotionSettings": _change(ONLY_ADMIN),
        "CreateCampaign": _change(MARKETING),
        "GetCampaign": _read(MARKETING_READ),
        "ListCampaigns": _read(MARKETING_READ),
        "UpdateCampaign": _change(MARKETING),
        "DeleteCampaign": _change(MARKETING),
        "ActivateCampaign": _change(MARKETING),
        "PauseCampaign": _change(MARKETING),
        "ArchiveCampaign": _change(MARKETING),
        "GetCampaignStatistics": _read(MARKETING_READ),
        "SimulateCampaign": _read(MARKETING_READ),
        "CreatePromotion": _change(MARKETING),
        "GetPromotion": _read(MARKETING_READ),
        "ListPromotions": _read(MARKETING_READ),
        "UpdatePromotion": _change(MARKETING),
        "DeletePromotion": _change(MARKETING),
        "CreateEarningRule": _change(MARKETING),
        "GetEarningRule": _read(MARKETING_READ),
        "ListEarningRules": _read(MARKETING_READ),
        "UpdateEarningRule": _change(MARKETING),
        "DeleteEarningRule": _change(MARKETING),
        "GetBurnPolicy": _read(MARKETING_READ),
        "UpdateBurnPolicy": _change(ONLY_ADMIN),
        "CreateVoucher": _change(MARKETING),
        "GenerateVouchers": _change(MARKETING),
        "ImportVouchers": _change(MARKETING),
        "ImportVouchersCsv": _change(MARKETING),
        "GetVoucherBatch": _read(MARKETING_READ),
        "GetVoucher": _read(MARKETING_READ),
        "ListVouchers": _read(MARKETING_READ),
        "UpdateVoucher": _change(MARKETING),
        "DisableVoucher": _change(MARKETING),
        "EnableVoucher": _change(MARKETING),
        "ExportVouchers": _read(MARKETING_READ),
        "ListRedemptions": _read(MARKETING_READ),
        "CreateTrigger": _change(MARKETING),
        "GetTrigger": _read(MARKETING_READ),
        "ListTriggers": _read(MARKETING_READ),
        "UpdateTrigger": _change(MARKETING),
        "DeleteTrigger": _change(MARKETING),
        "ListRewardGrants": _read(MARKETING_READ),
        "ListReferralCodes": _read(MARKETING_READ),
        "ListReferralConversions": _read(MARKETING_READ),
        "CreateCatalogueReward": _change(MARKETING),
        "GetCatalogueReward": _read(MARKETING_READ),
        "ListCatalogueRewards": _read(MARKETING_READ),
        "UpdateCatalogueReward": _change(MARKETING),
        "DeleteCatalogueReward": _change(MARKETING),
    },
    SEGMENTATION: {
        "CreateSegment": _change(MARKETING),
        "GetSegment": _read(MARKETING_READ),
        "ListSegments": _read(MARKETING_READ),
        "UpdateSegment": _change(MARKETING),
        "DeleteSegment": _change(MARKETING),
        "AddSegmentMembers": _change(MARKETING),
        "RemoveSegmentMembers": _change(MARKETING),
        "UploadSegmentMembers": _change(MARKETING),
        "ListSegmentMembers": _read(MARKETING_READ),
        "EstimateSegmentSize": _read(MARKETING_READ),
        "ListCustomerSegments": _read(CUSTOMER_READ),
        "GetCustomerMetrics": _read(CUSTOMER_READ),
        "ExportSegmentMembers": _read(ANALYSIS),
        "ExportRfmScores": _read(ANALYSIS),
    },
    NOTIFICATION: {
        "CreateTemplate": _change(MARKETING),
        "GetTemplate": _read(MARKETING_READ),
        "ListTemplates": _read(MARKETING_READ),
        "UpdateTemplate": _change(MARKETING),
        "DeleteTemplate": _change(MARKETING),
        "RenderTemplate": _read(MARKETING_READ),
        "GetFrequencyCapPolicy": _read(MARKETING_READ),
        "UpdateFrequencyCapPolicy": _change(ONLY_ADMIN),
        "GetMessage": _read(CUSTOMER_READ),
        "ListMessages": _read(CUSTOMER_READ),
        "CancelMessage": _change(ONLY_ADMIN),
    },
    FRAUD: {
        "GetAssessment": _read(ANALYSIS),
        "ListAssessments": _read(ANALYSIS),
        "CreateRule": _change(ONLY_ADMIN),
        "GetRule": _read(ANALYSIS),
        "ListRules": _read(ANALYSIS),
        "UpdateRule": _change(ONLY_ADMIN),
        "DeleteRule": _change(ONLY_ADMIN),
        "GetFraudSettings": _read(ANALYSIS),
        "UpdateFraudSettings": _change(ONLY_ADMIN),
        "CreateBlocklistEntry": _change(ONLY_ADMIN),
        "GetBlocklistEntry": _read(ANALYSIS),
        "ListBlocklistEntries": _read(ANALYSIS),
        "UpdateBlocklistEntry": _change(ONLY_ADMIN),
        "DeleteBlocklistEntry": _change(ONLY_ADMIN),
        "GetReviewCase": _read(ANALYSIS),
        "ListReviewCases": _read(ANALYSIS),
        "AssignReviewCase": _change(ONLY_ADMIN),
        "ResolveReviewCase": _change(ONLY_ADMIN),
        "ListCodeLockouts": _read(ANALYSIS),
    },
    PROFILE: {
        "GetCustomer": _read(SUPPORT),
        "LookupCustomer": _read(SUPPORT),
        "SearchCustomers": _read(SUPPORT),
        "ListAttributeDefinitions": _read(_roles("marketer", "analyst", "support")),
        "DefineAttribute": _change(ONLY_ADMIN),
    },
    LEDGER: {
        "GetProgram": _read(_roles("analyst", "support")),
        "GetAccount": _read(SUPPORT),
        "ListStatementLines": _read(SUPPORT),
    },
}


def permitted(rule: Rule, scopes: frozenset[str]) -> bool:
    return not rule.roles.isdisjoint(scopes)


MAX_DEPTH = 2


def audit_ids(message: Message, depth: int = 0) -> list[tuple[str, str]]:
    """(field path, value) of the ids set in `message`, in field order."""
    found: list[tuple[str, str]] = []
    for field, value in message.ListFields():
        if field.is_repeated:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE and depth < MAX_DEPTH:
            found += [(f"{field.name}.{path}", v) for path, v in audit_ids(value, depth + 1)]
        elif field.type == FieldDescriptor.TYPE_STRING and field.name.endswith("_id"):
            found.append((field.name, value))
    return found


def audit_resource(request: Message, response: Message, limit: int) -> str:
    """The ids of a change as `path=value` pairs (request first, each id once), at most `limit`
    characters, ids that do not fit left out whole."""
    parts: list[str] = []
    seen: set[str] = set()
    size = 0
    for path, value in (*audit_ids(request), *audit_ids(response)):
        if value in seen:
            continue
        seen.add(value)
        part = f"{path}={value}"
        if size + len(part) + (1 if parts else 0) > limit:
            continue
        size += len(part) + (1 if parts else 0)
        parts.append(part)
    return " ".join(parts)


def audit_fields(request: Message) -> list[str]:
    """The names of the request's fields that were set (never their values)."""
    return sorted(field.name for field, _ in request.ListFields() if field.name != "idempotency_key")
