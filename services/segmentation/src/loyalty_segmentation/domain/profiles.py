"""Segmentation's copy of a profile: from profile's Customer message to the columns rules read.
Pure: no I/O. Only what rules use is kept (no names, identifiers or contact details)."""

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from loyalty.profile.v1 import profile_pb2

CONSENT_CHANNELS = {
    profile_pb2.CONSENT_CHANNEL_EMAIL: "email",
    profile_pb2.CONSENT_CHANNEL_SMS: "sms",
    profile_pb2.CONSENT_CHANNEL_PUSH: "push",
    profile_pb2.CONSENT_CHANNEL_MESSENGER: "messenger",
}
CONSENT_PURPOSES = {
    profile_pb2.CONSENT_PURPOSE_MARKETING: "marketing",
    profile_pb2.CONSENT_PURPOSE_TRANSACTIONAL: "transactional",
}
# Profile's attribute types and value kinds -> the kinds rules compare (domain/rules.py).
DEFINITION_KINDS = {
    profile_pb2.ATTRIBUTE_TYPE_STRING: "string",
    profile_pb2.ATTRIBUTE_TYPE_INT: "int",
    profile_pb2.ATTRIBUTE_TYPE_DECIMAL: "decimal",
    profile_pb2.ATTRIBUTE_TYPE_BOOL: "bool",
    profile_pb2.ATTRIBUTE_TYPE_DATE: "date",
    profile_pb2.ATTRIBUTE_TYPE_ENUM: "enum",
}
VALUE_KINDS = {
    "string_value": "string",
    "int_value": "int",
    "decimal_value": "decimal",
    "bool_value": "bool",
    "date_value": "date",
    "enum_value": "enum",
}


@dataclass(frozen=True)
class Profile:
    customer_id: str
    birth_date: date | None
    locale: str | None
    enrolled_at: datetime | None
    attributes: dict
    consents: dict
    # Attribute name -> kind, as the values show it.
    kinds: dict[str, str]


def _date(value) -> date | None:
    try:
        return date(value.year, value.month, value.day)
    except ValueError:
        return None


def _attribute(value: profile_pb2.AttributeValue):
    """A JSON value: strings, integers and booleans as themselves, dates ISO, decimals as their
    canonical string (never a float); None for a value that is not what its kind says."""
    kind = value.WhichOneof("value")
    if kind == "date_value":
        day = _date(value.date_value)
        return day.isoformat() if day else None
    if kind == "decimal_value":
        try:
            number = Decimal(value.decimal_value)
        except InvalidOperation:
            return None
        return str(number) if number.is_finite() else None
    return getattr(value, kind) if kind else None


def profile_of(customer: profile_pb2.Customer) -> Profile:
    attributes, kinds = {}, {}
    for name, value in customer.attributes.items():
        stored = _attribute(value)
        if stored is not None:
            attributes[name] = stored
            kinds[name] = VALUE_KINDS[value.WhichOneof("value")]
    consents = {
        f"{CONSENT_CHANNELS[c.channel]}.{CONSENT_PURPOSES[c.purpose]}": c.granted
        for c in customer.consents
        if c.channel in CONSENT_CHANNELS and c.purpose in CONSENT_PURPOSES
    }
    return Profile(
        customer_id=customer.customer_id,
        birth_date=_date(customer.birth_date) if customer.HasField("birth_date") else None,
        locale=customer.locale or None,
        enrolled_at=customer.create_time.ToDatetime(tzinfo=UTC) if customer.HasField("create_time") else None,
        attributes=attributes,
        consents=consents,
        kinds=kinds,
    )
