"""Segments over purchase metrics through the real server and database: windows and their edges,
returns, NOT over missing values, idempotent records, static lists, events, the cache, tenants."""

import asyncio
from datetime import timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import status_pb2
from redis.asyncio import Redis

from loyalty.segmentation.v1 import (
    condition_pb2 as c,
    events_pb2,
    segment_pb2 as pb,
    segmentation_service_pb2 as api,
)
from loyalty_runtime.errors import bad_request, error_info
from tests.service.segmentation.conftest import START
from tests.service.segmentation.helpers import all_of, key, metric, negation

NOW = START
COUNT, SPEND = c.CUSTOMER_METRIC_PURCHASE_COUNT, c.CUSTOMER_METRIC_PURCHASE_SPEND
GTE, EQ = c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS, c.COMPARISON_OPERATOR_EQUALS
VIP = metric(
    SPEND, c.COMPARISON_OPERATOR_GREATER_THAN, ("EUR", 5000_00), window=c.METRIC_WINDOW_LAST_365_DAYS
)
CHURN = all_of(metric(COUNT, GTE, 3), metric(COUNT, EQ, 0, window=c.METRIC_WINDOW_LAST_90_DAYS))


def details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for name, value in error.trailing_metadata():
        if name == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no status details")


KINDS = {"segment.entered": events_pb2.SegmentEntered, "segment.left": events_pb2.SegmentLeft}


async def events_of(redis_url: str, tenant: str, count: int) -> list[tuple[str, str, str]]:
    """The tenant's events on segmentation.events as (type, segment, customer), once `count` of
    them are there (the relay publishes in batches), then a moment more to catch any extra."""
    redis = Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(10):
            while True:
                found = [
                    (fields[b"type"].decode(), fields[b"payload"])
                    for _, fields in await redis.xrange("segmentation.events")
                    if fields[b"tenant"].decode() == tenant
                ]
                if len(found) >= count:
                    break
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    decoded = [(kind, KINDS[kind].FromString(payload)) for kind, payload in found]
    return [(kind, e.segment_id, e.customer_id) for kind, e in decoded]


async def test_a_rule_segment_follows_spend_in_its_window_and_returns_reduce_it(tenant, redis_url):
    vip = await tenant.rule_segment(VIP)
    assert await tenant.purchase("ann", NOW - timedelta(days=10), 4000_00)
    assert await tenant.members(vip.segment_id) == set()
    assert await tenant.purchase("ann", NOW - timedelta(days=1), 2000_00)
    assert await tenant.members(vip.segment_id) == {"ann"}
    assert await tenant.segments_of("ann") == {vip.segment_id}
    assert await tenant.refund("ann", NOW, 1500_00)  # 6000 - 1500 = 4500: not VIP any more
    assert await tenant.members(vip.segment_id) == set()
    assert await tenant.segments_of("ann") == set()  # the cached answer was invalidated
    assert await events_of(redis_url, tenant.tenant, 2) == [
        ("segment.entered", vip.segment_id, "ann"),
        ("segment.left", vip.segment_id, "ann"),
    ]


async def test_the_window_edge_is_exclusive_of_its_first_instant(tenant):
    recent = await tenant.rule_segment(metric(COUNT, GTE, 1, window=c.METRIC_WINDOW_LAST_30_DAYS))
    await tenant.purchase("edge", NOW - timedelta(days=30), 100)
    await tenant.purchase("inside", NOW - timedelta(days=30) + timedelta(seconds=1), 100)
    await tenant.purchase("future", NOW + timedelta(seconds=1), 100)
    assert await tenant.members(recent.segment_id) == {"inside"}


async def test_churn_risk_and_not_over_a_customer_who_never_bought(tenant):
    churn = await tenant.rule_segment(CHURN)
    for days in (400, 200, 100):
        await tenant.purchase("lapsed", NOW - timedelta(days=days), 100)
    await tenant.purchase("active", NOW - timedelta(days=5), 100)
    # Days since the last purchase of someone who never bought has no value: the comparison is
    # false, so its NOT is true.
    recent_buyer = metric(c.CUSTOMER_METRIC_DAYS_SINCE_LAST_PURCHASE, c.COMPARISON_OPERATOR_LESS_THAN, 30)
    not_recent = await tenant.rule_segment(negation(recent_buyer))
    assert await tenant.members(churn.segment_id) == {"lapsed"}
    assert await tenant.members(not_recent.segment_id) == {"lapsed"}
    await tenant.refund("newcomer", NOW, 0)  # known, never bought
    assert await tenant.members(not_recent.segment_id) == {"lapsed", "newcomer"}


async def test_a_purchase_recorded_twice_counts_once(tenant):
    two = await tenant.rule_segment(metric(COUNT, GTE, 2))
    assert await tenant.purchase("bob", NOW, 100, purchase_key="checkout-1")
    assert not await tenant.purchase("bob", NOW, 100, purchase_key="checkout-1")
    assert await tenant.members(two.segment_id) == set()
    metrics = (await tenant.GetCustomerMetrics(api.GetCustomerMetricsRequest(customer_id="bob"))).metrics
    lifetime = next(w for w in metrics.windows if w.window == c.METRIC_WINDOW_LIFETIME)
    assert (lifetime.purchase_count, lifetime.spend.amount_minor) == (1, 100)


async def test_a_rule_change_recomputes_membership_in_bulk(tenant, redis_url):
    for customer, total in (("a", 100), ("b", 300), ("c", 500)):
        await tenant.purchase(customer, NOW - timedelta(days=2), total)
    segment = await tenant.rule_segment(metric(SPEND, GTE, ("EUR", 300)))
    assert await tenant.members(segment.segment_id) == {"b", "c"}
    assert segment.member_count == 2
    changed = pb.Segment(
        segment_id=segment.segment_id, rule=metric(SPEND, GTE, ("EUR", 100)), etag=segment.etag
    )
    response = await tenant.UpdateSegment(
        api.UpdateSegmentRequest(
            idempotency_key=key(), segment=changed, update_mask=field_mask_pb2.FieldMask(paths=["rule"])
        )
    )
    assert response.segment.membership_status == pb.MEMBERSHIP_STATUS_COMPUTING
    done = await tenant.ready(segment.segment_id)
    assert done.member_count == 3
    assert done.recompute_progress == pb.RecomputeProgress(processed_customers=3, total_customers=3)
    assert await tenant.members(segment.segment_id) == {"a", "b", "c"}
    assert sorted(await events_of(redis_url, tenant.tenant, 3)) == sorted(
        [("segment.entered", segment.segment_id, x) for x in ("a", "b", "c")]
    )


async def test_a_stale_etag_is_refused(tenant):
    segment = await tenant.rule_segment(metric(COUNT, GTE, 1))
    changed = pb.Segment(segment_id=segment.segment_id, display_name="renamed", etag="999")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await tenant.UpdateSegment(
            api.UpdateSegmentRequest(
                idempotency_key=key(),
                segment=changed,
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
    assert raised.value.code() == grpc.StatusCode.ABORTED


async def test_a_malformed_rule_is_refused_with_every_offending_field_and_nothing_saved(tenant):
    rule = all_of(
        metric(COUNT, c.COMPARISON_OPERATOR_CONTAINS, 3),
        metric(SPEND, GTE, 5),  # an int where money is needed
        c.Condition(attribute=c.AttributeCondition(attribute="city")),
        metric(c.CUSTOMER_METRIC_UNSPECIFIED, GTE, 1),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await tenant.rule_segment(rule, name="broken")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = details(raised.value)
    assert error_info(status).reason == "ATTRIBUTE_TYPE_MISMATCH"
    fields = [v.field for v in bad_request(status).field_violations]
    assert fields == [
        "segment.rule.all_of.conditions[0].metric.operator",
        "segment.rule.all_of.conditions[1].metric.value",
        "segment.rule.all_of.conditions[2].attribute.attribute",
        "segment.rule.all_of.conditions[3].metric.metric",
    ]
    listed = await tenant.ListSegments(api.ListSegmentsRequest())
    assert list(listed.segments) == []


async def test_create_is_idempotent_and_names_are_unique(tenant):
    request = api.CreateSegmentRequest(
        idempotency_key=key(), segment=pb.Segment(display_name="VIP", type=pb.SEGMENT_TYPE_RULE, rule=VIP)
    )
    first = await tenant.CreateSegment(request)
    assert (await tenant.CreateSegment(request)).segment.segment_id == first.segment.segment_id
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await tenant.rule_segment(VIP, name="VIP")
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_static_members_are_added_only_for_known_customers_and_removed(tenant, redis_url):
    await tenant.purchase("known", NOW, 100)
    segment = await tenant.static_segment()
    added = await tenant.AddSegmentMembers(
        api.AddSegmentMembersRequest(
            idempotency_key=key(), segment_id=segment.segment_id, customer_ids=["known", "ghost"]
        )
    )
    assert (added.added_count, list(added.unknown_customer_ids)) == (1, ["ghost"])
    assert await tenant.segments_of("known") == {segment.segment_id}
    removed = await tenant.RemoveSegmentMembers(
        api.RemoveSegmentMembersRequest(
            idempotency_key=key(), segment_id=segment.segment_id, customer_ids=["known"]
        )
    )
    assert removed.removed_count == 1
    assert await tenant.segments_of("known") == set()
    assert [e[0] for e in await events_of(redis_url, tenant.tenant, 2)] == ["segment.entered", "segment.left"]


async def test_a_rule_segment_refuses_explicit_members(tenant):
    segment = await tenant.rule_segment(VIP)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await tenant.AddSegmentMembers(
            api.AddSegmentMembersRequest(
                idempotency_key=key(), segment_id=segment.segment_id, customer_ids=["x"]
            )
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_delete_removes_every_member(tenant):
    segment = await tenant.rule_segment(metric(COUNT, GTE, 1))
    await tenant.purchase("dora", NOW, 100)
    deleted = await tenant.DeleteSegment(
        api.DeleteSegmentRequest(idempotency_key=key(), segment_id=segment.segment_id)
    )
    assert deleted.segment.state == pb.SEGMENT_STATE_DELETED
    assert await tenant.segments_of("dora") == set()
    await tenant.purchase("dora", NOW, 100)
    assert await tenant.members(segment.segment_id) == set()


async def test_estimate_counts_and_samples_without_saving(tenant):
    for customer, total in (("p", 100), ("q", 900), ("r", 1000)):
        await tenant.purchase(customer, NOW, total)
    estimate = await tenant.EstimateSegmentSize(
        api.EstimateSegmentSizeRequest(rule=metric(SPEND, GTE, ("EUR", 500)), sample_size=1)
    )
    assert (estimate.matching_count, estimate.total_customer_count) == (2, 3)
    assert list(estimate.sample_customer_ids) == ["q"]
    assert list((await tenant.ListSegments(api.ListSegmentsRequest())).segments) == []


async def test_tenants_never_see_each_other(tenant, other_tenant):
    segment = await tenant.rule_segment(metric(COUNT, GTE, 1))
    await other_tenant.purchase("same-id", NOW, 100)
    assert await tenant.members(segment.segment_id) == set()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await other_tenant.GetSegment(api.GetSegmentRequest(segment_id=segment.segment_id))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
