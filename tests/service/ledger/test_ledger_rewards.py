"""Rewards granted by promotion's triggers (`reward.granted` on promotion.events), posted by the
ledger's consumer to the customer's account: opened if they have none, posted once however often
the event is delivered."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.duration_pb2 import Duration
from redis.asyncio import Redis

from loyalty.ledger.v1 import ledger_service_pb2 as api
from loyalty.promotion.v1 import events_pb2 as promotion_events, reward_pb2
from loyalty_runtime.events import Envelope
from loyalty_runtime.uow import event_type_of


async def deliver(redis_url: str, tenant: str, event, event_id: str) -> None:
    envelope = Envelope(
        event_id,
        event_type_of(event.DESCRIPTOR),
        tenant,
        event.customer_id,
        event.SerializeToString(),
        datetime.now(UTC),
        None,
    )
    redis = Redis.from_url(redis_url)
    try:
        await redis.xadd("promotion.events", envelope.to_fields())
    finally:
        await redis.aclose()


async def account_of(client, program_id: str, customer_id: str, posted: int):
    """The customer's account once its posted balance is `posted` (the consumer runs behind)."""
    request = api.GetAccountRequest(program_id=program_id, customer_id=customer_id)
    async with asyncio.timeout(15):
        while True:
            try:
                account = (await client.GetAccount(request)).account
                if account.balance.posted >= posted:
                    return account
            except grpc.aio.AioRpcError:  # NOT_FOUND until the consumer opened it
                pass
            await asyncio.sleep(0.05)


async def test_a_points_reward_is_posted_once_to_an_account_opened_for_it(tenant, redis_url):
    program = await tenant.program()
    reward = reward_pb2.Reward(
        points=reward_pb2.PointsReward(points=250, expires_after=Duration(seconds=30 * 86_400))
    )
    event = promotion_events.RewardGranted(
        grant_id=str(uuid.uuid4()), customer_id="c-reward", program_id=program.program_id, reward=reward
    )
    event_id = f"promotion:{uuid.uuid4()}"
    for _ in range(2):  # delivered twice
        await deliver(redis_url, tenant.tenant, event, event_id)
    again = promotion_events.RewardGranted(
        grant_id=str(uuid.uuid4()), customer_id="c-reward", program_id=program.program_id, reward=reward
    )
    await deliver(redis_url, tenant.tenant, again, f"promotion:{uuid.uuid4()}")  # a second grant

    account = await account_of(tenant, program.program_id, "c-reward", 500)
    await asyncio.sleep(0.3)  # time for a third posting, if there were one
    account = (await tenant.GetAccount(api.GetAccountRequest(account_id=account.account_id))).account
    assert account.balance.posted == 500
    lines = (
        await tenant.ListStatementLines(api.ListStatementLinesRequest(account_id=account.account_id))
    ).lines
    assert sorted(line.source_ref for line in lines) == sorted([event.grant_id, again.grant_id])
    expiring = account.balance.expiring
    assert sum(e.amount for e in expiring) == 500
    in_30_days = datetime.now(UTC) + timedelta(days=30)
    assert all(abs(e.expire_time.ToDatetime(UTC) - in_30_days) < timedelta(minutes=5) for e in expiring)


async def test_a_clawed_back_reward_is_reversed_once(tenant, redis_url):
    program = await tenant.program()
    reward = reward_pb2.Reward(points=reward_pb2.PointsReward(points=300))
    granted = promotion_events.RewardGranted(
        grant_id=str(uuid.uuid4()), customer_id="c-claw", program_id=program.program_id, reward=reward
    )
    await deliver(redis_url, tenant.tenant, granted, f"promotion:{uuid.uuid4()}")
    account = await account_of(tenant, program.program_id, "c-claw", 300)
    clawed = promotion_events.RewardReversed(
        grant_id=granted.grant_id, customer_id="c-claw", program_id=program.program_id
    )
    event_id = f"promotion:{uuid.uuid4()}"
    for _ in range(2):  # delivered twice
        await deliver(redis_url, tenant.tenant, clawed, event_id)
    request = api.ListStatementLinesRequest(account_id=account.account_id)
    async with asyncio.timeout(15):
        while len((await tenant.ListStatementLines(request)).lines) < 2:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # time for a second reversal, if there were one
    account = (await tenant.GetAccount(api.GetAccountRequest(account_id=account.account_id))).account
    assert account.balance.posted == 0
    assert len((await tenant.ListStatementLines(request)).lines) == 2
