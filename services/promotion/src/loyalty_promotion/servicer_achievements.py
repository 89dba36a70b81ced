"""The achievement RPCs of PromotionService (protobuf <-> commands), mixed into PromotionServicer."""

from loyalty.promotion.v1 import promotion_service_pb2 as api
from loyalty_promotion import app_achievements
from loyalty_promotion.commands import ListAchievementProgress
from loyalty_promotion.servicer_triggers import _optional_uuid, _trigger_token
from loyalty_runtime import paging
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.uow import UnitsOfWork

PROGRESS_PAGE = (50, 500)
MAX_CUSTOMER_ID = 64


class AchievementRpcs:
    units: UnitsOfWork

    async def ListAchievementProgress(
        self, request: api.ListAchievementProgressRequest, context
    ) -> api.ListAchievementProgressResponse:
        if not 0 < len(request.customer_id) <= MAX_CUSTOMER_ID:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT,
                "a customer id of 1 to 64 characters is required",
                field="customer_id",
            )
        command = ListAchievementProgress(
            request.customer_id,
            _optional_uuid(request.campaign_id, "campaign_id", Reason.CAMPAIGN_NOT_FOUND),
            _trigger_token(request.page_token),
            paging.page_size(request.page_size, default=PROGRESS_PAGE[0], maximum=PROGRESS_PAGE[1]),
        )
        async with self.units.read() as uow:
            progress, last = await app_achievements.list_progress(uow, command)
        return api.ListAchievementProgressResponse(
            progress=progress, next_page_token=paging.encode_token(last) if last else ""
        )
