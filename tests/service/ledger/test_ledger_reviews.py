"""Points a checkout earned while fraud reviewed it are pending (the gateway settles them with an
available time); fraud's `fraud.case_resolved` on fraud.events releases them at once (approved) or
takes them back (rejected), once however often the event is delivered."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio import Redis

from loyalty.fraud.v1 import assessment_pb2, events_pb2 as fraud_events, review_pb2
from loyalty.ledger.v1 import ledger_service_pb2 as api
from loyalty_runtime.events import Envelope
from tests.service.ledger.helpers import lines, settle


def in_days(days: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=days))
    return stamp


async def resolve(redis_url: str, tenant: str, checkout_id: str, resolution: int, *, times: int = 1) -> None:
    case = fraud_events.CaseResolved(
        review_case_id=str(uuid.uuid4()),
        kind=assessment_pb2.ASSESSMENT_KIND_CHECKOUT,
        subject_id=checkout_id,
        resolution=resolution,
    )
    envelope = Envelope(
        f"fraud:{uuid.uuid4()}",
        "fraud.case_resolved",
        tenant,
        case.review_case_id,
        case.SerializeToString(),
        datetime.now(UTC),
        None,
    )
    redis = Redis.from_url(redis_url)
    try:
        for _ in range(times):
            await redis.xadd("fraud.events", envelope.to_fields())
    finally:
        await redis.aclose()


async def balance_once(client, account: str, predicate):
    async with asyncio.timeout(15):
        while True:
            balance = (await client.GetAccount(api.GetAccountRequest(account_id=account))).account.balance
            if predicate(balance):
                return balance
            await asyncio.sleep(0.05)


async def test_an_approved_review_releases_the_checkouts_points_and_a_rejected_one_takes_them_back(
    tenant, redis_url
):
    program = await tenant.program()
    approved, rejected = await tenant.account(program), await tenant.account(program)
    for account, checkout in ((approved, "chk-approved"), (rejected, "chk-rejected")):
        await tenant.SettleCheckout(
            settle(account, checkout, lines(("a", 1, 120, 0)), available_time=in_days(14))
        )
        assert (await tenant.balance(account)).pending == 120

    await resolve(redis_url, tenant.tenant, "chk-approved", review_pb2.REVIEW_CASE_STATE_APPROVED, times=2)
    await resolve(redis_url, tenant.tenant, "chk-rejected", review_pb2.REVIEW_CASE_STATE_REJECTED, times=2)

    released = await balance_once(tenant, approved, lambda b: b.pending == 0)
    taken = await balance_once(tenant, rejected, lambda b: b.pending == 0)
    await asyncio.sleep(0.3)  # time for a second handling, if there were one
    assert (released.posted, taken.posted) == (120, 0)
    assert (await tenant.balance(approved)).posted == 120 and (await tenant.balance(rejected)).posted == 0
