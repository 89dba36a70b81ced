"""Customer data hooks, the cache under a Redis outage, profile's customer.created, and concurrent
records for one customer."""

import asyncio
from datetime import timedelta

from redis.asyncio import Redis

from loyalty.common.v1 import customer_data_pb2, customer_data_pb2_grpc
from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty.segmentation.v1 import condition_pb2 as c, segmentation_service_pb2 as api
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_segmentation import app
from loyalty_segmentation.cache import MembershipCache
from tests.service.segmentation.conftest import START
from tests.service.segmentation.helpers import metric, negation

NOW = START
COUNT = c.CUSTOMER_METRIC_PURCHASE_COUNT
GTE = c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS


async def in_tenant(segmentation, tenant: str, handler, *args, at=None):
    """Run an event handler the way the consumer does: one unit of work of the event's tenant (`at`:
    the event's time)."""
    token = bind_call(CallContext(tenant_id=tenant, principal="test-consumer", event_time=at))
    try:
        async with segmentation.server.resources.units.change() as uow:
            await handler(uow, *args)
    finally:
        unbind_call(token)


async def test_a_merge_moves_history_to_the_survivor_and_erasure_forgets_it(segmentation, tenant):
    two = await tenant.rule_segment(metric(COUNT, GTE, 2))
    await tenant.purchase("survivor", NOW, 100)
    await tenant.purchase("duplicate", NOW, 100)
    assert await tenant.members(two.segment_id) == set()
    await in_tenant(segmentation, tenant.tenant, app.merge_customers, "survivor", "duplicate")
    assert await tenant.members(two.segment_id) == {"survivor"}

    stub = customer_data_pb2_grpc.CustomerDataServiceStub(segmentation.channel)
    export = await stub.ExportCustomerData(
        customer_data_pb2.ExportCustomerDataRequest(customer_id="survivor"), metadata=tenant.md
    )
    assert len(export.records) == 3  # metrics, the attribute copy and one membership

    await in_tenant(segmentation, tenant.tenant, app.erase_customer, "survivor")
    assert await tenant.members(two.segment_id) == set()
    metrics = (await tenant.GetCustomerMetrics(api.GetCustomerMetricsRequest(customer_id="survivor"))).metrics
    assert list(metrics.windows) == []
    assert (
        await tenant.GetSegment(api.GetSegmentRequest(segment_id=two.segment_id))
    ).segment.member_count == 0


async def test_a_created_customer_joins_never_purchased_segments(segmentation, tenant):
    never = await tenant.rule_segment(negation(metric(COUNT, GTE, 1)))
    event = profile_events.CustomerCreated(customer_id="fresh")
    await in_tenant(segmentation, tenant.tenant, app.customer_created, event)
    assert await tenant.members(never.segment_id) == {"fresh"}


async def test_list_customer_segments_falls_back_to_postgresql_when_redis_is_down(segmentation, tenant):
    segment = await tenant.rule_segment(metric(COUNT, GTE, 1))
    await tenant.purchase("cara", NOW - timedelta(days=1), 100)
    servicer_cache = MembershipCache(None)  # what the servicer has when every Redis call fails
    assert await servicer_cache.get(tenant.tenant, "cara") is None
    # A real outage: a cache pointed at a port nobody listens on.
    down = MembershipCache(Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2))
    assert await down.get(tenant.tenant, "cara") is None
    await down.forget(tenant.tenant, ["cara"])  # logs, never raises
    response = await tenant.ListCustomerSegments(api.ListCustomerSegmentsRequest(customer_id="cara"))
    assert [m.segment_id for m in response.memberships] == [segment.segment_id]
    assert response.lifetime_purchase_count == 1


async def test_concurrent_records_for_one_customer_leave_the_right_membership(tenant):
    five = await tenant.rule_segment(metric(COUNT, c.COMPARISON_OPERATOR_EQUALS, 5))
    await asyncio.gather(*(tenant.purchase("busy", NOW, 10, purchase_key=f"k{i % 5}") for i in range(15)))
    assert await tenant.members(five.segment_id) == {"busy"}
    segment = (await tenant.GetSegment(api.GetSegmentRequest(segment_id=five.segment_id))).segment
    assert segment.member_count == 1


async def test_concurrent_records_of_many_customers_count_every_member(tenant):
    buyers = await tenant.rule_segment(metric(COUNT, GTE, 1))
    customers = [f"buyer-{i}" for i in range(20)]
    await asyncio.gather(*(tenant.purchase(customer, NOW, 10) for customer in customers))
    assert await tenant.members(buyers.segment_id) == set(customers)
    segment = (await tenant.GetSegment(api.GetSegmentRequest(segment_id=buyers.segment_id))).segment
    assert segment.member_count == len(customers)
