"""Reservations and redemptions through the real server and PostgreSQL: idempotent on the checkout
id, expiring by themselves, and limits and budgets that hold under a stampede (all callers released
at once with asyncio.gather, exact counts afterwards)."""

import asyncio
import uuid

import grpc
import pytest

from loyalty.common.v1 import errors_pb2 as err
from loyalty.promotion.v1 import (
    campaign_pb2,
    events_pb2,
    promotion_service_pb2 as api,
    promotion_service_pb2_grpc,
    redemption_pb2,
    voucher_pb2,
)
from loyalty_promotion.service import DEFINITION
from loyalty_runtime.testing import running_service
from tests.conftest import rpc_failure
from tests.service.promotion.helpers import Client, Codes, basket, eur, percent_off

CART = basket(("A", 1, 1000))
RESERVED, COMMITTED = redemption_pb2.RESERVATION_STATE_RESERVED, redemption_pb2.RESERVATION_STATE_COMMITTED
ROLLED_BACK, EXPIRED = redemption_pb2.RESERVATION_STATE_ROLLED_BACK, redemption_pb2.RESERVATION_STATE_EXPIRED


def checkout() -> str:
    return f"co-{uuid.uuid4().hex[:12]}"


async def retried(call):
    """A till's retry: the server sheds load past its in-flight bound (RESOURCE_EXHAUSTED, retry
    shortly), and every redemption call is idempotent on its checkout id."""
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            await asyncio.sleep(0.05)


@pytest.fixture
def codes(tenant) -> Codes:
    return Codes(tenant)


async def test_reserve_then_commit_counts_one_use_however_often_it_is_retried(codes):
    campaign = await codes.voucher_campaign()
    voucher = await codes.voucher(campaign.campaign_id, "SAVE10", max_redemptions=3)
    co = checkout()
    reserved = (await codes.reserve(co, CART, "save10", customer_id="c1")).reservation
    assert reserved.state == RESERVED and reserved.result.promotion_discount.amount_minor == 100
    assert [(r.voucher_id, r.code, r.discount.amount_minor) for r in reserved.redemptions] == [
        (voucher.voucher_id, "SAVE10", 100)
    ]
    assert (await codes.get_voucher(voucher_id=voucher.voucher_id)).reserved_count == 1
    again = (await codes.reserve(co, CART, "save10", customer_id="c1")).reservation
    assert again.redemptions[0].redemption_id == reserved.redemptions[0].redemption_id
    first = (await codes.commit(co)).reservation
    second = (await codes.commit(co)).reservation
    assert first.state == second.state == COMMITTED
    late = (await codes.reserve(co, CART, "save10", customer_id="c1")).reservation
    assert late.state == COMMITTED
    counted = await codes.get_voucher(voucher_id=voucher.voucher_id)
    assert (counted.redemption_count, counted.reserved_count) == (1, 0)
    reused = await rpc_failure(codes.reserve(co, basket(("B", 2, 500)), "save10", customer_id="c1"))
    assert (reused.code, reused.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    listed = await codes.stub.ListRedemptions(
        api.ListRedemptionsRequest(voucher_id=voucher.voucher_id), metadata=codes.metadata
    )
    assert [(r.checkout_id, r.state) for r in listed.redemptions] == [
        (co, redemption_pb2.REDEMPTION_STATE_COMMITTED)
    ]


async def test_rollback_gives_the_use_back_once_and_a_late_reserve_is_refused(codes):
    campaign = await codes.voucher_campaign()
    voucher = await codes.voucher(campaign.campaign_id, "BACK", max_redemptions=1)
    co = checkout()
    await codes.reserve(co, CART, "BACK")
    await codes.commit(co)
    assert (await codes.get_voucher(code="BACK")).state == voucher_pb2.VOUCHER_STATE_EXHAUSTED
    assert (await codes.rollback(co)).reservation.state == ROLLED_BACK
    assert (await codes.rollback(co)).reservation.state == ROLLED_BACK
    back = await codes.get_voucher(voucher_id=voucher.voucher_id)
    assert (back.redemption_count, back.reserved_count, back.state) == (
        0,
        0,
        voucher_pb2.VOUCHER_STATE_ACTIVE,
    )
    refused = await rpc_failure(codes.commit(co))
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_ROLLED_BACK")
    unknown = checkout()
    assert (await codes.rollback(unknown)).reservation.state == ROLLED_BACK
    late = await rpc_failure(codes.reserve(unknown, CART, "BACK"))
    assert (late.code, late.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_ROLLED_BACK")
    missing = await rpc_failure(codes.commit(checkout()))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "RESERVATION_NOT_FOUND")
    assert (await codes.get_voucher(voucher_id=voucher.voucher_id)).reserved_count == 0


async def test_200_checkouts_race_for_50_uses_and_exactly_50_commit(codes):
    campaign = await codes.voucher_campaign()
    voucher = await codes.voucher(campaign.campaign_id, "TVADVERT", max_redemptions=50)
    checkouts = [checkout() for _ in range(200)]

    async def one(co: str):
        reservation = (await retried(lambda: codes.reserve(co, CART, "TVADVERT"))).reservation
        if reservation.redemptions:
            reservation = (await retried(lambda: codes.commit(co))).reservation
        return reservation

    results = await asyncio.gather(*(one(co) for co in checkouts))
    committed = [r for r in results if r.state == COMMITTED and r.redemptions]
    refused = [r for r in results if not r.redemptions]
    assert len(committed) == 50 and len(refused) == 150
    assert {(c.accepted, c.reason) for r in refused for c in r.result.codes} == {
        (False, err.ERROR_REASON_VOUCHER_EXHAUSTED)
    }
    assert {r.result.promotion_discount.amount_minor for r in refused} == {0}
    final = await codes.get_voucher(voucher_id=voucher.voucher_id)
    assert (final.redemption_count, final.reserved_count) == (50, 0)


async def test_a_discount_budget_is_never_overspent(codes, tenant):
    campaign = await codes.voucher_campaign(budget=campaign_pb2.Budget(max_discount=eur(1000)))
    await codes.voucher(campaign.campaign_id, "BUDGET")
    prices = [700 + 37 * i for i in range(60)]  # 10% of each: 70..288, uneven against the 1000

    async def one(price: int):
        co = checkout()
        reservation = (
            await retried(lambda: codes.reserve(co, basket(("A", 1, price)), "BUDGET"))
        ).reservation
        if reservation.redemptions:
            reservation = (await retried(lambda: codes.commit(co))).reservation
        return reservation

    results = await asyncio.gather(*(one(p) for p in prices))
    given = sum(r.result.promotion_discount.amount_minor for r in results)
    refused = [r for r in results if not r.redemptions]
    assert 0 < given <= 1000 and refused
    assert {c.reason for r in refused for c in r.result.codes} == {err.ERROR_REASON_BUDGET_EXHAUSTED}
    usage = (await tenant.get(campaign.campaign_id)).budget.usage
    assert (usage.discount_committed.amount_minor, usage.discount_reserved.amount_minor) == (given, 0)
    # What is left cannot pay for the smallest discount, or the budget was not used up.
    assert 1000 - given < max(p // 10 for p in prices)
    after = await codes.evaluate(basket(("A", 1, 5000)), "BUDGET")
    assert (after.codes[0].accepted, after.codes[0].reason) == (False, err.ERROR_REASON_BUDGET_EXHAUSTED)


async def test_a_customer_limit_of_one_holds_against_32_codes_at_once(codes):
    campaign = await codes.voucher_campaign(budget=campaign_pb2.Budget(max_redemptions_per_customer=1))
    unique = [
        (
            await codes.voucher(campaign.campaign_id, f"ONCE-{i:02d}", type=voucher_pb2.VOUCHER_TYPE_UNIQUE)
        ).code
        for i in range(32)
    ]
    results = await asyncio.gather(
        *(
            retried(lambda code=code: codes.reserve(checkout(), CART, code, customer_id="greedy"))
            for code in unique
        )
    )
    reservations = [r.reservation for r in results]
    winners = [r for r in reservations if r.redemptions]
    assert len(winners) == 1
    assert {c.reason for r in reservations if not r.redemptions for c in r.result.codes} == {
        err.ERROR_REASON_CUSTOMER_LIMIT_REACHED
    }
    other = await codes.reserve(
        checkout(),
        CART,
        unique[0] if winners[0].result.codes[0].code != unique[0] else unique[1],
        customer_id="someone-else",
    )
    assert other.reservation.redemptions


async def test_a_per_day_limit_counts_in_the_tenants_calendar_and_evaluation_says_so(codes):
    budget = campaign_pb2.Budget(
        max_redemptions_per_customer_per_period=1, period=campaign_pb2.LIMIT_PERIOD_DAY
    )
    campaign = await codes.voucher_campaign(budget=budget)
    await codes.voucher(campaign.campaign_id, "DAILY")
    first = checkout()
    await codes.reserve(first, CART, "DAILY", customer_id="c-day")
    await codes.commit(first)
    second = (await codes.reserve(checkout(), CART, "DAILY", customer_id="c-day")).reservation
    assert not second.redemptions
    assert second.result.codes[0].reason == err.ERROR_REASON_CUSTOMER_LIMIT_REACHED
    preview = await codes.evaluate(CART, "DAILY", customer_id="c-day")
    assert (preview.codes[0].accepted, preview.codes[0].reason) == (
        False,
        err.ERROR_REASON_CUSTOMER_LIMIT_REACHED,
    )
    assert (await codes.evaluate(CART, "DAILY", customer_id="c-new")).codes[0].accepted
    await codes.rollback(first)
    assert (await codes.evaluate(CART, "DAILY", customer_id="c-day")).codes[0].accepted


@pytest.fixture(scope="module")
async def short_lived(promotion_settings):
    """A server whose reservations expire after 1.5 s, swept every 0.2 s."""
    settings = promotion_settings.model_copy(
        update={"reservation_ttl_seconds": 1.5, "reservation_sweep_seconds": 0.2}
    )
    async with running_service(DEFINITION, settings) as service:
        service.stub = promotion_service_pb2_grpc.PromotionServiceStub(service.channel)
        yield service


async def test_a_reservation_never_committed_frees_its_use_after_expiry(short_lived):
    codes = Codes(Client(short_lived, f"x-{uuid.uuid4().hex[:8]}"))
    campaign = await codes.voucher_campaign()
    voucher = await codes.voucher(campaign.campaign_id, "LAST", max_redemptions=1)
    co = checkout()
    assert (await codes.reserve(co, CART, "LAST")).reservation.redemptions
    blocked = (await codes.reserve(checkout(), CART, "LAST")).reservation
    assert blocked.result.codes[0].reason == err.ERROR_REASON_VOUCHER_EXHAUSTED
    for _ in range(100):
        if (await codes.get_voucher(voucher_id=voucher.voucher_id)).reserved_count == 0:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the expired reservation kept its use")
    state = await codes.stub.GetReservation(
        api.GetReservationRequest(checkout_id=co), metadata=codes.metadata
    )
    assert state.reservation.state == EXPIRED
    late = await rpc_failure(codes.commit(co))
    assert (late.code, late.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_EXPIRED")
    # The till reserves the same checkout again: a fresh reservation (the old one held nothing).
    renewed = (await codes.reserve(co, CART, "LAST")).reservation
    assert renewed.state == RESERVED and len(renewed.redemptions) == 1
    assert (await codes.commit(co)).reservation.state == COMMITTED
    used = await codes.get_voucher(voucher_id=voucher.voucher_id)
    assert (used.redemption_count, used.reserved_count) == (1, 0)
    assert not (await codes.reserve(checkout(), CART, "LAST")).reservation.redemptions


def returning(co: str, return_id: str, *lines: tuple[str, int], full: bool = False):
    return api.ReverseRedemptionsRequest(
        checkout_id=co,
        return_id=return_id,
        lines=[redemption_pb2.ReturnLine(line_id=line_id, quantity=q) for line_id, q in lines],
        full_return=full,
    )


async def test_returns_reverse_in_proportion_and_a_full_return_gives_the_use_back(codes):
    campaign = await codes.voucher_campaign()
    voucher = await codes.voucher(campaign.campaign_id, "RETURN", max_redemptions=1)
    co = checkout()
    cart = basket(("A", 3, 1000))  # 10% off: 300 over 3 units
    await codes.reserve(co, cart, "RETURN", customer_id="c-ret")
    await codes.commit(co)
    first = await codes.stub.ReverseRedemptions(returning(co, "r1", ("l0", 1)), metadata=codes.metadata)
    assert (
        first.reversal.lines[0].discount_reversed.amount_minor,
        first.reversal.refund_amount.amount_minor,
    ) == (
        100,
        900,
    )
    assert list(first.reversal.reinstated_voucher_ids) == []
    again = await codes.stub.ReverseRedemptions(returning(co, "r1", ("l0", 1)), metadata=codes.metadata)
    assert again.reversal == first.reversal
    reused = await rpc_failure(
        codes.stub.ReverseRedemptions(returning(co, "r1", ("l0", 2)), metadata=codes.metadata)
    )
    assert (reused.code, reused.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    too_many = await rpc_failure(
        codes.stub.ReverseRedemptions(returning(co, "r2", ("l0", 3)), metadata=codes.metadata)
    )
    assert (too_many.code, too_many.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["lines"])
    rest = await codes.stub.ReverseRedemptions(returning(co, "r3", full=True), metadata=codes.metadata)
    assert rest.reversal.lines[0].discount_reversed.amount_minor == 200
    assert list(rest.reversal.reinstated_voucher_ids) == [voucher.voucher_id]
    assert [(r.state, r.discount_reversed.amount_minor) for r in rest.reservation.redemptions] == [
        (redemption_pb2.REDEMPTION_STATE_REVERSED, 300)
    ]
    assert len(rest.reservation.reversals) == 2
    assert (await codes.get_voucher(voucher_id=voucher.voucher_id)).redemption_count == 0
    not_committed = checkout()
    await codes.reserve(not_committed, cart)
    refused = await rpc_failure(
        codes.stub.ReverseRedemptions(returning(not_committed, "r1", full=True), metadata=codes.metadata)
    )
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESERVATION_NOT_COMMITTED",
    )


async def test_two_racing_reserves_of_one_checkout_make_one_reservation(codes):
    campaign = await codes.voucher_campaign()
    voucher = await codes.voucher(campaign.campaign_id, "RACE", max_redemptions=5)
    co = checkout()
    first, second = await asyncio.gather(codes.reserve(co, CART, "RACE"), codes.reserve(co, CART, "RACE"))
    assert first.reservation.redemptions[0].redemption_id == second.reservation.redemptions[0].redemption_id
    assert (await codes.get_voucher(voucher_id=voucher.voucher_id)).reserved_count == 1
    await asyncio.gather(codes.commit(co), codes.commit(co), codes.rollback(checkout()))
    assert (await codes.get_voucher(voucher_id=voucher.voucher_id)).redemption_count == 1


async def test_an_automatic_promotion_with_a_redemption_budget_stops_at_it(codes, tenant):
    campaign = await tenant.live_campaign(percent_off(1000), budget=campaign_pb2.Budget(max_redemptions=3))
    results = await asyncio.gather(*(retried(lambda: codes.reserve(checkout(), CART)) for _ in range(12)))
    applied = [r.reservation for r in results if r.reservation.redemptions]
    assert len(applied) == 3
    refused = next(r.reservation for r in results if not r.reservation.redemptions)
    assert [(c.campaign_id, c.reason) for c in refused.result.candidates] == [
        (campaign.campaign_id, err.ERROR_REASON_BUDGET_EXHAUSTED)
    ]
    usage = (await tenant.get(campaign.campaign_id)).budget.usage
    assert (usage.redemptions_reserved, usage.redemptions_committed) == (3, 0)


async def test_a_per_customer_offer_needs_a_customer(codes):
    campaign = await codes.voucher_campaign(budget=campaign_pb2.Budget(max_redemptions_per_customer=2))
    await codes.voucher(campaign.campaign_id, "KNOWN")
    anonymous = (await codes.reserve(checkout(), CART, "KNOWN")).reservation
    assert not anonymous.redemptions
    assert anonymous.result.codes[0].reason == err.ERROR_REASON_CUSTOMER_LIMIT_REACHED
    assert (await codes.reserve(checkout(), CART, "KNOWN", customer_id="c-k")).reservation.redemptions


async def test_commit_and_rollback_publish_redemption_events(codes, redis_url):
    from redis.asyncio import Redis

    campaign = await codes.voucher_campaign()
    voucher = await codes.voucher(campaign.campaign_id, "EVENTS")
    co = checkout()
    await codes.reserve(co, CART, "EVENTS", customer_id="c-ev")
    await codes.commit(co)
    await codes.rollback(co)
    redis = Redis.from_url(redis_url)
    try:
        for _ in range(100):
            entries = [
                (f[b"type"].decode(), f[b"key"].decode(), f[b"payload"])
                for _, f in await redis.xrange("promotion.events")
                if f[b"tenant"].decode() == codes.client.tenant_id and f[b"type"].startswith(b"redemptions.")
            ]
            if len(entries) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    assert [(kind, k) for kind, k, _ in entries] == [
        ("redemptions.committed", co),
        ("redemptions.released", co),
    ]
    committed = events_pb2.RedemptionsCommitted.FromString(entries[0][2])
    assert (committed.customer_id, [r.voucher_id for r in committed.redemptions]) == (
        "c-ev",
        [voucher.voucher_id],
    )
    assert not events_pb2.RedemptionsReleased.FromString(entries[1][2]).expired


async def test_statistics_count_what_was_committed_net_of_rollbacks(codes, tenant):
    campaign = await codes.voucher_campaign(budget=campaign_pb2.Budget(max_redemptions=10))
    await codes.voucher(campaign.campaign_id, "STATS")
    await codes.voucher(campaign.campaign_id, "UNUSED")
    for n, customer_id in enumerate(("s1", "s2", "s1")):
        co = f"co-stats-{n}-{uuid.uuid4().hex[:6]}"
        await codes.reserve(co, CART, "STATS", customer_id=customer_id)
        await codes.commit(co)
        if n == 2:
            await codes.rollback(co)
    statistics = (
        await codes.stub.GetCampaignStatistics(
            api.GetCampaignStatisticsRequest(campaign_id=campaign.campaign_id), metadata=codes.metadata
        )
    ).statistics
    assert (statistics.redemption_count, statistics.rolled_back_count, statistics.customer_count) == (2, 1, 2)
    assert statistics.discount_total.amount_minor == 200
    # What the two committed checkouts paid: the cart's 10.00 less each one's 1.00 off.
    assert (statistics.revenue_total.currency_code, statistics.revenue_total.amount_minor) == ("EUR", 1800)
    assert (statistics.voucher_count, statistics.redeemed_voucher_count) == (2, 1)
    assert statistics.budget_usage.redemptions_committed == 2
    assert [(p.redemption_count, p.discount_total.amount_minor) for p in statistics.promotions] == [(2, 200)]
