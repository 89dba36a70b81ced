"""Every edge of ProfileService answers right: bad bytes, over-long strings, timestamps out of
range, malformed locales and masks, erased customers, another tenant's customers, garbage. Each is
INVALID_ARGUMENT or FAILED_PRECONDITION with the offending field, never INTERNAL, and writes nothing."""

import zlib
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.common.v1 import date_pb2
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as api
from loyalty_runtime.paging import encode_token
from tests.conftest import rpc_failure
from tests.garbage import Garbage, Mutator, max_length, string_fields
from tests.service.profile.conftest import (
    CARD,
    EMAIL,
    EXTERNAL,
    PHONE,
    card,
    count_rows,
    enrol,
    ident,
    key,
    tenant_of,
)
from tests.service.profile.requests import MAP_KEYS, MUTATING, REQUESTS

TENANT_TABLES = (
    "customers",
    "identifiers",
    "consents",
    "attribute_definitions",
    "idempotency_keys",
)  # not the outbox: its relay deletes what it publishes, meanwhile (events are checked on the stream)
EMAIL_MARKETING = {
    "channel": profile_pb2.CONSENT_CHANNEL_EMAIL,
    "purpose": profile_pb2.CONSENT_PURPOSE_MARKETING,
}


async def tenant_rows(db, tenant) -> dict[str, int]:
    return {table: await count_rows(db, table, tenant_of(tenant)) for table in TENANT_TABLES}


def call(stub, name: str, request, tenant):
    answer = getattr(stub, name)(request, metadata=tenant)
    return _drained(answer) if isinstance(answer, grpc.aio.UnaryStreamCall) else answer


async def _drained(stream) -> list:
    """A server-streaming call as one awaitable: every message, or its error."""
    return [message async for message in stream]


# -- bad bytes and lengths, in every string field of every request ----------------------------

# NUL (PostgreSQL cannot store it), C0 controls, DEL, C1 controls (CSI, NEL).
CONTROL_CHARACTERS = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\x9b"]


@pytest.mark.parametrize("rpc", sorted(REQUESTS))
async def test_a_control_character_in_any_string_is_refused_naming_the_field(stub, tenant, db, rpc):
    request_type = REQUESTS[rpc]
    fields = list(string_fields(request_type.DESCRIPTOR))
    assert fields
    for path, _field, fill in fields:
        for character in CONTROL_CHARACTERS:
            request = request_type()
            fill(request, f"ab{character}cd")
            failure = await rpc_failure(call(stub, rpc, request, tenant))
            expected_field = path.removesuffix("[k]") if path.endswith("attributes") else path
            assert (failure.code, failure.reason, failure.fields) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_ARGUMENT",
                [expected_field],
            ), (rpc, path, repr(character))
            assert character not in failure.message
    assert set((await tenant_rows(db, tenant)).values()) == {0}


@pytest.mark.parametrize("rpc", sorted(REQUESTS))
async def test_a_string_longer_than_its_limit_is_refused_naming_the_field(stub, tenant, db, rpc):
    request_type = REQUESTS[rpc]
    for path, field, fill in string_fields(request_type.DESCRIPTOR):
        if path.endswith("attributes"):
            continue  # a map key: attribute names are checked against the schema
        request = request_type()
        fill(request, "a" * (max_length(field) + 1))
        failure = await rpc_failure(call(stub, rpc, request, tenant))
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [path]), (rpc, path)
    assert set((await tenant_rows(db, tenant)).values()) == {0}


# Each request string that is stored, and the column it is stored in.
COLUMNS = {
    (api.EnrolCustomerRequest, "identifiers[0].value"): ("identifiers", "value"),
    (api.EnrolCustomerRequest, "identifiers[0].namespace"): ("identifiers", "namespace"),
    (api.EnrolCustomerRequest, "given_name"): ("customers", "given_name"),
    (api.EnrolCustomerRequest, "family_name"): ("customers", "family_name"),
    (api.EnrolCustomerRequest, "locale"): ("customers", "locale"),
    (api.EnrolCustomerRequest, "consents[0].source"): ("consents", "source"),
    (api.UpdateCustomerRequest, "customer.given_name"): ("customers", "given_name"),
    (api.UpdateCustomerRequest, "customer.family_name"): ("customers", "family_name"),
    (api.UpdateCustomerRequest, "customer.locale"): ("customers", "locale"),
    (api.AddIdentifierRequest, "identifier.value"): ("identifiers", "value"),
    (api.AddIdentifierRequest, "identifier.namespace"): ("identifiers", "namespace"),
    (api.SetConsentsRequest, "consents[0].source"): ("consents", "source"),
    (api.DefineAttributeRequest, "definition.name"): ("attribute_definitions", "name"),
    (api.DefineAttributeRequest, "definition.enum_values[0]"): ("attribute_definitions", "enum_values"),
    (api.DefineAttributeRequest, "definition.description"): ("attribute_definitions", "description"),
    (api.EnrolCustomerRequest, "idempotency_key"): ("idempotency_keys", "key"),
}


async def test_the_contracts_limits_are_the_columns_limits(db, profile):
    """So a value the validator lets through always fits where it is stored."""
    columns = {
        (row["table_name"], row["column_name"]): row["limit"]
        for row in await db.fetch(
            # varchar(n) and varchar(n)[] both keep n + 4 as the type modifier.
            """SELECT c.relname AS table_name, a.attname AS column_name, a.atttypmod - 4 AS limit
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'profile' AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypmod > 4"""
        )
    }
    for (request_type, path), column in COLUMNS.items():
        field = next(f for p, f, _ in string_fields(request_type.DESCRIPTOR) if p == path)
        assert max_length(field) == columns[column], (request_type.__name__, path, column)


async def test_a_consent_source_longer_than_its_column_is_refused_not_truncated(stub, tenant, db):
    too_long = profile_pb2.Consent(**EMAIL_MARKETING, granted=True, source="s" * 101)
    failure = await rpc_failure(
        stub.EnrolCustomer(
            api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[card()], consents=[too_long]),
            metadata=tenant,
        )
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["consents[0].source"])
    customer = await enrol(stub, tenant)
    failure = await rpc_failure(
        stub.SetConsents(
            api.SetConsentsRequest(
                idempotency_key=key(), customer_id=customer.customer_id, consents=[too_long]
            ),
            metadata=tenant,
        )
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["consents[0].source"])
    assert await count_rows(db, "consents", tenant_of(tenant)) == 0
    exactly = profile_pb2.Consent(**EMAIL_MARKETING, granted=True, source="s" * 100)
    answer = await stub.SetConsents(
        api.SetConsentsRequest(idempotency_key=key(), customer_id=customer.customer_id, consents=[exactly]),
        metadata=tenant,
    )
    assert answer.customer.consents[0].source == "s" * 100


async def test_line_breaks_in_names_and_sources_are_refused(stub, tenant):
    for fields, field in (
        ({"given_name": "Anna\nBerta"}, "given_name"),
        ({"family_name": "Muster\r"}, "family_name"),
        ({"consents": [profile_pb2.Consent(**EMAIL_MARKETING, source="app\tx")]}, "consents[0].source"),
    ):
        request = api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[card()], **fields)
        failure = await rpc_failure(stub.EnrolCustomer(request, metadata=tenant))
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


# -- timestamps and dates -------------------------------------------------------------------


@pytest.mark.parametrize(
    "stamp",
    [
        Timestamp(seconds=253_402_300_800),  # 10000-01-01
        Timestamp(seconds=-62_135_596_801),  # before 0001-01-01
        Timestamp(seconds=0, nanos=1_000_000_000),
        Timestamp(seconds=0, nanos=-1),
    ],
)
async def test_a_timestamp_outside_protobufs_range_is_refused(stub, tenant, db, stamp):
    consent = profile_pb2.Consent(**EMAIL_MARKETING, granted=True, source="app", record_time=stamp)
    request = api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[card()], consents=[consent])
    failure = await rpc_failure(stub.EnrolCustomer(request, metadata=tenant))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["consents[0].record_time"])
    assert await count_rows(db, "customers", tenant_of(tenant)) == 0


async def test_a_consent_from_the_future_is_refused_and_the_oldest_time_is_kept_exactly(stub, tenant):
    tomorrow = Timestamp()
    tomorrow.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    future = profile_pb2.Consent(**EMAIL_MARKETING, granted=True, source="app", record_time=tomorrow)
    request = api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[card()], consents=[future])
    failure = await rpc_failure(stub.EnrolCustomer(request, metadata=tenant))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["consents[0].record_time"])
    first_moment = Timestamp(seconds=-62_135_596_800, nanos=123_456_000)
    oldest = profile_pb2.Consent(**EMAIL_MARKETING, granted=True, source="app", record_time=first_moment)
    customer = await enrol(stub, tenant, card(), consents=[oldest])
    again = await stub.GetCustomer(api.GetCustomerRequest(customer_id=customer.customer_id), metadata=tenant)
    assert customer.consents[0].record_time == again.customer.consents[0].record_time == first_moment


@pytest.mark.parametrize(
    ("birth_date", "reason"),
    [
        (date_pb2.Date(year=1990, month=2, day=30), "not a calendar date"),
        (date_pb2.Date(year=0, month=5, day=1), "not a calendar date"),
        (date_pb2.Date(year=2_000_000, month=1, day=1), "not a calendar date"),
        (date_pb2.Date(year=1990, month=-1, day=1), "not a calendar date"),
        (date_pb2.Date(year=datetime.now(UTC).year + 1, month=1, day=1), "future"),
    ],
)
async def test_a_birth_date_must_be_a_past_calendar_date(stub, tenant, birth_date, reason):
    request = api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[card()], birth_date=birth_date)
    failure = await rpc_failure(stub.EnrolCustomer(request, metadata=tenant))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["birth_date"])
    assert reason in failure.message


# -- locale -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "locale", ["de_AT", "d", "de-", "-de", "de--AT", "de AT", "déu", "de-ABCDEFGHI", "12-AT"]
)
async def test_a_malformed_locale_is_refused(stub, tenant, locale):
    request = api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[card()], locale=locale)
    failure = await rpc_failure(stub.EnrolCustomer(request, metadata=tenant))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["locale"])
    customer = await enrol(stub, tenant)
    update = api.UpdateCustomerRequest(
        idempotency_key=key(),
        customer=profile_pb2.Customer(customer_id=customer.customer_id, locale=locale),
        update_mask=FieldMask(paths=["locale"]),
    )
    failure = await rpc_failure(stub.UpdateCustomer(update, metadata=tenant))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["customer.locale"])


async def test_a_locale_is_stored_in_its_canonical_case(stub, tenant):
    customer = await enrol(stub, tenant, card(), locale="ZH-hant-tw")
    assert customer.locale == "zh-Hant-TW"


# -- update masks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "given_name.",
        "attributes.a.b.c",
        "attributes.",
        "attributes.diet.string_value",
        "attributes.Diet",
        ".given_name",
        "GIVEN_NAME",
        "given_name,family_name",
        "",
        "customer_id",
        "identifiers",
        "consents",
        "status",
        "create_time",
        "update_time",
        "birth_date.year",
    ],
)
async def test_only_updatable_paths_are_accepted_in_an_update_mask(stub, tenant, db, path):
    customer = await enrol(stub, tenant, card(), given_name="Anna")
    before = await db.fetchrow("SELECT * FROM profile.customers WHERE id = $1", customer.customer_id)
    request = api.UpdateCustomerRequest(
        idempotency_key=key(),
        customer=profile_pb2.Customer(
            customer_id=customer.customer_id,
            given_name="Changed",
            attributes={"diet": profile_pb2.AttributeValue(string_value="x")},
        ),
        update_mask=FieldMask(paths=["family_name", path]),
    )
    failure = await rpc_failure(stub.UpdateCustomer(request, metadata=tenant))
    assert (failure.code, failure.reason, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        ["update_mask.paths[1]"],
    )
    assert await db.fetchrow("SELECT * FROM profile.customers WHERE id = $1", customer.customer_id) == before


async def test_every_updatable_path_updates_what_it_names(stub, tenant):
    for name, kind in (("diet", profile_pb2.ATTRIBUTE_TYPE_STRING), ("size", profile_pb2.ATTRIBUTE_TYPE_INT)):
        definition = profile_pb2.AttributeDefinition(name=name, type=kind)
        await stub.DefineAttribute(
            api.DefineAttributeRequest(idempotency_key=key(), definition=definition), metadata=tenant
        )
    customer = await enrol(
        stub, tenant, card(), attributes={"size": profile_pb2.AttributeValue(int_value=42)}, given_name="Anna"
    )
    changes = profile_pb2.Customer(
        customer_id=customer.customer_id,
        given_name="Berta",
        family_name="Muster",
        birth_date=date_pb2.Date(year=1990, month=5, day=1),
        locale="de-AT",
        attributes={"diet": profile_pb2.AttributeValue(string_value="vegan")},
    )

    async def update(*paths):
        request = api.UpdateCustomerRequest(
            idempotency_key=key(), customer=changes, update_mask=FieldMask(paths=paths)
        )
        return (await stub.UpdateCustomer(request, metadata=tenant)).customer

    after = await update("given_name", "attributes.diet")
    assert (after.given_name, after.family_name, dict(after.attributes)) == (
        "Berta",
        "",
        {
            "size": profile_pb2.AttributeValue(int_value=42),
            "diet": profile_pb2.AttributeValue(string_value="vegan"),
        },
    )
    after = await update("family_name", "birth_date", "locale", "attributes")
    assert (after.family_name, after.birth_date.year, after.locale, list(after.attributes)) == (
        "Muster",
        1990,
        "de-AT",
        ["diet"],
    )
    after = await update("attributes.size")  # absent from the map: removed
    assert list(after.attributes) == ["diet"]
    undefined = await rpc_failure(update("attributes.shoe"))
    assert (undefined.code, undefined.reason, undefined.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_ATTRIBUTE",
        ["customer.attributes[shoe]"],
    )
    got = await stub.GetCustomer(api.GetCustomerRequest(customer_id=customer.customer_id), metadata=tenant)
    assert got.customer == after


# -- erased customers ---------------------------------------------------------------------


async def erased_customer(stub, tenant) -> profile_pb2.Customer:
    customer = await enrol(stub, tenant, card(), ident(EMAIL, f"{key()}@example.com"), given_name="Gone")
    await stub.EraseCustomer(
        api.EraseCustomerRequest(idempotency_key=key(), customer_id=customer.customer_id), metadata=tenant
    )
    return customer


def changes_of(customer_id: str, other_id: str) -> dict[str, tuple[str, object, str]]:
    """Every change to a customer: (rpc, request, the field naming the erased customer)."""
    consent = profile_pb2.Consent(**EMAIL_MARKETING, granted=True, source="app")
    return {
        "update": (
            "UpdateCustomer",
            api.UpdateCustomerRequest(
                idempotency_key=key(),
                customer=profile_pb2.Customer(customer_id=customer_id, given_name="Back"),
                update_mask=FieldMask(paths=["given_name"]),
            ),
            "customer.customer_id",
        ),
        "add identifier": (
            "AddIdentifier",
            api.AddIdentifierRequest(idempotency_key=key(), customer_id=customer_id, identifier=card()),
            "customer_id",
        ),
        "remove identifier": (
            "RemoveIdentifier",
            api.RemoveIdentifierRequest(idempotency_key=key(), customer_id=customer_id, identifier=card()),
            "customer_id",
        ),
        "set consents": (
            "SetConsents",
            api.SetConsentsRequest(idempotency_key=key(), customer_id=customer_id, consents=[consent]),
            "customer_id",
        ),
        "merge into it": (
            "MergeCustomers",
            api.MergeCustomersRequest(
                idempotency_key=key(), survivor_customer_id=customer_id, merged_customer_id=other_id
            ),
            "survivor_customer_id",
        ),
        "merge it away": (
            "MergeCustomers",
            api.MergeCustomersRequest(
                idempotency_key=key(), survivor_customer_id=other_id, merged_customer_id=customer_id
            ),
            "merged_customer_id",
        ),
    }


async def test_every_change_to_an_erased_customer_is_refused(stub, tenant, db):
    gone = await erased_customer(stub, tenant)
    other = await enrol(stub, tenant)
    before = await tenant_rows(db, tenant)
    for change, (rpc, request, field) in changes_of(gone.customer_id, other.customer_id).items():
        failure = await rpc_failure(call(stub, rpc, request, tenant))
        assert (failure.code, failure.reason, failure.fields) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "CUSTOMER_ERASED",
            [field],
        ), change
    assert await tenant_rows(db, tenant) == before
    after = await stub.GetCustomer(api.GetCustomerRequest(customer_id=gone.customer_id), metadata=tenant)
    assert (after.customer.status, after.customer.given_name, list(after.customer.identifiers)) == (
        profile_pb2.CUSTOMER_STATUS_ERASED,
        "",
        [],
    )
    # Erasing again is harmless: the answer is the same kind, nothing comes back.
    again = await stub.EraseCustomer(
        api.EraseCustomerRequest(idempotency_key=key(), customer_id=gone.customer_id), metadata=tenant
    )
    assert again.customer_id == gone.customer_id


# -- another tenant's customer ------------------------------------------------------------


def reads_of(customer_id: str) -> dict[str, tuple[str, object]]:
    return {
        "get": ("GetCustomer", api.GetCustomerRequest(customer_id=customer_id)),
        "check consent": (
            "CheckConsent",
            api.CheckConsentRequest(customer_id=customer_id, **EMAIL_MARKETING),
        ),
        "export": ("ExportCustomerData", api.ExportCustomerDataRequest(customer_id=customer_id)),
        "erase": ("EraseCustomer", api.EraseCustomerRequest(idempotency_key=key(), customer_id=customer_id)),
    }


async def test_another_tenants_customer_looks_exactly_like_an_unknown_one_to_every_rpc(stub, profile, db):
    owner, intruder = profile.metadata(f"own-{key()[:8]}"), profile.metadata(f"other-{key()[:8]}")
    theirs = await enrol(stub, owner, ident(EMAIL, "private@example.com"), given_name="Private")
    mine = await enrol(stub, intruder)
    unknown = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    before = await tenant_rows(db, owner)
    for name in [*changes_of(unknown, mine.customer_id), *reads_of(unknown)]:
        answers = []
        for customer_id in (theirs.customer_id, unknown):
            rpc, request, *_ = {**changes_of(customer_id, mine.customer_id), **reads_of(customer_id)}[name]
            failure = await rpc_failure(call(stub, rpc, request, intruder))
            answers.append((failure.code, failure.reason, failure.message, failure.fields))
        assert answers[0] == answers[1], name
        assert answers[0][:2] == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND"), name
    lookup = await rpc_failure(
        stub.LookupCustomer(
            api.LookupCustomerRequest(identifier=ident(EMAIL, "private@example.com")), metadata=intruder
        )
    )
    assert (lookup.code, lookup.reason) == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
    found = await stub.SearchCustomers(api.SearchCustomersRequest(query="Private"), metadata=intruder)
    assert list(found.customers) == []
    assert await tenant_rows(db, owner) == before


# -- other edges ----------------------------------------------------------------------------


async def test_two_answers_for_one_channel_and_purpose_are_refused(stub, tenant, db):
    twice = [
        profile_pb2.Consent(**EMAIL_MARKETING, granted=True, source="app"),
        profile_pb2.Consent(**EMAIL_MARKETING, granted=False, source="pos"),
    ]
    failure = await rpc_failure(
        stub.EnrolCustomer(
            api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[card()], consents=twice),
            metadata=tenant,
        )
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["consents[1].purpose"])
    customer = await enrol(stub, tenant)
    failure = await rpc_failure(
        stub.SetConsents(
            api.SetConsentsRequest(idempotency_key=key(), customer_id=customer.customer_id, consents=twice),
            metadata=tenant,
        )
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["consents[1].purpose"])
    assert await count_rows(db, "consents", tenant_of(tenant)) == 0


async def test_an_identifier_given_twice_in_different_spellings_is_refused(stub, tenant):
    request = api.EnrolCustomerRequest(
        idempotency_key=key(), identifiers=[ident(PHONE, "+49 151 1234 5678"), ident(PHONE, "+4915112345678")]
    )
    failure = await rpc_failure(stub.EnrolCustomer(request, metadata=tenant))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["identifiers[1]"])


@pytest.mark.parametrize(
    ("identifier", "field"),
    [
        (ident(0, "ABCD1234"), "identifier.type"),
        (ident(17, "ABCD1234"), "identifier.type"),
        (ident(EXTERNAL, "id\n1", "shop"), "identifier.value"),
        (ident(EXTERNAL, " ", "shop"), "identifier.value"),
        (ident(EXTERNAL, "x" * 129, "shop"), "identifier.value"),
        (ident(EXTERNAL, "x1", "Shop"), "identifier.namespace"),
        (ident(CARD, "12"), "identifier.value"),
    ],
)
async def test_a_malformed_identifier_is_refused_by_lookups_and_changes(stub, tenant, identifier, field):
    customer = await enrol(stub, tenant)
    for rpc, request in (
        ("LookupCustomer", api.LookupCustomerRequest(identifier=identifier)),
        (
            "AddIdentifier",
            api.AddIdentifierRequest(
                idempotency_key=key(), customer_id=customer.customer_id, identifier=identifier
            ),
        ),
    ):
        failure = await rpc_failure(call(stub, rpc, request, tenant))
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field]), rpc


async def test_identifiers_are_added_once_removed_but_never_the_last(stub, tenant):
    customer = await enrol(stub, tenant, ident(CARD, "KEEP0001"))
    other = await enrol(stub, tenant, ident(CARD, "THEIRS01"))

    async def add(identifier):
        request = api.AddIdentifierRequest(
            idempotency_key=key(), customer_id=customer.customer_id, identifier=identifier
        )
        return (await stub.AddIdentifier(request, metadata=tenant)).customer

    def remove(identifier):
        request = api.RemoveIdentifierRequest(
            idempotency_key=key(), customer_id=customer.customer_id, identifier=identifier
        )
        return stub.RemoveIdentifier(request, metadata=tenant)

    added = await add(ident(EMAIL, "Keep@Example.com"))
    assert [i.value for i in added.identifiers] == ["keep@example.com", "KEEP0001"]
    assert await add(ident(EMAIL, "keep@example.com")) == added
    taken = await rpc_failure(add(ident(CARD, "theirs-01")))
    assert (taken.code, taken.reason, taken.fields) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "IDENTIFIER_TAKEN",
        ["identifier"],
    )
    not_theirs = await rpc_failure(remove(ident(CARD, "THEIRS01")))
    assert (not_theirs.code, not_theirs.reason) == (grpc.StatusCode.NOT_FOUND, "IDENTIFIER_NOT_FOUND")
    left = (await remove(ident(CARD, "KEEP0001"))).customer
    assert [i.value for i in left.identifiers] == ["keep@example.com"]
    last = await rpc_failure(remove(ident(EMAIL, "keep@example.com")))
    assert (last.code, last.reason, last.fields) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "LAST_IDENTIFIER",
        ["identifier"],
    )
    got = await stub.GetCustomer(api.GetCustomerRequest(customer_id=other.customer_id), metadata=tenant)
    assert [i.value for i in got.customer.identifiers] == ["THEIRS01"]


async def test_an_older_consent_answer_never_overrides_a_newer_one(stub, tenant):
    customer = await enrol(stub, tenant)
    now, last_week = Timestamp(), Timestamp()
    now.FromDatetime(datetime.now(UTC))
    last_week.FromDatetime(datetime.now(UTC) - timedelta(days=7))

    async def answer(granted: bool, when: Timestamp):
        consent = profile_pb2.Consent(**EMAIL_MARKETING, granted=granted, source="app", record_time=when)
        request = api.SetConsentsRequest(
            idempotency_key=key(), customer_id=customer.customer_id, consents=[consent]
        )
        return (await stub.SetConsents(request, metadata=tenant)).customer

    withdrawn = await answer(False, now)
    late_grant = await answer(True, last_week)
    assert late_grant == withdrawn
    check = await stub.CheckConsent(
        api.CheckConsentRequest(customer_id=customer.customer_id, **EMAIL_MARKETING), metadata=tenant
    )
    assert check.allowed is False


@pytest.mark.parametrize(
    ("rpc", "request_"),
    [
        ("SearchCustomers", api.SearchCustomersRequest(page_token="abc")),
        ("SearchCustomers", api.SearchCustomersRequest(page_token=encode_token("not-a-uuid"))),
        ("SearchCustomers", api.SearchCustomersRequest(page_token=encode_token("\x00"))),
        ("SearchCustomers", api.SearchCustomersRequest(page_size=-1)),
        ("ListAttributeDefinitions", api.ListAttributeDefinitionsRequest(page_token=encode_token("\x00"))),
        ("ListAttributeDefinitions", api.ListAttributeDefinitionsRequest(page_token=encode_token("Name"))),
        ("ListAttributeDefinitions", api.ListAttributeDefinitionsRequest(page_token="//8=")),
    ],
)
async def test_a_page_token_this_service_did_not_issue_is_refused(stub, tenant, rpc, request_):
    failure = await rpc_failure(call(stub, rpc, request_, tenant))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields in (["page_token"], ["page_size"])


@pytest.mark.parametrize("value", ["not-a-uuid", "", "1b4e28ba-2fa1-11d2-883f-0016d3cca42", "x" * 200])
async def test_a_malformed_customer_id_is_invalid_argument(stub, tenant, value):
    failure = await rpc_failure(stub.GetCustomer(api.GetCustomerRequest(customer_id=value), metadata=tenant))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["customer_id"])


async def test_attribute_values_at_their_edges_round_trip_exactly(stub, tenant):
    for name, kind in (
        ("big", profile_pb2.ATTRIBUTE_TYPE_INT),
        ("small", profile_pb2.ATTRIBUTE_TYPE_INT),
        ("credit", profile_pb2.ATTRIBUTE_TYPE_DECIMAL),
        ("day", profile_pb2.ATTRIBUTE_TYPE_DATE),
        ("note", profile_pb2.ATTRIBUTE_TYPE_STRING),
    ):
        await stub.DefineAttribute(
            api.DefineAttributeRequest(
                idempotency_key=key(), definition=profile_pb2.AttributeDefinition(name=name, type=kind)
            ),
            metadata=tenant,
        )
    values = {
        "big": profile_pb2.AttributeValue(int_value=2**63 - 1),
        "small": profile_pb2.AttributeValue(int_value=-(2**63)),
        "credit": profile_pb2.AttributeValue(decimal_value="12345678901234567890.000000000001"),
        "day": profile_pb2.AttributeValue(date_value=date_pb2.Date(year=9999, month=12, day=31)),
        "note": profile_pb2.AttributeValue(string_value="Zeile 1\nZeile 2 \u00e9\U0001f600" + "x" * 980),
    }
    customer = await enrol(stub, tenant, card(), attributes=values)
    got = await stub.GetCustomer(api.GetCustomerRequest(customer_id=customer.customer_id), metadata=tenant)
    assert dict(got.customer.attributes) == dict(customer.attributes) == values
    for bad in ("NaN", "1,5", "Infinity", ""):
        request = api.EnrolCustomerRequest(
            idempotency_key=key(),
            identifiers=[card()],
            attributes={"credit": profile_pb2.AttributeValue(decimal_value=bad)},
        )
        failure = await rpc_failure(stub.EnrolCustomer(request, metadata=tenant))
        assert (failure.code, failure.reason, failure.fields) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "ATTRIBUTE_TYPE_MISMATCH",
            ["attributes[credit]"],
        ), bad


# -- garbage ------------------------------------------------------------------------------

GARBAGE_PER_RPC = 60
MUTANTS_PER_RPC = 150
PLAUSIBLE = [
    "given_name",
    "attributes",
    "attributes.diet",
    "anna@example.com",
    "+4915112345678",
    "de-AT",
    "diet",
]
CONSENT = profile_pb2.Consent(**EMAIL_MARKETING, granted=True, source="app")
ATTRIBUTES = {
    "diet": profile_pb2.AttributeValue(enum_value="vegan"),
    "size": profile_pb2.AttributeValue(int_value=42),
}


def valid_request(rpc: str, survivor: profile_pb2.Customer, duplicate: profile_pb2.Customer):
    """A request of `rpc` that the service would accept as it stands."""
    fields = {"given_name": "Anna", "family_name": "Muster", "locale": "de-AT", "attributes": ATTRIBUTES}
    return {
        "EnrolCustomer": lambda: api.EnrolCustomerRequest(
            identifiers=[card(), ident(EMAIL, f"{key()}@example.com"), ident(EXTERNAL, key(), "shop")],
            birth_date=date_pb2.Date(year=1990, month=5, day=1),
            consents=[CONSENT],
            **fields,
        ),
        "UpdateCustomer": lambda: api.UpdateCustomerRequest(
            customer=profile_pb2.Customer(customer_id=survivor.customer_id, **fields),
            update_mask=FieldMask(paths=["given_name", "attributes.diet", "locale"]),
        ),
        "AddIdentifier": lambda: api.AddIdentifierRequest(
            customer_id=survivor.customer_id, identifier=ident(PHONE, "+4915112345678")
        ),
        "RemoveIdentifier": lambda: api.RemoveIdentifierRequest(
            customer_id=survivor.customer_id, identifier=survivor.identifiers[0]
        ),
        "SetConsents": lambda: api.SetConsentsRequest(customer_id=survivor.customer_id, consents=[CONSENT]),
        "DefineAttribute": lambda: api.DefineAttributeRequest(
            definition=profile_pb2.AttributeDefinition(
                name="diet", type=profile_pb2.ATTRIBUTE_TYPE_ENUM, enum_values=["vegan", "any"]
            )
        ),
        "MergeCustomers": lambda: api.MergeCustomersRequest(
            survivor_customer_id=survivor.customer_id, merged_customer_id=duplicate.customer_id
        ),
        "EraseCustomer": lambda: api.EraseCustomerRequest(customer_id=duplicate.customer_id),
    }[rpc]()


async def fuzz_schema(stub, tenant) -> None:
    for definition in (
        profile_pb2.AttributeDefinition(
            name="diet", type=profile_pb2.ATTRIBUTE_TYPE_ENUM, enum_values=["vegan", "any"]
        ),
        profile_pb2.AttributeDefinition(name="size", type=profile_pb2.ATTRIBUTE_TYPE_INT),
    ):
        await stub.DefineAttribute(
            api.DefineAttributeRequest(idempotency_key=key(), definition=definition), metadata=tenant
        )


async def answers_without_internal(stub, tenant, db, rpc: str, request) -> bool:
    """Call; a refusal must be a caller's error and leave every table as it was. True if refused."""
    before = await tenant_rows(db, tenant)
    try:
        await call(stub, rpc, request, tenant)
    except grpc.aio.AioRpcError as error:
        assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (rpc, request, error)
        assert await tenant_rows(db, tenant) == before, (rpc, request)
        return True
    return False


@pytest.mark.parametrize("rpc", MUTATING)
async def test_garbage_never_answers_internal_and_a_refusal_writes_nothing(stub, tenant, db, rpc):
    """Random requests: control characters, over-long strings, undefined enum numbers, numbers and
    timestamps at and past their limits, sometimes about customers that exist."""
    ids = [(await enrol(stub, tenant)).customer_id for _ in range(2)]
    garbage = Garbage(zlib.crc32(rpc.encode()), known=[*ids, *PLAUSIBLE], map_keys=MAP_KEYS)
    refused = 0
    for _ in range(GARBAGE_PER_RPC):
        request = garbage.fill(REQUESTS[rpc]())
        request.idempotency_key = key()
        for field in ("customer_id", "survivor_customer_id", "merged_customer_id"):
            if field in request.DESCRIPTOR.fields_by_name and garbage.random.random() < 0.5:
                setattr(request, field, garbage.random.choice(ids))
        refused += await answers_without_internal(stub, tenant, db, rpc, request)
    assert refused


@pytest.mark.parametrize("rpc", MUTATING)
async def test_valid_requests_mutated_never_answer_internal_and_a_refusal_writes_nothing(
    stub, tenant, db, rpc
):
    """Valid requests with one to three mutations each, so most get past the contract's checks
    and reach the use case and the database."""
    await fuzz_schema(stub, tenant)
    mutator = Mutator(zlib.crc32(rpc.encode()), known=PLAUSIBLE, map_keys=MAP_KEYS)
    accepted = refused = 0
    for number in range(MUTANTS_PER_RPC):
        if number % 10 == 0:  # fresh customers now and then: merges and erasures use them up
            pair = [await enrol(stub, tenant, card(), ident(EMAIL, f"{key()}@example.com")) for _ in range(2)]
        request = mutator.mutate(valid_request(rpc, *pair), mutator.random.randint(1, 3))
        request.idempotency_key = key()
        if await answers_without_internal(stub, tenant, db, rpc, request):
            refused += 1
        else:
            accepted += 1
    assert accepted and refused
