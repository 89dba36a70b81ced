"""The translation between the contract's messages and the profile's domain values, both ways."""

from datetime import UTC, date, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.common.v1 import customer_pb2, date_pb2
from loyalty.profile.v1 import profile_pb2
from loyalty_profile import messages, servicer
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
)
from loyalty_runtime.errors import InvalidArgument

NOW = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)
ATTRIBUTES = {
    "note": (AttributeType.STRING, "hello"),
    "size": (AttributeType.INT, -(2**63)),
    "credit": (AttributeType.DECIMAL, "12.50"),
    "vip": (AttributeType.BOOL, False),
    "since": (AttributeType.DATE, date(2001, 2, 3)),
    "diet": (AttributeType.ENUM, "vegan"),
}


def test_every_attribute_type_has_its_value_field():
    oneof = profile_pb2.AttributeValue.DESCRIPTOR.oneofs_by_name["value"]
    assert set(messages.VALUE_TYPES) == {field.name for field in oneof.fields}


def test_a_customer_survives_the_trip_to_its_message_and_back():
    customer = Customer(
        customer_id="1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        identifiers=[
            Identifier(IdentifierType.EXTERNAL, "42", "shop"),
            Identifier(IdentifierType.PHONE, "+4915112345678"),
        ],
        given_name="Anna",
        family_name="Muster",
        birth_date=date(1990, 5, 1),
        locale="de-AT",
        attributes=ATTRIBUTES,
        consents=[Consent(ConsentChannel.SMS, ConsentPurpose.MARKETING, True, "app", NOW)],
        status=CustomerStatus.MERGED,
        created_at=NOW,
        updated_at=NOW,
    )
    message = messages.customer_message(customer)
    assert message.status == profile_pb2.CUSTOMER_STATUS_MERGED
    assert servicer.profile_fields_in(message) == ProfileFields(
        given_name="Anna",
        family_name="Muster",
        birth_date=date(1990, 5, 1),
        locale="de-AT",
        attributes=ATTRIBUTES,
    )
    assert [servicer.identifier_in(i, "i") for i in message.identifiers] == customer.identifiers
    assert servicer.consents_in(message.consents, "consents") == [
        ConsentAnswer(ConsentChannel.SMS, ConsentPurpose.MARKETING, True, "app", NOW)
    ]
    assert message.create_time.ToDatetime(tzinfo=UTC) == NOW


def test_an_unset_birth_date_and_record_time_stay_unset():
    message = messages.customer_message(Customer(customer_id="c", identifiers=[]))
    assert not message.HasField("birth_date")
    assert servicer.profile_fields_in(message).birth_date is None
    assert (
        servicer.consent_in(
            profile_pb2.Consent(
                channel=profile_pb2.CONSENT_CHANNEL_EMAIL, purpose=profile_pb2.CONSENT_PURPOSE_MARKETING
            ),
            "c",
        ).given_at
        is None
    )


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (profile_pb2.AttributeValue(), "attributes[x]"),
        (profile_pb2.AttributeValue(date_value=date_pb2.Date()), "attributes[x]"),
        (profile_pb2.AttributeValue(date_value=date_pb2.Date(year=2001, month=2, day=29)), "attributes[x]"),
    ],
)
def test_an_empty_or_impossible_attribute_value_is_refused(value, field):
    with pytest.raises(InvalidArgument) as raised:
        servicer.attribute_in(value, "attributes[x]")
    assert [v.field for v in raised.value.violations] == [field]


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (customer_pb2.Identifier(value="x"), "identifier.type"),
        (customer_pb2.Identifier(type=99, value="x"), "identifier.type"),
    ],
)
def test_an_identifier_without_a_type_is_refused(message, field):
    with pytest.raises(InvalidArgument) as raised:
        servicer.identifier_in(message, "identifier")
    assert [v.field for v in raised.value.violations] == [field]


def test_consent_and_definition_enums_are_required():
    with pytest.raises(InvalidArgument) as raised:
        servicer.consent_in(profile_pb2.Consent(channel=profile_pb2.CONSENT_CHANNEL_SMS), "consents[2]")
    assert [v.field for v in raised.value.violations] == ["consents[2].purpose"]
    with pytest.raises(InvalidArgument) as raised:
        servicer.definition_in(profile_pb2.AttributeDefinition(name="x"))
    assert [v.field for v in raised.value.violations] == ["definition.type"]


def test_a_definition_survives_the_trip():
    stored = Timestamp()
    stored.FromDatetime(NOW)
    definition = AttributeDefinition("diet", AttributeType.ENUM, True, ("vegan", "any"), "what they eat", NOW)
    message = messages.definition_message(definition)
    assert message.create_time == stored
    assert servicer.definition_in(message) == definition
