"""A tenant's evaluation settings: what an update may change and which values can work. Unset
fields keep the engine's documented defaults (settings.proto, RULES.md)."""

import zoneinfo

from google.protobuf import field_mask_pb2

from loyalty.promotion.v1 import settings_pb2
from loyalty_promotion.domain.campaigns import EditRefused, Violation

OUTPUT_ONLY = frozenset({"update_time", "etag"})
UPDATABLE = frozenset(f.name for f in settings_pb2.PromotionSettings.DESCRIPTOR.fields) - OUTPUT_ONLY
# Above this many campaigns an exact best-combination search would be exponential at run time.
MAX_EXACT_LIMIT = 16


def apply_mask(
    current: settings_pb2.PromotionSettings,
    changes: settings_pb2.PromotionSettings,
    mask: field_mask_pb2.FieldMask,
) -> settings_pb2.PromotionSettings:
    paths = sorted({path.split(".", 1)[0] for path in mask.paths}) or sorted(UPDATABLE)
    for path in paths:
        if path not in UPDATABLE:
            raise EditRefused(f"update_mask.{path}", f"{path} cannot be updated")
    updated = settings_pb2.PromotionSettings()
    updated.CopyFrom(current)
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(changes, updated, replace_message_field=True)
    return updated


def violations(settings: settings_pb2.PromotionSettings, prefix: str = "settings.") -> list[Violation]:
    found = []
    if settings.time_zone:
        try:
            zoneinfo.ZoneInfo(settings.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            found.append(Violation(prefix + "time_zone", f"{settings.time_zone!r} is not an IANA time zone"))
    for name in ("max_codes_per_basket", "max_promotions_per_basket"):
        if getattr(settings, name) < 0:
            found.append(Violation(prefix + name, f"{name} must not be negative"))
    if not 0 <= settings.max_basket_discount_bps <= 10_000:
        found.append(Violation(prefix + "max_basket_discount_bps", "max_basket_discount_bps is 0 to 10000"))
    if not 0 <= settings.best_combination_exact_limit <= MAX_EXACT_LIMIT:
        found.append(
            Violation(
                prefix + "best_combination_exact_limit",
                f"best_combination_exact_limit is 0 to {MAX_EXACT_LIMIT}",
            )
        )
    ttl = settings.reservation_ttl
    if settings.HasField("reservation_ttl") and (
        ttl.seconds < 0 or ttl.nanos < 0 or ttl.ToNanoseconds() == 0
    ):
        found.append(Violation(prefix + "reservation_ttl", "reservation_ttl must be positive"))
    return found
