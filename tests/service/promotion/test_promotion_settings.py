"""The tenant's evaluation settings: defaults until set, masked updates, refusals, and a time zone
that moves when a recurring window applies on every replica's next evaluation."""

from datetime import UTC, datetime

import grpc

from loyalty.promotion.v1 import promotion_service_pb2 as api, schedule_pb2, settings_pb2
from loyalty_runtime.protobuf import timestamp
from tests.conftest import rpc_failure
from tests.service.promotion.helpers import basket, key, percent_off


def _update(tenant, settings: settings_pb2.PromotionSettings, *paths: str):
    return tenant.stub.UpdatePromotionSettings(
        api.UpdatePromotionSettingsRequest(
            idempotency_key=key(), settings=settings, update_mask={"paths": list(paths)}
        ),
        metadata=tenant.metadata,
    )


async def test_settings_are_defaults_until_updated(tenant, other_tenant):
    read = await tenant.stub.GetPromotionSettings(api.GetPromotionSettingsRequest(), metadata=tenant.metadata)
    assert read.settings == settings_pb2.PromotionSettings(etag="0")
    updated = await _update(
        tenant, settings_pb2.PromotionSettings(time_zone="Europe/Berlin", max_codes_per_basket=9), "time_zone"
    )
    assert (updated.settings.time_zone, updated.settings.max_codes_per_basket, updated.settings.etag) == (
        "Europe/Berlin",
        0,
        "1",
    )
    other = await other_tenant.stub.GetPromotionSettings(
        api.GetPromotionSettingsRequest(), metadata=other_tenant.metadata
    )
    assert other.settings.time_zone == ""


async def test_settings_that_cannot_work_are_refused(tenant):
    failure = await rpc_failure(
        _update(
            tenant, settings_pb2.PromotionSettings(time_zone="Mars/Olympus", max_basket_discount_bps=20_000)
        )
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == ["settings.time_zone", "settings.max_basket_discount_bps"]
    failure = await rpc_failure(_update(tenant, settings_pb2.PromotionSettings(), "etag"))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    read = await tenant.stub.GetPromotionSettings(api.GetPromotionSettingsRequest(), metadata=tenant.metadata)
    assert read.settings.etag == "0"


async def test_a_recurring_window_follows_the_tenants_time_zone(tenant):
    # Fridays 17:00-19:00 local time; 2030-03-01 is a Friday, 16:30 UTC = 17:30 in Berlin (CET).
    happy_hour = schedule_pb2.Schedule(
        recurring_windows=[
            schedule_pb2.RecurringWindow(
                days=[schedule_pb2.DAY_OF_WEEK_FRIDAY], start_minute=1020, end_minute=1140
            )
        ]
    )
    await tenant.live_campaign(percent_off(1000), schedule=happy_hour)
    moment = timestamp(datetime(2030, 3, 1, 16, 30, tzinfo=UTC))
    request = api.EvaluateBasketRequest(basket=basket(("oil", 1, 1000)), evaluation_time=moment)

    async def discount() -> int:
        response = await tenant.stub.EvaluateBasket(request, metadata=tenant.metadata)
        return response.result.promotion_discount.amount_minor

    assert await discount() == 0  # 16:30 in UTC, the default zone
    await _update(tenant, settings_pb2.PromotionSettings(time_zone="Europe/Berlin"), "time_zone")
    assert await discount() == 100
