"""SIGKILL of the ledger, a real process of its own, while checkouts commit: the commits caught in
flight answer UNAVAILABLE (or finish), the ledger is restarted on the same port, the tills retry,
and the final state is exactly as if nothing had failed: every checkout committed once, the
customer's balance the sum of what they earned, no point posted twice."""

import asyncio
import os
import signal
import uuid

import grpc
import pytest

from loyalty.gateway.v1 import checkout_pb2 as pb, checkout_service_pb2_grpc
from loyalty_devstack.benchkit import service_process
from loyalty_gateway.service import DEFINITION
from loyalty_runtime.testing import running_service
from tests.service.gateway.test_gateway_checkout import basket, commit_request, enrol, retry_until_answered
from tests.service.gateway.test_gateway_points import balance, earning_tenant

CHECKOUTS = 12


@pytest.fixture
async def tenant(shop, services):
    return await earning_tenant(shop, services)


async def test_sigkill_of_the_ledger_mid_commit_then_retries_leave_exact_points(
    shop_settings, services, shop, tenant
):
    token = shop_settings.internal_token.get_secret_value()
    database, redis = shop_settings.database_url, shop_settings.redis_url
    ledger = service_process("ledger", database, redis, internal_token=token, migrate=False)
    port = ledger.port
    try:
        await (await ledger.channel()).close()
        settings = shop_settings.model_copy(update={"ledger_target": f"127.0.0.1:{port}"})
        async with running_service(DEFINITION, settings) as replica:
            stub = checkout_service_pb2_grpc.CheckoutServiceStub(replica.channel)
            customer_id = await enrol(shop, tenant)
            requests = [
                commit_request(uuid.uuid4().hex, customer_id, basket=basket(("tv", 1, 10_000 + n * 100)))
                for n in range(CHECKOUTS)
            ]

            async def kill_soon():
                await asyncio.sleep(0.05)
                os.kill(ledger.process.pid, signal.SIGKILL)

            first = await asyncio.gather(
                kill_soon(),
                *(stub.CommitCheckout(r, metadata=tenant.till_auth) for r in requests),
                return_exceptions=True,
            )
            codes = {o.code() for o in first[1:] if isinstance(o, grpc.aio.AioRpcError)}
            assert codes <= {
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.ABORTED,
            }, codes
            ledger.process.wait()

            restarted = service_process(
                "ledger",
                database,
                redis,
                internal_token=token,
                migrate=False,
                settings={"GRPC_PORT": str(port)},
            )
            restarted.port = port
            ledger = restarted
            await (await ledger.channel()).close()
            answers = [await retry_until_answered(stub.CommitCheckout, r, tenant.till_auth) for r in requests]
    finally:
        ledger.stop()
    assert {a.checkout.state for a in answers} == {pb.CHECKOUT_STATE_COMMITTED}
    earned = sum(a.checkout.result.points.points_to_earn for a in answers)
    assert earned == sum(100 + n for n in range(CHECKOUTS))
    assert await balance(services, tenant, customer_id) == earned


async def test_sigkill_of_a_gateway_mid_saga_leaves_work_another_replica_finishes(
    shop_settings, services, shop, tenant
):
    """A gateway process dies while its sagas run; the tills retry on another replica, which takes
    the sagas over once the dead one's leases run out, and finishes each once."""
    from loyalty_devstack.infra import free_port

    targets = {f"{name.upper()}_TARGET": service.address for name, service in services.items()}
    settings = targets | {
        "RATE_LIMIT_PER_SECOND": "0",
        "HTTP_PORT": str(free_port()),
        "HTTP_HOST": "127.0.0.1",
        "SAGA_LEASE_SECONDS": "1",
    }
    token = shop_settings.internal_token.get_secret_value()
    doomed = service_process(
        "gateway",
        shop_settings.database_url,
        shop_settings.redis_url,
        internal_token=token,
        migrate=False,
        settings=settings,
    )
    try:
        channel = await doomed.channel()
        stub = checkout_service_pb2_grpc.CheckoutServiceStub(channel)
        customer_id = await enrol(shop, tenant)
        requests = [
            commit_request(uuid.uuid4().hex, customer_id, basket=basket(("tv", 1, 10_000 + n * 100)))
            for n in range(CHECKOUTS)
        ]

        async def kill_soon():
            await asyncio.sleep(0.05)
            os.kill(doomed.process.pid, signal.SIGKILL)

        first = await asyncio.gather(
            kill_soon(),
            *(stub.CommitCheckout(r, metadata=tenant.till_auth) for r in requests),
            return_exceptions=True,
        )
        assert any(isinstance(o, grpc.aio.AioRpcError) for o in first[1:]), "the kill came after every commit"
        await channel.close()
    finally:
        doomed.stop()
    answers = [
        await retry_until_answered(shop.checkout.CommitCheckout, r, tenant.till_auth) for r in requests
    ]
    assert {a.checkout.state for a in answers} == {pb.CHECKOUT_STATE_COMMITTED}
    earned = sum(a.checkout.result.points.points_to_earn for a in answers)
    assert earned == sum(100 + n for n in range(CHECKOUTS))
    assert await balance(services, tenant, customer_id) == earned
