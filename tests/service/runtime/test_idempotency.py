"""Idempotency keys through the unit of work, on the real database: a key applies its change once,
whatever arrives concurrently or later; a retry gets the first answer, even one that would now fail."""

import asyncio
import time

import pytest

from loyalty.profile.v1 import profile_service_pb2 as api
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.errors import FailedPrecondition, Reason
from loyalty_runtime.uow import UnitsOfWork

PROFILE = api.DESCRIPTOR.services_by_name["ProfileService"]


@pytest.fixture
def idempotent_units(database, schema):
    return UnitsOfWork(database, schema, apis=[PROFILE])


@pytest.fixture
def caller():
    token = bind_call(CallContext("t-idem", "test", deadline=time.monotonic() + 30))
    yield
    unbind_call(token)


def request(key: str, customer: str = "c1") -> api.EraseCustomerRequest:
    return api.EraseCustomerRequest(idempotency_key=key, customer_id=customer)


def answer(customer: str) -> api.EraseCustomerResponse:
    return api.EraseCustomerResponse(customer_id=customer)


async def test_concurrent_calls_with_one_key_apply_the_change_once(
    idempotent_units, effects, database, caller
):
    async def change(uow, customer):
        await effects.count(uow, customer)
        await asyncio.sleep(0.05)  # both calls are inside their transactions at once
        return customer

    answers = await asyncio.gather(
        *(idempotent_units.idempotent(request("k1"), change, "c1", answer) for _ in range(5))
    )
    assert {a.customer_id for a in answers} == {"c1"}
    assert (await effects.read(database))[("t-idem", "c1")][0] == 1


async def test_a_retry_that_would_fail_against_its_own_effects_gets_the_first_answer(
    idempotent_units, effects, database, caller
):
    async def once_only(uow, customer):
        if ("t-idem", customer) in await effects.read(database):
            raise FailedPrecondition(Reason.CUSTOMER_ERASED, "already done")
        await effects.count(uow, customer)
        return customer

    first = await idempotent_units.idempotent(request("k2", "c2"), once_only, "c2", answer)
    retry = await idempotent_units.idempotent(request("k2", "c2"), once_only, "c2", answer)
    assert first == retry
    with pytest.raises(FailedPrecondition) as refused:
        await idempotent_units.idempotent(request("k3", "c2"), once_only, "c2", answer)
    assert refused.value.reason is Reason.CUSTOMER_ERASED, "a new key meets the refusal"


async def test_a_key_used_for_another_request_is_refused(idempotent_units, effects, caller):
    async def change(uow, customer):
        await effects.count(uow, customer)
        return customer

    await idempotent_units.idempotent(request("k4", "c4"), change, "c4", answer)
    with pytest.raises(FailedPrecondition) as refused:
        await idempotent_units.idempotent(request("k4", "other"), change, "other", answer)
    assert refused.value.reason is Reason.IDEMPOTENCY_KEY_REUSED


async def test_a_refused_change_keeps_no_key_so_its_retry_runs(idempotent_units, effects, database, caller):
    attempts = []

    async def flaky(uow, customer):
        attempts.append(customer)
        await effects.count(uow, customer)
        if len(attempts) == 1:
            raise FailedPrecondition(Reason.CUSTOMER_MERGED, "not yet")
        return customer

    with pytest.raises(FailedPrecondition):
        await idempotent_units.idempotent(request("k5", "c5"), flaky, "c5", answer)
    assert (await idempotent_units.idempotent(request("k5", "c5"), flaky, "c5", answer)).customer_id == "c5"
    assert len(attempts) == 2
    assert (await effects.read(database))[("t-idem", "c5")][0] == 1, "the refused attempt rolled back"


async def test_erased_answers_are_not_replayed_and_keep_no_fingerprint(
    idempotent_units, database, schema, caller
):
    async def concerning(uow, customer):
        uow.concerns(customer)
        return customer

    await idempotent_units.idempotent(request("k6", "c6"), concerning, "c6", answer)
    async with idempotent_units.change() as uow:
        await uow.erase_answers("c6")
    with pytest.raises(FailedPrecondition) as refused:
        await idempotent_units.idempotent(request("k6", "c6"), concerning, "c6", answer)
    assert refused.value.reason is Reason.CUSTOMER_ERASED
    async with database.connection() as connection:
        row = await connection.fetchrow(
            f"SELECT fingerprint, response FROM {schema}.idempotency_keys WHERE key = 'k6'"
        )
    assert (bytes(row["fingerprint"]), row["response"]) == (b"", None)
