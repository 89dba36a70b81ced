"""Create and update recompute membership in the background, as a chain of slice jobs (3 customers
a slice in the tests): progress is reported, each change is one event, a chain of a replaced rule
stops, and records arriving while a chain runs leave the right membership and count."""

import asyncio
import uuid
from datetime import timedelta

from loyalty.segmentation.v1 import (
    condition_pb2 as c,
    jobs_pb2,
    segment_pb2 as pb,
    segmentation_service_pb2 as api,
)
from loyalty_segmentation import app
from tests.service.segmentation.conftest import START
from tests.service.segmentation.helpers import key, metric
from tests.service.segmentation.test_segmentation_edges import in_tenant
from tests.service.segmentation.test_segmentation_service import events_of

NOW = START
SPEND, GTE = c.CUSTOMER_METRIC_PURCHASE_SPEND, c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS


async def test_a_new_segment_is_computed_in_the_background_slice_by_slice(tenant, redis_url):
    for i in range(10):
        await tenant.purchase(f"c{i:02}", NOW - timedelta(days=1), i * 100)
    created = await tenant.CreateSegment(
        api.CreateSegmentRequest(
            idempotency_key=key(),
            segment=pb.Segment(
                display_name="big", type=pb.SEGMENT_TYPE_RULE, rule=metric(SPEND, GTE, ("EUR", 500))
            ),
        )
    )
    assert created.segment.membership_status == pb.MEMBERSHIP_STATUS_COMPUTING
    assert created.segment.recompute_progress == pb.RecomputeProgress(
        processed_customers=0, total_customers=10
    )
    done = await tenant.ready(created.segment.segment_id)
    assert done.recompute_progress == pb.RecomputeProgress(processed_customers=10, total_customers=10)
    assert done.member_count == 5
    assert done.HasField("membership_refresh_time")
    assert await tenant.members(done.segment_id) == {f"c{i:02}" for i in range(5, 10)}
    events = await events_of(redis_url, tenant.tenant, 5)
    assert sorted(events) == sorted(("segment.entered", done.segment_id, f"c{i:02}") for i in range(5, 10))


async def test_a_chain_of_a_replaced_rule_stops(segmentation, tenant):
    segment = await tenant.rule_segment(metric(SPEND, GTE, ("EUR", 1)))
    await tenant.purchase("late", NOW, 100)  # member now, incrementally
    changed = await tenant.change_rule(segment, metric(SPEND, GTE, ("EUR", 1000)))
    assert changed.member_count == 0
    # A slice job still queued for the first rule finds a newer version and changes nothing.
    stale = jobs_pb2.RecomputeSegmentJob(segment_id=segment.segment_id, rule_version=1)
    await in_tenant(
        segmentation, tenant.tenant, lambda uow: app.recompute_slice(uow, stale, app.Changed(), app.Tuning())
    )
    again = await tenant.ready(segment.segment_id)
    assert (again.member_count, await tenant.members(segment.segment_id)) == (0, set())
    assert again.recompute_progress == changed.recompute_progress  # it did not even count a slice
    # Nor does a job of an unknown segment id, or of a deleted segment.
    unknown = jobs_pb2.RecomputeSegmentJob(segment_id=str(uuid.uuid4()), rule_version=1)
    await in_tenant(
        segmentation,
        tenant.tenant,
        lambda uow: app.recompute_slice(uow, unknown, app.Changed(), app.Tuning()),
    )


async def test_records_while_a_chain_runs_leave_the_right_membership_and_count(tenant):
    for i in range(12):
        await tenant.purchase(f"p{i:02}", NOW - timedelta(days=3), 100)
    rule = metric(SPEND, GTE, ("EUR", 200))
    create = tenant.CreateSegment(
        api.CreateSegmentRequest(
            idempotency_key=key(),
            segment=pb.Segment(display_name="race", type=pb.SEGMENT_TYPE_RULE, rule=rule),
        )
    )
    # Every even customer crosses 200.00 while the segment is being computed.
    created, *_ = await asyncio.gather(
        create, *(tenant.purchase(f"p{i:02}", NOW, 100) for i in range(0, 12, 2))
    )
    done = await tenant.ready(created.segment.segment_id)
    members = await tenant.members(done.segment_id)
    assert members == {f"p{i:02}" for i in range(0, 12, 2)}
    assert done.member_count == len(members)


async def test_deleting_a_segment_while_it_computes_ends_the_computation(tenant):
    for i in range(9):
        await tenant.purchase(f"d{i}", NOW, 100)
    created = await tenant.CreateSegment(
        api.CreateSegmentRequest(
            idempotency_key=key(),
            segment=pb.Segment(
                display_name="gone", type=pb.SEGMENT_TYPE_RULE, rule=metric(SPEND, GTE, ("EUR", 1))
            ),
        )
    )
    deleted = await tenant.DeleteSegment(
        api.DeleteSegmentRequest(idempotency_key=key(), segment_id=created.segment.segment_id)
    )
    assert deleted.segment.membership_status == pb.MEMBERSHIP_STATUS_READY
    await asyncio.sleep(0.5)  # any slice job left runs and finds the segment deleted
    segment = (await tenant.GetSegment(api.GetSegmentRequest(segment_id=created.segment.segment_id))).segment
    assert (segment.state, segment.member_count) == (pb.SEGMENT_STATE_DELETED, 0)
    assert await tenant.members(segment.segment_id) == set()


async def test_the_refresh_restarts_a_chain_whose_job_died(segmentation, tenant, db):
    for i in range(5):
        await tenant.purchase(f"r{i}", NOW, 100 * i)
    segment = await tenant.rule_segment(metric(SPEND, GTE, ("EUR", 300)))
    # A chain that died after one slice: computing for ever, its next job gone.
    await db.execute(
        "UPDATE segmentation.segments SET computing = true, recompute_done = 3 WHERE tenant_id = $1",
        tenant.tenant,
    )
    await db.execute("DELETE FROM segmentation.segment_members WHERE tenant_id = $1", tenant.tenant)
    await in_tenant(segmentation, tenant.tenant, app.recompute_all)  # what the hourly refresh runs
    done = await tenant.ready(segment.segment_id)
    assert done.recompute_progress == pb.RecomputeProgress(processed_customers=5, total_customers=5)
    assert await tenant.members(segment.segment_id) == {"r3", "r4"}
