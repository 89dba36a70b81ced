from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, strategies as st

from loyalty_profile import domain
from loyalty_profile.domain import (
    AttributeDefinition,
    AttributeType,
    Consent,
    ConsentAnswer,
    ConsentChannel,
    ConsentPurpose,
    Customer,
    CustomerStatus,
    Identifier,
    IdentifierType,
    ProfileFields,
    UpdateMask,
)
from loyalty_runtime.errors import AlreadyExists, DomainError, FailedPrecondition, InvalidArgument, NotFound

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
EMAIL, SMS = ConsentChannel.EMAIL, ConsentChannel.SMS
MARKETING, TRANSACTIONAL = ConsentPurpose.MARKETING, ConsentPurpose.TRANSACTIONAL


def refusal(call) -> tuple[str, list[str]]:
    """The reason's name and the fields of the domain error `call` raises."""
    with pytest.raises(DomainError) as raised:
        call()
    return raised.value.reason.name, [v.field for v in raised.value.violations]


def customer(**overrides) -> Customer:
    values = {
        "customer_id": "c1",
        "identifiers": [Identifier(IdentifierType.EMAIL, "a@example.com")],
        "given_name": "Anna",
        "attributes": {"store": (AttributeType.STRING, "s1")},
        "created_at": NOW - timedelta(days=100),
        "updated_at": NOW - timedelta(days=10),
    }
    return Customer(**{**values, **overrides})


# -- identifiers ----------------------------------------------------------------------------


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
    assert domain.normalise_identifier(Identifier(kind, raw), "identifier").value == expected


@pytest.mark.parametrize(
    ("kind", "raw", "namespace", "reason", "field"),
    [
        (IdentifierType.PHONE, "015112345678", "", "INVALID_PHONE", "identifiers[0].value"),
        (IdentifierType.PHONE, "+49 1", "", "INVALID_PHONE", "identifiers[0].value"),
        (IdentifierType.EMAIL, "not-an-email", "", "INVALID_EMAIL", "identifiers[0].value"),
        (IdentifierType.LOYALTY_CARD, "12", "", "INVALID_ARGUMENT", "identifiers[0].value"),
        (IdentifierType.LOYALTY_CARD, "1234\n5678", "", "INVALID_ARGUMENT", "identifiers[0].value"),
        (IdentifierType.EXTERNAL, "abc", "", "INVALID_ARGUMENT", "identifiers[0].namespace"),
        (IdentifierType.EXTERNAL, "abc", "Shop", "INVALID_ARGUMENT", "identifiers[0].namespace"),
        (IdentifierType.EXTERNAL, "a\tb", "shop", "INVALID_ARGUMENT", "identifiers[0].value"),
        (IdentifierType.EXTERNAL, "x" * 129, "shop", "INVALID_ARGUMENT", "identifiers[0].value"),
        (IdentifierType.EXTERNAL, "   ", "shop", "INVALID_ARGUMENT", "identifiers[0].value"),
    ],
)
def test_malformed_identifiers_name_the_field(kind, raw, namespace, reason, field):
    identifier = Identifier(kind, raw, namespace)
    assert refusal(lambda: domain.normalise_identifier(identifier, "identifiers[0]")) == (reason, [field])


def test_an_external_id_keeps_its_namespace_and_inner_spaces():
    identifier = domain.normalise_identifier(Identifier(IdentifierType.EXTERNAL, " Shop 42 ", "shopify"), "i")
    assert identifier == Identifier(IdentifierType.EXTERNAL, "Shop 42", "shopify")


def test_identifiers_are_required_and_distinct_once_normalised():
    assert refusal(lambda: domain.normalise_identifiers([], "identifiers")) == (
        "INVALID_ARGUMENT",
        ["identifiers"],
    )
    twice = [
        Identifier(IdentifierType.EMAIL, "A@example.com"),
        Identifier(IdentifierType.EMAIL, "a@example.com"),
    ]
    assert refusal(lambda: domain.normalise_identifiers(twice, "identifiers")) == (
        "INVALID_ARGUMENT",
        ["identifiers[1]"],
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


@given(st.text(alphabet="0123456789ABCDEFabcdef -", min_size=4, max_size=40))
def test_card_numbers_normalise_idempotently(raw):
    try:
        once = domain.normalise_identifier(Identifier(IdentifierType.LOYALTY_CARD, raw), "c")
    except InvalidArgument:
        return
    assert domain.normalise_identifier(once, "c") == once


def test_identifiers_are_added_once_and_removed_but_never_the_last():
    phone = Identifier(IdentifierType.PHONE, "+4915112345678")
    holder = customer()
    added = domain.with_identifier(holder, phone, NOW)
    assert added.identifiers == sorted([*holder.identifiers, phone], key=domain.identifier_order)
    assert added.updated_at == NOW
    assert domain.with_identifier(added, phone, NOW) is None
    assert domain.without_identifier(added, phone, NOW).identifiers == holder.identifiers
    assert refusal(lambda: domain.without_identifier(holder, phone, NOW)) == (
        "IDENTIFIER_NOT_FOUND",
        ["identifier"],
    )
    assert refusal(lambda: domain.without_identifier(holder, holder.identifiers[0], NOW)) == (
        "LAST_IDENTIFIER",
        ["identifier"],
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1b4e28ba-2fa1-11d2-883f-0016d3cca427", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
        ("1B4E28BA2FA111D2883F0016D3CCA427", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
        ("{1b4e28ba-2fa1-11d2-883f-0016d3cca427}", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
    ],
)
def test_customer_ids_have_one_spelling(value, expected):
    assert domain.canonical_customer_id(value, "customer_id") == expected


@pytest.mark.parametrize(
    "value", ["", "c1", "1b4e28ba-2fa1-11d2-883f-0016d3cca42", "1b4e28ba-2fa1-11d2-883f-0016d3cca427x"]
)
def test_a_customer_id_that_is_no_uuid_is_refused(value):
    assert refusal(lambda: domain.canonical_customer_id(value, "survivor_customer_id")) == (
        "INVALID_ARGUMENT",
        ["survivor_customer_id"],
    )


# -- names, locale, birth date --------------------------------------------------------------


def test_names_are_one_line_without_surrounding_spaces():
    assert domain.check_name("  Anna Maria ", "given_name") == "Anna Maria"
    for name in ("Anna\nMaria", "Anna\tMaria", "Anna\r"):
        assert refusal(lambda n=name: domain.check_name(n, "given_name")) == (
            "INVALID_ARGUMENT",
            ["given_name"],
        )


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("de-AT", "de-AT"), ("DE-at", "de-AT"), ("zh-hant-tw", "zh-Hant-TW"), ("es-419", "es-419"), ("", "")],
)
def test_a_locale_is_kept_in_its_canonical_case(raw, canonical):
    assert domain.check_locale(raw, "locale") == canonical


@pytest.mark.parametrize("raw", ["de_AT", "d", "de-", "de--AT", "de AT", "deutsch", "12", "de-AT\n", "déu"])
def test_a_malformed_locale_is_refused(raw):
    assert refusal(lambda: domain.check_locale(raw, "customer.locale")) == (
        "INVALID_ARGUMENT",
        ["customer.locale"],
    )


def test_a_birth_date_is_not_in_the_future():
    today = NOW.date()
    assert domain.check_birth_date(today, today, "birth_date") == today
    assert domain.check_birth_date(None, today, "birth_date") is None
    tomorrow = today + timedelta(days=1)
    assert refusal(lambda: domain.check_birth_date(tomorrow, today, "birth_date")) == (
        "INVALID_ARGUMENT",
        ["birth_date"],
    )


def test_profile_fields_are_checked_with_the_request_prefix():
    fields = ProfileFields(
        given_name=" Anna ", locale="DE-at", attributes={"credit": (AttributeType.DECIMAL, "1.50")}
    )
    assert domain.check_profile_fields(fields, NOW.date()) == ProfileFields(
        given_name="Anna", locale="de-AT", attributes={"credit": (AttributeType.DECIMAL, "1.50")}
    )
    bad = ProfileFields(attributes={"credit": (AttributeType.DECIMAL, "1,5")})
    assert refusal(lambda: domain.check_profile_fields(bad, NOW.date(), "customer.")) == (
        "ATTRIBUTE_TYPE_MISMATCH",
        ["customer.attributes[credit]"],
    )


# -- attributes -----------------------------------------------------------------------------

SCHEMA = {
    "shoe_size": AttributeDefinition("shoe_size", AttributeType.INT),
    "tier_hint": AttributeDefinition("tier_hint", AttributeType.ENUM, enum_values=("a", "b")),
    "credit": AttributeDefinition("credit", AttributeType.DECIMAL),
    "store": AttributeDefinition("store", AttributeType.STRING, required=True),
}


def test_attributes_are_checked_against_the_schema():
    domain.check_attributes(
        {"shoe_size": (AttributeType.INT, 42), "store": (AttributeType.STRING, "s1")}, SCHEMA
    )
    store = {"store": (AttributeType.STRING, "s1")}
    for values, reason in (
        ({"nope": (AttributeType.INT, 1)}, "UNKNOWN_ATTRIBUTE"),
        ({"shoe_size": (AttributeType.STRING, "42")}, "ATTRIBUTE_TYPE_MISMATCH"),
        ({"tier_hint": (AttributeType.ENUM, "c")}, "ATTRIBUTE_TYPE_MISMATCH"),
    ):
        assert refusal(lambda v=values: domain.check_attributes({**v, **store}, SCHEMA))[0] == reason
    assert refusal(lambda: domain.check_attributes({}, SCHEMA)) == (
        "REQUIRED_ATTRIBUTE_MISSING",
        ["attributes[store]"],
    )
    assert refusal(lambda: domain.check_attributes({}, SCHEMA, "customer.")) == (
        "REQUIRED_ATTRIBUTE_MISSING",
        ["customer.attributes[store]"],
    )


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("12.50", "12.50"),
        ("1e3", "1E+3"),
        ("-0.001", "-0.001"),
        ("0", "0"),
        ("12345678901234567890.5", "12345678901234567890.5"),
    ],
)
def test_decimals_are_kept_as_exact_text(raw, canonical):
    assert domain.canonical_attribute("credit", AttributeType.DECIMAL, raw) == (
        AttributeType.DECIMAL,
        canonical,
    )


@pytest.mark.parametrize("raw", ["1,5", "NaN", "Infinity", "-inf", "", "12.5.1", "sNaN"])
def test_what_is_no_finite_decimal_is_refused(raw):
    assert refusal(lambda: domain.canonical_attribute("credit", AttributeType.DECIMAL, raw)) == (
        "ATTRIBUTE_TYPE_MISMATCH",
        ["attributes[credit]"],
    )


def test_definitions_are_validated_and_cannot_change_shape():
    assert refusal(lambda: domain.check_definition(AttributeDefinition("Bad Name", AttributeType.INT)))[
        1
    ] == ["definition.name"]
    for values in ((), ("a", "a"), ("a", ""), ("a", " b"), ("a\nb",)):
        enum = AttributeDefinition("e", AttributeType.ENUM, enum_values=values)
        assert refusal(lambda d=enum: domain.check_definition(d))[1] == ["definition.enum_values"]
    assert refusal(
        lambda: domain.check_definition(AttributeDefinition("i", AttributeType.INT, enum_values=("a",)))
    )[1] == ["definition.enum_values"]
    same = AttributeDefinition("shoe_size", AttributeType.INT)
    stored = replace(same, created_at=NOW)
    assert domain.reconcile_definition(stored, same) is stored
    changed = AttributeDefinition("shoe_size", AttributeType.STRING)
    with pytest.raises(AlreadyExists) as raised:
        domain.reconcile_definition(stored, changed)
    assert raised.value.reason.name == "ATTRIBUTE_DEFINITION_CONFLICT"


# -- updates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paths", "mask"),
    [
        (["given_name"], UpdateMask(frozenset({"given_name"}), False, ())),
        (["locale", "birth_date", "locale"], UpdateMask(frozenset({"locale", "birth_date"}), False, ())),
        (["attributes"], UpdateMask(frozenset(), True, ())),
        (["attributes.shoe_size", "attributes.shoe_size"], UpdateMask(frozenset(), False, ("shoe_size",))),
    ],
)
def test_an_update_mask_names_plain_fields_the_attribute_map_or_single_attributes(paths, mask):
    assert domain.parse_update_mask(paths) == mask


@pytest.mark.parametrize(
    "path",
    [
        "given_name.",
        "attributes.a.b.c",
        "attributes.",
        "attributes.Diet",
        "attributes.a-b",
        "customer_id",
        "identifiers",
        "consents",
        "status",
        "create_time",
        "birth_date.year",
        "",
        " given_name",
    ],
)
def test_an_update_mask_path_that_cannot_be_updated_is_refused(path):
    assert refusal(lambda: domain.parse_update_mask(["given_name", path])) == (
        "INVALID_ARGUMENT",
        ["update_mask.paths[1]"],
    )


def test_an_update_mask_must_name_something():
    assert refusal(lambda: domain.parse_update_mask([])) == ("INVALID_ARGUMENT", ["update_mask"])


def test_the_fields_an_update_changes_name_attributes_once():
    assert domain.parse_update_mask(["attributes.a", "given_name", "attributes.b"]).changed == [
        "attributes",
        "given_name",
    ]


def test_update_replaces_only_masked_fields():
    current = customer(family_name="Old", attributes={"store": (AttributeType.STRING, "s1")})
    changes = ProfileFields(
        given_name="Berta", family_name="New", attributes={"shoe_size": (AttributeType.INT, 40)}
    )
    mask = domain.parse_update_mask(["family_name", "attributes.shoe_size"])
    updated = domain.apply_update(current, changes, mask, SCHEMA, NOW)
    assert (updated.given_name, updated.family_name, updated.updated_at) == ("Anna", "New", NOW)
    assert updated.attributes == {"store": (AttributeType.STRING, "s1"), "shoe_size": (AttributeType.INT, 40)}
    assert current.family_name == "Old" and current.attributes == {"store": (AttributeType.STRING, "s1")}


def test_update_of_attributes_keeps_required_ones_and_knows_only_defined_ones():
    current = customer(
        attributes={"store": (AttributeType.STRING, "s1"), "shoe_size": (AttributeType.INT, 40)}
    )
    removal = domain.parse_update_mask(["attributes.store"])
    assert refusal(lambda: domain.apply_update(current, ProfileFields(), removal, SCHEMA, NOW)) == (
        "REQUIRED_ATTRIBUTE_MISSING",
        ["customer.attributes[store]"],
    )
    unknown = domain.parse_update_mask(["attributes.colour"])
    assert refusal(lambda: domain.apply_update(current, ProfileFields(), unknown, SCHEMA, NOW)) == (
        "UNKNOWN_ATTRIBUTE",
        ["customer.attributes[colour]"],
    )
    everything = domain.parse_update_mask(["attributes"])
    replaced = domain.apply_update(
        current, ProfileFields(attributes={"store": (AttributeType.STRING, "s2")}), everything, SCHEMA, NOW
    )
    assert replaced.attributes == {"store": (AttributeType.STRING, "s2")}
    removed = domain.apply_update(
        current, ProfileFields(), domain.parse_update_mask(["attributes.shoe_size"]), SCHEMA, NOW
    )
    assert removed.attributes == {"store": (AttributeType.STRING, "s1")}


def test_an_update_without_attributes_needs_no_schema():
    current = customer(attributes={})  # a required attribute defined after enrolment does not block a rename
    renamed = domain.apply_update(
        current, ProfileFields(given_name="Berta"), domain.parse_update_mask(["given_name"]), SCHEMA, NOW
    )
    assert renamed.given_name == "Berta"


@pytest.mark.parametrize(
    ("status", "reason"),
    [(CustomerStatus.ERASED, "CUSTOMER_ERASED"), (CustomerStatus.MERGED, "CUSTOMER_MERGED")],
)
def test_only_an_active_customer_changes(status, reason):
    gone = customer(status=status)
    mask = domain.parse_update_mask(["given_name"])
    assert refusal(lambda: domain.apply_update(gone, ProfileFields(given_name="X"), mask, SCHEMA, NOW)) == (
        reason,
        ["customer.customer_id"],
    )
    phone = Identifier(IdentifierType.PHONE, "+4915112345678")
    consent = Consent(EMAIL, MARKETING, True, "app", NOW)
    for change in (
        lambda: domain.with_identifier(gone, phone, NOW),
        lambda: domain.without_identifier(gone, gone.identifiers[0], NOW),
        lambda: domain.with_consents(gone, [consent], NOW),
    ):
        assert refusal(change) == (reason, ["customer_id"])


FIELD_NAMES = sorted(domain.UPDATABLE_FIELDS)


@given(
    st.lists(
        st.sampled_from([*FIELD_NAMES, "attributes", "attributes.shoe_size", "attributes.credit"]), min_size=1
    ),
    st.text(max_size=5),
)
def test_an_update_changes_nothing_its_mask_does_not_name(paths, name):
    current = customer(
        family_name="Old",
        locale="de-AT",
        birth_date=date(1990, 1, 1),
        attributes={"store": (AttributeType.STRING, "s1"), "credit": (AttributeType.DECIMAL, "1")},
    )
    changes = ProfileFields(
        given_name=name,
        family_name=name,
        locale="fr",
        birth_date=date(2000, 2, 2),
        attributes={"store": (AttributeType.STRING, "s9"), "shoe_size": (AttributeType.INT, 1)},
    )
    mask = domain.parse_update_mask(paths)
    updated = domain.apply_update(current, changes, mask, SCHEMA, NOW)
    for field_name in FIELD_NAMES:
        source = changes if field_name in mask.fields else current
        assert getattr(updated, field_name) == getattr(source, field_name)
    if not mask.touches_attributes:
        assert updated.attributes == current.attributes
    for attribute in ("shoe_size", "credit"):
        if attribute in mask.attribute_names:
            assert updated.attributes.get(attribute) == changes.attributes.get(attribute)
    assert (updated.customer_id, updated.identifiers, updated.consents) == (
        current.customer_id,
        current.identifiers,
        current.consents,
    )


# -- consent --------------------------------------------------------------------------------


def test_marketing_needs_opt_in_and_transactional_needs_no_withdrawal():
    granted = Consent(EMAIL, MARKETING, True, "app", NOW)
    withdrawn = Consent(EMAIL, TRANSACTIONAL, False, "app", NOW)
    assert domain.contact_allowed(customer(), EMAIL, MARKETING) is False
    assert domain.contact_allowed(customer(consents=[granted]), EMAIL, MARKETING) is True
    assert domain.contact_allowed(customer(), EMAIL, TRANSACTIONAL) is True
    assert domain.contact_allowed(customer(consents=[withdrawn]), EMAIL, TRANSACTIONAL) is False
    assert (
        domain.contact_allowed(customer(consents=[granted], status=CustomerStatus.ERASED), EMAIL, MARKETING)
        is False
    )
    decision = domain.consent_decision(customer(consents=[granted]), EMAIL, MARKETING)
    assert (decision.allowed, decision.consent) == (True, granted)


def test_consent_answers_are_one_per_topic_one_line_and_not_from_the_future():
    answer = ConsentAnswer(EMAIL, MARKETING, True, " app ")
    assert domain.consents_given([answer], NOW, "consents") == [Consent(EMAIL, MARKETING, True, "app", NOW)]
    assert refusal(
        lambda: domain.consents_given([answer, replace(answer, granted=False)], NOW, "consents")
    ) == (
        "INVALID_ARGUMENT",
        ["consents[1].purpose"],
    )
    assert refusal(lambda: domain.consents_given([replace(answer, source="a\nb")], NOW, "consents")) == (
        "INVALID_ARGUMENT",
        ["consents[0].source"],
    )
    later = replace(answer, given_at=NOW + domain.CLOCK_SKEW + timedelta(seconds=1))
    assert refusal(lambda: domain.consents_given([later], NOW, "consents")) == (
        "INVALID_ARGUMENT",
        ["consents[0].record_time"],
    )
    skewed = replace(answer, given_at=NOW + domain.CLOCK_SKEW)
    assert domain.consents_given([skewed], NOW, "consents")[0].recorded_at == NOW + domain.CLOCK_SKEW
    assert refusal(lambda: domain.consents_to_set([], NOW)) == ("INVALID_ARGUMENT", ["consents"])


consents = st.builds(
    Consent,
    st.sampled_from(ConsentChannel),
    st.sampled_from(ConsentPurpose),
    st.booleans(),
    st.sampled_from(["app", "pos"]),
    st.integers(0, 5).map(lambda days: NOW - timedelta(days=days)),
)


@given(st.lists(consents), st.lists(consents))
def test_per_topic_the_latest_answer_wins(held, incoming):
    latest = domain.latest_consents(held, incoming)
    assert latest == sorted(latest, key=domain.consent_order)
    assert len({c.topic for c in latest}) == len(latest) == len({c.topic for c in [*held, *incoming]})
    for consent in latest:
        assert consent.recorded_at == max(
            c.recorded_at for c in [*held, *incoming] if c.topic == consent.topic
        )


def test_setting_consents_reports_only_what_changed():
    old = Consent(EMAIL, MARKETING, False, "pos", NOW - timedelta(days=1))
    holder = customer(consents=[old])
    stale = Consent(EMAIL, MARKETING, True, "app", NOW - timedelta(days=2))
    assert domain.with_consents(holder, [stale], NOW) == (holder, [])
    fresh = Consent(SMS, MARKETING, True, "app", NOW)
    updated, changed = domain.with_consents(holder, [stale, fresh], NOW)
    assert (updated.consents, changed, updated.updated_at) == ([old, fresh], [fresh], NOW)


# -- merge and erasure ----------------------------------------------------------------------


def test_merge_keeps_survivor_values_fills_gaps_and_takes_latest_consent():
    old = NOW - timedelta(days=30)
    survivor = customer(
        birth_date=None,
        attributes={"store": (AttributeType.STRING, "s1")},
        consents=[Consent(EMAIL, MARKETING, False, "pos", old)],
    )
    duplicate = customer(
        customer_id="c2",
        identifiers=[Identifier(IdentifierType.PHONE, "+4915112345678")],
        given_name="Anne",
        birth_date=date(1990, 1, 2),
        attributes={"store": (AttributeType.STRING, "s9"), "shoe_size": (AttributeType.INT, 38)},
        consents=[Consent(EMAIL, MARKETING, True, "app", NOW)],
    )
    merged = domain.merged_profile(survivor, duplicate, NOW)
    assert (merged.customer_id, merged.given_name, merged.birth_date, merged.updated_at) == (
        "c1",
        "Anna",
        date(1990, 1, 2),
        NOW,
    )
    assert set(merged.identifiers) == {*survivor.identifiers, *duplicate.identifiers}
    assert merged.attributes == {"store": (AttributeType.STRING, "s1"), "shoe_size": (AttributeType.INT, 38)}
    assert merged.consents == [Consent(EMAIL, MARKETING, True, "app", NOW)]
    assert domain.changed_consents(survivor.consents, merged.consents) == merged.consents


def test_only_two_distinct_active_customers_can_merge():
    assert refusal(lambda: domain.check_mergeable(customer(), customer())) == (
        "INVALID_ARGUMENT",
        ["merged_customer_id"],
    )
    erased = customer(customer_id="c2", status=CustomerStatus.ERASED)
    assert refusal(lambda: domain.check_mergeable(customer(), erased)) == (
        "CUSTOMER_ERASED",
        ["merged_customer_id"],
    )
    assert refusal(lambda: domain.check_mergeable(erased, customer())) == (
        "CUSTOMER_ERASED",
        ["survivor_customer_id"],
    )
    merged = customer(customer_id="c3", status=CustomerStatus.MERGED)
    assert refusal(lambda: domain.check_mergeable(customer(), merged)) == (
        "CUSTOMER_MERGED",
        ["merged_customer_id"],
    )


def personal_data(profile: Customer) -> tuple:
    return (
        profile.identifiers,
        profile.given_name,
        profile.family_name,
        profile.birth_date,
        profile.locale,
        profile.attributes,
    )


def test_a_merged_duplicate_keeps_only_its_id():
    duplicate = customer(
        customer_id="c2",
        family_name="Example",
        birth_date=date(1990, 1, 2),
        locale="de-AT",
        consents=[Consent(SMS, MARKETING, True, "app", NOW)],
    )
    absorbed = domain.absorbed_profile(duplicate, NOW)
    assert (absorbed.customer_id, absorbed.status, absorbed.created_at, absorbed.updated_at) == (
        "c2",
        CustomerStatus.MERGED,
        duplicate.created_at,
        NOW,
    )
    assert personal_data(absorbed) == ([], "", "", None, "", {})
    assert absorbed.consents == []


def test_erasure_keeps_the_id_and_nothing_personal():
    original = customer(
        family_name="Example",
        birth_date=date(1990, 1, 2),
        locale="de-AT",
        consents=[
            Consent(SMS, MARKETING, True, "app", NOW),
            Consent(EMAIL, TRANSACTIONAL, True, "pos:store-1", NOW),
        ],
    )
    erased = domain.erased_profile(original, NOW)
    assert (erased.customer_id, erased.created_at, erased.updated_at) == ("c1", original.created_at, NOW)
    assert personal_data(erased) == ([], "", "", None, "", {})
    assert erased.consents == [
        Consent(EMAIL, TRANSACTIONAL, False, "erasure", NOW),
        Consent(SMS, MARKETING, False, "erasure", NOW),
    ]
    assert erased.status is CustomerStatus.ERASED
    assert not domain.contact_allowed(erased, EMAIL, TRANSACTIONAL)


def test_errors_carry_reasons_of_the_contract():
    with pytest.raises(NotFound) as raised:
        domain.without_identifier(customer(), Identifier(IdentifierType.PHONE, "+4915112345678"), NOW)
    assert raised.value.reason.name == "IDENTIFIER_NOT_FOUND"
    with pytest.raises(FailedPrecondition):
        domain.check_changeable(customer(status=CustomerStatus.ERASED))
