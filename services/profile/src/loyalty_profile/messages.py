"""The contract's enums and messages for the profile's domain values: one codec per enum, and the
encoders from domain values to messages that the servicer's answers and the GDPR export share."""

from datetime import date

from loyalty.common.v1 import customer_pb2, date_pb2
from loyalty.profile.v1 import profile_pb2
from loyalty_profile.domain import (
    AttributeDefinition,
    AttributeType,
    AttributeValue,
    Consent,
    ConsentChannel,
    ConsentPurpose,
    Customer,
    CustomerStatus,
    Identifier,
    IdentifierType,
)
from loyalty_runtime.enums import EnumCodec
from loyalty_runtime.protobuf import timestamp

IDENTIFIER_TYPES = EnumCodec(customer_pb2.IdentifierType, IdentifierType)
ATTRIBUTE_TYPES = EnumCodec(profile_pb2.AttributeType, AttributeType)
CUSTOMER_STATUSES = EnumCodec(profile_pb2.CustomerStatus, CustomerStatus)
CONSENT_CHANNELS = EnumCodec(profile_pb2.ConsentChannel, ConsentChannel)
CONSENT_PURPOSES = EnumCodec(profile_pb2.ConsentPurpose, ConsentPurpose)

# AttributeValue's oneof member for each attribute type.
VALUE_FIELDS = {kind: f"{kind.value}_value" for kind in AttributeType}
VALUE_TYPES = {name: kind for kind, name in VALUE_FIELDS.items()}


def date_message(value: date | None) -> date_pb2.Date | None:
    return None if value is None else date_pb2.Date(year=value.year, month=value.month, day=value.day)


def identifier_message(identifier: Identifier) -> customer_pb2.Identifier:
    return customer_pb2.Identifier(
        type=IDENTIFIER_TYPES.encode(identifier.type), value=identifier.value, namespace=identifier.namespace
    )


def attribute_message(value: AttributeValue) -> profile_pb2.AttributeValue:
    kind, raw = value
    if kind is AttributeType.DATE:
        return profile_pb2.AttributeValue(date_value=date_message(raw))
    return profile_pb2.AttributeValue(**{VALUE_FIELDS[kind]: raw})


def consent_message(consent: Consent) -> profile_pb2.Consent:
    return profile_pb2.Consent(
        channel=CONSENT_CHANNELS.encode(consent.channel),
        purpose=CONSENT_PURPOSES.encode(consent.purpose),
        granted=consent.granted,
        source=consent.source,
        record_time=timestamp(consent.recorded_at),
    )


def customer_message(customer: Customer) -> profile_pb2.Customer:
    return profile_pb2.Customer(
        customer_id=customer.customer_id,
        identifiers=[identifier_message(i) for i in customer.identifiers],
        given_name=customer.given_name,
        family_name=customer.family_name,
        birth_date=date_message(customer.birth_date),
        locale=customer.locale,
        time_zone=customer.time_zone,
        attributes={name: attribute_message(value) for name, value in customer.attributes.items()},
        consents=[consent_message(c) for c in customer.consents],
        status=CUSTOMER_STATUSES.encode(customer.status),
        create_time=timestamp(customer.created_at),
        update_time=timestamp(customer.updated_at),
    )


def definition_message(definition: AttributeDefinition) -> profile_pb2.AttributeDefinition:
    return profile_pb2.AttributeDefinition(
        name=definition.name,
        type=ATTRIBUTE_TYPES.encode(definition.type),
        required=definition.required,
        enum_values=definition.enum_values,
        description=definition.description,
        create_time=timestamp(definition.created_at),
    )
