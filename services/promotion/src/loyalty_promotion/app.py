"""The promotion service's use cases: one function per RPC. Changes run in a unit of work (the
servicer wraps them in `units.idempotent`); evaluation reads the replica's compiled catalog and
writes nothing."""

import logging
import uuid
from collections.abc import Sequence
from datetime import date, datetime

import asyncpg

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.promotion.v1 import (
    campaign_pb2,
    earning_pb2,
    evaluation_pb2,
    events_pb2,
    promotion_pb2,
    settings_pb2,
    statistics_pb2,
)
from loyalty_promotion import app_codes, app_earning, engine, repository, repository_codes
from loyalty_promotion.commands import (
    CampaignPage,
    ChangeState,
    CreateCampaign,
    CreatePromotion,
    DeletePromotion,
    EvaluateBasket,
    GetStatistics,
    ListCampaigns,
    ListPromotions,
    SimulateCampaign,
    UpdateCampaign,
    UpdatePromotion,
    UpdateSettings,
)
from loyalty_promotion.domain import campaigns as rules, lifecycle, settings as tenant_settings
from loyalty_promotion.domain.lifecycle import LIVE, Action, State
from loyalty_promotion.replica import Replica
from loyalty_promotion.repository import StoredCampaign, StoredPromotion
from loyalty_promotion.statistics import WHOLE_CAMPAIGN
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Reason,
)
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork, UnitsOfWork

log = logging.getLogger("loyalty.promotion")
# What the engine's compiler raises for input its validation let through.
COMPILE_ERRORS = (ValueError, ArithmeticError, TypeError, KeyError)
# A tenant that never set its settings evaluates with the engine's documented defaults, in UTC.
DEFAULT_TIME_ZONE = "UTC"


# --- decoding what is stored ---


def _campaign_not_found() -> NotFound:
    return NotFound(Reason.CAMPAIGN_NOT_FOUND, "no such campaign", field="campaign_id")


def _campaign_of(stored: StoredCampaign, now: datetime) -> campaign_pb2.Campaign:
    """The stored message with what the row knows: its state at `now` and its etag."""
    campaign = campaign_pb2.Campaign.FromString(stored.payload)
    campaign.campaign_id = stored.campaign_id
    state = lifecycle.effective_state(State(stored.state), rules.window_of(campaign), now)
    campaign.state = rules.STATE_TO_PB[state]
    campaign.etag = str(stored.version)
    return campaign


def _promotion_of(stored: StoredPromotion) -> promotion_pb2.Promotion:
    promotion = promotion_pb2.Promotion.FromString(stored.payload)
    promotion.promotion_id = stored.promotion_id
    promotion.campaign_id = stored.campaign_id
    promotion.etag = str(stored.version)
    return promotion


def _stored_payload(message) -> bytes:
    """What goes into `payload`: the message without what the row's columns hold."""
    copy = type(message)()
    copy.CopyFrom(message)
    copy.ClearField("etag")
    if isinstance(copy, campaign_pb2.Campaign):
        copy.ClearField("state")  # the row's state column is the one truth
        if copy.HasField("budget"):
            copy.budget.ClearField("usage")  # campaign_usage holds it
    return copy.SerializeToString(deterministic=True)


def check_etag(etag: str, version: int) -> None:
    if etag and etag != str(version):
        raise Aborted(Reason.CONCURRENT_MODIFICATION, "the etag is not current; read it again", field="etag")


async def _locked_campaign(uow: UnitOfWork, campaign_id: str) -> StoredCampaign:
    stored = await repository.get_campaign(uow.connection, uow.tenant, campaign_id, lock=True)
    if stored is None:
        raise _campaign_not_found()
    return stored


async def _promotions(
    connection: asyncpg.Connection, tenant: str, campaign_id: str
) -> list[promotion_pb2.Promotion]:
    return [_promotion_of(p) for p in await repository.promotions_of(connection, tenant, [campaign_id])]


# --- validation on save ---


def _refuse_if_invalid(
    campaign: campaign_pb2.Campaign,
    promotions: Sequence[promotion_pb2.Promotion],
    *,
    rename: tuple[str, str] | None = None,
) -> None:
    """INVALID_ARGUMENT with a field violation for every reason the engine (and the service) finds
    that the campaign, as it would be saved, cannot work. `rename` maps the engine's path of the
    promotion being saved ("promotions[2].") to the request's ("promotion.")."""
    found = [FieldViolation(v.field, v.description) for v in rules.required_fields(campaign)]
    item = engine.CampaignInput(campaign, list(promotions), audience=rules.audience_condition(campaign))
    violations = engine.validate_campaign(item)
    reason = Reason.CAMPAIGN_INVALID
    for violation in violations:
        path = violation.field
        if rename and path.startswith(rename[0]):
            path = rename[1] + path[len(rename[0]) :]
        elif not path.startswith(("promotions[", "campaign.")):
            path = "campaign." + path
        found.append(FieldViolation(path, violation.description))
        if reason is Reason.CAMPAIGN_INVALID and violation.reason in Reason._value2member_map_:
            reason = Reason(violation.reason)
    if not found:
        found = _compile_failures(item, rename[1].rstrip(".") if rename else "campaign")
    if found:
        raise InvalidArgument(reason, found[0].description, violations=found)


def _compile_failures(item: engine.CampaignInput, field: str) -> list[FieldViolation]:
    """What validation missed but compiling finds (an impossible date in a condition, say): a
    campaign that does not compile must never be saved, or it would break the tenant's catalog."""
    try:
        engine.compile_catalog([item], settings_pb2.PromotionSettings())
    except COMPILE_ERRORS as error:
        return [FieldViolation(field, f"the campaign cannot be compiled: {error}")]
    return []


async def _catalog_changed(uow: UnitOfWork, *states: State) -> None:
    """Bump the tenant's catalog version when the change touches a campaign that is or was live."""
    if any(state in LIVE for state in states):
        await repository.bump_catalog_version(uow.connection, uow.tenant)


# --- the tenant's settings ---


async def read_settings(
    connection: asyncpg.Connection, tenant: str, *, lock: bool = False
) -> settings_pb2.PromotionSettings:
    stored = await repository.get_settings(connection, tenant, lock=lock)
    if stored is None:
        return settings_pb2.PromotionSettings(etag="0")
    version, payload = stored
    settings = settings_pb2.PromotionSettings.FromString(payload)
    settings.etag = str(version)
    return settings


async def get_settings(uow: UnitOfWork, _: None = None) -> settings_pb2.PromotionSettings:
    return await read_settings(uow.connection, uow.tenant)


async def _strip_code_dashes(uow: UnitOfWork) -> None:
    shared = await repository_codes.strip_code_dashes(uow.connection, uow.tenant)
    if shared is not None:
        raise FailedPrecondition(
            Reason.CODES_COLLIDE_WITHOUT_DASHES,
            f"two of the tenant's codes would both be {shared} without dashes; change one first",
            field="settings.ignore_dashes_in_codes",
        )


async def update_settings(uow: UnitOfWork, command: UpdateSettings) -> settings_pb2.PromotionSettings:
    """Every replica's catalog is rebuilt with them (they change how every campaign evaluates)."""
    current = await read_settings(uow.connection, uow.tenant, lock=True)
    check_etag(command.etag, int(current.etag))
    try:
        updated = tenant_settings.apply_mask(current, command.changes, command.mask)
    except rules.EditRefused as refused:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, refused.description, field=refused.field) from None
    found = tenant_settings.violations(updated)
    if found:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            found[0].description,
            violations=[FieldViolation(v.field, v.description) for v in found],
        )
    if updated.time_zone != current.time_zone and await repository.gateway_settings_version(
        uow.connection, uow.tenant
    ):
        raise FailedPrecondition(
            Reason.TENANT_SETTING_FROM_GATEWAY,
            "the time zone follows the tenant's settings in the gateway (UpdateTenantSettings)",
            field="settings.time_zone",
        )
    if updated.ignore_dashes_in_codes and not current.ignore_dashes_in_codes:
        await _strip_code_dashes(uow)
    updated.update_time.CopyFrom(timestamp(uow.now))
    version = await repository.save_settings(uow.connection, uow.tenant, _stored_payload(updated))
    await repository.bump_catalog_version(uow.connection, uow.tenant)
    updated.etag = str(version)
    return updated


async def tenant_settings_changed(uow: UnitOfWork, event: gateway_events.TenantSettingsChanged) -> None:
    """The gateway's time zone becomes the tenant's default for schedules, windows and trigger
    periods, unless a newer version of it was copied already; every replica's catalog follows."""
    if await repository.gateway_settings_version(uow.connection, uow.tenant, lock=True) >= event.version:
        return
    current = await read_settings(uow.connection, uow.tenant)
    current.time_zone = event.settings.time_zone
    current.update_time.CopyFrom(timestamp(uow.now))
    saved = await repository.save_followed_settings(
        uow.connection, uow.tenant, _stored_payload(current), event.version, replace=current.etag != "0"
    )
    if saved is None:
        raise Aborted(Reason.CONCURRENT_MODIFICATION, "the settings were created meanwhile: retry")
    await repository.bump_catalog_version(uow.connection, uow.tenant)


# --- campaigns ---


async def create_campaign(uow: UnitOfWork, command: CreateCampaign) -> campaign_pb2.Campaign:
    campaign = rules.new_campaign(command.campaign)
    _refuse_if_invalid(campaign, [])
    campaign.campaign_id = str(uuid.uuid4())
    campaign.create_time.CopyFrom(timestamp(uow.now))
    campaign.update_time.CopyFrom(timestamp(uow.now))
    await repository.insert_campaign(
        uow.connection,
        uow.tenant,
        campaign.campaign_id,
        State.DRAFT.value,
        campaign.priority,
        _stored_payload(campaign),
        rules.window_of(campaign).end,
    )
    campaign.etag = "1"
    return campaign


async def get_campaign(uow: UnitOfWork, campaign_id: str) -> campaign_pb2.Campaign:
    """The campaign with its budget's usage (reserved and committed)."""
    stored = await repository.get_campaign(uow.connection, uow.tenant, campaign_id)
    if stored is None:
        raise _campaign_not_found()
    campaign = _campaign_of(stored, uow.now)
    usage = await repository_codes.usage_rows(uow.connection, uow.tenant, campaign_id)
    if usage:
        currency = campaign.budget.max_discount.currency_code
        campaign.budget.usage.CopyFrom(
            campaign_pb2.BudgetUsage(
                discount_committed=money_pb2.Money(
                    currency_code=currency, amount_minor=usage["discount_committed"]
                ),
                discount_reserved=money_pb2.Money(
                    currency_code=currency, amount_minor=usage["discount_reserved"]
                ),
                points_committed=usage["points_committed"],
                points_reserved=usage["points_reserved"],
                redemptions_committed=usage["redemptions_committed"],
                redemptions_reserved=usage["redemptions_reserved"],
            )
        )
    return campaign


async def list_campaigns(uow: UnitOfWork, command: ListCampaigns) -> CampaignPage:
    """One page of campaigns in the states asked for as they are now (a stored ACTIVE campaign past
    its end is ENDED). Type, labels and time's effect are only known from the stored message, so
    rows are read in batches until the page is full (bounded by the tenant's campaigns)."""
    found: list[campaign_pb2.Campaign] = []
    after = command.after
    stored_states = set(command.states)
    if stored_states & TIME_MOVED:
        stored_states |= LIVE
    while len(found) < command.limit:
        batch = await repository.list_campaigns(
            uow.connection, uow.tenant, sorted(s.value for s in stored_states), after, command.limit
        )
        for stored in batch:
            campaign = _campaign_of(stored, uow.now)
            after = (campaign.priority, campaign.campaign_id)
            if _matches(campaign, command):
                found.append(campaign)
                if len(found) == command.limit:
                    return CampaignPage(found, after)
        if len(batch) < command.limit:
            return CampaignPage(found, None)
    return CampaignPage(found, after)


# States a stored SCHEDULED or ACTIVE campaign may be in as time passes.
TIME_MOVED = frozenset({State.SCHEDULED, State.ACTIVE, State.ENDED})


def _matches(campaign: campaign_pb2.Campaign, command: ListCampaigns) -> bool:
    if rules.PB_TO_STATE[campaign.state] not in command.states:
        return False
    if command.campaign_type and campaign.type != command.campaign_type:
        return False
    return all(campaign.labels.get(k) == v for k, v in command.labels.items())


async def update_campaign(uow: UnitOfWork, command: UpdateCampaign) -> campaign_pb2.Campaign:
    stored = await _locked_campaign(uow, command.campaign_id)
    check_etag(command.etag, stored.version)
    current = _campaign_of(stored, uow.now)
    state = _allowed(Action.EDIT, stored, current, uow.now)
    try:
        updated = rules.apply_mask(current, command.changes, command.mask, state)
    except rules.EditRefused as refused:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, refused.description, field=refused.field) from None
    _refuse_if_invalid(updated, await _promotions(uow.connection, uow.tenant, command.campaign_id))
    return await _save(uow, stored, updated, State(stored.state))


def _allowed(action: Action, stored: StoredCampaign, campaign: campaign_pb2.Campaign, now: datetime) -> State:
    try:
        return lifecycle.require_allowed(action, State(stored.state), rules.window_of(campaign), now)
    except lifecycle.TransitionRefused as refused:
        raise FailedPrecondition(Reason.CAMPAIGN_TRANSITION_NOT_ALLOWED, str(refused)) from None


async def _save(
    uow: UnitOfWork, stored: StoredCampaign, campaign: campaign_pb2.Campaign, new_state: State
) -> campaign_pb2.Campaign:
    campaign.update_time.CopyFrom(timestamp(uow.now))
    version = await repository.update_campaign(
        uow.connection,
        uow.tenant,
        stored.campaign_id,
        new_state.value,
        campaign.priority,
        _stored_payload(campaign),
        rules.window_of(campaign).end,
    )
    await _catalog_changed(uow, State(stored.state), new_state)
    saved = StoredCampaign(stored.campaign_id, new_state.value, version, _stored_payload(campaign))
    return _campaign_of(saved, uow.now)


TRANSITIONS = {
    Action.ACTIVATE: lifecycle.activate,
    Action.PAUSE: lifecycle.pause,
    Action.ARCHIVE: lifecycle.archive,
}


async def change_state(uow: UnitOfWork, command: ChangeState) -> campaign_pb2.Campaign | None:
    """Activate, pause, archive (the campaign as it is now) or delete (None)."""
    stored = await _locked_campaign(uow, command.campaign_id)
    check_etag(command.etag, stored.version)
    campaign = _campaign_of(stored, uow.now)
    if command.action is Action.DELETE:
        _allowed(Action.DELETE, stored, campaign, uow.now)
        await repository.delete_campaign(uow.connection, uow.tenant, command.campaign_id)
        return None
    window = rules.window_of(campaign)
    try:
        new_state = TRANSITIONS[command.action](State(stored.state), window, uow.now)
    except lifecycle.TransitionRefused as refused:
        raise FailedPrecondition(Reason.CAMPAIGN_TRANSITION_NOT_ALLOWED, str(refused)) from None
    if command.action is Action.ACTIVATE:
        promotions = await _promotions(uow.connection, uow.tenant, command.campaign_id)
        # An event campaign rewards through its triggers; it has no checkout effect to need.
        if campaign.type != campaign_pb2.CAMPAIGN_TYPE_EVENT and not rules.enabled(promotions):
            raise FailedPrecondition(
                Reason.CAMPAIGN_TRANSITION_NOT_ALLOWED, "a campaign needs an enabled promotion to start"
            )
        _refuse_if_invalid(campaign, promotions)
        if not campaign.HasField("activate_time"):
            campaign.activate_time.CopyFrom(timestamp(uow.now))
    saved = await _save(uow, stored, campaign, new_state)
    uow.record(_state_event(command.action, saved), key=saved.campaign_id)
    return saved


def _state_event(action: Action, campaign: campaign_pb2.Campaign):
    if action is Action.ACTIVATE:
        return events_pb2.CampaignActivated(
            campaign_id=campaign.campaign_id, state=campaign.state, type=campaign.type
        )
    if action is Action.PAUSE:
        return events_pb2.CampaignPaused(campaign_id=campaign.campaign_id)
    return events_pb2.CampaignArchived(campaign_id=campaign.campaign_id)


# Campaign ends the sweep announces per run.
END_SWEEP_BATCH = 500


async def announce_ended_campaigns(units: UnitsOfWork) -> int:
    """Publishes campaign.ended for every tenant's live campaigns whose schedule has ended (the
    schedule's run): each in its own transaction, bound to its tenant. Evaluation needs no help
    (a campaign past its end applies to nothing already); this tells the other services."""
    async with units.database.connection() as connection:
        due = await repository.ending_campaigns(connection, units.clock(), END_SWEEP_BATCH)
    announced = 0
    for tenant, campaign_id in due:
        token = bind_call(CallContext(tenant_id=tenant, principal="promotion-campaign-end"))
        try:
            async with units.change() as uow:
                end = await repository.mark_ended(uow.connection, tenant, campaign_id, uow.now)
                if end is not None:
                    ended = events_pb2.CampaignEnded(campaign_id=campaign_id, end_time=timestamp(end))
                    uow.record(ended, key=campaign_id)
                    announced += 1
        except Exception:
            log.exception("announcing a campaign's end failed", extra={"fields": {"tenant": tenant}})
        finally:
            unbind_call(token)
    return announced


# --- promotions ---


def _promotion_not_found() -> NotFound:
    return NotFound(Reason.PROMOTION_NOT_FOUND, "no such promotion", field="promotion_id")


async def create_promotion(uow: UnitOfWork, command: CreatePromotion) -> promotion_pb2.Promotion:
    stored = await _locked_campaign(uow, command.promotion.campaign_id)
    campaign = _campaign_of(stored, uow.now)
    _allowed(Action.EDIT, stored, campaign, uow.now)
    promotion = rules.new_promotion(command.promotion, stored.campaign_id)
    existing = await _promotions(uow.connection, uow.tenant, stored.campaign_id)
    _refuse_if_invalid(
        campaign, [*existing, promotion], rename=(f"promotions[{len(existing)}].", "promotion.")
    )
    promotion.promotion_id = str(uuid.uuid4())
    promotion.create_time.CopyFrom(timestamp(uow.now))
    promotion.update_time.CopyFrom(timestamp(uow.now))
    await repository.insert_promotion(
        uow.connection,
        uow.tenant,
        promotion.promotion_id,
        stored.campaign_id,
        promotion.priority,
        _stored_payload(promotion),
    )
    await _catalog_changed(uow, State(stored.state))
    promotion.etag = "1"
    return promotion


async def get_promotion(uow: UnitOfWork, promotion_id: str) -> promotion_pb2.Promotion:
    stored = await repository.get_promotion(uow.connection, uow.tenant, promotion_id)
    if stored is None:
        raise _promotion_not_found()
    return _promotion_of(stored)


async def list_promotions(uow: UnitOfWork, command: ListPromotions) -> list[promotion_pb2.Promotion]:
    """A campaign's promotions in priority order (a campaign holds few; paged in memory)."""
    if await repository.get_campaign(uow.connection, uow.tenant, command.campaign_id) is None:
        raise _campaign_not_found()
    promotions = await _promotions(uow.connection, uow.tenant, command.campaign_id)
    return [p for p in promotions if not command.state or p.state == command.state]


async def delete_promotion(uow: UnitOfWork, command: DeletePromotion) -> None:
    """Only a draft's promotions go; in a campaign that ran, disable the promotion instead (its
    redemptions and statistics keep naming it)."""
    found = await repository.get_promotion(uow.connection, uow.tenant, command.promotion_id)
    if found is None:
        raise _promotion_not_found()
    stored = await _locked_campaign(uow, found.campaign_id)
    check_etag(command.etag, found.version)
    if stored.state != State.DRAFT.value:
        raise FailedPrecondition(
            Reason.CAMPAIGN_TRANSITION_NOT_ALLOWED,
            "only a draft's promotions can be deleted; disable it instead",
        )
    await repository.delete_promotion(uow.connection, uow.tenant, command.promotion_id)


async def update_promotion(uow: UnitOfWork, command: UpdatePromotion) -> promotion_pb2.Promotion:
    found = await repository.get_promotion(uow.connection, uow.tenant, command.promotion_id)
    if found is None:
        raise _promotion_not_found()
    # The campaign's lock orders every change of the campaign and its promotions.
    stored = await _locked_campaign(uow, found.campaign_id)
    campaign = _campaign_of(stored, uow.now)
    _allowed(Action.EDIT, stored, campaign, uow.now)
    promotions = await _promotions(uow.connection, uow.tenant, found.campaign_id)
    index = next(i for i, p in enumerate(promotions) if p.promotion_id == command.promotion_id)
    current = promotions[index]
    check_etag(command.etag, int(current.etag))
    try:
        updated = rules.apply_promotion_mask(current, command.changes, command.mask)
    except rules.EditRefused as refused:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, refused.description, field=refused.field) from None
    promotions[index] = updated
    _refuse_if_invalid(campaign, promotions, rename=(f"promotions[{index}].", "promotion."))
    updated.update_time.CopyFrom(timestamp(uow.now))
    version = await repository.update_promotion(
        uow.connection, uow.tenant, command.promotion_id, updated.priority, _stored_payload(updated)
    )
    await _catalog_changed(uow, State(stored.state))
    updated.etag = str(version)
    return updated


# --- statistics ---


async def get_statistics(uow: UnitOfWork, command: GetStatistics) -> statistics_pb2.CampaignStatistics:
    """Sums of the flushed per-day evaluation counts and of the campaign's redemptions in the range
    (cheap: one index range of the campaign's rows in each table)."""
    if await repository.get_campaign(uow.connection, uow.tenant, command.campaign_id) is None:
        raise _campaign_not_found()
    end = command.end or uow.now
    rows = await repository.read_statistics(
        uow.connection,
        uow.tenant,
        command.campaign_id,
        command.start.date() if command.start else None,
        end.date(),
    )
    result = statistics_pb2.CampaignStatistics(
        campaign_id=command.campaign_id, compute_time=timestamp(uow.now)
    )
    result.end_time.CopyFrom(timestamp(end))
    if command.start:
        result.start_time.CopyFrom(timestamp(command.start))
    promotions: dict[str, statistics_pb2.PromotionStatistics] = {}
    for promotion_id, currency, evaluations, discount, points in rows:
        if promotion_id == WHOLE_CAMPAIGN:
            target = result
        else:
            target = promotions.setdefault(
                promotion_id, statistics_pb2.PromotionStatistics(promotion_id=promotion_id)
            )
        # One row per currency: evaluations and points add up across currencies, money does not.
        target.evaluation_count += evaluations
        target.points_offered += points
        target.discount_offered.append(money_pb2.Money(currency_code=currency, amount_minor=discount))
    figures = await repository_codes.redemption_figures(
        uow.connection, uow.tenant, command.campaign_id, command.start, end
    )
    _redemption_figures(result, promotions, figures)
    result.promotions.extend(promotions.values())
    if result.discount_total.currency_code:  # revenue is in the currency the redemptions were in
        result.revenue_total.currency_code = result.discount_total.currency_code
        result.revenue_total.amount_minor = figures["revenue"]
    campaign = await get_campaign(uow, command.campaign_id)
    result.budget_usage.CopyFrom(campaign.budget.usage)
    return result


def _redemption_figures(
    result: statistics_pb2.CampaignStatistics,
    promotions: dict[str, statistics_pb2.PromotionStatistics],
    figures: dict,
) -> None:
    """What the campaign's redemptions gave, net of returns (a single-currency campaign's money;
    several currencies keep the first one's total, the per-promotion rows say the rest)."""
    result.redemption_count = figures["committed"]
    result.rolled_back_count = figures["released"]
    result.customer_count = figures["customers"]
    result.voucher_count = figures["vouchers"]
    result.redeemed_voucher_count = figures["redeemed_vouchers"]
    result.referral_conversion_count = figures["conversions"]
    result.reward_grant_count = figures["grants"]
    for row in figures["promotions"]:
        promotion_id = str(row["promotion_id"])
        target = promotions.setdefault(
            promotion_id, statistics_pb2.PromotionStatistics(promotion_id=promotion_id)
        )
        target.redemption_count += row["n"]
        target.points_total += row["points"] or 0
        target.discount_total.currency_code = row["currency"]
        target.discount_total.amount_minor += row["discount"] or 0
        result.points_total += row["points"] or 0
        if not result.discount_total.currency_code or result.discount_total.currency_code == row["currency"]:
            result.discount_total.currency_code = row["currency"]
            result.discount_total.amount_minor += row["discount"] or 0


# --- the compiled catalog and evaluation ---


def _live_input(
    campaign: campaign_pb2.Campaign, promotions: Sequence[promotion_pb2.Promotion]
) -> engine.CampaignInput:
    """A scheduled or active campaign as the engine compiles it: ACTIVE, its window (checked by the
    engine at every evaluation) deciding when it applies, so the catalog need not be rebuilt when a
    campaign's start or end comes."""
    live = campaign_pb2.Campaign()
    live.CopyFrom(campaign)
    live.state = campaign_pb2.CAMPAIGN_STATE_ACTIVE
    return engine.CampaignInput(live, rules.enabled(promotions), audience=rules.audience_condition(campaign))


async def live_inputs(
    connection: asyncpg.Connection, tenant: str, now: datetime
) -> list[engine.CampaignInput]:
    stored = await repository.campaigns_in_states(connection, tenant, [state.value for state in LIVE])
    promotions = await repository.promotions_of(connection, tenant, [c.campaign_id for c in stored])
    by_campaign: dict[str, list[promotion_pb2.Promotion]] = {}
    for promotion in promotions:
        by_campaign.setdefault(promotion.campaign_id, []).append(_promotion_of(promotion))
    return [_live_input(_campaign_of(c, now), by_campaign.get(c.campaign_id, [])) for c in stored]


def compile_catalog(
    inputs: Sequence[engine.CampaignInput],
    settings: settings_pb2.PromotionSettings,
    earning_rules: Sequence[earning_pb2.EarningRule] = (),
    burn_policies: Sequence[earning_pb2.BurnPolicy] = (),
) -> engine.Catalog:
    """The tenant's catalog. A stored campaign the engine cannot compile (saved before a stricter
    engine) is left out and logged by id, never allowed to fail every evaluation of the tenant."""
    tz = settings.time_zone or DEFAULT_TIME_ZONE
    try:
        return engine.compile_catalog(
            inputs, settings, earning_rules=earning_rules, burn_policies=burn_policies, tz=tz
        )
    except COMPILE_ERRORS:
        usable = [item for item in inputs if not _compile_failures(item, "campaign")]
        left_out = sorted(
            {item.campaign.campaign_id for item in inputs} - {i.campaign.campaign_id for i in usable}
        )
        log.warning("campaigns left out of the catalog", extra={"fields": {"campaign_ids": left_out}})
        return engine.compile_catalog(
            usable, settings, earning_rules=earning_rules, burn_policies=burn_policies, tz=tz
        )


async def build_catalog(connection: asyncpg.Connection, tenant: str, now: datetime) -> engine.Catalog:
    """The tenant's live campaigns and settings, compiled (what each replica caches)."""
    settings = await read_settings(connection, tenant)
    rules = await app_earning.enabled_rules(connection, tenant)
    policies = await app_earning.burn_policies(connection, tenant)
    return compile_catalog(await live_inputs(connection, tenant, now), settings, rules, policies)


def basket_of(basket, prefix: str = "basket.") -> engine.Basket:
    """The engine's basket, or INVALID_ARGUMENT naming each offending line and field."""
    try:
        return engine.decode_basket(basket)
    except engine.BasketInvalid as invalid:
        violations = [
            FieldViolation(prefix + v.field.removeprefix("basket."), v.description)
            for v in invalid.violations
        ]
        first = invalid.violations[0].reason
        reason = Reason(first) if first in Reason._value2member_map_ else Reason.INVALID_ARGUMENT
        raise InvalidArgument(reason, violations[0].description, violations=violations) from None


def customer_of(message: evaluation_pb2.CustomerContext) -> engine.CustomerContext:
    """The engine's customer, or INVALID_ARGUMENT for a date that does not exist."""
    try:
        return engine.decode_customer(message)
    except ValueError as error:
        field = "customer.attributes"
        if message.HasField("birth_date"):
            birth = message.birth_date
            try:
                date(birth.year or 2000, birth.month or 1, birth.day or 1)
            except ValueError:
                field = "customer.birth_date"
        raise InvalidArgument(Reason.INVALID_ARGUMENT, f"not a date: {error}", field=field) from None


def encode_result(
    evaluation: engine.Evaluation, as_presented: dict[str, str]
) -> evaluation_pb2.EvaluationResult:
    """The contract's result; each code verdict names the code as it was presented."""
    result = engine.encode_evaluation(evaluation)
    for verdict in result.codes:
        verdict.code = as_presented.get(verdict.code, verdict.code)
    return result


async def evaluate_basket(
    replica: Replica, units: UnitsOfWork, tenant: str, command: EvaluateBasket
) -> evaluation_pb2.EvaluationResult:
    """Pure evaluation over the replica's catalog; the database is read only for presented codes and
    for campaigns with budgets or customer limits that applied (to say they are used up)."""
    basket = basket_of(command.basket)
    customer = customer_of(command.customer)
    catalog = await replica.catalogs.get(tenant)
    now = command.now or replica.clock()
    as_presented: dict[str, str] = {}
    if command.codes:
        async with units.read() as uow:
            presented, _, as_presented = await app_codes.resolve_codes(
                uow.connection, tenant, catalog, command.codes, customer, now
            )
            evaluation = await app_codes.evaluate_within_limits(
                uow.connection, tenant, catalog, basket, customer, presented, now, command.points_to_burn
            )
    else:
        evaluation = engine.evaluate(
            catalog, basket, customer, [], now, points_to_burn=command.points_to_burn
        )
        if app_codes.limited_campaigns(catalog, evaluation):
            async with units.read() as uow:
                evaluation = await app_codes.evaluate_within_limits(
                    uow.connection, tenant, catalog, basket, customer, [], now, command.points_to_burn
                )
    replica.statistics.count(tenant, basket.currency, replica.clock(), evaluation.applied)
    return encode_result(evaluation, as_presented)


SAMPLED_CHECKOUTS = 100


async def simulate_campaign(uow: UnitOfWork, command: SimulateCampaign) -> tuple[list, list[str], list[str]]:
    """The campaign as if active, together with the live ones, against each sample basket (given,
    or the tenant's most recent committed checkouts); the live campaigns that compete with it there;
    and the checkouts sampled, if any."""
    given = command.baskets
    sampled: list[str] = []
    if not given:
        recent = await repository_codes.recent_committed_baskets(
            uow.connection, uow.tenant, SAMPLED_CHECKOUTS
        )
        if not recent:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT,
                "give sample baskets: the tenant has no committed checkouts to draw them from",
                field="baskets",
            )
        sampled = [checkout_id for checkout_id, _ in recent]
        given = tuple(basket_pb2.Basket.FromString(payload) for _, payload in recent)
    baskets = [basket_of(basket, f"baskets[{i}].") for i, basket in enumerate(given)]
    stored = await repository.get_campaign(uow.connection, uow.tenant, command.campaign_id)
    if stored is None:
        raise _campaign_not_found()
    campaign = _campaign_of(stored, uow.now)
    if campaign.state == campaign_pb2.CAMPAIGN_STATE_ARCHIVED:
        raise FailedPrecondition(
            Reason.CAMPAIGN_TRANSITION_NOT_ALLOWED, "an archived campaign cannot be simulated"
        )
    promotions = await _promotions(uow.connection, uow.tenant, command.campaign_id)
    others = [
        i
        for i in await live_inputs(uow.connection, uow.tenant, uow.now)
        if i.campaign.campaign_id != campaign.campaign_id
    ]
    settings = await read_settings(uow.connection, uow.tenant)
    rules = await app_earning.enabled_rules(uow.connection, uow.tenant)
    catalog = compile_catalog([*others, _live_input(campaign, promotions)], settings, rules)
    customer = customer_of(command.customer)
    now = command.now or uow.now
    results = [engine.encode_evaluation(engine.evaluate(catalog, b, customer, [], now)) for b in baskets]
    conflicts = engine.conflicting_campaigns(catalog, campaign.campaign_id, baskets, customer, now)
    return results, sorted(conflicts), sampled
