"""Behavioural metrics fed by other services' events, XADDed to the real streams as their outbox
relays publish them and handled by the running server's consumers: purchases, returns, activities
and codes redeemed, each once whether delivered twice or also recorded through the RPCs."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from redis.asyncio import Redis

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.notification.v1 import events_pb2 as notification_events
from loyalty.promotion.v1 import events_pb2 as promotion_events
from loyalty.segmentation.v1 import condition_pb2 as c, segmentation_service_pb2 as api
from loyalty_runtime.errors import bad_request
from loyalty_runtime.events import Envelope
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import event_type_of
from loyalty_segmentation import app
from tests.service.segmentation.conftest import START
from tests.service.segmentation.helpers import all_of, key, metric
from tests.service.segmentation.test_segmentation_edges import in_tenant
from tests.service.segmentation.test_segmentation_service import details

NOW = START
GTE, EQ = c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS, c.COMPARISON_OPERATOR_EQUALS
LIFE, DAYS_30 = c.METRIC_WINDOW_LIFETIME, c.METRIC_WINDOW_LAST_30_DAYS
CATEGORIES, CODES = c.CUSTOMER_METRIC_CATEGORY_COUNT, c.CUSTOMER_METRIC_CODES_REDEEMED_COUNT
GATEWAY, PROMOTION, NOTIFICATION = "gateway.events", "promotion.events", "notification.events"


def eur(amount: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", amount_minor=amount)


async def publish(redis_url: str, stream: str, tenant: str, event, *, event_id: str = "", at=None) -> str:
    """An event on `stream` as another service's outbox relay puts it there."""
    envelope = Envelope(
        event_id=event_id or f"test:{uuid.uuid4()}",
        event_type=event_type_of(event.DESCRIPTOR),
        tenant_id=tenant,
        key=getattr(event, "customer_id", ""),
        payload=event.SerializeToString(),
        occurred_at=at or datetime.now(UTC),
        trace_parent=None,
    )
    redis = Redis.from_url(redis_url)
    try:
        await redis.xadd(stream, envelope.to_fields())
    finally:
        await redis.aclose()
    return envelope.event_id


async def handled(db, *event_ids: str) -> None:
    """Wait until segmentation's consumer has handled (or skipped as seen) every one of these."""
    async with asyncio.timeout(15):
        while True:
            done = await db.fetchval(
                "SELECT count(*) FROM segmentation.processed_events WHERE event_id = ANY($1::varchar[])",
                list(event_ids),
            )
            if done == len(set(event_ids)):
                return
            await asyncio.sleep(0.05)


async def eventually(check) -> None:
    """Membership changes commit with the event; the cached answers are dropped by a job after it."""
    async with asyncio.timeout(10):
        while not await check():
            await asyncio.sleep(0.05)


def line(line_id: str, *categories: str) -> basket_pb2.LineItem:
    return basket_pb2.LineItem(line_id=line_id, sku=line_id, categories=categories, quantity=1)


def purchase(
    customer: str, checkout: str, total: int, at: datetime, *lines
) -> gateway_events.PurchaseCommitted:
    return gateway_events.PurchaseCommitted(
        checkout_id=checkout,
        customer_id=customer,
        store_id="s1",
        net_total=eur(total),
        basket=basket_pb2.Basket(currency_code="EUR", lines=lines),
        codes=["SPRING"],
        purchase_time=timestamp(at),
    )


async def metrics_of(tenant, customer: str):
    response = await tenant.GetCustomerMetrics(api.GetCustomerMetricsRequest(customer_id=customer))
    return response.metrics, {w.window: w for w in response.metrics.windows}


async def test_a_purchase_event_delivered_twice_counts_once_at_its_purchase_time(
    segmentation, tenant, other_tenant, redis_url, db
):
    varied = await tenant.rule_segment(metric(CATEGORIES, GTE, 3))
    vip = await tenant.rule_segment(metric(c.CUSTOMER_METRIC_PURCHASE_SPEND, GTE, ("EUR", 5000)))
    assert await tenant.segments_of("pia") == set()  # cached: the event's change must drop it
    bought_at = NOW - timedelta(days=10)
    event = purchase(
        "pia",
        "co-1",
        6000,
        bought_at,
        line("l1", "dairy/cheese", "dairy"),
        line("l2", "dairy/milk", "dairy"),  # the same most general category: dairy once
        line("l3", "bakery"),
        line("l4"),  # no category
    )
    first = await publish(redis_url, GATEWAY, tenant.tenant, event, event_id="gw-1")
    again = await publish(redis_url, GATEWAY, tenant.tenant, event, event_id="gw-1")  # redelivered
    republished = await publish(redis_url, GATEWAY, tenant.tenant, event)  # a new id, the same checkout
    await handled(db, first, again, republished)
    _, windows = await metrics_of(tenant, "pia")
    life = windows[LIFE]
    assert (life.purchase_count, life.spend.amount_minor, life.category_count) == (1, 6000, 2)
    assert await tenant.members(varied.segment_id) == set()  # dairy, bakery: two categories
    assert await tenant.members(vip.segment_id) == {"pia"}

    more = purchase("pia", "co-2", 100, NOW - timedelta(days=40), line("l1", "produce"))
    await handled(db, await publish(redis_url, GATEWAY, tenant.tenant, more))
    metrics, windows = await metrics_of(tenant, "pia")
    assert metrics.last_purchase_time == timestamp(bought_at)  # the purchase's time, not now
    assert metrics.first_purchase_time == timestamp(NOW - timedelta(days=40))
    assert (windows[LIFE].category_count, windows[DAYS_30].category_count) == (3, 2)
    assert windows[LIFE].purchase_count == 2
    assert await tenant.members(varied.segment_id) == {"pia"}
    await eventually(lambda: _is(tenant.segments_of("pia"), {varied.segment_id, vip.segment_id}))
    # The RPC given the same checkout id records nothing more.
    assert not await tenant.purchase("pia", NOW, 999, purchase_key="co-1")
    _, windows = await metrics_of(tenant, "pia")
    assert windows[LIFE].spend.amount_minor == 6100
    # Another tenant's pia, and an anonymous checkout, are untouched.
    anonymous = purchase("", "co-3", 100, NOW, line("l1", "garden"))
    await handled(db, await publish(redis_url, GATEWAY, tenant.tenant, anonymous))
    assert (await metrics_of(other_tenant, "pia"))[1] == {}
    # The bulk path agrees with what the events built incrementally.
    assert await tenant.members(
        (await tenant.change_rule(varied, metric(CATEGORIES, GTE, 3))).segment_id
    ) == {"pia"}


async def _is(answer, expected) -> bool:
    return await answer == expected


async def test_a_purchase_recorded_by_rpc_first_is_not_counted_again_by_its_event(tenant, redis_url, db):
    assert await tenant.purchase("rob", NOW - timedelta(days=1), 700, purchase_key="co-rpc")
    event = purchase("rob", "co-rpc", 700, NOW - timedelta(days=1), line("l1", "toys"))
    await handled(db, await publish(redis_url, GATEWAY, tenant.tenant, event))
    _, windows = await metrics_of(tenant, "rob")
    assert (windows[LIFE].purchase_count, windows[LIFE].spend.amount_minor) == (1, 700)


async def test_a_return_event_reduces_spend_once_and_the_customer_leaves_vip(tenant, redis_url, db):
    vip = await tenant.rule_segment(metric(c.CUSTOMER_METRIC_PURCHASE_SPEND, GTE, ("EUR", 5000)))
    bought = purchase("ria", "co-r", 6000, NOW - timedelta(days=5), line("l1", "shoes"))
    await handled(db, await publish(redis_url, GATEWAY, tenant.tenant, bought))
    assert await tenant.members(vip.segment_id) == {"ria"}
    returned = gateway_events.CheckoutReturned(
        checkout_id="co-r",
        return_id="ret-1",
        customer_id="ria",
        refunded_total=eur(1500),
        return_time=timestamp(NOW - timedelta(days=2)),
    )
    ids = [await publish(redis_url, GATEWAY, tenant.tenant, returned) for _ in range(2)]  # twice
    await handled(db, *ids)
    _, windows = await metrics_of(tenant, "ria")
    assert (windows[LIFE].spend.amount_minor, windows[LIFE].return_count) == (4500, 1)
    assert windows[LIFE].purchase_count == 1  # a return takes no purchase away
    assert await tenant.members(vip.segment_id) == set()
    # The RPC given the same return id records nothing more.
    assert not await tenant.refund("ria", NOW, 1500, return_key="ret-1")
    assert (await metrics_of(tenant, "ria"))[1][LIFE].spend.amount_minor == 4500


async def test_opened_an_offer_but_never_redeemed_a_code(segmentation, tenant, redis_url, db):
    opened = metric(c.CUSTOMER_METRIC_ACTIVITY_COUNT, GTE, 1, window=LIFE)
    opened.metric.activity_type = "notification.opened"
    hesitant = await tenant.rule_segment(all_of(opened, metric(CODES, EQ, 0)))
    reviewer = metric(c.CUSTOMER_METRIC_ACTIVITY_COUNT, GTE, 1, window=DAYS_30)
    reviewer.metric.activity_type = "review.written"
    reviewers = await tenant.rule_segment(reviewer)

    seen = await publish(
        redis_url,
        NOTIFICATION,
        tenant.tenant,
        notification_events.NotificationOpened(message_id="m1", customer_id="ola"),
        at=NOW,
    )
    review = gateway_events.ActivityRecorded(
        event_id="act-1", customer_id="ola", activity_type="review.written", occur_time=timestamp(NOW)
    )
    reviewed = [await publish(redis_url, GATEWAY, tenant.tenant, review) for _ in range(2)]
    too_long = gateway_events.ActivityRecorded(
        event_id="act-2", customer_id="ola", activity_type="x" * 101, occur_time=timestamp(NOW)
    )
    dropped = await publish(redis_url, GATEWAY, tenant.tenant, too_long)
    await handled(db, seen, *reviewed, dropped)
    assert await tenant.members(hesitant.segment_id) == {"ola"}
    assert await tenant.members(reviewers.segment_id) == {"ola"}
    _, windows = await metrics_of(tenant, "ola")
    assert dict(windows[LIFE].activity_counts) == {"notification.opened": 1, "review.written": 1}

    automatic = promotion_events.RedemptionSummary(redemption_id="rd-0", campaign_id="auto", discount=eur(50))
    coded = promotion_events.RedemptionSummary(redemption_id="rd-1", campaign_id="spring", voucher_id="v-1")
    committed = promotion_events.RedemptionsCommitted(
        checkout_id="co-o", customer_id="ola", redemptions=[automatic]
    )
    await handled(db, await publish(redis_url, PROMOTION, tenant.tenant, committed, at=NOW))
    assert await tenant.members(hesitant.segment_id) == {"ola"}  # no code: still hesitant
    committed.redemptions.append(coded)
    twice = [await publish(redis_url, PROMOTION, tenant.tenant, committed, at=NOW) for _ in range(2)]
    await handled(db, *twice)
    _, windows = await metrics_of(tenant, "ola")
    assert (windows[LIFE].codes_redeemed_count, windows[DAYS_30].codes_redeemed_count) == (1, 1)
    assert await tenant.members(hesitant.segment_id) == set()
    await eventually(lambda: _is(tenant.segments_of("ola"), {reviewers.segment_id}))


@pytest.mark.parametrize("metric_name", [CATEGORIES, CODES])
async def test_the_new_counts_take_whole_numbers_and_a_window(tenant, metric_name):
    for rule, field in (
        (metric(metric_name, GTE, ("EUR", 3)), "segment.rule.metric.value"),
        (metric(metric_name, GTE, 3, window=c.METRIC_WINDOW_UNSPECIFIED), "segment.rule.metric.window"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await tenant.rule_segment(rule, name=key())
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in bad_request(details(raised.value)).field_violations] == [field]


async def test_a_released_code_no_longer_counts_whichever_arrives_first(tenant, redis_url, db):
    redeemed = metric(CODES, GTE, 1)
    redeemers = await tenant.rule_segment(redeemed)
    coded = promotion_events.RedemptionSummary(redemption_id="rd-9", campaign_id="spring", voucher_id="v-9")
    committed = promotion_events.RedemptionsCommitted(
        checkout_id="co-9", customer_id="uma", redemptions=[coded]
    )
    released = promotion_events.RedemptionsReleased(
        checkout_id="co-9", customer_id="uma", redemptions=[coded]
    )
    await handled(db, await publish(redis_url, PROMOTION, tenant.tenant, committed, at=NOW))
    assert await tenant.members(redeemers.segment_id) == {"uma"}
    await handled(db, await publish(redis_url, PROMOTION, tenant.tenant, released, at=NOW))
    assert await tenant.members(redeemers.segment_id) == set()
    # The commit delivered again after its release counts nothing.
    await handled(db, await publish(redis_url, PROMOTION, tenant.tenant, committed, at=NOW))
    assert (await metrics_of(tenant, "uma"))[1][LIFE].codes_redeemed_count == 0
    assert await tenant.members(redeemers.segment_id) == set()
    # Released before its commit arrives (another checkout): never counted.
    early = promotion_events.RedemptionSummary(redemption_id="rd-10", voucher_id="v-10")
    first = await publish(
        redis_url,
        PROMOTION,
        tenant.tenant,
        promotion_events.RedemptionsReleased(checkout_id="co-10", customer_id="uma", redemptions=[early]),
        at=NOW,
    )
    await handled(db, first)
    late = promotion_events.RedemptionsCommitted(checkout_id="co-10", customer_id="uma", redemptions=[early])
    await handled(db, await publish(redis_url, PROMOTION, tenant.tenant, late, at=NOW))
    assert (await metrics_of(tenant, "uma"))[1][LIFE].codes_redeemed_count == 0


async def test_the_rpc_and_the_event_racing_on_one_checkout_count_it_once(tenant, redis_url, db):
    """Three RecordPurchase calls and two deliveries of purchase.committed (distinct event ids) of
    one checkout, at once, against the real database: one purchase."""
    event = purchase("zoe", "co-race", 800, NOW - timedelta(days=1), line("l1", "toys"))
    published, recorded = await asyncio.gather(
        asyncio.gather(*(publish(redis_url, GATEWAY, tenant.tenant, event) for _ in range(2))),
        asyncio.gather(*(tenant.purchase("zoe", NOW - timedelta(days=1), 800, "co-race") for _ in range(3))),
    )
    await handled(db, *published)
    assert sum(recorded) <= 1
    _, windows = await metrics_of(tenant, "zoe")
    assert (windows[LIFE].purchase_count, windows[LIFE].spend.amount_minor) == (1, 800)
    assert windows[LIFE].category_count in (0, 1)  # 1 when the event won the race (the RPC sent no basket)
    rows = await db.fetchval(
        "SELECT count(*) FROM segmentation.purchases WHERE tenant_id = $1 AND purchase_key = 'co-race'",
        tenant.tenant,
    )
    assert rows == 1


async def test_a_merge_moves_categories_and_codes_and_erasure_forgets_them(segmentation, tenant, db):
    varied = await tenant.rule_segment(all_of(metric(CATEGORIES, GTE, 2), metric(CODES, GTE, 1)))
    await tenant.purchase("sur", NOW, 100, categories=["dairy"])
    await tenant.purchase("dup", NOW, 100, categories=["bakery"])
    coded = promotion_events.RedemptionSummary(redemption_id="rd-m", voucher_id="v-m")
    event = promotion_events.RedemptionsCommitted(checkout_id="co-m", customer_id="dup", redemptions=[coded])
    await in_tenant(segmentation, tenant.tenant, app.redemptions_committed, event, at=NOW)
    assert await tenant.members(varied.segment_id) == set()
    await in_tenant(segmentation, tenant.tenant, app.merge_customers, "sur", "dup")
    assert await tenant.members(varied.segment_id) == {"sur"}
    _, windows = await metrics_of(tenant, "sur")
    assert (windows[LIFE].category_count, windows[LIFE].codes_redeemed_count) == (2, 1)

    await in_tenant(segmentation, tenant.tenant, app.erase_customer, "sur")
    assert await tenant.members(varied.segment_id) == set()
    for table in ("purchase_categories", "code_redemptions"):
        left = await db.fetchval(
            f"SELECT count(*) FROM segmentation.{table} WHERE tenant_id = $1", tenant.tenant
        )
        assert left == 0, table
