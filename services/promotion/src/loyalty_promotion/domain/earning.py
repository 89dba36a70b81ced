"""Earning rules and burn policies as pure functions over the contract's messages: what a new rule
starts as, what an update mask may change, and what makes a burn policy unusable."""

from google.protobuf import field_mask_pb2

from loyalty.promotion.v1 import earning_pb2
from loyalty_promotion.domain.campaigns import EditRefused, Violation

RULE_OUTPUT_ONLY = ("earning_rule_id", "create_time", "update_time", "etag")
# The contract: every field except earning_rule_id and program_id.
RULE_UPDATABLE = frozenset(
    {
        "display_name",
        "description",
        "state",
        "rate",
        "base",
        "line_filter",
        "condition",
        "tier_multipliers",
        "schedule",
        "priority",
    }
)
BURN_UPDATABLE = frozenset(
    {"enabled", "values", "min_points", "step_points", "max_basket_share_bps", "line_filter"}
)
MAX_SHARE_BPS = 10_000


def new_rule(requested: earning_pb2.EarningRule) -> earning_pb2.EarningRule:
    rule = earning_pb2.EarningRule()
    rule.CopyFrom(requested)
    for name in RULE_OUTPUT_ONLY:
        rule.ClearField(name)
    if rule.state == earning_pb2.EARNING_RULE_STATE_UNSPECIFIED:
        rule.state = earning_pb2.EARNING_RULE_STATE_ENABLED
    return rule


def _merge(current, changes, mask: field_mask_pb2.FieldMask, updatable: frozenset[str], prefix: str):
    paths = sorted({p.split(".", 1)[0] for p in mask.paths}) or sorted(updatable)
    for path in paths:
        if path not in updatable:
            raise EditRefused(f"update_mask.{path}", f"{path} cannot be updated")
    updated = type(current)()
    updated.CopyFrom(current)
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(
        changes, updated, replace_message_field=True, replace_repeated_field=True
    )
    return updated


def apply_rule_mask(
    current: earning_pb2.EarningRule, changes: earning_pb2.EarningRule, mask: field_mask_pb2.FieldMask
) -> earning_pb2.EarningRule:
    return _merge(current, changes, mask, RULE_UPDATABLE, "earning_rule.")


def apply_burn_mask(
    current: earning_pb2.BurnPolicy, changes: earning_pb2.BurnPolicy, mask: field_mask_pb2.FieldMask
) -> earning_pb2.BurnPolicy:
    return _merge(current, changes, mask, BURN_UPDATABLE, "burn_policy.")


def rule_violations(rule: earning_pb2.EarningRule, prefix: str = "earning_rule.") -> list[Violation]:
    found = []
    if not rule.program_id.strip():
        found.append(Violation(prefix + "program_id", "an earning rule belongs to a programme"))
    return found


def burn_violations(policy: earning_pb2.BurnPolicy, prefix: str = "burn_policy.") -> list[Violation]:
    found = []
    currencies = set()
    for index, value in enumerate(policy.values):
        here = f"{prefix}values[{index}]"
        if value.points <= 0 or value.value.amount_minor <= 0:
            found.append(Violation(here, "points and value must be positive"))
        if len(value.value.currency_code) != 3 or value.value.currency_code in currencies:
            found.append(Violation(here + ".value.currency_code", "one value per ISO 4217 currency"))
        currencies.add(value.value.currency_code)
    if policy.enabled and not policy.values:
        found.append(Violation(prefix + "values", "an enabled policy needs what points are worth"))
    for name in ("min_points", "step_points"):
        if getattr(policy, name) < 0:
            found.append(Violation(prefix + name, f"{name} must not be negative"))
    if not 0 <= policy.max_basket_share_bps <= MAX_SHARE_BPS:
        found.append(Violation(prefix + "max_basket_share_bps", "a share is 0..10000 basis points"))
    return found
