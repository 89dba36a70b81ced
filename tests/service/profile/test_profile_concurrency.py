"""Concurrent calls against the real database: callers released together (asyncio.gather over
prepared calls), exact outcomes counted afterwards. Several rounds each, so the interleavings vary."""

import asyncio
from collections import Counter

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as api
from tests.service.profile.conftest import (
    EMAIL,
    card,
    count_rows,
    enrol,
    ident,
    key,
    published_when,
    tenant_of,
)

ROUNDS = 10


async def outcomes(calls) -> list:
    """Each call's answer, or its failure as (code, ErrorInfo reason)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    answers = []
    for result in results:
        if isinstance(result, grpc.aio.AioRpcError):
            answers.append((result.code(), result.details()))
        elif isinstance(result, BaseException):
            raise result
        else:
            answers.append(result)
    return answers


def failures(answers) -> Counter:
    return Counter(a[0] for a in answers if isinstance(a, tuple))


async def test_concurrent_enrolments_with_one_identifier_enrol_one_customer(stub, tenant, db):
    for round_number in range(ROUNDS):
        shared = ident(EMAIL, f"race-{round_number}@example.com")
        contenders = [
            api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[card(), shared]) for _ in range(4)
        ]
        answers = await outcomes(stub.EnrolCustomer(request, metadata=tenant) for request in contenders)
        assert failures(answers) == {grpc.StatusCode.ALREADY_EXISTS: 3}, answers
        winner = next(a for a in answers if not isinstance(a, tuple))
        found = await stub.LookupCustomer(api.LookupCustomerRequest(identifier=shared), metadata=tenant)
        assert found.customer.customer_id == winner.customer.customer_id
    assert await count_rows(db, "customers", tenant_of(tenant)) == ROUNDS
    assert await count_rows(db, "identifiers", tenant_of(tenant)) == 2 * ROUNDS


async def test_concurrent_enrolments_claiming_identifiers_in_opposite_orders_never_deadlock(stub, tenant, db):
    for round_number in range(ROUNDS):
        shared = [card(f"PAIR{round_number:03d}X{n:03d}") for n in range(40)]
        contenders = [
            api.EnrolCustomerRequest(idempotency_key=key(), identifiers=shared if n % 2 else shared[::-1])
            for n in range(6)
        ]
        answers = await outcomes(stub.EnrolCustomer(request, metadata=tenant) for request in contenders)
        # IDENTIFIER_TAKEN for the losers, never ABORTED (a deadlock) or anything else.
        assert failures(answers) == {grpc.StatusCode.ALREADY_EXISTS: 5}, answers
    assert await count_rows(db, "customers", tenant_of(tenant)) == ROUNDS


async def test_concurrent_merges_of_one_pair_merge_once(stub, tenant, db, redis_url):
    for _ in range(ROUNDS):
        survivor, duplicate = await enrol(stub, tenant), await enrol(stub, tenant)
        same_pair = [
            api.MergeCustomersRequest(
                idempotency_key=key(),
                survivor_customer_id=survivor.customer_id,
                merged_customer_id=duplicate.customer_id,
            )
            for _ in range(3)
        ]
        opposite = api.MergeCustomersRequest(
            idempotency_key=key(),
            survivor_customer_id=duplicate.customer_id,
            merged_customer_id=survivor.customer_id,
        )
        answers = await outcomes(stub.MergeCustomers(r, metadata=tenant) for r in [*same_pair, opposite])
        assert failures(answers) == {grpc.StatusCode.FAILED_PRECONDITION: 3}, answers
        merged = [a for a in answers if not isinstance(a, tuple)]
        kept = merged[0].survivor.customer_id
        statuses = await db.fetch(
            "SELECT id::text, status, merged_into::text FROM profile.customers WHERE id = ANY($1::uuid[])",
            [survivor.customer_id, duplicate.customer_id],
        )
        assert sorted((r["status"], r["merged_into"]) for r in statuses) == [
            ("active", None),
            ("merged", kept),
        ]
        got = await stub.GetCustomer(api.GetCustomerRequest(customer_id=kept), metadata=tenant)
        assert len(got.customer.identifiers) == 2
    # two enrolments and one merge a round, published once each
    events = await published_when(lambda found: len(found) >= 3 * ROUNDS, redis_url, tenant_of(tenant))
    assert len(events) == 3 * ROUNDS


async def test_concurrent_updates_with_one_idempotency_key_apply_once(stub, tenant, db, redis_url):
    customer = await enrol(stub, tenant)
    for round_number in range(ROUNDS):
        request = api.UpdateCustomerRequest(
            idempotency_key=key(),
            customer=profile_pb2.Customer(
                customer_id=customer.customer_id, given_name=f"Round {round_number}"
            ),
            update_mask=FieldMask(paths=["given_name"]),
        )
        answers = await outcomes(stub.UpdateCustomer(request, metadata=tenant) for _ in range(6))
        assert not failures(answers), answers
        assert len({a.SerializeToString() for a in answers}) == 1
    events = await published_when(lambda found: len(found) >= 1 + ROUNDS, redis_url, tenant_of(tenant))
    kinds = Counter(kind for kind, event_key, _ in events if event_key == customer.customer_id)
    assert kinds == {"customer.created": 1, "customer.updated": ROUNDS}


async def test_an_identifier_added_while_the_customer_is_erased_never_survives_the_erasure(stub, tenant, db):
    for round_number in range(ROUNDS):
        customer = await enrol(stub, tenant)
        erase = stub.EraseCustomer(
            api.EraseCustomerRequest(idempotency_key=key(), customer_id=customer.customer_id), metadata=tenant
        )
        add = stub.AddIdentifier(
            api.AddIdentifierRequest(
                idempotency_key=key(),
                customer_id=customer.customer_id,
                identifier=ident(EMAIL, f"late-{round_number}@example.com"),
            ),
            metadata=tenant,
        )
        answers = await outcomes([erase, add])
        assert not isinstance(answers[0], tuple)
        assert (
            isinstance(answers[1], api.AddIdentifierResponse)
            or answers[1][0] == grpc.StatusCode.FAILED_PRECONDITION
        )
        assert (
            await db.fetchval(
                "SELECT count(*) FROM profile.identifiers WHERE customer_id = $1", customer.customer_id
            )
            == 0
        )


async def test_concurrent_definitions_of_one_attribute_agree_or_conflict(stub, tenant):
    same = profile_pb2.AttributeDefinition(name="tier_hint", type=profile_pb2.ATTRIBUTE_TYPE_STRING)
    other = profile_pb2.AttributeDefinition(name="tier_hint", type=profile_pb2.ATTRIBUTE_TYPE_INT)
    requests = [
        api.DefineAttributeRequest(idempotency_key=key(), definition=d) for d in (same, same, other, same)
    ]
    answers = await outcomes(stub.DefineAttribute(r, metadata=tenant) for r in requests)
    stored = {a.definition.type for a in answers if not isinstance(a, tuple)}
    assert len(stored) == 1
    if stored == {profile_pb2.ATTRIBUTE_TYPE_STRING}:
        assert failures(answers) == {grpc.StatusCode.ALREADY_EXISTS: 1}
    else:
        assert failures(answers) == {grpc.StatusCode.ALREADY_EXISTS: 3}
