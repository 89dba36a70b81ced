"""The gateway is the one source of a tenant's settings: provisioning a tenant in Europe/Berlin
through the admin API makes segmentation's calendar rules and promotion's happy hours Berlin's, by
way of tenant.settings_changed (through the real gateway and services); an older version of the
event never overwrites a newer one; and the services' own time zone settings are then refused."""

import asyncio
import uuid
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import field_mask_pb2
from redis.asyncio import Redis

from loyalty.gateway.v1 import (
    admin_pb2,
    admin_service_pb2 as admin_api,
    checkout_service_pb2 as api,
    events_pb2,
)
from loyalty.promotion.v1 import (
    promotion_service_pb2 as promotion_api,
    promotion_service_pb2_grpc,
    schedule_pb2,
    settings_pb2 as promotion_settings,
)
from loyalty.segmentation.v1 import (
    condition_pb2 as c,
    segmentation_service_pb2 as segmentation_api,
    segmentation_service_pb2_grpc,
    settings_pb2 as segmentation_settings,
)
from loyalty_runtime.events import Envelope
from tests.conftest import rpc_failure
from tests.service.gateway.conftest import provision
from tests.service.gateway.test_gateway_checkout import basket, commit_request, enrol
from tests.service.promotion.helpers import Client as PromotionClient, percent_off
from tests.service.segmentation.helpers import Client as SegmentationClient, metric

BERLIN = "Europe/Berlin"
LISBON = "Europe/Lisbon"
QUIET_DAYS = 3


async def eventually(read, expected, seconds: float = 15.0):
    async with asyncio.timeout(seconds):
        while (value := await read()) != expected:
            await asyncio.sleep(0.05)
    return value


def clients(services, tenant_id: str):
    promotion = PromotionClient(
        services["promotion"],
        tenant_id,
        promotion_service_pb2_grpc.PromotionServiceStub(services["promotion"].channel),
    )
    segmentation = services["segmentation"]
    segmentation.stub = segmentation_service_pb2_grpc.SegmentationServiceStub(segmentation.channel)
    return SegmentationClient(segmentation, tenant_id), promotion


async def zones(segmentation, promotion) -> tuple[str, str]:
    seg = await segmentation.GetSegmentationSettings(segmentation_api.GetSegmentationSettingsRequest())
    promo = await promotion.stub.GetPromotionSettings(
        promotion_api.GetPromotionSettingsRequest(), metadata=promotion.metadata
    )
    return seg.settings.time_zone, promo.settings.time_zone


def berlin_window_around(now: datetime) -> schedule_pb2.RecurringWindow:
    """An hour around now in Berlin: it is not now in UTC (an hour behind Berlin in winter, two in
    summer)."""
    local = now.astimezone(ZoneInfo(BERLIN))
    minute = local.hour * 60 + local.minute
    return schedule_pb2.RecurringWindow(
        start_minute=(minute - 30) % 1440, end_minute=(minute + 30) % 1440 or 1440
    )


async def test_a_tenant_provisioned_in_berlin_keeps_berlin_time_in_segmentation_and_promotion(shop, services):
    tenant = await provision(shop, services, time_zone=BERLIN)
    segmentation, promotion = clients(services, tenant.tenant_id)
    assert await eventually(lambda: zones(segmentation, promotion), (BERLIN, BERLIN)) == (BERLIN, BERLIN)

    # Days since a purchase count Berlin's days: 23:30 on the boundary day there is QUIET_DAYS ago,
    # 00:30 the day after (still the boundary day in UTC) is not.
    boundary = datetime.now(UTC).astimezone(ZoneInfo(BERLIN)).date() - timedelta(days=QUIET_DAYS)
    late = datetime.combine(boundary, time(23, 30), ZoneInfo(BERLIN))
    early = datetime.combine(boundary + timedelta(days=1), time(0, 30), ZoneInfo(BERLIN))
    customers = {}
    for name, moment in (("late", late), ("early", early)):
        customers[name] = await enrol(shop, tenant)
        request = commit_request(uuid.uuid4().hex, customers[name], basket=basket(("milk", 1, 150)))
        request.purchase_time.FromDatetime(moment.astimezone(UTC))
        await shop.checkout.CommitCheckout(request, metadata=tenant.till_auth)
    quiet = await segmentation.rule_segment(
        metric(
            c.CUSTOMER_METRIC_DAYS_SINCE_LAST_PURCHASE,
            c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS,
            QUIET_DAYS,
        )
    )

    async def quiet_members():
        return await segmentation.members((await segmentation.ready(quiet.segment_id)).segment_id)

    assert await eventually(quiet_members, {customers["late"]}) == {customers["late"]}

    # A happy hour of the tenant's default zone (none of its own) is Berlin's hour.
    await promotion.live_campaign(
        percent_off(1000),
        display_name="Berlin happy hour",
        schedule=schedule_pb2.Schedule(recurring_windows=[berlin_window_around(datetime.now(UTC))]),
    )

    async def discount():
        preview = await shop.checkout.PreviewCheckout(
            api.PreviewCheckoutRequest(basket=basket(("milk", 2, 500))), metadata=tenant.till_auth
        )
        return preview.result.promotion_discount.amount_minor

    assert await eventually(discount, 100) == 100


async def test_a_change_follows_an_older_event_does_not_and_the_services_own_zone_is_refused(
    shop, services, shop_redis_url
):
    tenant = await provision(shop, services, time_zone=BERLIN)
    segmentation, promotion = clients(services, tenant.tenant_id)
    await eventually(lambda: zones(segmentation, promotion), (BERLIN, BERLIN))
    await shop.admin.UpdateTenantSettings(
        admin_api.UpdateTenantSettingsRequest(
            idempotency_key=uuid.uuid4().hex,
            settings={"default_program_id": tenant.program_id, "currency_code": "EUR", "time_zone": LISBON},
        ),
        metadata=tenant.auth,
    )
    await eventually(lambda: zones(segmentation, promotion), (LISBON, LISBON))

    # Version 1 (Berlin) delivered again, late, under a new id: both keep version 2 (Lisbon).
    stale = events_pb2.TenantSettingsChanged(settings=admin_pb2.TenantSettings(time_zone=BERLIN), version=1)
    redis = Redis.from_url(shop_redis_url)
    try:
        envelope = Envelope(
            event_id=f"gateway.events:stale-{uuid.uuid4().hex}",
            event_type="tenant.settings_changed",
            tenant_id=tenant.tenant_id,
            key=tenant.tenant_id,
            payload=stale.SerializeToString(),
            occurred_at=datetime.now(UTC),
            trace_parent=None,
        )
        await redis.xadd("gateway.events", envelope.to_fields())
    finally:
        await redis.aclose()
    # A marker after it: once the marker's purchase is counted, the stale event was handled too.
    customer = await enrol(shop, tenant)
    await shop.checkout.CommitCheckout(commit_request(uuid.uuid4().hex, customer), metadata=tenant.till_auth)

    async def counted():
        metrics = await segmentation.GetCustomerMetrics(
            segmentation_api.GetCustomerMetricsRequest(customer_id=customer)
        )
        return metrics.metrics.HasField("last_purchase_time")

    await eventually(counted, True)
    assert await zones(segmentation, promotion) == (LISBON, LISBON)

    failure = await rpc_failure(
        segmentation.UpdateSegmentationSettings(
            segmentation_api.UpdateSegmentationSettingsRequest(
                idempotency_key=uuid.uuid4().hex,
                settings=segmentation_settings.SegmentationSettings(time_zone=BERLIN),
                update_mask=field_mask_pb2.FieldMask(paths=["time_zone"]),
            )
        )
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TENANT_SETTING_FROM_GATEWAY",
    )
    failure = await rpc_failure(
        promotion.stub.UpdatePromotionSettings(
            promotion_api.UpdatePromotionSettingsRequest(
                idempotency_key=uuid.uuid4().hex,
                settings=promotion_settings.PromotionSettings(time_zone=BERLIN),
                update_mask=field_mask_pb2.FieldMask(paths=["time_zone"]),
            ),
            metadata=promotion.metadata,
        )
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TENANT_SETTING_FROM_GATEWAY",
    )
    # Promotion's own settings stay its own.
    kept = await promotion.stub.UpdatePromotionSettings(
        promotion_api.UpdatePromotionSettingsRequest(
            idempotency_key=uuid.uuid4().hex,
            settings=promotion_settings.PromotionSettings(max_codes_per_basket=2),
            update_mask=field_mask_pb2.FieldMask(paths=["max_codes_per_basket"]),
        ),
        metadata=promotion.metadata,
    )
    assert (kept.settings.time_zone, kept.settings.max_codes_per_basket) == (LISBON, 2)


@pytest.mark.parametrize(
    ("field", "value"), [("time_zone", "Mars/Olympus_Mons"), ("default_locale", "not a locale")]
)
async def test_settings_no_service_could_use_are_refused(shop, services, field, value):
    tenant = await provision(shop, services)
    settings = {"default_program_id": tenant.program_id, "currency_code": "EUR", field: value}
    failure = await rpc_failure(
        shop.admin.UpdateTenantSettings(
            admin_api.UpdateTenantSettingsRequest(idempotency_key=uuid.uuid4().hex, settings=settings),
            metadata=tenant.auth,
        )
    )
    assert (failure.code, failure.reason, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        [f"settings.{field}"],
    )
