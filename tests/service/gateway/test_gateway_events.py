"""What the gateway publishes on `gateway.events` (through its outbox, once per change):
purchase.committed for a commit (not for its retries), checkout.returned for a return, and
activity.recorded for RecordEvent, whose reserved names are refused."""

import asyncio
import uuid

import grpc
import pytest
from redis.asyncio import Redis

from loyalty.gateway.v1 import checkout_service_pb2 as api, customer_service_pb2 as customer_api, events_pb2
from loyalty_runtime.events import Envelope
from tests.conftest import rpc_failure
from tests.service.gateway.conftest import provision
from tests.service.gateway.test_gateway_checkout import basket, commit_request, enrol


@pytest.fixture
async def tenant(shop, services):
    return await provision(shop, services)


async def published(
    redis_url: str, tenant_id: str, event_type: str, expected: int, seconds: float = 5.0
) -> list:
    redis = Redis.from_url(redis_url)
    try:
        for _ in range(int(seconds / 0.05)):
            entries = await redis.xrange("gateway.events")
            found = [
                e
                for e in (Envelope.from_fields(f) for _, f in entries)
                if e.tenant_id == tenant_id and e.event_type == event_type
            ]
            if len(found) >= expected:
                await asyncio.sleep(0.2)  # and no more than that
                entries = await redis.xrange("gateway.events")
                return [
                    e
                    for e in (Envelope.from_fields(f) for _, f in entries)
                    if e.tenant_id == tenant_id and e.event_type == event_type
                ]
            await asyncio.sleep(0.05)
        return found
    finally:
        await redis.aclose()


async def test_a_commit_publishes_one_purchase_and_a_return_one_return(shop, tenant, shop_redis_url):
    customer_id = await enrol(shop, tenant)
    checkout_id = uuid.uuid4().hex
    request = commit_request(checkout_id, customer_id, basket=basket(("milk", 2, 150)), receipt_number="R-9")
    for _ in range(2):
        await shop.checkout.CommitCheckout(request, metadata=tenant.till_auth)
    purchases = await published(shop_redis_url, tenant.tenant_id, "purchase.committed", 1)
    assert len(purchases) == 1
    purchase = events_pb2.PurchaseCommitted.FromString(purchases[0].payload)
    assert (purchase.checkout_id, purchase.customer_id, purchase.net_total.amount_minor) == (
        checkout_id,
        customer_id,
        300,
    )
    assert purchase.receipt_number == "R-9" and purchases[0].key == customer_id

    await shop.checkout.ReturnItems(
        api.ReturnItemsRequest(
            checkout_id=checkout_id, return_id="r1", lines=[{"line_id": "l0", "quantity": 1}]
        ),
        metadata=tenant.till_auth,
    )
    returns = await published(shop_redis_url, tenant.tenant_id, "checkout.returned", 1)
    assert len(returns) == 1
    assert events_pb2.CheckoutReturned.FromString(returns[0].payload).refunded_total.amount_minor == 150


async def test_record_event_publishes_once_and_refuses_reserved_names(shop, tenant, shop_redis_url):
    customer_id = await enrol(shop, tenant)
    request = customer_api.RecordEventRequest(
        idempotency_key=uuid.uuid4().hex,
        customer={"customer_id": customer_id},
        event_type="review.written",
        properties={"rating": {"int_value": 5}},
    )
    first = await shop.customers.RecordEvent(request, metadata=tenant.till_auth)
    again = await shop.customers.RecordEvent(request, metadata=tenant.till_auth)
    assert (first.duplicate, again.duplicate, again.event_id) == (False, True, first.event_id)
    activities = await published(shop_redis_url, tenant.tenant_id, "activity.recorded", 1)
    assert len(activities) == 1
    activity = events_pb2.ActivityRecorded.FromString(activities[0].payload)
    assert (activity.activity_type, activity.properties["rating"].int_value) == ("review.written", 5)

    for name, reason in (
        ("tier.changed", "RESERVED_EVENT_TYPE"),
        ("purchase.committed", "RESERVED_EVENT_TYPE"),
        ("Review", "INVALID_ARGUMENT"),
    ):
        bad = customer_api.RecordEventRequest(
            idempotency_key=uuid.uuid4().hex, customer={"customer_id": customer_id}, event_type=name
        )
        failure = await rpc_failure(shop.customers.RecordEvent(bad, metadata=tenant.till_auth))
        assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    unknown = customer_api.RecordEventRequest(
        idempotency_key=uuid.uuid4().hex,
        customer={"customer_id": str(uuid.uuid4())},
        event_type="review.written",
    )
    failure = await rpc_failure(shop.customers.RecordEvent(unknown, metadata=tenant.till_auth))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
