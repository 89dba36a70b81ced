"""The trigger RPCs of PromotionService (protobuf <-> commands), mixed into PromotionServicer."""

import uuid
from datetime import UTC, datetime, timedelta

from loyalty.promotion.v1 import promotion_service_pb2 as api
from loyalty_promotion import app_triggers
from loyalty_promotion.commands import DeleteTrigger, ListRewardGrants, ListTriggers, UpdateTrigger
from loyalty_promotion.trigger_links import TriggerLinks
from loyalty_runtime import paging
from loyalty_runtime.errors import InvalidArgument, NotFound, Reason
from loyalty_runtime.uow import UnitsOfWork

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TRIGGER_PAGE = (50, 500)
GRANT_PAGE = (100, 1000)


def _uuid(value: str, field: str, reason: Reason) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound(
            reason, f"no such {field.rsplit('.', 1)[-1].removesuffix('_id')}", field=field
        ) from None


def _optional_uuid(value: str, field: str, reason: Reason) -> str | None:
    return _uuid(value, field, reason) if value else None


def _bad_token() -> InvalidArgument:
    return InvalidArgument(
        Reason.INVALID_ARGUMENT, "page_token is not one this service issued", field="page_token"
    )


def _trigger_token(token: str) -> str | None:
    last = paging.decode_token(token)
    if not last:
        return None
    try:
        return str(uuid.UUID(last))
    except ValueError:
        raise _bad_token() from None


def _grant_token(token: str) -> tuple[datetime, str] | None:
    last = paging.decode_token(token)
    if not last:
        return None
    microseconds, _, grant_id = last.partition(":")
    try:
        return EPOCH + timedelta(microseconds=int(microseconds)), str(uuid.UUID(grant_id))
    except (ValueError, OverflowError):
        raise _bad_token() from None


class TriggerRpcs:
    units: UnitsOfWork
    trigger_links: TriggerLinks | None

    async def CreateTrigger(self, request: api.CreateTriggerRequest, context) -> api.CreateTriggerResponse:
        return await self.units.idempotent(
            request,
            lambda uow, trigger: app_triggers.create_trigger(uow, trigger, self.trigger_links),
            request.trigger,
            lambda t: api.CreateTriggerResponse(trigger=t),
        )

    async def GetTrigger(self, request: api.GetTriggerRequest, context) -> api.GetTriggerResponse:
        trigger_id = _uuid(request.trigger_id, "trigger_id", Reason.TRIGGER_NOT_FOUND)
        async with self.units.read() as uow:
            return api.GetTriggerResponse(trigger=await app_triggers.get_trigger(uow, trigger_id))

    async def ListTriggers(self, request: api.ListTriggersRequest, context) -> api.ListTriggersResponse:
        command = ListTriggers(
            _optional_uuid(request.campaign_id, "campaign_id", Reason.CAMPAIGN_NOT_FOUND),
            request.event_type or None,
            _trigger_token(request.page_token),
            paging.page_size(request.page_size, default=TRIGGER_PAGE[0], maximum=TRIGGER_PAGE[1]),
        )
        async with self.units.read() as uow:
            triggers, last = await app_triggers.list_triggers(uow, command)
        return api.ListTriggersResponse(
            triggers=triggers, next_page_token=paging.encode_token(last) if last else ""
        )

    async def UpdateTrigger(self, request: api.UpdateTriggerRequest, context) -> api.UpdateTriggerResponse:
        command = UpdateTrigger(
            _uuid(request.trigger.trigger_id, "trigger.trigger_id", Reason.TRIGGER_NOT_FOUND),
            request.trigger,
            request.update_mask,
            request.trigger.etag,
        )
        return await self.units.idempotent(
            request,
            lambda uow, changes: app_triggers.update_trigger(uow, changes, self.trigger_links),
            command,
            lambda t: api.UpdateTriggerResponse(trigger=t),
        )

    async def DeleteTrigger(self, request: api.DeleteTriggerRequest, context) -> api.DeleteTriggerResponse:
        command = DeleteTrigger(
            _uuid(request.trigger_id, "trigger_id", Reason.TRIGGER_NOT_FOUND), request.etag
        )
        return await self.units.idempotent(
            request, app_triggers.delete_trigger, command, lambda _: api.DeleteTriggerResponse()
        )

    async def ListRewardGrants(
        self, request: api.ListRewardGrantsRequest, context
    ) -> api.ListRewardGrantsResponse:
        command = ListRewardGrants(
            request.customer_id or None,
            _optional_uuid(request.campaign_id, "campaign_id", Reason.CAMPAIGN_NOT_FOUND),
            _optional_uuid(request.trigger_id, "trigger_id", Reason.TRIGGER_NOT_FOUND),
            _grant_token(request.page_token),
            paging.page_size(request.page_size, default=GRANT_PAGE[0], maximum=GRANT_PAGE[1]),
        )
        async with self.units.read() as uow:
            grants, last = await app_triggers.list_grants(uow, command)
        token = ""
        if last:
            microseconds = (last[0] - EPOCH) // timedelta(microseconds=1)
            token = paging.encode_token(f"{microseconds}:{last[1]}")
        return api.ListRewardGrantsResponse(grants=grants, next_page_token=token)
