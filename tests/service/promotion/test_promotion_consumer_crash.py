"""Kill a real `loyalty_promotion serve` process (SIGKILL) while its consumer is half way through a
batch of purchases: nothing is lost and nothing doubles. The process is made the leader of the
gateway.events group first (this test session's own server stands by); after the kill, that server
takes the lease over when it expires and claims the killed consumer's pending entries once they are
idle, so every purchase, each also delivered twice, is rewarded exactly once. Slow by design: the
runtime's lease (10 s) and claim idle time (30 s)."""

import asyncio
import signal
import socket
import subprocess
import uuid
from datetime import UTC, datetime

from redis.asyncio import Redis

from loyalty.promotion.v1 import promotion_service_pb2 as api
from loyalty_devstack.infra import free_port
from loyalty_runtime.events import Envelope
from tests.service.promotion.test_promotion_achievements import purchase
from tests.service.promotion.test_promotion_crash import _start
from tests.service.promotion.test_promotion_triggers import (
    create,
    event_campaign,
    granted_events,
    welcome,
)

LEASE = "gateway.events.lease.promotion"
PURCHASES = 300


async def _lead(redis: Redis, process: subprocess.Popen) -> None:
    """Make the process the group's leader: free the lease until it, not this session's server, takes it."""
    prefix = f"{socket.gethostname()}-{process.pid}-".encode()
    async with asyncio.timeout(90):
        while not ((holder := await redis.get(LEASE)) or b"").startswith(prefix):
            if holder is not None:
                await redis.delete(LEASE)
            await asyncio.sleep(0.3)


def envelope(tenant: str, event, event_id: str) -> Envelope:
    return Envelope(
        event_id,
        "purchase.committed",
        tenant,
        event.customer_id,
        event.SerializeToString(),
        datetime.now(UTC),
        None,
    )


async def _handled(promotion, tenant: str) -> int:
    async with promotion.server.resources.database.connection() as connection:
        return await connection.fetchval(
            "SELECT count(*) FROM promotion.reward_grants WHERE tenant_id = $1", tenant
        )


async def test_a_consumer_killed_mid_batch_loses_and_doubles_nothing(
    tenant, promotion, promotion_settings, redis_url
):
    campaign = await event_campaign(tenant)
    await create(
        tenant, welcome(campaign.campaign_id, display_name="Every purchase", event_type="purchase.committed")
    )
    redis = Redis.from_url(redis_url)
    process = _start(promotion_settings, free_port())
    try:
        await _lead(redis, process)
        event_ids = [f"test:{uuid.uuid4()}" for _ in range(PURCHASES)]
        async with redis.pipeline(transaction=False) as pipeline:  # all at once: a backlog to be killed in
            for n, event_id in enumerate(event_ids * 2):  # each delivered twice
                event = purchase(f"k-{n % PURCHASES}", f"c-{n % PURCHASES}", 100)
                pipeline.xadd("gateway.events", envelope(tenant.tenant_id, event, event_id).to_fields())
            await pipeline.execute()
        async with asyncio.timeout(60):
            while await _handled(promotion, tenant.tenant_id) < 10:
                await asyncio.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert await _handled(promotion, tenant.tenant_id) < PURCHASES  # killed half way
        async with asyncio.timeout(240):  # the lease expires (10 s), the entries idle (30 s)
            while await _handled(promotion, tenant.tenant_id) < PURCHASES:
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # time for a double, if there were one
        assert await _handled(promotion, tenant.tenant_id) == PURCHASES
        response = await tenant.stub.ListRewardGrants(
            api.ListRewardGrantsRequest(page_size=1000), metadata=tenant.metadata
        )
        assert sorted(g.source_event_id for g in response.grants) == sorted(event_ids)
        async with asyncio.timeout(30):
            while len({e.grant_id for e in await granted_events(redis_url, tenant.tenant_id)}) < PURCHASES:
                await asyncio.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        await redis.aclose()
