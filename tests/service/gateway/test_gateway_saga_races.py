"""Calls racing for one checkout's saga, against the real services and database. Each test makes the
interleaving that used to break the saga certain rather than lucky: the gateway's lease claim (the
real SQL, through the real code) is held back while another call holds the lease, so the held call
claims only after the other one has finished. A claim must then see that the saga moved on (it was
cancelled, committed, reserved) and leave it as it is."""

import asyncio
import uuid

import grpc
import pytest

from loyalty.gateway.v1 import checkout_pb2 as pb, checkout_service_pb2 as api
from loyalty.promotion.v1 import (
    promotion_service_pb2 as promotion_api,
    promotion_service_pb2_grpc,
    redemption_pb2,
)
from loyalty_gateway import repository
from loyalty_runtime.testing import internal_metadata
from tests.service.gateway.conftest import provision
from tests.service.gateway.test_gateway_checkout import basket, commit_request, enrol, voucher


@pytest.fixture
async def tenant(shop, services):
    return await provision(shop, services)


class Race:
    """Runs the interleaving for the watched checkouts: a lease claim made while another call holds
    the lease waits (polling the row on the claim's own connection) until the holder let go, and
    the holder lets go (its final save) only once such a rival is waiting. So the rival read the
    saga while the holder had it, and claims after the holder finished: the claim must see that."""

    def __init__(self) -> None:
        self.watched: set[str] = set()
        self.rivals: set[str] = set()
        self.claiming = asyncio.Lock()

    def watch(self, checkout_id: str) -> str:
        self.watched.add(checkout_id)
        return checkout_id

    async def claim(self, claim, connection, tenant, checkout_id, *args, **kwargs):
        if checkout_id not in self.watched:
            return await claim(connection, tenant, checkout_id, *args, **kwargs)
        async with self.claiming:  # one claim at a time, so the second one finds the lease held
            for _ in range(1000):
                held = await connection.fetchval(
                    f"""SELECT lease_until > now() FROM {repository.SCHEMA}.checkouts
                        WHERE tenant_id = $1 AND checkout_id = $2""",
                    tenant,
                    checkout_id,
                )
                if not held:
                    break
                self.rivals.add(checkout_id)
                await asyncio.sleep(0.01)
            return await claim(connection, tenant, checkout_id, *args, **kwargs)

    async def save(self, save, connection, tenant, checkout_id, *args, release: bool):
        for _ in range(500 if release and checkout_id in self.watched else 0):
            if checkout_id in self.rivals:
                break
            await asyncio.sleep(0.01)
        return await save(connection, tenant, checkout_id, *args, release=release)


@pytest.fixture
def race(monkeypatch) -> Race:
    race = Race()
    claim, save = repository.claim_checkout, repository.save_checkout
    monkeypatch.setattr(repository, "claim_checkout", lambda *a, **k: race.claim(claim, *a, **k))
    monkeypatch.setattr(repository, "save_checkout", lambda *a, **k: race.save(save, *a, **k))
    return race


async def reservation_state(services, tenant, checkout_id: str) -> int:
    stub = promotion_service_pb2_grpc.PromotionServiceStub(services["promotion"].channel)
    got = await stub.GetReservation(
        promotion_api.GetReservationRequest(checkout_id=checkout_id),
        metadata=internal_metadata(services["promotion"].server.settings, tenant.tenant_id),
    )
    return got.reservation.state


async def outcome(call):
    try:
        return (await call).checkout.state
    except grpc.aio.AioRpcError as error:
        return error.code()


async def reserved_checkout(shop, tenant, code: str) -> tuple[str, str]:
    customer_id = await enrol(shop, tenant)
    checkout_id = uuid.uuid4().hex
    await shop.checkout.ReserveCheckout(
        api.ReserveCheckoutRequest(
            checkout_id=checkout_id, customer={"customer_id": customer_id}, basket=basket(), codes=[code]
        ),
        metadata=tenant.till_auth,
    )
    return checkout_id, customer_id


async def test_a_commit_and_a_cancel_racing_end_as_one_of_them(shop, services, tenant, race):
    """Whichever takes the saga first wins; the other, claiming after it finished, must answer the
    winner's outcome: never a cancelled checkout committed (with its code given back), never a
    committed one cancelled (its code given back after the sale)."""
    for round_ in range(3):
        code = f"RACE{round_}{uuid.uuid4().hex[:6].upper()}"
        await voucher(services, tenant, code, uses=1)
        checkout_id, customer_id = await reserved_checkout(shop, tenant, code)
        race.watch(checkout_id)
        cancel = shop.checkout.CancelCheckout(
            api.CancelCheckoutRequest(checkout_id=checkout_id), metadata=tenant.till_auth
        )
        commit = shop.checkout.CommitCheckout(
            commit_request(checkout_id, customer_id, codes=[code]), metadata=tenant.till_auth
        )
        cancelled, committed = await asyncio.gather(outcome(cancel), outcome(commit))
        assert checkout_id in race.rivals  # the race was run
        final = (
            await shop.checkout.GetCheckout(
                api.GetCheckoutRequest(checkout_id=checkout_id), metadata=tenant.till_auth
            )
        ).checkout.state
        promotion = await reservation_state(services, tenant, checkout_id)
        if final == pb.CHECKOUT_STATE_COMMITTED:
            assert committed == pb.CHECKOUT_STATE_COMMITTED
            assert cancelled == grpc.StatusCode.FAILED_PRECONDITION
            assert promotion == redemption_pb2.RESERVATION_STATE_COMMITTED
        else:
            assert final == pb.CHECKOUT_STATE_CANCELLED
            assert cancelled == committed == pb.CHECKOUT_STATE_CANCELLED
            assert promotion == redemption_pb2.RESERVATION_STATE_ROLLED_BACK


async def test_a_reserve_retried_while_the_first_runs_never_commits(shop, services, tenant, race):
    """The retry claims after the first reserve finished: it answers the reservation and leaves it
    reserved (it used to carry on into the commit phase)."""
    checkout_id = race.watch(uuid.uuid4().hex)
    request = api.ReserveCheckoutRequest(checkout_id=checkout_id, basket=basket())
    first, retry = await asyncio.gather(
        outcome(shop.checkout.ReserveCheckout(request, metadata=tenant.till_auth)),
        outcome(shop.checkout.ReserveCheckout(request, metadata=tenant.till_auth)),
    )
    assert checkout_id in race.rivals
    assert first == retry == pb.CHECKOUT_STATE_RESERVED
    got = await shop.checkout.GetCheckout(
        api.GetCheckoutRequest(checkout_id=checkout_id), metadata=tenant.till_auth
    )
    assert got.checkout.state == pb.CHECKOUT_STATE_RESERVED
