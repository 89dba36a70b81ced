"""Use cases of the voucher RPCs and of code validation and limits inside evaluation.

A presented code is looked up after normalising it (trim, upper case); an unknown code and another
tenant's code take the same path (one indexed lookup in the caller's tenant, nothing found) and get
the same answer, VOUCHER_NOT_FOUND. Limits are previewed here (evaluation writes nothing) and taken
atomically by app_redemptions at reservation."""

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import asyncpg
from google.protobuf import field_mask_pb2

from loyalty.promotion.v1 import campaign_pb2, settings_pb2, voucher_pb2
from loyalty_promotion import engine, repository, repository_codes as codes_sql
from loyalty_promotion.commands import ListVouchers, SetVoucherEnabled, UpdateVoucher
from loyalty_promotion.domain import vouchers as rules
from loyalty_promotion.domain.lifecycle import State
from loyalty_promotion.repository_codes import StoredVoucher
from loyalty_runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Reason,
)
from loyalty_runtime.protobuf import moment, timestamp
from loyalty_runtime.uow import UnitOfWork

VOUCHER_UPDATABLE = frozenset(
    {
        "start_time",
        "end_time",
        "max_redemptions",
        "max_redemptions_per_customer",
        "holder_customer_id",
        "metadata",
    }
)
# Re-evaluations after a limit blocks what applied (each blocks one more campaign or promotion).
MAX_LIMIT_ROUNDS = 8


def voucher_not_found(field: str = "voucher_id") -> NotFound:
    return NotFound(Reason.VOUCHER_NOT_FOUND, "no such voucher", field=field)


def voucher_of(stored: StoredVoucher, now: datetime) -> voucher_pb2.Voucher:
    facts = stored.facts
    if facts.disabled:
        state = voucher_pb2.VOUCHER_STATE_DISABLED
    elif facts.exhausted:
        state = voucher_pb2.VOUCHER_STATE_EXHAUSTED
    elif facts.end is not None and now >= facts.end:
        state = voucher_pb2.VOUCHER_STATE_EXPIRED
    else:
        state = voucher_pb2.VOUCHER_STATE_ACTIVE
    voucher = voucher_pb2.Voucher(
        voucher_id=stored.voucher_id,
        campaign_id=stored.campaign_id,
        code=stored.code,
        type=voucher_pb2.VOUCHER_TYPE_UNIQUE if stored.unique_code else voucher_pb2.VOUCHER_TYPE_GENERIC,
        state=state,
        max_redemptions=stored.max_redemptions,
        max_redemptions_per_customer=stored.max_per_customer,
        holder_customer_id=stored.holder_customer_id or "",
        redemption_count=stored.redemption_count,
        reserved_count=stored.reserved_count,
        batch_id=stored.batch_id or "",
        metadata=stored.metadata,
        create_time=timestamp(stored.created_at),
        update_time=timestamp(stored.updated_at),
        etag=str(stored.version),
    )
    for name, value in (
        ("start_time", stored.start_time),
        ("end_time", stored.end_time),
        ("disable_time", stored.disabled_at),
    ):
        if value is not None:
            getattr(voucher, name).CopyFrom(timestamp(value))
    return voucher


def _check_limits(voucher: StoredVoucher, prefix: str = "voucher.") -> None:
    if voucher.max_redemptions < 0 or voucher.max_per_customer < 0:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "limits must not be negative", field=prefix + "max_redemptions"
        )
    if voucher.start_time and voucher.end_time and voucher.end_time <= voucher.start_time:
        raise InvalidArgument(
            Reason.INVALID_WINDOW, "the code's validity ends before it starts", field=prefix + "end_time"
        )
    if (
        voucher.max_redemptions
        and voucher.redemption_count + voucher.reserved_count > voucher.max_redemptions
    ):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            "max_redemptions is below the uses already taken",
            field=prefix + "max_redemptions",
        )


async def voucher_campaign(
    uow: UnitOfWork, campaign_id: str, field: str, kind: int = campaign_pb2.CAMPAIGN_TYPE_VOUCHER
) -> campaign_pb2.Campaign:
    """The campaign codes are attached to (VOUCHER, or REFERRAL for referral codes); refused when
    unknown, of another type, or archived."""
    stored = await repository.get_campaign(uow.connection, uow.tenant, campaign_id, lock=False)
    if stored is None:
        raise NotFound(Reason.CAMPAIGN_NOT_FOUND, "no such campaign", field=field)
    campaign = campaign_pb2.Campaign.FromString(stored.payload)
    if campaign.type != kind:
        name = campaign_pb2.CampaignType.Name(kind).removeprefix("CAMPAIGN_TYPE_")
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, f"these codes belong to a {name} campaign", field=field
        )
    if stored.state == State.ARCHIVED.value:
        raise FailedPrecondition(Reason.CAMPAIGN_TRANSITION_NOT_ALLOWED, "the campaign is archived")
    return campaign


async def ignoring_dashes(uow: UnitOfWork) -> bool:
    """Whether the tenant's codes match without their dashes; a writer of codes asks this first, and
    holds the codes' shared lock with it until it commits (repository_codes.code_settings)."""
    payload = await codes_sql.code_settings(uow.connection, uow.tenant)
    return payload is not None and settings_pb2.PromotionSettings.FromString(payload).ignore_dashes_in_codes


def new_voucher(
    requested: voucher_pb2.Voucher,
    campaign_id: str,
    now: datetime,
    *,
    batch_id: str | None = None,
    ignore_dashes: bool = False,
) -> StoredVoucher:
    code = rules.normalize(requested.code, ignore_dashes)
    problem = rules.code_problem(code)
    if problem:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, problem, field="voucher.code")
    unique = requested.type == voucher_pb2.VOUCHER_TYPE_UNIQUE
    voucher = StoredVoucher(
        voucher_id=str(uuid.uuid4()),
        campaign_id=campaign_id,
        code=code,
        unique_code=unique,
        start_time=moment(requested, "start_time"),
        end_time=moment(requested, "end_time"),
        max_redemptions=requested.max_redemptions or (1 if unique else 0),
        max_per_customer=requested.max_redemptions_per_customer,
        holder_customer_id=requested.holder_customer_id or None,
        referrer_customer_id=None,
        redemption_count=0,
        reserved_count=0,
        batch_id=batch_id,
        metadata=dict(requested.metadata),
        disabled_at=None,
        version=1,
        created_at=now,
        updated_at=now,
    )
    _check_limits(voucher)
    return voucher


async def create_voucher(uow: UnitOfWork, requested: voucher_pb2.Voucher) -> voucher_pb2.Voucher:
    await voucher_campaign(uow, requested.campaign_id, "voucher.campaign_id")
    voucher = new_voucher(requested, requested.campaign_id, uow.now, ignore_dashes=await ignoring_dashes(uow))
    if not await codes_sql.insert_voucher(uow.connection, uow.tenant, voucher):
        raise AlreadyExists(
            Reason.VOUCHER_CODE_TAKEN, "the tenant has this code already", field="voucher.code"
        )
    return voucher_of(voucher, uow.now)


async def get_voucher(uow: UnitOfWork, voucher_id: str, code: str) -> voucher_pb2.Voucher:
    code = rules.normalize(code, await ignoring_dashes(uow)) if code else ""
    stored = await codes_sql.get_voucher(uow.connection, uow.tenant, voucher_id=voucher_id, code=code)
    if stored is None:
        raise voucher_not_found("voucher_id" if voucher_id else "code")
    return voucher_of(stored, uow.now)


async def list_vouchers(
    uow: UnitOfWork, command: ListVouchers
) -> tuple[list[voucher_pb2.Voucher], str | None]:
    """One page by voucher id; the state filter (derived from counters and time) applies to the
    page read, so a filtered page may be short while more follow."""
    if await repository.get_campaign(uow.connection, uow.tenant, command.campaign_id) is None:
        raise NotFound(Reason.CAMPAIGN_NOT_FOUND, "no such campaign", field="campaign_id")
    stored = await codes_sql.list_vouchers(
        uow.connection,
        uow.tenant,
        command.campaign_id,
        holder=command.holder_customer_id,
        batch_id=command.batch_id,
        after=command.after,
        limit=command.limit,
    )
    found = [voucher_of(s, uow.now) for s in stored]
    last = stored[-1].voucher_id if len(stored) == command.limit else None
    return [v for v in found if not command.state or v.state == command.state], last


async def _locked(uow: UnitOfWork, voucher_id: str, etag: str = "") -> StoredVoucher:
    stored = await codes_sql.get_voucher(uow.connection, uow.tenant, voucher_id=voucher_id, lock=True)
    if stored is None:
        raise voucher_not_found()
    if etag and etag != str(stored.version):
        raise Aborted(
            Reason.CONCURRENT_MODIFICATION, "the etag is not current; read it again", field="voucher.etag"
        )
    return stored


async def update_voucher(uow: UnitOfWork, command: UpdateVoucher) -> voucher_pb2.Voucher:
    stored = await _locked(uow, command.voucher_id, command.etag)
    paths = sorted({p.split(".", 1)[0] for p in command.mask.paths}) or sorted(VOUCHER_UPDATABLE)
    for path in paths:
        if path not in VOUCHER_UPDATABLE:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, f"{path} cannot be updated", field=f"update_mask.{path}"
            )
    current = voucher_of(stored, uow.now)
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(
        command.changes, current, replace_message_field=True, replace_repeated_field=True
    )
    updated = replace(
        stored,
        start_time=moment(current, "start_time"),
        end_time=moment(current, "end_time"),
        max_redemptions=current.max_redemptions,
        max_per_customer=current.max_redemptions_per_customer,
        holder_customer_id=current.holder_customer_id or None,
        metadata=dict(current.metadata),
        updated_at=uow.now,
    )
    _check_limits(updated)
    return voucher_of(await codes_sql.update_voucher(uow.connection, uow.tenant, updated), uow.now)


async def set_voucher_enabled(uow: UnitOfWork, command: SetVoucherEnabled) -> voucher_pb2.Voucher:
    """Disable or enable; doing it twice changes nothing more. Reservations already made keep
    their use and may still commit."""
    stored = await _locked(uow, command.voucher_id)
    if (stored.disabled_at is None) == command.enabled:
        return voucher_of(stored, uow.now)
    updated = replace(stored, disabled_at=None if command.enabled else uow.now, updated_at=uow.now)
    return voucher_of(await codes_sql.update_voucher(uow.connection, uow.tenant, updated), uow.now)


# --- codes and limits in evaluation ---


async def resolve_codes(
    connection: asyncpg.Connection,
    tenant: str,
    catalog: engine.Catalog,
    presented: Sequence[str],
    customer: engine.CustomerContext,
    now: datetime,
) -> tuple[list[engine.PresentedCode], dict[str, StoredVoucher], dict[str, str]]:
    """The engine's codes (normalised, each once, in order) with the service's verdict on each;
    the vouchers found by code; and each normalised code's form as presented."""
    customer_id = customer.customer_id
    ignore_dashes = catalog.settings.ignore_dashes_in_codes
    as_presented: dict[str, str] = {}
    for raw in presented:
        as_presented.setdefault(rules.normalize(raw, ignore_dashes), raw)
    found = await codes_sql.vouchers_by_code(connection, tenant, list(as_presented)) if as_presented else {}
    per_customer = [f"v:{v.voucher_id}" for v in found.values() if v.max_per_customer and customer_id]
    used = (
        await codes_sql.customer_uses(connection, tenant, customer_id, per_customer) if per_customer else {}
    )
    result, campaigns = [], set()
    for code in as_presented:
        voucher = found.get(code)
        if voucher is None:
            result.append(engine.PresentedCode(code, rejection=Reason.VOUCHER_NOT_FOUND))
            continue
        reason = rules.rejection(voucher.facts, customer_id, now) or _referral_refusal(
            catalog, voucher, customer
        )
        used_up = not customer_id or used.get(f"v:{voucher.voucher_id}", 0) >= voucher.max_per_customer
        if reason is None and voucher.max_per_customer and used_up:
            reason = Reason.CUSTOMER_LIMIT_REACHED
        if reason is None and voucher.campaign_id in campaigns:
            reason = Reason.CAMPAIGN_ALREADY_IN_BASKET
        if reason is None:
            campaigns.add(voucher.campaign_id)
        result.append(engine.PresentedCode(code, voucher.campaign_id, int(reason or 0)))
    return result, found, as_presented


def _referral_refusal(
    catalog: engine.Catalog, voucher: StoredVoucher, customer: engine.CustomerContext
) -> Reason | None:
    """A referral code works for identified customers other than its referrer, and only for a
    first purchase when the programme says so."""
    if not voucher.referrer_customer_id:
        return None
    if customer.customer_id == voucher.referrer_customer_id:
        return Reason.REFERRAL_SELF_REFERRAL
    settings = catalog.referrals.get(voucher.campaign_id)
    first_only = settings is not None and settings.first_purchase_only
    if customer.anonymous or (first_only and customer.lifetime_purchase_count > 0):
        return Reason.REFERRAL_NOT_ELIGIBLE
    return None


def limited_campaigns(catalog: engine.Catalog, evaluation: engine.Evaluation) -> list[str]:
    """Campaigns that applied and carry a budget or a per-customer limit."""
    found = {a.campaign_id for a in evaluation.applied if a.campaign_id in catalog.budgets}
    found |= {a.campaign_id for a in evaluation.applied if a.promotion_id in catalog.promotion_limits}
    return sorted(found)


def scopes_of(
    catalog: engine.Catalog,
    evaluation: engine.Evaluation,
    campaign_id: str,
    voucher: StoredVoucher | None,
    now: datetime,
) -> list[rules.Scope]:
    limits = {
        a.promotion_id: catalog.promotion_limits[a.promotion_id]
        for a in evaluation.applied
        if a.campaign_id == campaign_id and a.promotion_id in catalog.promotion_limits
    }
    return rules.customer_scopes(
        campaign_id,
        catalog.budgets.get(campaign_id),
        limits,
        voucher.facts if voucher else None,
        now,
        catalog.tz,
    )


def _campaign_totals(evaluation: engine.Evaluation, campaign_id: str) -> tuple[int, int]:
    applied = [a for a in evaluation.applied if a.campaign_id == campaign_id]
    return sum(a.discount for a in applied), sum(a.points for a in applied)


async def preview_blocks(
    connection: asyncpg.Connection,
    tenant: str,
    catalog: engine.Catalog,
    evaluation: engine.Evaluation,
    customer_id: str,
    now: datetime,
    store_id: str = "",
) -> dict[str, int]:
    """What the limits would refuse of this evaluation, read without locks (the reservation takes
    them atomically): campaign or promotion id -> reason."""
    limited = limited_campaigns(catalog, evaluation)
    if not limited:
        return {}
    usage = await codes_sql.usage_of(connection, tenant, limited, store_id)
    scopes = {c: scopes_of(catalog, evaluation, c, None, now) for c in limited}
    keys = sorted({s.key for found in scopes.values() for s in found})
    used = (
        await codes_sql.customer_uses(connection, tenant, customer_id, keys) if keys and customer_id else {}
    )
    blocked: dict[str, int] = {}
    for campaign_id in limited:
        discount, points = _campaign_totals(evaluation, campaign_id)
        reason = rules.budget_rejection(
            catalog.budgets.get(campaign_id),
            usage.get(campaign_id, rules.Usage()),
            discount,
            points,
            evaluation.currency,
        )
        if reason:
            blocked[campaign_id] = int(reason)
            continue
        for scope in scopes[campaign_id]:
            if not customer_id or used.get(scope.key, 0) >= scope.limit:
                target = scope.key.split(":")[1] if scope.key.startswith("p:") else campaign_id
                blocked[target] = int(scope.reason)
    return blocked


async def evaluate_within_limits(
    connection: asyncpg.Connection,
    tenant: str,
    catalog: engine.Catalog,
    basket: engine.Basket,
    customer: engine.CustomerContext,
    presented: list[engine.PresentedCode],
    now: datetime,
    points_to_burn: int = 0,
) -> engine.Evaluation:
    """Evaluates, then again without what a spent budget or a used-up customer limit refuses
    (which may let another promotion apply, so it repeats, a bounded number of times)."""
    blocked: dict[str, int] = {}
    evaluation = engine.evaluate(catalog, basket, customer, presented, now, points_to_burn=points_to_burn)
    for _ in range(MAX_LIMIT_ROUNDS):
        more = await preview_blocks(
            connection, tenant, catalog, evaluation, customer.customer_id, now, basket.store_id
        )
        if not set(more) - set(blocked):
            return evaluation
        blocked.update(more)
        evaluation = engine.evaluate(catalog, basket, customer, presented, now, blocked, points_to_burn)
    return evaluation
