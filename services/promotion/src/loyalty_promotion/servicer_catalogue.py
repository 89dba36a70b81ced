"""The reward catalogue RPCs of PromotionService (protobuf <-> commands), mixed into
PromotionServicer."""

import uuid

from loyalty.promotion.v1 import promotion_service_pb2 as api
from loyalty_promotion import app_catalogue
from loyalty_promotion.servicer_triggers import _trigger_token as _after, _uuid
from loyalty_runtime import paging
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.uow import UnitsOfWork

PAGE = (50, 200)  # reward ids page like trigger ids: the last id seen, a UUID (_after)


def _reward_id(value: str, field: str = "reward_id") -> str:
    return _uuid(value, field, Reason.CATALOGUE_REWARD_NOT_FOUND)


def _redemption_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "a UUID", field="redemption_id") from None


class CatalogueRpcs:
    units: UnitsOfWork

    async def CreateCatalogueReward(self, request, context) -> api.CreateCatalogueRewardResponse:
        return await self.units.idempotent(
            request,
            app_catalogue.create_reward,
            request.reward,
            lambda r: api.CreateCatalogueRewardResponse(reward=r),
        )

    async def GetCatalogueReward(self, request, context) -> api.GetCatalogueRewardResponse:
        reward_id = _reward_id(request.reward_id)
        async with self.units.read() as uow:
            return api.GetCatalogueRewardResponse(reward=await app_catalogue.get_reward(uow, reward_id))

    async def ListCatalogueRewards(self, request, context) -> api.ListCatalogueRewardsResponse:
        command = app_catalogue.ListRewards(
            _after(request.page_token),
            paging.page_size(request.page_size, default=PAGE[0], maximum=PAGE[1]),
            request.available_only,
            request.max_points_cost if request.HasField("max_points_cost") else None,
            request.program_id,
        )
        async with self.units.read() as uow:
            rewards, last = await app_catalogue.list_rewards(uow, command)
        return api.ListCatalogueRewardsResponse(
            rewards=rewards, next_page_token=paging.encode_token(last) if last else ""
        )

    async def UpdateCatalogueReward(self, request, context) -> api.UpdateCatalogueRewardResponse:
        reward = type(request.reward)()
        reward.CopyFrom(request.reward)
        reward.reward_id = _reward_id(reward.reward_id, "reward.reward_id")
        return await self.units.idempotent(
            request,
            app_catalogue.update_reward,
            reward,
            lambda r: api.UpdateCatalogueRewardResponse(reward=r),
        )

    async def DeleteCatalogueReward(self, request, context) -> api.DeleteCatalogueRewardResponse:
        return await self.units.idempotent(
            request,
            app_catalogue.delete_reward,
            _reward_id(request.reward_id),
            lambda _: api.DeleteCatalogueRewardResponse(),
        )

    async def ReserveCatalogueReward(self, request, context) -> api.ReserveCatalogueRewardResponse:
        command = app_catalogue.Reserve(
            _redemption_id(request.redemption_id), _reward_id(request.reward_id), request.customer_id
        )
        return await self.units.idempotent(
            request,
            app_catalogue.reserve,
            command,
            lambda r: api.ReserveCatalogueRewardResponse(redemption=r),
        )

    async def IssueCatalogueReward(self, request, context) -> api.IssueCatalogueRewardResponse:
        command = app_catalogue.Issue(_redemption_id(request.redemption_id), request.entry_id)
        return await self.units.idempotent(
            request, app_catalogue.issue, command, lambda r: api.IssueCatalogueRewardResponse(redemption=r)
        )

    async def CancelCatalogueReward(self, request, context) -> api.CancelCatalogueRewardResponse:
        return await self.units.idempotent(
            request,
            app_catalogue.cancel,
            _redemption_id(request.redemption_id),
            lambda r: api.CancelCatalogueRewardResponse(redemption=r),
        )
