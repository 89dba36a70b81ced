from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, strategies as st

from loyalty_profile import domain
from loyalty_profile.domain import (
    AttributeDefinition,
    AttributeType,
    Consent,
    Customer,
    CustomerStatus,
    Identifier,
    IdentifierType,
)
from loyalty_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def reason_of(call) -> tuple[str, list[str]]:
    with pytest.raises((InvalidArgument, AlreadyExists, FailedPrecondition)) as raised:
        call()
    return raised.value.reason, [v.field for v in raised.value.violations]


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        (IdentifierType.PHONE, "+49 151 1234 5678", "+4915112345678"),
        (IdentifierType.PHONE, "+1 (650) 253-0000", "+16502530000"),
        (IdentifierType.EMAIL, "  Anna.Example@Example.COM ", "anna.example@example.com"),
        (IdentifierType.LOYALTY_CARD, "1234-5678 abcd", "12345678ABCD"),
    ],
)
def test_identifiers_are_normalised_to_one_spelling(kind, raw, expected):
    assert domain.normalise_identifier(kind, raw, "", "identifier").value == expected


@pytest.mark.parametrize(
    ("kind", "raw", "namespace", "reason", "field"),
    [
        (IdentifierType.PHONE, "015112345678", "", "INVALID_PHONE", "identifiers[0].value"),
        (IdentifierType.PHONE, "+49 1", "", "INVALID_PHONE", "identifiers[0].value"),
        (IdentifierType.EMAIL, "not-an-email", "", "INVALID_EMAIL", "identifiers[0].value"),
        (IdentifierType.LOYALTY_CARD, "12", "", "INVALID_ARGUMENT", "identifiers[0].value"),
        (IdentifierType.EXTERNAL, "abc", "", "INVALID_ARGUMENT", "identifiers[0].namespace"),
        (None, "abc", "", "INVALID_ARGUMENT", "identifiers[0].type"),
    ],
)
def test_malformed_identifiers_name_the_field(kind, raw, namespace, reason, field):
    assert reason_of(lambda: domain.normalise_identifier(kind, raw, namespace, "identifiers[0]")) == (
        reason,
        [field],
    )


def test_a_search_text_is_also_read_as_identifiers():
    assert domain.identifiers_read_from("+49 151 1234 5678") == [
        Identifier(IdentifierType.PHONE, "+4915112345678")
    ]
    assert domain.identifiers_read_from("Ada@Example.com") == [
        Identifier(IdentifierType.EMAIL, "ada@example.com")
    ]
    assert domain.identifiers_read_from("demo-0001") == [Identifier(IdentifierType.LOYALTY_CARD, "DEMO0001")]
    assert domain.identifiers_read_from("Lovelace") == [Identifier(IdentifierType.LOYALTY_CARD, "LOVELACE")]


@given(st.emails())
def test_any_valid_email_normalises_idempotently(address):
    once = domain.normalise_email(address, "e")
    assert domain.normalise_email(once, "e") == once
    assert once == once.lower()


SCHEMA = {
    "shoe_size": AttributeDefinition("shoe_size", AttributeType.INT),
    "tier_hint": AttributeDefinition("tier_hint", AttributeType.ENUM, enum_values=("a", "b")),
    "credit": AttributeDefinition("credit", AttributeType.DECIMAL),
    "store": AttributeDefinition("store", AttributeType.STRING, required=True),
}


def test_attributes_are_checked_against_the_schema():
    checked = domain.check_attributes(
        {"shoe_size": (AttributeType.INT, 42), "credit": (AttributeType.DECIMAL, "12.50")}, SCHEMA
    )
    assert checked == {"shoe_size": (AttributeType.INT, 42), "credit": (AttributeType.DECIMAL, "12.50")}
    assert reason_of(lambda: domain.check_attributes({"nope": (AttributeType.INT, 1)}, SCHEMA)) == (
        "UNKNOWN_ATTRIBUTE",
        ["attributes[nope]"],
    )
    assert reason_of(lambda: domain.check_attributes({"shoe_size": (AttributeType.STRING, "42")}, SCHEMA))[
        0
    ] == ("ATTRIBUTE_TYPE_MISMATCH")
    assert reason_of(lambda: domain.check_attributes({"tier_hint": (AttributeType.ENUM, "c")}, SCHEMA))[
        0
    ] == ("ATTRIBUTE_TYPE_MISMATCH")
    assert reason_of(lambda: domain.check_attributes({"credit": (AttributeType.DECIMAL, "1,5")}, SCHEMA))[
        0
    ] == ("ATTRIBUTE_TYPE_MISMATCH")
    assert reason_of(lambda: domain.check_required({}, SCHEMA)) == (
        "REQUIRED_ATTRIBUTE_MISSING",
        ["attributes[store]"],
    )


def test_definitions_are_validated_and_cannot_change_shape():
    assert reason_of(lambda: domain.check_definition(AttributeDefinition("Bad Name", AttributeType.INT)))[
        0
    ] == ("INVALID_ARGUMENT")
    assert reason_of(lambda: domain.check_definition(AttributeDefinition("e", AttributeType.ENUM)))[1] == [
        "definition.enum_values"
    ]
    same = AttributeDefinition("shoe_size", AttributeType.INT)
    assert domain.reconcile_definition(same, same) == same
    changed = AttributeDefinition("shoe_size", AttributeType.STRING)
    assert reason_of(lambda: domain.reconcile_definition(same, changed))[0] == "ATTRIBUTE_DEFINITION_CONFLICT"


def customer(**overrides) -> Customer:
    values = {
        "customer_id": "c1",
        "identifiers": [Identifier(IdentifierType.EMAIL, "a@example.com")],
        "given_name": "Anna",
        "attributes": {"store": (AttributeType.STRING, "s1")},
    }
    return Customer(**{**values, **overrides})


def test_update_replaces_only_masked_fields_and_keeps_required_attributes():
    current = customer(family_name="Old", attributes={"store": (AttributeType.STRING, "s1")})
    changes = customer(
        given_name="Berta", family_name="New", attributes={"shoe_size": (AttributeType.INT, 40)}
    )
    updated = domain.apply_update(current, changes, ["family_name", "attributes.shoe_size"], SCHEMA)
    assert (updated.given_name, updated.family_name) == ("Anna", "New")
    assert updated.attributes == {"store": (AttributeType.STRING, "s1"), "shoe_size": (AttributeType.INT, 40)}
    assert current.family_name == "Old"
    assert reason_of(lambda: domain.apply_update(current, changes, ["attributes.store"], SCHEMA))[0] == (
        "REQUIRED_ATTRIBUTE_MISSING"
    )
    assert reason_of(lambda: domain.apply_update(current, changes, ["customer_id"], SCHEMA))[1] == [
        "update_mask"
    ]


def test_marketing_needs_opt_in_and_transactional_needs_no_withdrawal():
    granted = Consent("email", "marketing", True, "app", NOW)
    withdrawn = Consent("email", "transactional", False, "app", NOW)
    assert domain.contact_allowed(None, "marketing") is False
    assert domain.contact_allowed(granted, "marketing") is True
    assert domain.contact_allowed(None, "transactional") is True
    assert domain.contact_allowed(withdrawn, "transactional") is False


def test_merge_keeps_survivor_values_fills_gaps_and_takes_latest_consent():
    old = NOW - timedelta(days=30)
    survivor = customer(
        birth_date=None,
        attributes={"store": (AttributeType.STRING, "s1")},
        consents=[Consent("email", "marketing", False, "pos", old)],
    )
    duplicate = customer(
        customer_id="c2",
        identifiers=[Identifier(IdentifierType.PHONE, "+4915112345678")],
        given_name="Anne",
        birth_date=date(1990, 1, 2),
        attributes={"store": (AttributeType.STRING, "s9"), "shoe_size": (AttributeType.INT, 38)},
        consents=[Consent("email", "marketing", True, "app", NOW)],
    )
    merged = domain.merged_profile(survivor, duplicate)
    assert merged.customer_id == "c1"
    assert merged.given_name == "Anna"
    assert merged.birth_date == date(1990, 1, 2)
    assert set(merged.identifiers) == {*survivor.identifiers, *duplicate.identifiers}
    assert merged.attributes == {"store": (AttributeType.STRING, "s1"), "shoe_size": (AttributeType.INT, 38)}
    assert merged.consents == [Consent("email", "marketing", True, "app", NOW)]


def test_only_two_distinct_active_customers_can_merge():
    assert reason_of(lambda: domain.check_mergeable(customer(), customer()))[0] == "INVALID_ARGUMENT"
    erased = customer(customer_id="c2", status=CustomerStatus.ERASED)
    assert reason_of(lambda: domain.check_mergeable(customer(), erased)) == (
        "CUSTOMER_ERASED",
        ["merged_customer_id"],
    )


def test_erasure_keeps_the_id_and_nothing_personal():
    original = customer(
        family_name="Example",
        birth_date=date(1990, 1, 2),
        locale="de-AT",
        consents=[Consent("sms", "marketing", True, "app", NOW)],
    )
    erased = domain.erased_profile(original, NOW)
    assert erased.customer_id == original.customer_id
    assert (erased.identifiers, erased.given_name, erased.family_name, erased.birth_date, erased.locale) == (
        [],
        "",
        "",
        None,
        "",
    )
    assert erased.attributes == {}
    assert erased.consents == [Consent("sms", "marketing", False, "erasure", NOW)]
    assert erased.status is CustomerStatus.ERASED
