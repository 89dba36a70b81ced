"""ProfileService over a real channel, real PostgreSQL and Redis: what it does when asked right."""

import asyncio
import time
import uuid

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from loyalty.common.v1 import customer_pb2, date_pb2
from loyalty.profile.v1 import events_pb2, profile_pb2, profile_service_pb2 as api
from loyalty_profile.service import DEFINITION
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.errors import InvalidArgument
from tests.conftest import rpc_failure
from tests.service.profile.conftest import (
    CARD,
    EMAIL,
    PHONE,
    count_rows,
    enrol,
    ident,
    key,
    published_events,
    tenant_of,
    wait_for_event,
)


async def test_enrol_normalises_identifiers_and_lookup_finds_by_any(stub, tenant):
    customer = await enrol(
        stub, tenant, ident(EMAIL, "Anna@Example.com"), ident(PHONE, "+49 151 1234 5678"), given_name="Anna"
    )
    assert {i.value for i in customer.identifiers} == {"anna@example.com", "+4915112345678"}
    assert customer.status == profile_pb2.CUSTOMER_STATUS_ACTIVE
    for identifier in (ident(EMAIL, "ANNA@example.com"), ident(PHONE, "+4915112345678")):
        found = await stub.LookupCustomer(api.LookupCustomerRequest(identifier=identifier), metadata=tenant)
        assert found.customer.customer_id == customer.customer_id
    got = await stub.GetCustomer(api.GetCustomerRequest(customer_id=customer.customer_id), metadata=tenant)
    assert got.customer.given_name == "Anna"


async def test_enrol_replays_the_same_key_and_refuses_a_different_request(stub, tenant):
    request = api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[ident(CARD, "CARD0001")])
    first = await stub.EnrolCustomer(request, metadata=tenant)
    again = await stub.EnrolCustomer(request, metadata=tenant)
    assert again.customer.customer_id == first.customer.customer_id
    changed = api.EnrolCustomerRequest(
        idempotency_key=request.idempotency_key, identifiers=[ident(CARD, "CARD0002")]
    )
    failure = await rpc_failure(stub.EnrolCustomer(changed, metadata=tenant))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")


async def test_concurrent_retries_with_one_key_enrol_once(stub, tenant, db):
    request = api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[ident(CARD, "RACE0001")])
    answers = await asyncio.gather(*(stub.EnrolCustomer(request, metadata=tenant) for _ in range(8)))
    assert len({a.customer.customer_id for a in answers}) == 1
    assert await count_rows(db, "customers", tenant_of(tenant)) == 1


@pytest.mark.parametrize(
    ("identifier", "code", "reason", "field"),
    [
        (
            ident(PHONE, "0151 1234"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PHONE",
            "identifiers[0].value",
        ),
        (ident(EMAIL, "anna@"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EMAIL", "identifiers[0].value"),
        (
            ident(customer_pb2.IDENTIFIER_TYPE_EXTERNAL, "x1"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "identifiers[0].namespace",
        ),
    ],
)
async def test_bad_identifiers_are_refused_with_the_field_and_change_nothing(
    stub, tenant, db, identifier, code, reason, field
):
    before = await count_rows(db, "customers")
    failure = await rpc_failure(
        stub.EnrolCustomer(
            api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[identifier]), metadata=tenant
        )
    )
    assert (failure.code, failure.reason, failure.fields) == (code, reason, [field])
    assert "Traceback" not in failure.message
    assert await count_rows(db, "customers") == before


async def test_duplicate_identifier_is_already_exists_and_writes_nothing(stub, tenant, db):
    await enrol(stub, tenant, ident(EMAIL, "dup@example.com"))
    before = await count_rows(db, "customers")
    failure = await rpc_failure(
        stub.EnrolCustomer(
            api.EnrolCustomerRequest(
                idempotency_key=key(), identifiers=[ident(CARD, "NEWCARD1"), ident(EMAIL, "DUP@example.com")]
            ),
            metadata=tenant,
        )
    )
    assert (failure.code, failure.reason, failure.fields) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "IDENTIFIER_TAKEN",
        ["identifiers[1]"],
    )
    assert await count_rows(db, "customers") == before
    lookup = stub.LookupCustomer(
        api.LookupCustomerRequest(identifier=ident(CARD, "NEWCARD1")), metadata=tenant
    )
    assert (await rpc_failure(lookup)).code == grpc.StatusCode.NOT_FOUND


async def test_another_tenant_cannot_see_a_customer_by_id_or_identifier(stub, profile):
    tenant_a, tenant_b = profile.metadata("iso-a-" + key()[:6]), profile.metadata("iso-b-" + key()[:6])
    customer = await enrol(stub, tenant_a, ident(EMAIL, "secret@example.com"), given_name="Secret")
    unknown_id = str(uuid.uuid4())
    by_other_tenant = await rpc_failure(
        stub.GetCustomer(api.GetCustomerRequest(customer_id=customer.customer_id), metadata=tenant_b)
    )
    truly_unknown = await rpc_failure(
        stub.GetCustomer(api.GetCustomerRequest(customer_id=unknown_id), metadata=tenant_b)
    )
    assert (
        (by_other_tenant.code, by_other_tenant.reason, by_other_tenant.message)
        == (truly_unknown.code, truly_unknown.reason, truly_unknown.message)
        == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND", "no such customer")
    )
    by_identifier = await rpc_failure(
        stub.LookupCustomer(
            api.LookupCustomerRequest(identifier=ident(EMAIL, "secret@example.com")), metadata=tenant_b
        )
    )
    assert by_identifier.code == grpc.StatusCode.NOT_FOUND
    search = await stub.SearchCustomers(api.SearchCustomersRequest(query="Secret"), metadata=tenant_b)
    assert list(search.customers) == []
    # Tenant B may hold the same e-mail for its own customer: uniqueness is per tenant.
    own = await enrol(stub, tenant_b, ident(EMAIL, "secret@example.com"))
    assert own.customer_id != customer.customer_id
    update = stub.UpdateCustomer(
        api.UpdateCustomerRequest(
            idempotency_key=key(),
            customer=profile_pb2.Customer(customer_id=customer.customer_id, given_name="Hacked"),
            update_mask=FieldMask(paths=["given_name"]),
        ),
        metadata=tenant_b,
    )
    assert (await rpc_failure(update)).code == grpc.StatusCode.NOT_FOUND
    still = await stub.GetCustomer(
        api.GetCustomerRequest(customer_id=customer.customer_id), metadata=tenant_a
    )
    assert still.customer.given_name == "Secret"


async def test_attribute_schema_grows_at_run_time(stub, tenant):
    customer = await enrol(stub, tenant, ident(CARD, "ATTR0001"))
    value = profile_pb2.AttributeValue(enum_value="vegan")
    update = api.UpdateCustomerRequest(
        idempotency_key=key(),
        customer=profile_pb2.Customer(customer_id=customer.customer_id, attributes={"diet": value}),
        update_mask=FieldMask(paths=["attributes.diet"]),
    )
    unknown = await rpc_failure(stub.UpdateCustomer(update, metadata=tenant))
    assert (unknown.code, unknown.reason, unknown.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_ATTRIBUTE",
        ["customer.attributes[diet]"],
    )
    definition = profile_pb2.AttributeDefinition(
        name="diet", type=profile_pb2.ATTRIBUTE_TYPE_ENUM, enum_values=["vegan", "vegetarian", "any"]
    )
    await stub.DefineAttribute(
        api.DefineAttributeRequest(idempotency_key=key(), definition=definition), metadata=tenant
    )
    update.idempotency_key = key()
    updated = await stub.UpdateCustomer(update, metadata=tenant)
    assert updated.customer.attributes["diet"].enum_value == "vegan"
    wrong_type = api.UpdateCustomerRequest(
        idempotency_key=key(),
        customer=profile_pb2.Customer(
            customer_id=customer.customer_id, attributes={"diet": profile_pb2.AttributeValue(int_value=3)}
        ),
        update_mask=FieldMask(paths=["attributes.diet"]),
    )
    mismatch = await rpc_failure(stub.UpdateCustomer(wrong_type, metadata=tenant))
    assert (mismatch.reason, mismatch.fields) == ("ATTRIBUTE_TYPE_MISMATCH", ["customer.attributes[diet]"])
    listed = await stub.ListAttributeDefinitions(api.ListAttributeDefinitionsRequest(), metadata=tenant)
    assert [d.name for d in listed.definitions] == ["diet"]


async def test_required_attribute_is_enforced_at_enrolment(stub, tenant):
    definition = profile_pb2.AttributeDefinition(
        name="home_store", type=profile_pb2.ATTRIBUTE_TYPE_STRING, required=True
    )
    await stub.DefineAttribute(
        api.DefineAttributeRequest(idempotency_key=key(), definition=definition), metadata=tenant
    )
    missing = await rpc_failure(
        stub.EnrolCustomer(
            api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[ident(CARD, "REQ00001")]),
            metadata=tenant,
        )
    )
    assert (missing.code, missing.reason, missing.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUIRED_ATTRIBUTE_MISSING",
        ["attributes[home_store]"],
    )
    customer = await enrol(
        stub,
        tenant,
        ident(CARD, "REQ00001"),
        attributes={"home_store": profile_pb2.AttributeValue(string_value="s1")},
    )
    assert customer.attributes["home_store"].string_value == "s1"


async def test_consent_is_reported_to_callers(stub, tenant):
    customer = await enrol(stub, tenant, ident(EMAIL, "consent@example.com"))
    check = api.CheckConsentRequest(
        customer_id=customer.customer_id,
        channel=profile_pb2.CONSENT_CHANNEL_EMAIL,
        purpose=profile_pb2.CONSENT_PURPOSE_MARKETING,
    )
    assert (await stub.CheckConsent(check, metadata=tenant)).allowed is False
    grant = profile_pb2.Consent(
        channel=profile_pb2.CONSENT_CHANNEL_EMAIL,
        purpose=profile_pb2.CONSENT_PURPOSE_MARKETING,
        granted=True,
        source="app",
    )
    await stub.SetConsents(
        api.SetConsentsRequest(idempotency_key=key(), customer_id=customer.customer_id, consents=[grant]),
        metadata=tenant,
    )
    answer = await stub.CheckConsent(check, metadata=tenant)
    assert answer.allowed is True
    assert answer.consent.source == "app"


async def test_merge_moves_identifiers_and_old_lookups_find_the_survivor(stub, tenant, redis_url):
    survivor = await enrol(stub, tenant, ident(EMAIL, "merge-a@example.com"), given_name="Anna")
    duplicate = await enrol(
        stub,
        tenant,
        ident(PHONE, "+4915199999999"),
        given_name="Ann",
        birth_date=date_pb2.Date(year=1990, month=5, day=1),
    )
    merged = await stub.MergeCustomers(
        api.MergeCustomersRequest(
            idempotency_key=key(),
            survivor_customer_id=survivor.customer_id,
            merged_customer_id=duplicate.customer_id,
        ),
        metadata=tenant,
    )
    assert merged.survivor.customer_id == survivor.customer_id
    assert {i.value for i in merged.survivor.identifiers} == {"merge-a@example.com", "+4915199999999"}
    assert merged.survivor.given_name == "Anna"
    assert merged.survivor.birth_date.year == 1990
    by_old_identifier = await stub.LookupCustomer(
        api.LookupCustomerRequest(identifier=ident(PHONE, "+4915199999999")), metadata=tenant
    )
    by_old_id = await stub.GetCustomer(
        api.GetCustomerRequest(customer_id=duplicate.customer_id), metadata=tenant
    )
    assert by_old_identifier.customer.customer_id == by_old_id.customer.customer_id == survivor.customer_id
    again = stub.MergeCustomers(
        api.MergeCustomersRequest(
            idempotency_key=key(),
            survivor_customer_id=survivor.customer_id,
            merged_customer_id=duplicate.customer_id,
        ),
        metadata=tenant,
    )
    assert (await rpc_failure(again)).reason == "CUSTOMER_MERGED"
    exported = await stub.ExportCustomerData(
        api.ExportCustomerDataRequest(customer_id=survivor.customer_id), metadata=tenant
    )
    assert list(exported.merged_customer_ids) == [duplicate.customer_id]
    event = await wait_for_event(redis_url, tenant_of(tenant), "customer.merged", survivor.customer_id)
    assert event == events_pb2.CustomerMerged(
        survivor_customer_id=survivor.customer_id, merged_customer_id=duplicate.customer_id
    )


async def test_erasure_pseudonymises_and_keeps_the_id(stub, tenant, redis_url):
    customer = await enrol(
        stub,
        tenant,
        ident(EMAIL, "erase-me@example.com"),
        ident(PHONE, "+4915188888888"),
        given_name="Erika",
        family_name="Muster",
        locale="de-DE",
    )
    erased = await stub.EraseCustomer(
        api.EraseCustomerRequest(idempotency_key=key(), customer_id=customer.customer_id), metadata=tenant
    )
    assert erased.customer_id == customer.customer_id
    after = (
        await stub.GetCustomer(api.GetCustomerRequest(customer_id=customer.customer_id), metadata=tenant)
    ).customer
    assert after.status == profile_pb2.CUSTOMER_STATUS_ERASED
    assert (after.given_name, after.family_name, after.locale, list(after.identifiers)) == ("", "", "", [])
    lookup = stub.LookupCustomer(
        api.LookupCustomerRequest(identifier=ident(EMAIL, "erase-me@example.com")), metadata=tenant
    )
    assert (await rpc_failure(lookup)).code == grpc.StatusCode.NOT_FOUND
    exported = await stub.ExportCustomerData(
        api.ExportCustomerDataRequest(customer_id=customer.customer_id), metadata=tenant
    )
    assert "Erika" not in str(exported) and "erase-me" not in str(exported)
    event = await wait_for_event(redis_url, tenant_of(tenant), "customer.erased", customer.customer_id)
    assert event == events_pb2.CustomerErased(customer_id=customer.customer_id)
    # The identifiers are free again for a new enrolment.
    await enrol(stub, tenant, ident(EMAIL, "erase-me@example.com"))


async def test_search_pages_through_matches(stub, tenant):
    for index in range(5):
        await enrol(stub, tenant, ident(CARD, f"PAGE000{index}"), family_name=f"Pagewalker{index}")
    await enrol(stub, tenant, ident(CARD, "OTHER001"), family_name="Elsewhere")
    seen, token = [], ""
    while True:
        page = await stub.SearchCustomers(
            api.SearchCustomersRequest(query="pagewalker", page_size=2, page_token=token), metadata=tenant
        )
        seen += [c.family_name for c in page.customers]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == [f"Pagewalker{i}" for i in range(5)]
    by_card = await stub.SearchCustomers(api.SearchCustomersRequest(query="other-001"), metadata=tenant)
    assert [c.family_name for c in by_card.customers] == ["Elsewhere"]


async def test_update_mask_is_required_and_validated(stub, tenant):
    customer = await enrol(stub, tenant, ident(CARD, "MASK0001"))
    request = api.UpdateCustomerRequest(
        idempotency_key=key(), customer=profile_pb2.Customer(customer_id=customer.customer_id, given_name="X")
    )
    failure = await rpc_failure(stub.UpdateCustomer(request, metadata=tenant))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["update_mask"])


async def test_each_change_publishes_its_event_with_ids_only(stub, tenant, redis_url):
    definition = profile_pb2.AttributeDefinition(name="diet", type=profile_pb2.ATTRIBUTE_TYPE_STRING)
    await stub.DefineAttribute(
        api.DefineAttributeRequest(idempotency_key=key(), definition=definition), metadata=tenant
    )
    customer = await enrol(stub, tenant, ident(CARD, "EVENTS01"), given_name="Eve")
    duplicate = await enrol(stub, tenant, ident(CARD, "EVENTS02"))
    customer_id = customer.customer_id
    await stub.UpdateCustomer(
        api.UpdateCustomerRequest(
            idempotency_key=key(),
            customer=profile_pb2.Customer(
                customer_id=customer_id,
                given_name="Eva",
                attributes={"diet": profile_pb2.AttributeValue(string_value="x")},
            ),
            update_mask=FieldMask(paths=["given_name", "attributes.diet"]),
        ),
        metadata=tenant,
    )
    await stub.AddIdentifier(
        api.AddIdentifierRequest(
            idempotency_key=key(), customer_id=customer_id, identifier=ident(EMAIL, "eve@example.com")
        ),
        metadata=tenant,
    )
    consent = profile_pb2.Consent(
        channel=profile_pb2.CONSENT_CHANNEL_SMS, purpose=profile_pb2.CONSENT_PURPOSE_MARKETING, granted=True
    )
    await stub.SetConsents(
        api.SetConsentsRequest(idempotency_key=key(), customer_id=customer_id, consents=[consent]),
        metadata=tenant,
    )
    await stub.MergeCustomers(
        api.MergeCustomersRequest(
            idempotency_key=key(), survivor_customer_id=customer_id, merged_customer_id=duplicate.customer_id
        ),
        metadata=tenant,
    )
    await stub.EraseCustomer(
        api.EraseCustomerRequest(idempotency_key=key(), customer_id=customer_id), metadata=tenant
    )
    await wait_for_event(redis_url, tenant_of(tenant), "customer.erased", customer_id)
    assert await published_events(redis_url, tenant_of(tenant)) == [
        ("customer.created", customer_id, events_pb2.CustomerCreated(customer_id=customer_id)),
        (
            "customer.created",
            duplicate.customer_id,
            events_pb2.CustomerCreated(customer_id=duplicate.customer_id),
        ),
        (
            "customer.updated",
            customer_id,
            events_pb2.CustomerUpdated(customer_id=customer_id, fields=["attributes", "given_name"]),
        ),
        (
            "customer.updated",
            customer_id,
            events_pb2.CustomerUpdated(customer_id=customer_id, fields=["identifiers"]),
        ),
        (
            "customer.updated",
            customer_id,
            events_pb2.CustomerUpdated(customer_id=customer_id, fields=["consents"]),
        ),
        (
            "customer.merged",
            customer_id,
            events_pb2.CustomerMerged(
                survivor_customer_id=customer_id, merged_customer_id=duplicate.customer_id
            ),
        ),
        ("customer.erased", customer_id, events_pb2.CustomerErased(customer_id=customer_id)),
    ]


async def test_the_gdpr_export_hook_gives_the_profile_and_what_remains_of_its_duplicates(
    stub, tenant, profile
):
    survivor = await enrol(stub, tenant, ident(EMAIL, "export@example.com"), given_name="Export")
    duplicate = await enrol(stub, tenant, ident(CARD, "EXPORT01"))
    await stub.MergeCustomers(
        api.MergeCustomersRequest(
            idempotency_key=key(),
            survivor_customer_id=survivor.customer_id,
            merged_customer_id=duplicate.customer_id,
        ),
        metadata=tenant,
    )
    export = DEFINITION.customer_data.export
    units = profile.server.resources.units

    async def records_for(tenant_id: str, customer_id: str):
        bound = bind_call(CallContext(tenant_id, "test", deadline=time.monotonic() + 5))
        try:
            async with units.read() as uow:
                return await export(uow, customer_id)
        finally:
            unbind_call(bound)

    records = await records_for(tenant_of(tenant), survivor.customer_id)
    current = await stub.GetCustomer(
        api.GetCustomerRequest(customer_id=survivor.customer_id), metadata=tenant
    )
    assert records[0] == current.customer
    assert [(r.customer_id, r.status, r.given_name) for r in records[1:]] == [
        (duplicate.customer_id, profile_pb2.CUSTOMER_STATUS_MERGED, "")
    ]
    assert await records_for(tenant_of(tenant), duplicate.customer_id) == records
    assert await records_for(tenant_of(tenant), str(uuid.uuid4())) == []
    assert await records_for("another-tenant", survivor.customer_id) == []
    with pytest.raises(InvalidArgument):
        await records_for(tenant_of(tenant), "not-a-uuid")


async def test_the_events_carry_a_birthday_without_its_year_for_promotion(stub, tenant, redis_url):
    customer = await enrol(
        stub,
        tenant,
        ident(CARD, "BIRTH001"),
        birth_date=date_pb2.Date(year=1990, month=6, day=15),
        time_zone="Europe/Berlin",
    )
    customer_id = customer.customer_id
    for changes, path in (
        (profile_pb2.Customer(customer_id=customer_id, given_name="Bea"), "given_name"),
        (profile_pb2.Customer(customer_id=customer_id), "birth_date"),
    ):
        await stub.UpdateCustomer(
            api.UpdateCustomerRequest(
                idempotency_key=key(), customer=changes, update_mask=FieldMask(paths=[path])
            ),
            metadata=tenant,
        )
    await wait_for_event(redis_url, tenant_of(tenant), "customer.updated", customer_id)
    async with asyncio.timeout(10):
        while len(published := await published_events(redis_url, tenant_of(tenant))) < 3:
            await asyncio.sleep(0.05)
    birthday = events_pb2.Birthday(month=6, day=15, time_zone="Europe/Berlin")
    assert [event for _, _, event in published] == [
        events_pb2.CustomerCreated(customer_id=customer_id, birthday=birthday),
        events_pb2.CustomerUpdated(customer_id=customer_id, fields=["given_name"]),
        events_pb2.CustomerUpdated(customer_id=customer_id, fields=["birth_date"]),  # dropped: no birthday
    ]
