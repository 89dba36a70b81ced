"""Erasure erases everything: after EraseCustomer no personal data of the customer, or of the
profiles merged into them, remains in any table of the profile schema (stored answers and event
payloads included) or on the event stream, and replaying an earlier request answers CUSTOMER_ERASED."""

import uuid

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from redis.asyncio import Redis

from loyalty.common.v1 import date_pb2
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as api
from tests.conftest import rpc_failure
from tests.service.profile.conftest import (
    CARD,
    EMAIL,
    EVENTS_STREAM,
    EXTERNAL,
    PHONE,
    ident,
    key,
    tenant_of,
    wait_for_event,
)


def personal_values(marker: str) -> dict[str, str]:
    """Values no other test uses, so finding one anywhere means it was not erased."""
    return {
        "given_name": f"Zephyrine{marker}",
        "family_name": f"Quaxwellington{marker}",
        "email": f"zephyrine.{marker}@erase.example",
        "card": f"ZQ{marker.upper()}",
        "attribute": f"nickname-{marker}",
        "external": f"shop-customer-{marker}",
        "duplicate_name": f"Zeddy{marker}",
        "duplicate_family": f"Dupington{marker}",
        "duplicate_email": f"zeddy.{marker}@erase.example",
        "duplicate_attribute": f"dupe-nick-{marker}",
        "updated_name": f"Zephyrina{marker}",
        "consent_source": f"kiosk-{marker}",
    }


async def dump_schema(db) -> list[str]:
    """Every value of every row of every table of the profile schema, as text; bytea decoded."""
    tables = await db.fetch(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = 'profile' AND table_type = 'BASE TABLE'"
    )
    assert {"customers", "identifiers", "consents", "idempotency_keys", "outbox"} <= {
        t["table_name"] for t in tables
    }
    values = []
    for table in tables:
        for row in await db.fetch(f'SELECT * FROM profile."{table["table_name"]}"'):
            for value in row.values():
                values.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
    return values


async def stream_values(redis_url: str, tenant_id: str) -> list[str]:
    redis = Redis.from_url(redis_url)
    try:
        entries = await redis.xrange(EVENTS_STREAM)
    finally:
        await redis.aclose()
    return [
        value.decode("utf-8", "replace")
        for _, fields in entries
        if fields[b"tenant"].decode() == tenant_id
        for value in fields.values()
    ]


async def test_after_erasure_no_personal_data_remains_anywhere_and_replays_are_refused(
    stub, tenant, db, redis_url
):
    marker = uuid.uuid4().hex[:10]
    pii = personal_values(marker)
    phone, duplicate_phone = "+4915123456789", "+4915198765432"
    birthday = date_pb2.Date(year=1911, month=11, day=11)
    definition = profile_pb2.AttributeDefinition(name="nickname", type=profile_pb2.ATTRIBUTE_TYPE_STRING)
    await stub.DefineAttribute(
        api.DefineAttributeRequest(idempotency_key=key(), definition=definition), metadata=tenant
    )

    enrolment = api.EnrolCustomerRequest(
        idempotency_key=key(),
        identifiers=[ident(EMAIL, pii["email"]), ident(PHONE, phone), ident(CARD, pii["card"])],
        given_name=pii["given_name"],
        family_name=pii["family_name"],
        birth_date=birthday,
        locale="kw-GB",
        attributes={"nickname": profile_pb2.AttributeValue(string_value=pii["attribute"])},
        consents=[
            profile_pb2.Consent(
                channel=profile_pb2.CONSENT_CHANNEL_SMS,
                purpose=profile_pb2.CONSENT_PURPOSE_MARKETING,
                granted=True,
                source=pii["consent_source"],
            )
        ],
    )
    customer = (await stub.EnrolCustomer(enrolment, metadata=tenant)).customer
    duplicate_enrolment = api.EnrolCustomerRequest(
        idempotency_key=key(),
        identifiers=[ident(EMAIL, pii["duplicate_email"]), ident(PHONE, duplicate_phone)],
        given_name=pii["duplicate_name"],
        family_name=pii["duplicate_family"],
        birth_date=birthday,
        attributes={"nickname": profile_pb2.AttributeValue(string_value=pii["duplicate_attribute"])},
    )
    duplicate = (await stub.EnrolCustomer(duplicate_enrolment, metadata=tenant)).customer
    merge = api.MergeCustomersRequest(
        idempotency_key=key(),
        survivor_customer_id=customer.customer_id,
        merged_customer_id=duplicate.customer_id,
    )
    await stub.MergeCustomers(merge, metadata=tenant)

    update = api.UpdateCustomerRequest(
        idempotency_key=key(),
        customer=profile_pb2.Customer(customer_id=duplicate.customer_id, given_name=pii["updated_name"]),
        update_mask=FieldMask(paths=["given_name"]),
    )
    assert (await stub.UpdateCustomer(update, metadata=tenant)).customer.given_name == pii["updated_name"]
    add = api.AddIdentifierRequest(
        idempotency_key=key(),
        customer_id=customer.customer_id,
        identifier=ident(EXTERNAL, pii["external"], "shop"),
    )
    await stub.AddIdentifier(add, metadata=tenant)
    remove = api.RemoveIdentifierRequest(
        idempotency_key=key(), customer_id=customer.customer_id, identifier=ident(CARD, pii["card"])
    )
    await stub.RemoveIdentifier(remove, metadata=tenant)
    consents = api.SetConsentsRequest(
        idempotency_key=key(),
        customer_id=customer.customer_id,
        consents=[
            profile_pb2.Consent(
                channel=profile_pb2.CONSENT_CHANNEL_EMAIL,
                purpose=profile_pb2.CONSENT_PURPOSE_MARKETING,
                granted=True,
                source=pii["consent_source"],
            )
        ],
    )
    await stub.SetConsents(consents, metadata=tenant)
    everything = [*pii.values(), "15123456789", "15198765432", "1911-11-11", "kw-GB"]
    before = "\n".join(await dump_schema(db))
    assert all(value in before for value in [pii["updated_name"], pii["duplicate_email"], pii["attribute"]])

    erase = api.EraseCustomerRequest(idempotency_key=key(), customer_id=customer.customer_id)
    erased = await stub.EraseCustomer(erase, metadata=tenant)
    await wait_for_event(redis_url, tenant_of(tenant), "customer.erased", customer.customer_id)

    stored = "\n".join(await dump_schema(db))
    published = "\n".join(await stream_values(redis_url, tenant_of(tenant)))
    for value in everything:
        assert value not in stored, value
        assert value not in published, value

    for earlier in (enrolment, duplicate_enrolment, merge, update, add, remove, consents):
        failure = await rpc_failure(
            getattr(stub, type(earlier).__name__.removesuffix("Request"))(earlier, metadata=tenant)
        )
        assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CUSTOMER_ERASED"), (
            earlier
        )
        assert not any(value in failure.message for value in everything)
    # The erasure's own answer holds no personal data: a retry is answered, not refused.
    assert await stub.EraseCustomer(erase, metadata=tenant) == erased
    for customer_id in (customer.customer_id, duplicate.customer_id):
        after = await stub.GetCustomer(api.GetCustomerRequest(customer_id=customer_id), metadata=tenant)
        assert after.customer.customer_id == customer.customer_id
        assert after.customer.status == profile_pb2.CUSTOMER_STATUS_ERASED
    exported = await stub.ExportCustomerData(
        api.ExportCustomerDataRequest(customer_id=customer.customer_id), metadata=tenant
    )
    assert list(exported.merged_customer_ids) == [duplicate.customer_id]
    assert not any(value in str(exported) for value in everything)


async def test_a_merged_duplicate_keeps_no_personal_data_of_its_own(stub, tenant, db):
    survivor = (
        await stub.EnrolCustomer(
            api.EnrolCustomerRequest(
                idempotency_key=key(), identifiers=[ident(CARD, "KEEPER01")], given_name="Anna"
            ),
            metadata=tenant,
        )
    ).customer
    duplicate = (
        await stub.EnrolCustomer(
            api.EnrolCustomerRequest(
                idempotency_key=key(),
                identifiers=[ident(CARD, "DUPE0001")],
                given_name="Ann",
                family_name="Example",
                locale="de-AT",
                birth_date=date_pb2.Date(year=1990, month=1, day=2),
            ),
            metadata=tenant,
        )
    ).customer
    merged = await stub.MergeCustomers(
        api.MergeCustomersRequest(
            idempotency_key=key(),
            survivor_customer_id=survivor.customer_id,
            merged_customer_id=duplicate.customer_id,
        ),
        metadata=tenant,
    )
    assert (merged.survivor.given_name, merged.survivor.family_name, merged.survivor.locale) == (
        "Anna",
        "Example",
        "de-AT",
    )
    row = await db.fetchrow(
        "SELECT given_name, family_name, birth_date, locale, attributes::text, status, merged_into::text"
        " FROM profile.customers WHERE id = $1",
        duplicate.customer_id,
    )
    assert tuple(row) == ("", "", None, "", "{}", "merged", survivor.customer_id)
    assert (
        await db.fetchval(
            "SELECT count(*) FROM profile.consents WHERE customer_id = $1", duplicate.customer_id
        )
        == 0
    )
