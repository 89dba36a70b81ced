"""The tenant's time zone through the real server: its settings, and calendar rules at the edges of
a day there (a purchase at 23:30 local on the boundary day, an age turning at local midnight), in
bulk after the zone changes and incrementally after a record."""

from datetime import UTC, date, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2

from loyalty.segmentation.v1 import condition_pb2 as c, segmentation_service_pb2 as api, settings_pb2
from loyalty_runtime.errors import bad_request, error_info
from tests.service.segmentation.conftest import START
from tests.service.segmentation.helpers import key, metric
from tests.service.segmentation.test_segmentation_attributes import attribute
from tests.service.segmentation.test_segmentation_service import details

GTE = c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS
# "No purchase in 90 days".
QUIET_90 = metric(c.CUSTOMER_METRIC_DAYS_SINCE_LAST_PURCHASE, GTE, 90)
# START is 08:00 on 30 June in New York (UTC-4): 1 April is 90 local days back, 2 April 89.
NEW_YORK = "America/New_York"
LATE_ON_THE_BOUNDARY_DAY = datetime(2030, 4, 2, 3, 30, tzinfo=UTC)  # 23:30 on 1 April in New York
EARLY_THE_DAY_AFTER = datetime(2030, 4, 2, 4, 30, tzinfo=UTC)  # 00:30 on 2 April in New York


async def set_zone(tenant, zone: str, etag: str = ""):
    response = await tenant.UpdateSegmentationSettings(
        api.UpdateSegmentationSettingsRequest(
            idempotency_key=key(),
            settings=settings_pb2.SegmentationSettings(time_zone=zone, etag=etag),
            update_mask=field_mask_pb2.FieldMask(paths=["time_zone"]),
        )
    )
    return response.settings


async def test_settings_default_to_utc_and_refuse_an_unknown_zone_or_a_stale_etag(tenant, other_tenant):
    settings = (await tenant.GetSegmentationSettings(api.GetSegmentationSettingsRequest())).settings
    assert (settings.time_zone, settings.etag) == ("", "0")
    saved = await set_zone(tenant, NEW_YORK, etag="0")
    assert (saved.time_zone, saved.etag, saved.update_time.ToDatetime(tzinfo=UTC)) == (NEW_YORK, "1", START)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await set_zone(tenant, "Mars/Olympus_Mons")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in bad_request(details(raised.value)).field_violations] == ["settings.time_zone"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await set_zone(tenant, "Europe/Berlin", etag="0")
    assert error_info(details(raised.value)).reason == "CONCURRENT_MODIFICATION"
    kept = (await tenant.GetSegmentationSettings(api.GetSegmentationSettingsRequest())).settings
    assert (kept.time_zone, kept.etag) == (NEW_YORK, "1")
    foreign = (await other_tenant.GetSegmentationSettings(api.GetSegmentationSettingsRequest())).settings
    assert foreign.time_zone == ""


async def test_days_since_a_purchase_count_local_days_and_follow_a_new_zone_in_bulk(tenant):
    await tenant.purchase("late", LATE_ON_THE_BOUNDARY_DAY, 100)
    await tenant.purchase("early", EARLY_THE_DAY_AFTER, 100)
    quiet = await tenant.rule_segment(QUIET_90)
    # In UTC both bought on 2 April: 89 days ago.
    assert await tenant.members(quiet.segment_id) == set()
    await set_zone(tenant, NEW_YORK)
    assert await tenant.members((await tenant.ready(quiet.segment_id)).segment_id) == {"late"}
    estimate = await tenant.EstimateSegmentSize(api.EstimateSegmentSizeRequest(rule=QUIET_90, sample_size=5))
    assert list(estimate.sample_customer_ids) == ["late"]


async def test_a_record_is_judged_in_the_tenants_zone_incrementally(tenant):
    await set_zone(tenant, NEW_YORK)
    quiet = await tenant.rule_segment(QUIET_90)
    await tenant.purchase("late", LATE_ON_THE_BOUNDARY_DAY, 100)
    await tenant.purchase("early", EARLY_THE_DAY_AFTER, 100)
    assert await tenant.members(quiet.segment_id) == {"late"}
    # A day later in New York (at 00:00 there) the early one is 90 days quiet too.
    tenant.service.clock.now = datetime(2030, 7, 1, 4, tzinfo=UTC)
    try:
        await tenant.purchase("other", START - timedelta(days=400), 100)
        await tenant.purchase("early", EARLY_THE_DAY_AFTER, 100, purchase_key="again")
        assert await tenant.members(quiet.segment_id) == {"late", "early", "other"}
    finally:
        tenant.service.clock.now = START


async def test_an_age_turns_at_midnight_in_the_tenants_zone(tenant, db):
    # START is 00:00 on 1 July in Auckland (UTC+12): born 1 July 2000, 30 there, 29 in UTC.
    await tenant.purchase("born", START, 100)
    await db.execute(
        "UPDATE segmentation.customers SET birth_date = $3 WHERE tenant_id = $1 AND customer_id = $2",
        tenant.tenant,
        "born",
        date(2000, 7, 1),
    )
    thirty = await tenant.rule_segment(attribute("age", GTE, c.Value(int_value=30)))
    birthday = await tenant.rule_segment(
        attribute("birth_date", c.COMPARISON_OPERATOR_ANNIVERSARY_WITHIN_DAYS, c.Value(int_value=1))
    )
    assert await tenant.members(thirty.segment_id) == set()
    assert await tenant.members(birthday.segment_id) == set()
    await set_zone(tenant, "Pacific/Auckland")
    assert await tenant.members((await tenant.ready(thirty.segment_id)).segment_id) == {"born"}
    assert await tenant.members((await tenant.ready(birthday.segment_id)).segment_id) == {"born"}
