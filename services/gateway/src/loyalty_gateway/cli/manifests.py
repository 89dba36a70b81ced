"""Campaigns as code: YAML manifests read into the contract's messages, and the plan that brings the
tenant's campaigns to what the manifests say. Pure: no I/O besides reading the files, no calls.

A manifest document names its campaign by `key` (kept on the campaign as the label KEY_LABEL, which
is how the next apply finds it again), holds the Campaign's fields under `campaign` and its
promotions, each with its own `key`, under `promotions`, with the protobuf field names (snake_case
or JSON camelCase) and enum value names; `active: true|false` optionally asks for the campaign's
state (activated or paused), left alone when absent.

The manifest owns every field it can state: a field left out is cleared on the campaign, a promotion
left out is deleted from a draft and disabled in a campaign that ran (the service keeps a ran
campaign's promotions for its redemptions). Campaigns absent from the manifests are left alone.
"""

import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from loyalty.promotion.v1 import campaign_pb2, promotion_pb2

KEY_LABEL = "loyalty.dev/key"
KEY_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DOCUMENT_FIELDS = frozenset({"key", "campaign", "promotions", "active"})

# Set by the service; a manifest stating them is refused rather than silently ignored.
CAMPAIGN_OUTPUT_ONLY = frozenset(
    {"campaign_id", "state", "create_time", "update_time", "activate_time", "etag"}
)
PROMOTION_OUTPUT_ONLY = frozenset({"promotion_id", "campaign_id", "create_time", "update_time", "etag"})
# Fixed at creation: a manifest that changes it names a new campaign (a new key).
CAMPAIGN_IMMUTABLE = frozenset({"type"})
CAMPAIGN_MANAGED = tuple(
    f.name
    for f in campaign_pb2.Campaign.DESCRIPTOR.fields
    if f.name not in CAMPAIGN_OUTPUT_ONLY | CAMPAIGN_IMMUTABLE
)
PROMOTION_MANAGED = tuple(
    f.name for f in promotion_pb2.Promotion.DESCRIPTOR.fields if f.name not in PROMOTION_OUTPUT_ONLY
)
# States from which `active: true` activates and `active: false` pauses.
ACTIVATABLE = frozenset({campaign_pb2.CAMPAIGN_STATE_DRAFT, campaign_pb2.CAMPAIGN_STATE_PAUSED})
PAUSABLE = frozenset({campaign_pb2.CAMPAIGN_STATE_SCHEDULED, campaign_pb2.CAMPAIGN_STATE_ACTIVE})


class ManifestError(ValueError):
    """A manifest that cannot be applied; `source` is its file, `field` the path inside it."""

    def __init__(self, source: str, field: str, description: str) -> None:
        super().__init__(f"{source}: {field}: {description}" if field else f"{source}: {description}")
        self.source = source
        self.field = field
        self.description = description


@dataclass(frozen=True)
class PromotionManifest:
    key: str
    promotion: promotion_pb2.Promotion


@dataclass(frozen=True)
class CampaignManifest:
    key: str
    source: str
    campaign: campaign_pb2.Campaign
    promotions: tuple[PromotionManifest, ...]
    active: bool | None


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class PromotionPlan:
    key: str
    action: str  # create, update, delete, disable, keep
    desired: promotion_pb2.Promotion | None = None
    current: promotion_pb2.Promotion | None = None
    changes: tuple[FieldChange, ...] = ()


@dataclass(frozen=True)
class CampaignPlan:
    manifest: CampaignManifest
    action: str  # create, update, keep
    current: campaign_pb2.Campaign | None = None
    changes: tuple[FieldChange, ...] = ()
    promotions: tuple[PromotionPlan, ...] = ()
    transition: str | None = None  # activate, pause
    state_change: FieldChange | None = None

    @property
    def changed(self) -> bool:
        return (
            self.action != "keep"
            or self.transition is not None
            or any(p.action != "keep" for p in self.promotions)
        )


# --- reading ---


def _plain(value: Any) -> Any:
    """YAML's own types as protobuf JSON expects them (YAML reads an unquoted time as a datetime)."""
    if isinstance(value, datetime.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        return aware.isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _parse_error_field(message: str) -> tuple[str, str]:
    """The field path and the reason in one of json_format's ParseError messages."""
    path = re.findall(r"Failed to parse (\w+) field", message)
    unknown = re.search(r'has no field named "([^"]+)"', message)
    if unknown:
        return ".".join([*path, unknown.group(1)]), "unknown field"
    reason = re.split(r"Failed to parse \w+ field: ", message)[-1]
    return ".".join(path), reason.split(" at ")[0].rstrip(".")


def _message(source: str, where: str, body: Any, message: Message) -> Message:
    if not isinstance(body, Mapping):
        raise ManifestError(source, where, "must be a mapping")
    try:
        json_format.ParseDict(_plain(body), message)
    except json_format.ParseError as error:
        path, reason = _parse_error_field(str(error))
        raise ManifestError(source, f"{where}.{path}" if path else where, reason) from None
    return message


def _refuse_output_only(source: str, where: str, message: Message, names: frozenset[str]) -> None:
    for descriptor, _ in message.ListFields():
        if descriptor.name in names:
            raise ManifestError(source, f"{where}.{descriptor.name}", "is output only; set by the service")


def _key(source: str, where: str, value: Any) -> str:
    if not isinstance(value, str) or not KEY_PATTERN.match(value):
        raise ManifestError(
            source, where, "needs a key: lower-case letters, digits and dashes, at most 63 characters"
        )
    return value


def _promotion(source: str, where: str, body: Any) -> PromotionManifest:
    if not isinstance(body, Mapping):
        raise ManifestError(source, where, "must be a mapping")
    key = _key(source, f"{where}.key", body.get("key"))
    fields = {k: v for k, v in body.items() if k != "key"}
    promotion = _message(source, where, fields, promotion_pb2.Promotion())
    _refuse_output_only(source, where, promotion, PROMOTION_OUTPUT_ONLY)
    if promotion.labels.get(KEY_LABEL, key) != key:
        raise ManifestError(source, f"{where}.labels", f"{KEY_LABEL} is the promotion's key")
    promotion.labels[KEY_LABEL] = key
    if promotion.state == promotion_pb2.PROMOTION_STATE_UNSPECIFIED:
        promotion.state = promotion_pb2.PROMOTION_STATE_ENABLED  # what the service makes of it
    return PromotionManifest(key, promotion)


def _document(source: str, body: Any) -> CampaignManifest:
    if not isinstance(body, Mapping):
        raise ManifestError(source, "", "a manifest is a mapping with key, campaign and promotions")
    for name in body:
        if name not in DOCUMENT_FIELDS:
            raise ManifestError(source, str(name), "unknown field")
    key = _key(source, "key", body.get("key"))
    campaign = _message(source, "campaign", body.get("campaign") or {}, campaign_pb2.Campaign())
    _refuse_output_only(source, "campaign", campaign, CAMPAIGN_OUTPUT_ONLY)
    if campaign.labels.get(KEY_LABEL, key) != key:
        raise ManifestError(source, "campaign.labels", f"{KEY_LABEL} is the campaign's key")
    campaign.labels[KEY_LABEL] = key
    if campaign.type == campaign_pb2.CAMPAIGN_TYPE_UNSPECIFIED:
        campaign.type = campaign_pb2.CAMPAIGN_TYPE_PROMOTION  # what the service makes of it
    items = body.get("promotions") or []
    if not isinstance(items, list):
        raise ManifestError(source, "promotions", "must be a list")
    promotions = tuple(_promotion(source, f"promotions[{i}]", item) for i, item in enumerate(items))
    _refuse_repeated_keys(source, [p.key for p in promotions], "promotions")
    active = body.get("active")
    if active is not None and not isinstance(active, bool):
        raise ManifestError(source, "active", "must be true or false")
    return CampaignManifest(key, source, campaign, promotions, active)


def _refuse_repeated_keys(source: str, keys: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise ManifestError(source, where, f"the key {key!r} appears twice")
        seen.add(key)


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files named, directories read (not recursively) in name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"})
        else:
            files.append(path)
    return files


def read_manifests(files: Sequence[Path]) -> list[CampaignManifest]:
    """Every campaign of `files` (several documents per file allowed); ManifestError naming the file
    and field of the first problem, before anything is applied."""
    manifests: list[CampaignManifest] = []
    for path in files:
        source = str(path)
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except OSError as error:
            raise ManifestError(source, "", error.strerror or "cannot be read") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark else ""
            raise ManifestError(
                source, where, f"not valid YAML ({getattr(error, 'problem', error)})"
            ) from None
        manifests += [_document(source, body) for body in documents if body is not None]
    by_key: dict[str, str] = {}
    for manifest in manifests:
        if manifest.key in by_key:
            raise ManifestError(manifest.source, "key", f"{manifest.key!r} is also in {by_key[manifest.key]}")
        by_key[manifest.key] = manifest.source
    return manifests


# --- planning ---


def _fields(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _changes(current: Message, desired: Message, names: Sequence[str]) -> tuple[FieldChange, ...]:
    before, after = _fields(current), _fields(desired)
    return tuple(
        FieldChange(name, before.get(name), after.get(name))
        for name in names
        if before.get(name) != after.get(name)
    )


def _state_name(state: int) -> str:
    return campaign_pb2.CampaignState.Name(state).removeprefix("CAMPAIGN_STATE_").lower()


def _transition(active: bool | None, state: int) -> str | None:
    if active is True and state in ACTIVATABLE:
        return "activate"
    if active is False and state in PAUSABLE:
        return "pause"
    return None


def _promotion_plans(
    manifest: CampaignManifest, current: Sequence[promotion_pb2.Promotion], draft: bool
) -> tuple[PromotionPlan, ...]:
    existing = {p.labels[KEY_LABEL]: p for p in current if KEY_LABEL in p.labels}
    plans = []
    for wanted in manifest.promotions:
        found = existing.pop(wanted.key, None)
        if found is None:
            plans.append(PromotionPlan(wanted.key, "create", desired=wanted.promotion))
            continue
        changes = _changes(found, wanted.promotion, PROMOTION_MANAGED)
        plans.append(
            PromotionPlan(wanted.key, "update" if changes else "keep", wanted.promotion, found, changes)
        )
    unlisted = list(existing.items()) + [(p.promotion_id, p) for p in current if KEY_LABEL not in p.labels]
    for key, found in unlisted:
        if draft:
            plans.append(PromotionPlan(key, "delete", current=found))
        elif found.state != promotion_pb2.PROMOTION_STATE_DISABLED:
            plans.append(PromotionPlan(key, "disable", current=found))
    return tuple(plans)


def plan_campaign(
    manifest: CampaignManifest,
    current: campaign_pb2.Campaign | None,
    current_promotions: Sequence[promotion_pb2.Promotion] = (),
) -> CampaignPlan:
    """What to do to make `current` (None: no campaign has the key yet) what `manifest` says."""
    if current is None:
        plans = tuple(PromotionPlan(p.key, "create", desired=p.promotion) for p in manifest.promotions)
        transition = "activate" if manifest.active else None
        state = FieldChange("state", None, "active") if transition else None
        return CampaignPlan(manifest, "create", None, (), plans, transition, state)
    if current.type != manifest.campaign.type:
        raise ManifestError(
            manifest.source, "campaign.type", "cannot change; give the new campaign a new key"
        )
    comparable = campaign_pb2.Campaign()
    comparable.CopyFrom(current)
    comparable.budget.ClearField("usage")
    if not comparable.budget.ListFields():
        comparable.ClearField("budget")
    changes = _changes(comparable, manifest.campaign, CAMPAIGN_MANAGED)
    draft = current.state == campaign_pb2.CAMPAIGN_STATE_DRAFT
    transition = _transition(manifest.active, current.state)
    state = None
    if transition:
        target = "active" if transition == "activate" else "paused"
        state = FieldChange("state", _state_name(current.state), target)
    return CampaignPlan(
        manifest,
        "update" if changes else "keep",
        current,
        changes,
        _promotion_plans(manifest, current_promotions, draft),
        transition,
        state,
    )


# --- showing ---


def _yaml_lines(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    return yaml.safe_dump({name: value}, sort_keys=False, allow_unicode=True).splitlines()


def _change_lines(change: FieldChange, indent: str) -> list[str]:
    removed = [f"-{indent}{line}" for line in _yaml_lines(change.field, change.before)]
    added = [f"+{indent}{line}" for line in _yaml_lines(change.field, change.after)]
    return removed + added


def _created_lines(message: Message, names: Sequence[str], indent: str) -> list[str]:
    values = _fields(message)
    return [f"+{indent}{line}" for name in names for line in _yaml_lines(name, values.get(name))]


def _promotion_lines(plan: PromotionPlan) -> list[str]:
    if plan.action == "create":
        return [f"+   promotion {plan.key}", *_created_lines(plan.desired, PROMOTION_MANAGED, "     ")]
    if plan.action == "update":
        lines = [f"~   promotion {plan.key}"]
        for change in plan.changes:
            lines += _change_lines(change, "     ")
        return lines
    if plan.action == "delete":
        return [f"-   promotion {plan.key} (not in the manifest; deleted from the draft)"]
    if plan.action == "disable":
        return [f"~   promotion {plan.key} (not in the manifest; disabled, the campaign has run)"]
    return []


def diff_lines(plan: CampaignPlan) -> list[str]:
    """The plan as a diff a reviewer reads: `+` added, `-` removed, `~` changed, `=` unchanged."""
    source = plan.manifest.source
    if not plan.changed:
        return [f"= campaign {plan.manifest.key} ({source}): no changes"]
    if plan.action == "create":
        lines = [f"+ campaign {plan.manifest.key} ({source})"]
        lines += _created_lines(plan.manifest.campaign, ("type", *CAMPAIGN_MANAGED), "    ")
    else:
        lines = [f"~ campaign {plan.manifest.key} ({source})"]
        for change in plan.changes:
            lines += _change_lines(change, "    ")
    if plan.state_change:
        lines += _change_lines(plan.state_change, "    ")
    for promotion in plan.promotions:
        lines += _promotion_lines(promotion)
    return lines
