"""PromotionService: each method decodes its request into a command, runs one use case (state
changes through `units.idempotent`: the claim, the replay and the stored answer), and encodes the
result. No SQL, no business rule, no transaction of its own.

The runtime's call guard has already authenticated the caller and validated the request against the
contract (lengths, control characters, enums, time ranges, update_mask paths). Ids are UUIDs this
service issued; anything else cannot name a campaign, so it is answered exactly like an unknown one
(NOT_FOUND), as is another tenant's id. RPCs not defined here answer UNIMPLEMENTED.
"""

import uuid
from datetime import UTC, datetime

from loyalty.promotion.v1 import promotion_service_pb2 as api
from loyalty_promotion import (
    app,
    app_codes,
    app_earning,
    app_generation,
    app_offers,
    app_redemptions,
    app_referrals,
)
from loyalty_promotion.commands import (
    AcceptReferral,
    ChangeState,
    CreateCampaign,
    CreatePromotion,
    CreateReferralCode,
    DeleteEarningRule,
    DeletePromotion,
    EvaluateBasket,
    GenerateVouchers,
    GetStatistics,
    ImportVouchers,
    ListCampaigns,
    ListCustomerOffers,
    ListEarningRules,
    ListPromotions,
    ListRedemptions,
    ListReferralCodes,
    ListReferralConversions,
    ListVouchers,
    ReserveRedemptions,
    ReverseRedemptions,
    SetVoucherEnabled,
    SimulateCampaign,
    UpdateBurnPolicy,
    UpdateCampaign,
    UpdateEarningRule,
    UpdatePromotion,
    UpdateSettings,
    UpdateVoucher,
)
from loyalty_promotion.domain import csvcodes
from loyalty_promotion.domain.campaigns import PB_TO_STATE
from loyalty_promotion.domain.lifecycle import Action, State
from loyalty_promotion.replica import Replica
from loyalty_promotion.servicer_achievements import AchievementRpcs
from loyalty_promotion.servicer_catalogue import CatalogueRpcs
from loyalty_promotion.servicer_triggers import TriggerRpcs
from loyalty_promotion.trigger_links import TriggerLinks
from loyalty_runtime import paging
from loyalty_runtime.context import current_tenant
from loyalty_runtime.errors import InvalidArgument, NotFound, Reason
from loyalty_runtime.protobuf import moment
from loyalty_runtime.uow import UnitsOfWork

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
# Vouchers and redemptions page larger (the contract's defaults).
DEFAULT_CODE_PAGE, MAX_CODE_PAGE = 100, 1000
MAX_CHECKOUT_ID = 128
EXPORT_PAGE, MAX_EXPORT_PAGE = 10_000, 50_000
OFFERS_PAGE = 200
# ListCampaigns without states: all but archived.
DEFAULT_STATES = frozenset(State) - {State.ARCHIVED}


def _id(value: str, field: str, reason: Reason) -> str:
    """The canonical form of an id this service issued; NOT_FOUND for anything else."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound(reason, f"no such {field.removesuffix('_id')}", field=field) from None


def _campaign_id(value: str, field: str = "campaign_id") -> str:
    return _id(value, field, Reason.CAMPAIGN_NOT_FOUND)


def _priority_token(token: str) -> tuple[int, str] | None:
    last = paging.decode_token(token)
    if not last:
        return None
    priority, _, campaign_id = last.partition(":")
    try:
        return int(priority), str(uuid.UUID(campaign_id))
    except ValueError:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "page_token is not one this service issued", field="page_token"
        ) from None


def _program_id(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "a programme id is required", field=field)
    return value


def _voucher_id(value: str, field: str = "voucher_id") -> str:
    return _id(value, field, Reason.VOUCHER_NOT_FOUND)


def _checkout_id(value: str) -> str:
    if not value or len(value) > MAX_CHECKOUT_ID:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            f"a checkout id of 1 to {MAX_CHECKOUT_ID} characters is required",
            field="checkout_id",
        )
    return value


def _optional_id(value: str, field: str, reason: Reason) -> str | None:
    return _id(value, field, reason) if value else None


def _points_to_burn(points: int) -> int:
    if points < 0:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "points_to_burn must not be negative", field="points_to_burn"
        )
    return points


def _redemption_token(token: str):
    last = paging.decode_token(token)
    if not last:
        return None
    nanos, _, redemption_id = last.partition(":")
    try:
        return datetime.fromtimestamp(int(nanos) / 1e9, UTC), str(uuid.UUID(redemption_id))
    except ValueError:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "page_token is not one this service issued", field="page_token"
        ) from None


def _offset_token(token: str) -> int:
    value = paging.decode_token(token)
    if value and not value.isdigit():
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "page_token is not one this service issued", field="page_token"
        )
    return int(value or 0)


class PromotionServicer(TriggerRpcs, CatalogueRpcs, AchievementRpcs):
    def __init__(
        self,
        units: UnitsOfWork,
        replica: Replica,
        reservation_ttl_seconds: float = 900.0,
        trigger_links: TriggerLinks | None = None,
    ) -> None:
        self.units = units
        self.replica = replica
        self.reservation_ttl_seconds = reservation_ttl_seconds
        self.trigger_links = trigger_links

    async def _changed(self) -> None:
        """After a committed change (or its replay): every replica's catalog follows."""
        await self.replica.catalogs.changed(current_tenant())

    # --- the tenant's settings ---

    async def GetPromotionSettings(
        self, request: api.GetPromotionSettingsRequest, context
    ) -> api.GetPromotionSettingsResponse:
        async with self.units.read() as uow:
            return api.GetPromotionSettingsResponse(settings=await app.get_settings(uow))

    async def UpdatePromotionSettings(
        self, request: api.UpdatePromotionSettingsRequest, context
    ) -> api.UpdatePromotionSettingsResponse:
        command = UpdateSettings(request.settings, request.update_mask, request.settings.etag)
        response = await self.units.idempotent(
            request, app.update_settings, command, lambda s: api.UpdatePromotionSettingsResponse(settings=s)
        )
        await self._changed()
        return response

    # --- campaigns ---

    async def CreateCampaign(self, request: api.CreateCampaignRequest, context) -> api.CreateCampaignResponse:
        return await self.units.idempotent(
            request,
            app.create_campaign,
            CreateCampaign(request.campaign),
            lambda campaign: api.CreateCampaignResponse(campaign=campaign),
        )

    async def GetCampaign(self, request: api.GetCampaignRequest, context) -> api.GetCampaignResponse:
        campaign_id = _campaign_id(request.campaign_id)
        async with self.units.read() as uow:
            return api.GetCampaignResponse(campaign=await app.get_campaign(uow, campaign_id))

    async def ListCampaigns(self, request: api.ListCampaignsRequest, context) -> api.ListCampaignsResponse:
        if any(s not in PB_TO_STATE for s in request.states):
            raise InvalidArgument(Reason.INVALID_ARGUMENT, "states must name campaign states", field="states")
        states = frozenset(PB_TO_STATE[s] for s in request.states) or DEFAULT_STATES
        command = ListCampaigns(
            states=states,
            campaign_type=request.type,
            labels=dict(request.labels),
            after=_priority_token(request.page_token),
            limit=paging.page_size(request.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE),
        )
        async with self.units.read() as uow:
            page = await app.list_campaigns(uow, command)
        token = paging.encode_token(f"{page.last[0]}:{page.last[1]}") if page.last else ""
        return api.ListCampaignsResponse(campaigns=page.campaigns, next_page_token=token)

    async def UpdateCampaign(self, request: api.UpdateCampaignRequest, context) -> api.UpdateCampaignResponse:
        command = UpdateCampaign(
            _campaign_id(request.campaign.campaign_id, "campaign.campaign_id"),
            request.campaign,
            request.update_mask,
            request.campaign.etag,
        )
        response = await self.units.idempotent(
            request, app.update_campaign, command, lambda c: api.UpdateCampaignResponse(campaign=c)
        )
        await self._changed()
        return response

    async def _change_state(self, request, action: Action, encode):
        command = ChangeState(_campaign_id(request.campaign_id), action, request.etag)
        response = await self.units.idempotent(request, app.change_state, command, encode)
        await self._changed()
        return response

    async def ActivateCampaign(
        self, request: api.ActivateCampaignRequest, context
    ) -> api.ActivateCampaignResponse:
        return await self._change_state(
            request, Action.ACTIVATE, lambda c: api.ActivateCampaignResponse(campaign=c)
        )

    async def PauseCampaign(self, request: api.PauseCampaignRequest, context) -> api.PauseCampaignResponse:
        return await self._change_state(
            request, Action.PAUSE, lambda c: api.PauseCampaignResponse(campaign=c)
        )

    async def ArchiveCampaign(
        self, request: api.ArchiveCampaignRequest, context
    ) -> api.ArchiveCampaignResponse:
        return await self._change_state(
            request, Action.ARCHIVE, lambda c: api.ArchiveCampaignResponse(campaign=c)
        )

    async def DeleteCampaign(self, request: api.DeleteCampaignRequest, context) -> api.DeleteCampaignResponse:
        return await self._change_state(request, Action.DELETE, lambda _: api.DeleteCampaignResponse())

    async def GetCampaignStatistics(
        self, request: api.GetCampaignStatisticsRequest, context
    ) -> api.GetCampaignStatisticsResponse:
        command = GetStatistics(
            _campaign_id(request.campaign_id), moment(request, "start_time"), moment(request, "end_time")
        )
        async with self.units.read() as uow:
            return api.GetCampaignStatisticsResponse(statistics=await app.get_statistics(uow, command))

    # --- promotions ---

    async def CreatePromotion(
        self, request: api.CreatePromotionRequest, context
    ) -> api.CreatePromotionResponse:
        promotion = type(request.promotion)()
        promotion.CopyFrom(request.promotion)
        promotion.campaign_id = _campaign_id(promotion.campaign_id, "promotion.campaign_id")
        response = await self.units.idempotent(
            request,
            app.create_promotion,
            CreatePromotion(promotion),
            lambda p: api.CreatePromotionResponse(promotion=p),
        )
        await self._changed()
        return response

    async def GetPromotion(self, request: api.GetPromotionRequest, context) -> api.GetPromotionResponse:
        promotion_id = _id(request.promotion_id, "promotion_id", Reason.PROMOTION_NOT_FOUND)
        async with self.units.read() as uow:
            return api.GetPromotionResponse(promotion=await app.get_promotion(uow, promotion_id))

    async def ListPromotions(self, request: api.ListPromotionsRequest, context) -> api.ListPromotionsResponse:
        limit = paging.page_size(request.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        after = paging.decode_token(request.page_token)
        command = ListPromotions(_campaign_id(request.campaign_id), request.state, after, limit)
        async with self.units.read() as uow:
            promotions = await app.list_promotions(uow, command)
        start = next((i + 1 for i, p in enumerate(promotions) if p.promotion_id == after), 0) if after else 0
        page = promotions[start : start + limit]
        more = start + limit < len(promotions)
        return api.ListPromotionsResponse(
            promotions=page, next_page_token=paging.encode_token(page[-1].promotion_id) if more else ""
        )

    async def UpdatePromotion(
        self, request: api.UpdatePromotionRequest, context
    ) -> api.UpdatePromotionResponse:
        command = UpdatePromotion(
            _id(request.promotion.promotion_id, "promotion.promotion_id", Reason.PROMOTION_NOT_FOUND),
            request.promotion,
            request.update_mask,
            request.promotion.etag,
        )
        response = await self.units.idempotent(
            request, app.update_promotion, command, lambda p: api.UpdatePromotionResponse(promotion=p)
        )
        await self._changed()
        return response

    async def DeletePromotion(
        self, request: api.DeletePromotionRequest, context
    ) -> api.DeletePromotionResponse:
        command = DeletePromotion(
            _id(request.promotion_id, "promotion_id", Reason.PROMOTION_NOT_FOUND), request.etag
        )
        return await self.units.idempotent(
            request, app.delete_promotion, command, lambda _: api.DeletePromotionResponse()
        )

    # --- earning rules and burn policies ---

    def _rule_id(self, value: str, field: str = "earning_rule_id") -> str:
        return _id(value, field, Reason.EARNING_RULE_NOT_FOUND)

    async def CreateEarningRule(
        self, request: api.CreateEarningRuleRequest, context
    ) -> api.CreateEarningRuleResponse:
        response = await self.units.idempotent(
            request,
            app_earning.create_earning_rule,
            request.earning_rule,
            lambda r: api.CreateEarningRuleResponse(earning_rule=r),
        )
        await self._changed()
        return response

    async def GetEarningRule(self, request: api.GetEarningRuleRequest, context) -> api.GetEarningRuleResponse:
        rule_id = self._rule_id(request.earning_rule_id)
        async with self.units.read() as uow:
            return api.GetEarningRuleResponse(earning_rule=await app_earning.get_earning_rule(uow, rule_id))

    async def ListEarningRules(
        self, request: api.ListEarningRulesRequest, context
    ) -> api.ListEarningRulesResponse:
        limit = paging.page_size(request.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        command = ListEarningRules(
            request.program_id, request.state, _priority_token(request.page_token), limit
        )
        async with self.units.read() as uow:
            rules = await app_earning.list_earning_rules(uow, command)
        page, more = rules[:limit], len(rules) > limit
        token = paging.encode_token(f"{page[-1].priority}:{page[-1].earning_rule_id}") if more else ""
        return api.ListEarningRulesResponse(
            earning_rules=[r for r in page if not request.state or r.state == request.state],
            next_page_token=token,
        )

    async def UpdateEarningRule(
        self, request: api.UpdateEarningRuleRequest, context
    ) -> api.UpdateEarningRuleResponse:
        command = UpdateEarningRule(
            self._rule_id(request.earning_rule.earning_rule_id, "earning_rule.earning_rule_id"),
            request.earning_rule,
            request.update_mask,
            request.earning_rule.etag,
        )
        response = await self.units.idempotent(
            request,
            app_earning.update_earning_rule,
            command,
            lambda r: api.UpdateEarningRuleResponse(earning_rule=r),
        )
        await self._changed()
        return response

    async def DeleteEarningRule(
        self, request: api.DeleteEarningRuleRequest, context
    ) -> api.DeleteEarningRuleResponse:
        command = DeleteEarningRule(self._rule_id(request.earning_rule_id), request.etag)
        response = await self.units.idempotent(
            request, app_earning.delete_earning_rule, command, lambda _: api.DeleteEarningRuleResponse()
        )
        await self._changed()
        return response

    async def GetBurnPolicy(self, request: api.GetBurnPolicyRequest, context) -> api.GetBurnPolicyResponse:
        program_id = _program_id(request.program_id, "program_id")
        async with self.units.read() as uow:
            return api.GetBurnPolicyResponse(burn_policy=await app_earning.get_burn_policy(uow, program_id))

    async def UpdateBurnPolicy(
        self, request: api.UpdateBurnPolicyRequest, context
    ) -> api.UpdateBurnPolicyResponse:
        command = UpdateBurnPolicy(
            _program_id(request.burn_policy.program_id, "burn_policy.program_id"),
            request.burn_policy,
            request.update_mask,
            request.burn_policy.etag,
        )
        response = await self.units.idempotent(
            request,
            app_earning.update_burn_policy,
            command,
            lambda p: api.UpdateBurnPolicyResponse(burn_policy=p),
        )
        await self._changed()
        return response

    # --- evaluation ---

    async def EvaluateBasket(self, request: api.EvaluateBasketRequest, context) -> api.EvaluateBasketResponse:
        command = EvaluateBasket(
            request.basket,
            request.customer,
            tuple(request.codes),
            moment(request, "evaluation_time"),
            _points_to_burn(request.points_to_burn),
        )
        result = await app.evaluate_basket(self.replica, self.units, current_tenant(), command)
        return api.EvaluateBasketResponse(result=result)

    async def SimulateCampaign(
        self, request: api.SimulateCampaignRequest, context
    ) -> api.SimulateCampaignResponse:
        command = SimulateCampaign(
            _campaign_id(request.campaign_id),
            tuple(request.baskets),
            request.customer,
            moment(request, "evaluation_time"),
        )
        async with self.units.read() as uow:
            results, conflicts, sampled = await app.simulate_campaign(uow, command)
        return api.SimulateCampaignResponse(
            results=results, conflicting_campaign_ids=conflicts, sampled_checkout_ids=sampled
        )

    # --- vouchers ---

    async def CreateVoucher(self, request: api.CreateVoucherRequest, context) -> api.CreateVoucherResponse:
        voucher = type(request.voucher)()
        voucher.CopyFrom(request.voucher)
        voucher.campaign_id = _campaign_id(voucher.campaign_id, "voucher.campaign_id")
        return await self.units.idempotent(
            request, app_codes.create_voucher, voucher, lambda v: api.CreateVoucherResponse(voucher=v)
        )

    async def GetVoucher(self, request: api.GetVoucherRequest, context) -> api.GetVoucherResponse:
        which = request.WhichOneof("voucher")
        if which is None:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "voucher_id or code is required", field="voucher_id"
            )
        voucher_id = _voucher_id(request.voucher_id) if which == "voucher_id" else ""
        async with self.units.read() as uow:
            voucher = await app_codes.get_voucher(uow, voucher_id, request.code)
        return api.GetVoucherResponse(voucher=voucher)

    async def ListVouchers(self, request: api.ListVouchersRequest, context) -> api.ListVouchersResponse:
        after = paging.decode_token(request.page_token)
        command = ListVouchers(
            _campaign_id(request.campaign_id),
            request.state,
            request.holder_customer_id,
            _optional_id(request.batch_id, "batch_id", Reason.VOUCHER_BATCH_NOT_FOUND),
            _optional_id(after, "page_token", Reason.INVALID_ARGUMENT),
            paging.page_size(request.page_size, default=DEFAULT_CODE_PAGE, maximum=MAX_CODE_PAGE),
        )
        async with self.units.read() as uow:
            vouchers, last = await app_codes.list_vouchers(uow, command)
        return api.ListVouchersResponse(
            vouchers=vouchers, next_page_token=paging.encode_token(last) if last else ""
        )

    async def UpdateVoucher(self, request: api.UpdateVoucherRequest, context) -> api.UpdateVoucherResponse:
        command = UpdateVoucher(
            _voucher_id(request.voucher.voucher_id, "voucher.voucher_id"),
            request.voucher,
            request.update_mask,
            request.voucher.etag,
        )
        return await self.units.idempotent(
            request, app_codes.update_voucher, command, lambda v: api.UpdateVoucherResponse(voucher=v)
        )

    async def DisableVoucher(self, request: api.DisableVoucherRequest, context) -> api.DisableVoucherResponse:
        command = SetVoucherEnabled(_voucher_id(request.voucher_id), enabled=False)
        return await self.units.idempotent(
            request, app_codes.set_voucher_enabled, command, lambda v: api.DisableVoucherResponse(voucher=v)
        )

    async def EnableVoucher(self, request: api.EnableVoucherRequest, context) -> api.EnableVoucherResponse:
        command = SetVoucherEnabled(_voucher_id(request.voucher_id), enabled=True)
        return await self.units.idempotent(
            request, app_codes.set_voucher_enabled, command, lambda v: api.EnableVoucherResponse(voucher=v)
        )

    # --- redemptions (keyed by the checkout id: each is its own idempotency) ---

    async def ReserveRedemptions(
        self, request: api.ReserveRedemptionsRequest, context
    ) -> api.ReserveRedemptionsResponse:
        command = ReserveRedemptions(
            _checkout_id(request.checkout_id),
            request.basket,
            request.customer,
            tuple(request.codes),
            app_redemptions.fingerprint(request),
            _points_to_burn(request.points_to_burn),
        )
        catalog = await self.replica.catalogs.get(current_tenant())
        async with self.units.change() as uow:
            reservation = await app_redemptions.reserve(uow, catalog, command, self.reservation_ttl_seconds)
        return api.ReserveRedemptionsResponse(reservation=reservation)

    async def CommitRedemptions(
        self, request: api.CommitRedemptionsRequest, context
    ) -> api.CommitRedemptionsResponse:
        checkout_id = _checkout_id(request.checkout_id)
        catalog = await self.replica.catalogs.get(current_tenant())
        async with self.units.change() as uow:
            reservation = await app_redemptions.commit(uow, checkout_id, catalog)
        return api.CommitRedemptionsResponse(reservation=reservation)

    async def RollbackRedemptions(
        self, request: api.RollbackRedemptionsRequest, context
    ) -> api.RollbackRedemptionsResponse:
        checkout_id = _checkout_id(request.checkout_id)
        async with self.units.change() as uow:
            reservation = await app_redemptions.rollback(uow, checkout_id)
        return api.RollbackRedemptionsResponse(reservation=reservation)

    async def GetReservation(self, request: api.GetReservationRequest, context) -> api.GetReservationResponse:
        checkout_id = _checkout_id(request.checkout_id)
        async with self.units.read() as uow:
            reservation = await app_redemptions.get_reservation(uow, checkout_id)
        return api.GetReservationResponse(reservation=reservation)

    async def ListRedemptions(
        self, request: api.ListRedemptionsRequest, context
    ) -> api.ListRedemptionsResponse:
        limit = paging.page_size(request.page_size, default=DEFAULT_CODE_PAGE, maximum=MAX_CODE_PAGE)
        if request.state and request.state not in app_redemptions.PB_TO_REDEMPTION_STATE:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "state must name a redemption state", field="state"
            )
        command = ListRedemptions(
            _optional_id(request.campaign_id, "campaign_id", Reason.CAMPAIGN_NOT_FOUND),
            request.customer_id,
            _optional_id(request.voucher_id, "voucher_id", Reason.VOUCHER_NOT_FOUND),
            app_redemptions.PB_TO_REDEMPTION_STATE.get(request.state, ""),
            _redemption_token(request.page_token),
            limit,
        )
        async with self.units.read() as uow:
            redemptions = await app_redemptions.list_redemptions(uow, command)
        token = ""
        if len(redemptions) == limit:
            last = redemptions[-1]
            token = paging.encode_token(f"{last.create_time.ToNanoseconds()}:{last.redemption_id}")
        return api.ListRedemptionsResponse(redemptions=redemptions, next_page_token=token)

    async def ReverseRedemptions(
        self, request: api.ReverseRedemptionsRequest, context
    ) -> api.ReverseRedemptionsResponse:
        if not request.return_id or len(request.return_id) > MAX_CHECKOUT_ID:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT,
                f"a return id of 1 to {MAX_CHECKOUT_ID} characters is required",
                field="return_id",
            )
        command = ReverseRedemptions(
            _checkout_id(request.checkout_id),
            request.return_id,
            tuple((line.line_id, line.quantity, line.quantity_milli) for line in request.lines),
            request.full_return,
            app_redemptions.fingerprint(request),
        )
        async with self.units.change() as uow:
            reversal, reservation = await app_redemptions.reverse(uow, command)
        return api.ReverseRedemptionsResponse(reversal=reversal, reservation=reservation)

    # --- bulk codes ---

    async def GenerateVouchers(
        self, request: api.GenerateVouchersRequest, context
    ) -> api.GenerateVouchersResponse:
        command = GenerateVouchers(
            _campaign_id(request.campaign_id),
            request.count,
            request.pattern,
            tuple(request.holder_customer_ids),
            request.max_redemptions,
            request.max_redemptions_per_customer,
            dict(request.metadata),
            request,
        )
        return await self.units.idempotent(
            request,
            app_generation.generate_vouchers,
            command,
            lambda b: api.GenerateVouchersResponse(batch=b),
        )

    async def GetVoucherBatch(
        self, request: api.GetVoucherBatchRequest, context
    ) -> api.GetVoucherBatchResponse:
        batch_id = _id(request.batch_id, "batch_id", Reason.VOUCHER_BATCH_NOT_FOUND)
        async with self.units.read() as uow:
            return api.GetVoucherBatchResponse(batch=await app_generation.get_batch(uow, batch_id))

    async def ImportVouchers(self, request: api.ImportVouchersRequest, context) -> api.ImportVouchersResponse:
        command = ImportVouchers(_campaign_id(request.campaign_id), tuple(enumerate(request.vouchers)))
        return await self.units.idempotent(
            request,
            app_generation.import_vouchers,
            command,
            lambda found: api.ImportVouchersResponse(
                batch=found[0],
                rejections=[api.VoucherImportRejection(code=code, message=why) for _, code, why in found[1]],
            ),
        )

    async def ImportVouchersCsv(
        self, request: api.ImportVouchersCsvRequest, context
    ) -> api.ImportVouchersCsvResponse:
        try:
            rows = csvcodes.parse_import(request.csv)
        except csvcodes.CsvRefused as refused:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, str(refused), field="csv") from None
        command = ImportVouchers(
            _campaign_id(request.campaign_id),
            tuple((row.number, row.item) for row in rows if row.item is not None),
            tuple((row.number, row.code, row.problem) for row in rows if row.item is None),
            limit=csvcodes.MAX_ROWS,
        )
        return await self.units.idempotent(
            request,
            app_generation.import_vouchers,
            command,
            lambda found: api.ImportVouchersCsvResponse(
                batch=found[0],
                rejections=[api.CsvRowRejection(row=n, code=code, message=why) for n, code, why in found[1]],
            ),
        )

    async def ExportVouchers(self, request: api.ExportVouchersRequest, context) -> api.ExportVouchersResponse:
        limit = paging.page_size(request.page_size, default=EXPORT_PAGE, maximum=MAX_EXPORT_PAGE)
        after = _optional_id(paging.decode_token(request.page_token), "page_token", Reason.INVALID_ARGUMENT)
        campaign_id = _campaign_id(request.campaign_id)
        async with self.units.read() as uow:
            data, count, last = await app_generation.export_vouchers(uow, campaign_id, after, limit)
        return api.ExportVouchersResponse(
            csv=data, row_count=count, next_page_token=paging.encode_token(last) if last else ""
        )

    # --- wallet ---

    async def ListCustomerOffers(
        self, request: api.ListCustomerOffersRequest, context
    ) -> api.ListCustomerOffersResponse:
        """A wallet is small and sorted by expiry, so it is built whole and paged by position."""
        limit = paging.page_size(request.page_size, default=DEFAULT_PAGE_SIZE, maximum=OFFERS_PAGE)
        start = _offset_token(request.page_token)
        command = ListCustomerOffers(
            request.customer, request.basket if request.HasField("basket") else None, tuple(request.kinds)
        )
        catalog = await self.replica.catalogs.get(current_tenant())
        async with self.units.read() as uow:
            offers = await app_offers.list_customer_offers(uow, catalog, command)
        page = offers[start : start + limit]
        more = start + limit < len(offers)
        return api.ListCustomerOffersResponse(
            offers=page, next_page_token=paging.encode_token(str(start + limit)) if more else ""
        )

    # --- referrals ---

    async def CreateReferralCode(
        self, request: api.CreateReferralCodeRequest, context
    ) -> api.CreateReferralCodeResponse:
        command = CreateReferralCode(_campaign_id(request.campaign_id), request.referrer_customer_id)
        return await self.units.idempotent(
            request,
            app_referrals.create_referral_code,
            command,
            lambda found: api.CreateReferralCodeResponse(referral_code=found[0], created=found[1]),
        )

    async def ListReferralCodes(
        self, request: api.ListReferralCodesRequest, context
    ) -> api.ListReferralCodesResponse:
        after = paging.decode_token(request.page_token)
        command = ListReferralCodes(
            _optional_id(request.campaign_id, "campaign_id", Reason.CAMPAIGN_NOT_FOUND),
            request.referrer_customer_id,
            _optional_id(after, "page_token", Reason.INVALID_ARGUMENT),
            paging.page_size(request.page_size, default=DEFAULT_CODE_PAGE, maximum=MAX_CODE_PAGE),
        )
        async with self.units.read() as uow:
            codes, last = await app_referrals.list_referral_codes(uow, command)
        return api.ListReferralCodesResponse(
            referral_codes=codes, next_page_token=paging.encode_token(last) if last else ""
        )

    async def AcceptReferral(self, request: api.AcceptReferralRequest, context) -> api.AcceptReferralResponse:
        command = AcceptReferral(request.code, request.referee_customer_id, request.validate_only)
        if request.validate_only:
            async with self.units.read() as uow:
                return _acceptance(await app_referrals.accept_referral(uow, command))
        return await self.units.idempotent(request, app_referrals.accept_referral, command, _acceptance)

    async def ListReferralConversions(
        self, request: api.ListReferralConversionsRequest, context
    ) -> api.ListReferralConversionsResponse:
        limit = paging.page_size(request.page_size, default=DEFAULT_CODE_PAGE, maximum=MAX_CODE_PAGE)
        if request.state and request.state not in app_referrals.PB_TO_CONVERSION_STATE:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "state must name a conversion state", field="state"
            )
        command = ListReferralConversions(
            _optional_id(request.campaign_id, "campaign_id", Reason.CAMPAIGN_NOT_FOUND),
            request.referrer_customer_id,
            request.referee_customer_id,
            app_referrals.PB_TO_CONVERSION_STATE.get(request.state, ""),
            _redemption_token(request.page_token),
            limit,
        )
        async with self.units.read() as uow:
            conversions = await app_referrals.list_conversions(uow, command)
        token = ""
        if len(conversions) == limit:
            last = conversions[-1]
            token = paging.encode_token(f"{last.create_time.ToNanoseconds()}:{last.conversion_id}")
        return api.ListReferralConversionsResponse(conversions=conversions, next_page_token=token)


def _acceptance(found: app_referrals.Acceptance) -> api.AcceptReferralResponse:
    return api.AcceptReferralResponse(
        accepted=found.accepted,
        reason=found.reason or 0,
        campaign_id=found.campaign_id,
        referrer_customer_id=found.referrer,
        referee_grant_id=found.referee_grant_id,
    )
