"""Profile rules, pure: identifier normalisation, the attribute schema, updates, consent, merge and
erasure. No I/O here: the use cases (app.py) feed it plain values and the repository stores what it
decides. Lengths, control characters and enum ranges are the contract's (checked by the runtime's
validator before any of this runs); what a value means is checked here."""

import contextlib
import functools
import re
import uuid
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from loyalty_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Reason


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


class ConsentChannel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    MESSENGER = "messenger"


class ConsentPurpose(StrEnum):
    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


@dataclass(frozen=True, slots=True)
class Identifier:
    type: IdentifierType
    value: str
    namespace: str = ""


def identifier_order(identifier: Identifier) -> tuple[str, str, str]:
    """The order identifiers are listed in (the repository sorts the same way, byte-wise)."""
    return identifier.type.value, identifier.namespace, identifier.value


@dataclass(frozen=True, slots=True)
class AttributeDefinition:
    name: str
    type: AttributeType
    required: bool = False
    enum_values: tuple[str, ...] = ()
    description: str = ""
    # When it was defined; not part of its shape.
    created_at: datetime | None = field(default=None, compare=False)


# A value of a custom attribute: its type travels with it, so a stored value never needs the schema.
AttributeValue = tuple[AttributeType, object]
Schema = Mapping[str, AttributeDefinition]


@dataclass(frozen=True, slots=True)
class Consent:
    channel: ConsentChannel
    purpose: ConsentPurpose
    granted: bool
    source: str
    recorded_at: datetime

    @property
    def topic(self) -> tuple[ConsentChannel, ConsentPurpose]:
        return self.channel, self.purpose


@dataclass(frozen=True, slots=True)
class ConsentAnswer:
    """A consent as a caller gives it: `given_at` None means now."""

    channel: ConsentChannel
    purpose: ConsentPurpose
    granted: bool
    source: str
    given_at: datetime | None = None


@dataclass(slots=True)
class Customer:
    customer_id: str
    identifiers: list[Identifier]
    given_name: str = ""
    family_name: str = ""
    birth_date: date | None = None
    locale: str = ""
    # IANA zone; "" = unknown (the tenant's default applies wherever local time matters).
    time_zone: str = ""
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    consents: list[Consent] = field(default_factory=list)
    status: CustomerStatus = CustomerStatus.ACTIVE
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    """May the customer be contacted on a channel for a purpose, and the answer that says so."""

    allowed: bool
    consent: Consent | None


@dataclass(frozen=True, slots=True)
class CustomerExport:
    """Everything kept about a customer: their profile and what remains of those merged into it."""

    customer: Customer
    merged: list[Customer]
    exported_at: datetime


@dataclass(frozen=True, slots=True)
class ProfileFields:
    """The personal fields a caller can set: at enrolment, or through an update mask."""

    given_name: str = ""
    family_name: str = ""
    birth_date: date | None = None
    locale: str = ""
    time_zone: str = ""
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


def canonical_customer_id(value: str, field_path: str) -> str:
    """Customer ids are UUIDs, in their one canonical spelling."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "customer ids are UUIDs", field=field_path) from None


# ---------------------------------------------------------------------------------------------
# Identifiers

CARD_PATTERN = re.compile(r"[A-Z0-9]{4,32}")
NAMESPACE_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
EXTERNAL_ID_PATTERN = re.compile(r"\S(?:[^\t\n\r]{0,126}\S)?")
ATTRIBUTE_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
LOCALE_PATTERN = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
LINE_BREAKS = re.compile(r"[\t\n\r]")


def normalise_identifier(identifier: Identifier, field_path: str) -> Identifier:
    """The one canonical spelling of an identifier, so that lookups and uniqueness agree."""
    kind, value = identifier.type, identifier.value.strip()
    if kind is IdentifierType.LOYALTY_CARD:
        card = re.sub(r"[ -]", "", value).upper()
        if not CARD_PATTERN.fullmatch(card):
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT,
                "card numbers have 4 to 32 letters or digits",
                field=f"{field_path}.value",
            )
        return Identifier(kind, card)
    if kind is IdentifierType.PHONE:
        return Identifier(kind, normalise_phone(value, f"{field_path}.value"))
    if kind is IdentifierType.EMAIL:
        return Identifier(kind, normalise_email(value, f"{field_path}.value"))
    if not NAMESPACE_PATTERN.fullmatch(identifier.namespace):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            "external ids need a namespace like 'shopify'",
            field=f"{field_path}.namespace",
        )
    if not EXTERNAL_ID_PATTERN.fullmatch(value):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            "external ids have 1 to 128 characters on one line",
            field=f"{field_path}.value",
        )
    return Identifier(kind, value, identifier.namespace)


def normalise_phone(value: str, field_path: str) -> str:
    """E.164 only: a leading '+' and the country code, so a number means the same in every store."""
    if not value.startswith("+"):
        raise InvalidArgument(
            Reason.INVALID_PHONE, "phone numbers must be in E.164 form, e.g. +4915112345678", field=field_path
        )
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        raise InvalidArgument(Reason.INVALID_PHONE, "not a valid phone number", field=field_path)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(value: str, field_path: str) -> str:
    try:
        normalised = validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        raise InvalidArgument(Reason.INVALID_EMAIL, "not a valid e-mail address", field=field_path) from None
    return normalised.lower()


def normalise_identifiers(identifiers: Sequence[Identifier], field_path: str) -> list[Identifier]:
    """At least one, each normalised, no two the same once normalised."""
    if not identifiers:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "at least one identifier is required", field=field_path
        )
    normalised = [normalise_identifier(i, f"{field_path}[{n}]") for n, i in enumerate(identifiers)]
    seen: set[Identifier] = set()
    for index, identifier in enumerate(normalised):
        if identifier in seen:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "the same identifier is given twice", field=f"{field_path}[{index}]"
            )
        seen.add(identifier)
    return normalised


def identifiers_read_from(query: str) -> list[Identifier]:
    """A search text that reads as a card, phone or e-mail also matches that identifier exactly."""
    found = []
    for kind in (IdentifierType.LOYALTY_CARD, IdentifierType.PHONE, IdentifierType.EMAIL):
        with contextlib.suppress(InvalidArgument):
            found.append(normalise_identifier(Identifier(kind, query), "query"))
    return found


def with_identifier(customer: Customer, identifier: Identifier, now: datetime) -> Customer | None:
    """The customer with one more identifier; None when they hold it already (nothing to do)."""
    check_changeable(customer)
    if identifier in customer.identifiers:
        return None
    identifiers = sorted([*customer.identifiers, identifier], key=identifier_order)
    return replace(customer, identifiers=identifiers, updated_at=now)


def without_identifier(customer: Customer, identifier: Identifier, now: datetime) -> Customer:
    check_changeable(customer)
    if identifier not in customer.identifiers:
        raise NotFound(Reason.IDENTIFIER_NOT_FOUND, "the customer has no such identifier", field="identifier")
    if len(customer.identifiers) == 1:
        raise FailedPrecondition(
            Reason.LAST_IDENTIFIER, "the last identifier of a customer cannot be removed", field="identifier"
        )
    return replace(customer, identifiers=[i for i in customer.identifiers if i != identifier], updated_at=now)


# ---------------------------------------------------------------------------------------------
# Names, locale, birth date


def check_name(name: str, field_path: str) -> str:
    """Names are one line; surrounding spaces go."""
    if LINE_BREAKS.search(name):
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "names are one line of text", field=field_path)
    return name.strip()


def check_locale(locale: str, field_path: str) -> str:
    """A BCP 47 tag in its canonical case: language lower, script title, region upper ('zh-Hant-TW')."""
    if not locale:
        return ""
    if not LOCALE_PATTERN.fullmatch(locale):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "locale must be a BCP 47 tag like 'de-AT'", field=field_path
        )
    language, *subtags = locale.split("-")
    return "-".join([language.lower(), *(_canonical_subtag(s) for s in subtags)])


# Entries of a tz directory that name no zone: the machine's own setting and tzcode's helpers.
NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - NOT_ZONES


def check_time_zone(time_zone: str, field_path: str) -> str:
    """A zone of the tz database, spelt as it spells it ('Europe/Berlin'); "" stays unknown."""
    if time_zone and time_zone not in _zones():
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            "time_zone must be an IANA time zone like 'Europe/Berlin'",
            field=field_path,
        )
    return time_zone


def _canonical_subtag(subtag: str) -> str:
    if len(subtag) == 2 or (len(subtag) == 3 and subtag.isdigit()):
        return subtag.upper()
    if len(subtag) == 4 and subtag.isalpha():
        return subtag.title()
    return subtag.lower()


def check_birth_date(birth_date: date | None, today: date, field_path: str) -> date | None:
    if birth_date is not None and birth_date > today:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "a birth date cannot be in the future", field=field_path
        )
    return birth_date


def check_profile_fields(fields: ProfileFields, today: date, prefix: str = "") -> ProfileFields:
    """Every personal field checked and in canonical form (attribute values by type only; the
    schema is checked by `check_attributes`)."""
    return ProfileFields(
        given_name=check_name(fields.given_name, f"{prefix}given_name"),
        family_name=check_name(fields.family_name, f"{prefix}family_name"),
        birth_date=check_birth_date(fields.birth_date, today, f"{prefix}birth_date"),
        locale=check_locale(fields.locale, f"{prefix}locale"),
        time_zone=check_time_zone(fields.time_zone, f"{prefix}time_zone"),
        attributes={
            name: canonical_attribute(name, kind, value, prefix)
            for name, (kind, value) in fields.attributes.items()
        },
    )


def new_customer(
    customer_id: str,
    identifiers: list[Identifier],
    fields: ProfileFields,
    consents: list[Consent],
    now: datetime,
) -> Customer:
    return Customer(
        customer_id=customer_id,
        identifiers=sorted(identifiers, key=identifier_order),
        given_name=fields.given_name,
        family_name=fields.family_name,
        birth_date=fields.birth_date,
        locale=fields.locale,
        time_zone=fields.time_zone,
        attributes=dict(fields.attributes),
        consents=sorted(consents, key=consent_order),
        created_at=now,
        updated_at=now,
    )


# ---------------------------------------------------------------------------------------------
# Custom attributes


def check_definition(definition: AttributeDefinition) -> AttributeDefinition:
    if not ATTRIBUTE_NAME_PATTERN.fullmatch(definition.name):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            "attribute names are lower-case letters, digits and underscores, starting with a letter",
            field="definition.name",
        )
    if definition.type is AttributeType.ENUM:
        values = definition.enum_values
        if (
            not values
            or len(set(values)) != len(values)
            or any(not v or v != v.strip() or LINE_BREAKS.search(v) for v in values)
        ):
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT,
                "enum attributes need distinct, non-empty one-line values",
                field="definition.enum_values",
            )
    elif definition.enum_values:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "only enum attributes take enum_values", field="definition.enum_values"
        )
    return definition


def reconcile_definition(existing: AttributeDefinition, wanted: AttributeDefinition) -> AttributeDefinition:
    """Defining an attribute again with the same shape is harmless; with another shape it is refused,
    because values already stored were checked against the first one."""
    if existing != wanted:
        raise AlreadyExists(
            Reason.ATTRIBUTE_DEFINITION_CONFLICT,
            f"attribute '{wanted.name}' already exists with another definition",
            field="definition.name",
        )
    return existing


def attribute_field(name: str, prefix: str = "") -> str:
    """The field path of one attribute: `attributes[name]`, or `customer.attributes[name]`."""
    return f"{prefix}attributes[{name}]"


def canonical_attribute(name: str, kind: AttributeType, value: object, prefix: str = "") -> AttributeValue:
    """One value in canonical form, by its type alone: decimals as exact text."""
    if kind is not AttributeType.DECIMAL:
        return kind, value
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidArgument(
            Reason.ATTRIBUTE_TYPE_MISMATCH, "not a decimal number", field=attribute_field(name, prefix)
        ) from None
    if not number.is_finite():
        raise InvalidArgument(
            Reason.ATTRIBUTE_TYPE_MISMATCH, "not a finite decimal number", field=attribute_field(name, prefix)
        )
    return kind, str(number)


def check_attribute(
    definition: AttributeDefinition | None, name: str, kind: AttributeType, value: object, prefix: str = ""
) -> None:
    """One (canonical) value against the tenant's schema."""
    where = attribute_field(name, prefix)
    if definition is None:
        raise InvalidArgument(Reason.UNKNOWN_ATTRIBUTE, f"no attribute '{name}' is defined", field=where)
    if kind is not definition.type:
        raise InvalidArgument(
            Reason.ATTRIBUTE_TYPE_MISMATCH,
            f"attribute '{name}' is of type {definition.type.value}, not {kind.value}",
            field=where,
        )
    if kind is AttributeType.ENUM and value not in definition.enum_values:
        raise InvalidArgument(
            Reason.ATTRIBUTE_TYPE_MISMATCH, f"not one of the values defined for '{name}'", field=where
        )


def check_attributes(values: Mapping[str, AttributeValue], schema: Schema, prefix: str = "") -> None:
    """Every value is of a defined attribute and its type, and every required attribute has one."""
    for name, (kind, value) in values.items():
        check_attribute(schema.get(name), name, kind, value, prefix)
    missing = sorted(name for name, d in schema.items() if d.required and name not in values)
    if missing:
        raise InvalidArgument(
            Reason.REQUIRED_ATTRIBUTE_MISSING,
            f"required attribute '{missing[0]}' has no value",
            field=attribute_field(missing[0], prefix),
        )


# ---------------------------------------------------------------------------------------------
# Updates

UPDATABLE_FIELDS = frozenset({"given_name", "family_name", "birth_date", "locale", "time_zone"})
ATTRIBUTES = "attributes"


@dataclass(frozen=True, slots=True)
class UpdateMask:
    """What an update replaces: plain fields, the whole attribute map, or single attributes."""

    fields: frozenset[str]
    all_attributes: bool
    attribute_names: tuple[str, ...]

    @property
    def touches_attributes(self) -> bool:
        return self.all_attributes or bool(self.attribute_names)

    @property
    def changed(self) -> list[str]:
        """The top-level fields it changes, for the `customer.updated` event."""
        return sorted(self.fields | ({ATTRIBUTES} if self.touches_attributes else set()))


def parse_update_mask(paths: Sequence[str]) -> UpdateMask:
    """Only given_name, family_name, birth_date, locale, time_zone, attributes and attributes.<name>
    update."""
    if not paths:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "update_mask names no field", field="update_mask")
    fields, names, all_attributes = set(), [], False
    for index, path in enumerate(paths):
        top, dot, name = path.partition(".")
        if not dot and top in UPDATABLE_FIELDS:
            fields.add(top)
        elif not dot and top == ATTRIBUTES:
            all_attributes = True
        elif top == ATTRIBUTES and ATTRIBUTE_NAME_PATTERN.fullmatch(name):
            names.append(name)
        else:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "this path cannot be updated", field=f"update_mask.paths[{index}]"
            )
    return UpdateMask(frozenset(fields), all_attributes, tuple(dict.fromkeys(names)))


UPDATE_PREFIX = "customer."


def apply_update(
    current: Customer, changes: ProfileFields, mask: UpdateMask, schema: Schema, now: datetime
) -> Customer:
    """Replace exactly what the mask names (`changes` already checked by `check_profile_fields`).
    A path `attributes.<name>` whose name is absent from `changes` removes that attribute."""
    check_changeable(current, f"{UPDATE_PREFIX}customer_id")
    updated = replace(current, attributes=dict(current.attributes), updated_at=now)
    for name in mask.fields:
        setattr(updated, name, getattr(changes, name))
    if mask.all_attributes:
        updated.attributes = dict(changes.attributes)
    for name in mask.attribute_names:
        if name not in schema:
            raise InvalidArgument(
                Reason.UNKNOWN_ATTRIBUTE,
                f"no attribute '{name}' is defined",
                field=attribute_field(name, UPDATE_PREFIX),
            )
        if name in changes.attributes:
            updated.attributes[name] = changes.attributes[name]
        else:
            updated.attributes.pop(name, None)
    if mask.touches_attributes:
        check_attributes(updated.attributes, schema, UPDATE_PREFIX)
    return updated


def check_changeable(customer: Customer, field_path: str = "customer_id") -> None:
    """Only an active customer changes: an erased one has nothing left to change, a merged one
    lives on in its survivor."""
    if customer.status is CustomerStatus.ERASED:
        raise FailedPrecondition(Reason.CUSTOMER_ERASED, "this customer was erased", field=field_path)
    if customer.status is CustomerStatus.MERGED:
        raise FailedPrecondition(
            Reason.CUSTOMER_MERGED, "this customer was merged into another", field=field_path
        )


# ---------------------------------------------------------------------------------------------
# Consent

# A consent given "in the future" would win every later comparison; allow for clock skew only.
CLOCK_SKEW = timedelta(minutes=5)


def consent_order(consent: Consent) -> tuple[str, str]:
    return consent.channel.value, consent.purpose.value


def consents_given(answers: Sequence[ConsentAnswer], now: datetime, field_path: str) -> list[Consent]:
    """The answers as consents: one per channel and purpose, sources on one line, none from the future."""
    consents, seen = [], set()
    for index, answer in enumerate(answers):
        where = f"{field_path}[{index}]"
        if (answer.channel, answer.purpose) in seen:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "one answer per channel and purpose", field=f"{where}.purpose"
            )
        seen.add((answer.channel, answer.purpose))
        if LINE_BREAKS.search(answer.source):
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "a source is one line of text", field=f"{where}.source"
            )
        given_at = now if answer.given_at is None else answer.given_at
        if given_at > now + CLOCK_SKEW:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT,
                "a consent cannot be given in the future",
                field=f"{where}.record_time",
            )
        consents.append(
            Consent(answer.channel, answer.purpose, answer.granted, answer.source.strip(), given_at)
        )
    return consents


def latest_consents(held: Iterable[Consent], incoming: Iterable[Consent]) -> list[Consent]:
    """Per channel and purpose, the answer the customer gave last wins (ties: the incoming one),
    so a late retry of an old answer never overrides a newer withdrawal."""
    latest: dict[tuple[ConsentChannel, ConsentPurpose], Consent] = {}
    for wins_ties, consents in ((False, held), (True, incoming)):
        for consent in consents:
            earlier = latest.get(consent.topic)
            if (
                earlier is None
                or consent.recorded_at > earlier.recorded_at
                or (wins_ties and consent.recorded_at == earlier.recorded_at)
            ):
                latest[consent.topic] = consent
    return sorted(latest.values(), key=consent_order)


def consents_to_set(answers: Sequence[ConsentAnswer], now: datetime) -> list[Consent]:
    if not answers:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "at least one consent is required", field="consents")
    return consents_given(answers, now, "consents")


def with_consents(
    customer: Customer, incoming: Sequence[Consent], now: datetime
) -> tuple[Customer, list[Consent]]:
    """The customer with the answers that win (see `latest_consents`), and those answers; the
    customer as they were when none wins."""
    check_changeable(customer)
    consents = latest_consents(customer.consents, incoming)
    changed = changed_consents(customer.consents, consents)
    if not changed:
        return customer, []
    return replace(customer, consents=consents, updated_at=now), changed


def changed_consents(before: Iterable[Consent], after: Iterable[Consent]) -> list[Consent]:
    """The consents of `after` that `before` does not hold as they are."""
    held = set(before)
    return [consent for consent in after if consent not in held]


def consent_decision(customer: Customer, channel: ConsentChannel, purpose: ConsentPurpose) -> ConsentDecision:
    return ConsentDecision(
        contact_allowed(customer, channel, purpose), consent_for(customer, channel, purpose)
    )


def contact_allowed(customer: Customer, channel: ConsentChannel, purpose: ConsentPurpose) -> bool:
    """Marketing needs an explicit grant (opt-in); a transactional message (a receipt, a points
    statement) may go unless the customer withdrew it. Nobody but an active customer is contacted."""
    if customer.status is not CustomerStatus.ACTIVE:
        return False
    consent = consent_for(customer, channel, purpose)
    if consent is None:
        return purpose is not ConsentPurpose.MARKETING
    return consent.granted


def consent_for(customer: Customer, channel: ConsentChannel, purpose: ConsentPurpose) -> Consent | None:
    return next((c for c in customer.consents if c.topic == (channel, purpose)), None)


# ---------------------------------------------------------------------------------------------
# Merge and erasure

ERASURE_SOURCE = "erasure"


def check_mergeable(survivor: Customer, merged: Customer) -> None:
    if survivor.customer_id == merged.customer_id:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "a customer cannot be merged into itself", field="merged_customer_id"
        )
    check_changeable(survivor, "survivor_customer_id")
    check_changeable(merged, "merged_customer_id")


def merged_profile(survivor: Customer, merged: Customer, now: datetime) -> Customer:
    """The survivor keeps its own values; what only the duplicate knew fills the gaps; the most
    recent consent answer wins, whichever profile it was recorded on."""
    return replace(
        survivor,
        identifiers=sorted({*survivor.identifiers, *merged.identifiers}, key=identifier_order),
        given_name=survivor.given_name or merged.given_name,
        family_name=survivor.family_name or merged.family_name,
        birth_date=survivor.birth_date or merged.birth_date,
        locale=survivor.locale or merged.locale,
        time_zone=survivor.time_zone or merged.time_zone,
        attributes={**merged.attributes, **survivor.attributes},
        consents=latest_consents(merged.consents, survivor.consents),
        updated_at=now,
    )


def absorbed_profile(merged: Customer, now: datetime) -> Customer:
    """What remains of a duplicate after its merge: its id (the repository points it at the
    survivor). Its personal data moved to the survivor, so no copy stays behind to be forgotten
    when the survivor is erased."""
    return Customer(
        customer_id=merged.customer_id,
        identifiers=[],
        status=CustomerStatus.MERGED,
        created_at=merged.created_at,
        updated_at=now,
    )


def erased_profile(customer: Customer, when: datetime) -> Customer:
    """Pseudonymised: the id stays (ledgers refer to it), everything personal goes. Consents are
    recorded as withdrawn so nothing is ever sent again."""
    return Customer(
        customer_id=customer.customer_id,
        identifiers=[],
        consents=[
            Consent(c.channel, c.purpose, False, ERASURE_SOURCE, when)
            for c in sorted(customer.consents, key=consent_order)
        ],
        status=CustomerStatus.ERASED,
        created_at=customer.created_at,
        updated_at=when,
    )
