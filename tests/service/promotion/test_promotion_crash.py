"""Kill the promotion server (SIGKILL) between a checkout's reserve and its commit: the code's last
use stays reserved only until the reservation's expiry, when a replica started afterwards releases
it (the sweep), and the next checkout gets the code. The server is the real `loyalty_promotion
serve` process with a one-second reservation lifetime."""

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import grpc

from loyalty.common.v1 import errors_pb2 as err
from loyalty.promotion.v1 import promotion_service_pb2_grpc
from loyalty_devstack.infra import free_port
from tests.service.promotion.helpers import Client, Codes, basket

CART = basket(("A", 1, 1000))


def _start(settings, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PROMOTION_DATABASE_URL": settings.database_url,
        "PROMOTION_REDIS_URL": settings.redis_url,
        "PROMOTION_INTERNAL_TOKEN": settings.internal_token.get_secret_value(),
        "PROMOTION_GRPC_HOST": "127.0.0.1",
        "PROMOTION_GRPC_PORT": str(port),
        "PROMOTION_METRICS_PORT": "0",
        "PROMOTION_RESERVATION_TTL_SECONDS": "1",
        "PROMOTION_RESERVATION_SWEEP_SECONDS": "0.2",
        "PROMOTION_GENERATION_WORKERS": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "loyalty_promotion", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _codes(port: int, tenant: str, service) -> tuple[grpc.aio.Channel, Codes]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await asyncio.wait_for(channel.channel_ready(), timeout=20)
    client = Client(service, tenant, promotion_service_pb2_grpc.PromotionServiceStub(channel))
    return channel, Codes(client)


async def test_a_reservation_left_by_a_killed_server_is_released_after_its_expiry(
    promotion, promotion_settings
):
    tenant = f"k-{uuid.uuid4().hex[:8]}"
    setup = Codes(Client(promotion, tenant))
    campaign = await setup.voucher_campaign()
    voucher = await setup.voucher(campaign.campaign_id, "LASTONE", max_redemptions=1)
    port = free_port()
    process = _start(promotion_settings, port)
    try:
        channel, codes = await _codes(port, tenant, promotion)
        reserved = (await codes.reserve("co-killed", CART, "LASTONE")).reservation
        assert reserved.redemptions
        await channel.close()
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        stuck = (await setup.reserve("co-next", CART, "LASTONE")).reservation
        assert stuck.result.codes[0].reason == err.ERROR_REASON_VOUCHER_EXHAUSTED
        process = _start(promotion_settings, port)
        channel, codes = await _codes(port, tenant, promotion)
        for _ in range(100):
            if (await setup.get_voucher(voucher_id=voucher.voucher_id)).reserved_count == 0:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the killed server's reservation was never released")
        await channel.close()
        after = (await setup.reserve("co-after", CART, "LASTONE")).reservation
        assert after.redemptions
    finally:
        process.kill()
        process.wait(10)
