"""Profile rules, pure: identifier normalisation, the attribute schema, consent, merge and erasure.
No I/O here; the servicer feeds it plain values and the repository stores what it decides."""

import contextlib
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from loyalty_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument


class IdentifierType(StrEnum):
    LOYALTY_CARD = "loyalty_card"
    PHONE = "phone"
    EMAIL = "email"
    EXTERNAL = "external"


class AttributeType(StrEnum):
    STRING = "string"
    INT = "int"
    DECIMAL = "decimal"
    BOOL = "bool"
    DATE = "date"
    ENUM = "enum"


class CustomerStatus(StrEnum):
    ACTIVE = "active"
    MERGED = "merged"
    ERASED = "erased"


@dataclass(frozen=True, order=True)
class Identifier:
    type: IdentifierType
    value: str
    namespace: str = ""


@dataclass(frozen=True)
class AttributeDefinition:
    name: str
    type: AttributeType
    required: bool = False
    enum_values: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Consent:
    channel: str
    purpose: str
    granted: bool
    source: str
    recorded_at: datetime


@dataclass
class Customer:
    customer_id: str
    identifiers: list[Identifier]
    given_name: str = ""
    family_name: str = ""
    birth_date: date | None = None
    locale: str = ""
    # name -> (type, value); the type travels with the value so a stored value never needs the schema.
    attributes: dict[str, tuple[AttributeType, object]] = field(default_factory=dict)
    consents: list[Consent] = field(default_factory=list)
    status: CustomerStatus = CustomerStatus.ACTIVE
    created_at: datetime | None = None
    updated_at: datetime | None = None


# ---------------------------------------------------------------------------------------------
# Identifiers

CARD_PATTERN = re.compile(r"^[A-Z0-9]{4,32}$")
NAMESPACE_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
ATTRIBUTE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
LOCALE_PATTERN = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def normalise_identifier(
    kind: IdentifierType | None, value: str, namespace: str, field_path: str
) -> Identifier:
    """The one canonical spelling of an identifier, so that lookups and uniqueness agree."""
    value = value.strip()
    if kind is None:
        raise InvalidArgument("INVALID_ARGUMENT", "identifier type is required", field=f"{field_path}.type")
    if kind is IdentifierType.LOYALTY_CARD:
        card = re.sub(r"[\s-]", "", value).upper()
        if not CARD_PATTERN.fullmatch(card):
            raise InvalidArgument(
                "INVALID_ARGUMENT", "card numbers have 4 to 32 letters or digits", field=f"{field_path}.value"
            )
        return Identifier(kind, card)
    if kind is IdentifierType.PHONE:
        return Identifier(kind, normalise_phone(value, f"{field_path}.value"))
    if kind is IdentifierType.EMAIL:
        return Identifier(kind, normalise_email(value, f"{field_path}.value"))
    if not NAMESPACE_PATTERN.fullmatch(namespace):
        raise InvalidArgument(
            "INVALID_ARGUMENT",
            "external ids need a namespace like 'shopify'",
            field=f"{field_path}.namespace",
        )
    if not 1 <= len(value) <= 128:
        raise InvalidArgument(
            "INVALID_ARGUMENT", "external ids have 1 to 128 characters", field=f"{field_path}.value"
        )
    return Identifier(kind, value, namespace)


def normalise_phone(value: str, field_path: str) -> str:
    """E.164 only: a leading '+' and the country code, so a number means the same in every store."""
    if not value.startswith("+"):
        raise InvalidArgument(
            "INVALID_PHONE", "phone numbers must be in E.164 form, e.g. +4915112345678", field=field_path
        )
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        raise InvalidArgument("INVALID_PHONE", "not a valid phone number", field=field_path)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(value: str, field_path: str) -> str:
    try:
        normalised = validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        raise InvalidArgument("INVALID_EMAIL", "not a valid e-mail address", field=field_path) from None
    return normalised.lower()


def identifiers_read_from(query: str) -> list[Identifier]:
    """A search text that reads as a card, phone or e-mail also matches that identifier exactly."""
    found = []
    for kind in (IdentifierType.LOYALTY_CARD, IdentifierType.PHONE, IdentifierType.EMAIL):
        with contextlib.suppress(InvalidArgument):
            found.append(normalise_identifier(kind, query, "", "query"))
    return found


def check_identifiers_unique(identifiers: list[Identifier], field_path: str) -> None:
    if not identifiers:
        raise InvalidArgument("INVALID_ARGUMENT", "at least one identifier is required", field=field_path)
    if len(set(identifiers)) != len(identifiers):
        raise InvalidArgument("INVALID_ARGUMENT", "the same identifier is given twice", field=field_path)


def check_locale(locale: str, field_path: str = "locale") -> str:
    if locale and not LOCALE_PATTERN.fullmatch(locale):
        raise InvalidArgument(
            "INVALID_ARGUMENT", "locale must be a BCP 47 tag like 'de-AT'", field=field_path
        )
    return locale


def check_name(name: str, field_path: str) -> str:
    if len(name) > 200:
        raise InvalidArgument("INVALID_ARGUMENT", "names have at most 200 characters", field=field_path)
    return name.strip()


# ---------------------------------------------------------------------------------------------
# Custom attributes


def check_definition(definition: AttributeDefinition) -> AttributeDefinition:
    if not ATTRIBUTE_NAME_PATTERN.fullmatch(definition.name):
        raise InvalidArgument(
            "INVALID_ARGUMENT",
            "attribute names are lower-case letters, digits and underscores, starting with a letter",
            field="definition.name",
        )
    if definition.type is AttributeType.ENUM:
        values = definition.enum_values
        if not values or len(set(values)) != len(values) or any(not v for v in values):
            raise InvalidArgument(
                "INVALID_ARGUMENT",
                "enum attributes need distinct, non-empty values",
                field="definition.enum_values",
            )
    elif definition.enum_values:
        raise InvalidArgument(
            "INVALID_ARGUMENT", "only enum attributes take enum_values", field="definition.enum_values"
        )
    return definition


def reconcile_definition(
    existing: AttributeDefinition | None, wanted: AttributeDefinition
) -> AttributeDefinition:
    """Defining an attribute again with the same shape is harmless; with another shape it is refused,
    because values already stored were checked against the first one."""
    if existing is not None and existing != wanted:
        raise AlreadyExists(
            "ATTRIBUTE_DEFINITION_CONFLICT",
            f"attribute '{wanted.name}' already exists with another definition",
            field="definition.name",
        )
    return wanted


def check_attribute(
    definition: AttributeDefinition | None, name: str, kind: AttributeType, value: object
) -> tuple[AttributeType, object]:
    """Check one value against the schema; returns it in canonical form."""
    field_path = f"attributes[{name}]"
    if definition is None:
        raise InvalidArgument("UNKNOWN_ATTRIBUTE", f"no attribute '{name}' is defined", field=field_path)
    if kind is not definition.type:
        raise InvalidArgument(
            "ATTRIBUTE_TYPE_MISMATCH",
            f"attribute '{name}' is of type {definition.type.value}, not {kind.value}",
            field=field_path,
        )
    if kind is AttributeType.DECIMAL:
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise InvalidArgument(
                "ATTRIBUTE_TYPE_MISMATCH", "not a decimal number", field=field_path
            ) from None
        if not number.is_finite():
            raise InvalidArgument("ATTRIBUTE_TYPE_MISMATCH", "not a finite decimal number", field=field_path)
        return kind, str(number)
    if kind is AttributeType.ENUM and value not in definition.enum_values:
        raise InvalidArgument(
            "ATTRIBUTE_TYPE_MISMATCH",
            f"'{value}' is not one of {list(definition.enum_values)}",
            field=field_path,
        )
    if kind is AttributeType.STRING and len(str(value)) > 1000:
        raise InvalidArgument(
            "INVALID_ARGUMENT", "string attributes have at most 1000 characters", field=field_path
        )
    return kind, value


def check_attributes(
    values: dict[str, tuple[AttributeType, object]], schema: dict[str, AttributeDefinition]
) -> dict[str, tuple[AttributeType, object]]:
    return {
        name: check_attribute(schema.get(name), name, kind, value) for name, (kind, value) in values.items()
    }


def check_required(attributes: dict[str, object], schema: dict[str, AttributeDefinition]) -> None:
    missing = sorted(name for name, d in schema.items() if d.required and name not in attributes)
    if missing:
        raise InvalidArgument(
            "REQUIRED_ATTRIBUTE_MISSING",
            f"required attribute '{missing[0]}' has no value",
            field=f"attributes[{missing[0]}]",
        )


# ---------------------------------------------------------------------------------------------
# Updates

UPDATABLE_FIELDS = ("given_name", "family_name", "birth_date", "locale", "attributes")


def apply_update(
    current: Customer,
    changes: Customer,
    paths: list[str],
    schema: dict[str, AttributeDefinition],
) -> Customer:
    """Replace exactly the fields named by the update mask; returns the new state."""
    if not paths:
        raise InvalidArgument("INVALID_ARGUMENT", "update_mask names no field", field="update_mask")
    updated = replace(current, attributes=dict(current.attributes))
    for path in paths:
        top, _, attribute = path.partition(".")
        if top not in UPDATABLE_FIELDS or (attribute and top != "attributes"):
            raise InvalidArgument("INVALID_ARGUMENT", f"'{path}' cannot be updated", field="update_mask")
        if top == "attributes" and attribute:
            if attribute in changes.attributes:
                updated.attributes[attribute] = changes.attributes[attribute]
            else:
                updated.attributes.pop(attribute, None)
        elif top == "attributes":
            updated.attributes = dict(changes.attributes)
        else:
            setattr(updated, top, getattr(changes, top))
    updated.attributes = check_attributes(updated.attributes, schema)
    check_required(updated.attributes, schema)
    check_locale(updated.locale, "customer.locale")
    return updated


# ---------------------------------------------------------------------------------------------
# Consent

MARKETING = "marketing"


def contact_allowed(consent: Consent | None, purpose: str) -> bool:
    """Marketing needs an explicit grant (opt-in); a transactional message (a receipt, a points
    statement) may go unless the customer withdrew it."""
    if consent is None:
        return purpose != MARKETING
    return consent.granted


# ---------------------------------------------------------------------------------------------
# Merge and erasure


def check_mergeable(survivor: Customer, merged: Customer) -> None:
    if survivor.customer_id == merged.customer_id:
        raise InvalidArgument(
            "INVALID_ARGUMENT", "a customer cannot be merged into itself", field="merged_customer_id"
        )
    for role, customer in (("survivor_customer_id", survivor), ("merged_customer_id", merged)):
        if customer.status is not CustomerStatus.ACTIVE:
            raise FailedPrecondition(
                f"CUSTOMER_{customer.status.value.upper()}",
                f"that customer is {customer.status.value}",
                field=role,
            )


def merged_profile(survivor: Customer, merged: Customer) -> Customer:
    """The survivor keeps its own values; what only the duplicate knew fills the gaps."""
    attributes = {**merged.attributes, **survivor.attributes}
    consents = {(c.channel, c.purpose): c for c in merged.consents}
    for consent in survivor.consents:
        earlier = consents.get((consent.channel, consent.purpose))
        # The most recent answer the customer gave wins, whichever profile it was recorded on.
        if earlier is None or consent.recorded_at >= earlier.recorded_at:
            consents[(consent.channel, consent.purpose)] = consent
    return replace(
        survivor,
        identifiers=sorted(set(survivor.identifiers) | set(merged.identifiers)),
        given_name=survivor.given_name or merged.given_name,
        family_name=survivor.family_name or merged.family_name,
        birth_date=survivor.birth_date or merged.birth_date,
        locale=survivor.locale or merged.locale,
        attributes=attributes,
        consents=sorted(consents.values(), key=lambda c: (c.channel, c.purpose)),
    )


def erased_profile(customer: Customer, when: datetime) -> Customer:
    """Pseudonymised: the id stays (ledgers refer to it), everything personal goes. Consents are
    recorded as withdrawn so nothing is ever sent again."""
    return Customer(
        customer_id=customer.customer_id,
        identifiers=[],
        consents=[Consent(c.channel, c.purpose, False, "erasure", when) for c in customer.consents],
        status=CustomerStatus.ERASED,
        created_at=customer.created_at,
        updated_at=when,
    )
