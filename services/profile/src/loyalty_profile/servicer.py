"""ProfileService: protobuf in, domain decisions, repository writes, protobuf out. No SQL, no rules."""

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime

from google.protobuf.message import Message

from loyalty.common.v1 import customer_pb2, date_pb2
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as api, profile_service_pb2_grpc
from loyalty_profile import domain
from loyalty_profile.domain import (
    AttributeDefinition,
    AttributeType,
    Consent,
    Customer,
    Identifier,
    IdentifierType,
)
from loyalty_profile.models import idempotency_keys
from loyalty_profile.repository import ProfileRepository
from loyalty_runtime import idempotency
from loyalty_runtime.db import Database
from loyalty_runtime.errors import InvalidArgument, NotFound
from loyalty_runtime.paging import decode_token, encode_token, page_size
from loyalty_runtime.protobuf import timestamp

IDENTIFIER_TYPES = {
    customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD: IdentifierType.LOYALTY_CARD,
    customer_pb2.IDENTIFIER_TYPE_PHONE: IdentifierType.PHONE,
    customer_pb2.IDENTIFIER_TYPE_EMAIL: IdentifierType.EMAIL,
    customer_pb2.IDENTIFIER_TYPE_EXTERNAL: IdentifierType.EXTERNAL,
}
IDENTIFIER_TYPES_PB = {v: k for k, v in IDENTIFIER_TYPES.items()}
ATTRIBUTE_TYPES = {
    profile_pb2.ATTRIBUTE_TYPE_STRING: AttributeType.STRING,
    profile_pb2.ATTRIBUTE_TYPE_INT: AttributeType.INT,
    profile_pb2.ATTRIBUTE_TYPE_DECIMAL: AttributeType.DECIMAL,
    profile_pb2.ATTRIBUTE_TYPE_BOOL: AttributeType.BOOL,
    profile_pb2.ATTRIBUTE_TYPE_DATE: AttributeType.DATE,
    profile_pb2.ATTRIBUTE_TYPE_ENUM: AttributeType.ENUM,
}
ATTRIBUTE_TYPES_PB = {v: k for k, v in ATTRIBUTE_TYPES.items()}
CHANNELS = {
    profile_pb2.CONSENT_CHANNEL_EMAIL: "email",
    profile_pb2.CONSENT_CHANNEL_SMS: "sms",
    profile_pb2.CONSENT_CHANNEL_PUSH: "push",
    profile_pb2.CONSENT_CHANNEL_MESSENGER: "messenger",
}
CHANNELS_PB = {v: k for k, v in CHANNELS.items()}
PURPOSES = {
    profile_pb2.CONSENT_PURPOSE_MARKETING: "marketing",
    profile_pb2.CONSENT_PURPOSE_TRANSACTIONAL: "transactional",
}
PURPOSES_PB = {v: k for k, v in PURPOSES.items()}
STATUSES_PB = {
    domain.CustomerStatus.ACTIVE: profile_pb2.CUSTOMER_STATUS_ACTIVE,
    domain.CustomerStatus.MERGED: profile_pb2.CUSTOMER_STATUS_MERGED,
    domain.CustomerStatus.ERASED: profile_pb2.CUSTOMER_STATUS_ERASED,
}


# -- protobuf -> domain ----------------------------------------------------------------------


def customer_id(value: str, field: str = "customer_id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument("INVALID_ARGUMENT", "customer ids are UUIDs", field=field) from None


def identifier_in(message: customer_pb2.Identifier, field: str) -> Identifier:
    return domain.normalise_identifier(
        IDENTIFIER_TYPES.get(message.type), message.value, message.namespace, field
    )


def date_in(message: date_pb2.Date, field: str) -> date | None:
    if not (message.year or message.month or message.day):
        return None
    try:
        return date(message.year, message.month, message.day)
    except ValueError:
        raise InvalidArgument("INVALID_ARGUMENT", "not a calendar date", field=field) from None


def attribute_in(name: str, message: profile_pb2.AttributeValue) -> tuple[AttributeType, object]:
    kind = message.WhichOneof("value")
    if kind is None:
        raise InvalidArgument("INVALID_ARGUMENT", "attribute value is empty", field=f"attributes[{name}]")
    if kind == "date_value":
        return AttributeType.DATE, date_in(message.date_value, f"attributes[{name}]")
    return AttributeType(kind.removesuffix("_value")), getattr(message, kind)


def consent_in(message: profile_pb2.Consent, field: str, now: datetime) -> Consent:
    if message.channel not in CHANNELS:
        raise InvalidArgument("INVALID_ARGUMENT", "consent channel is required", field=f"{field}.channel")
    if message.purpose not in PURPOSES:
        raise InvalidArgument("INVALID_ARGUMENT", "consent purpose is required", field=f"{field}.purpose")
    when = message.record_time.ToDatetime(tzinfo=UTC) if message.HasField("record_time") else now
    return Consent(
        CHANNELS[message.channel], PURPOSES[message.purpose], message.granted, message.source[:100], when
    )


def definition_in(message: profile_pb2.AttributeDefinition) -> AttributeDefinition:
    if message.type not in ATTRIBUTE_TYPES:
        raise InvalidArgument("INVALID_ARGUMENT", "attribute type is required", field="definition.type")
    return domain.check_definition(
        AttributeDefinition(
            name=message.name,
            type=ATTRIBUTE_TYPES[message.type],
            required=message.required,
            enum_values=tuple(message.enum_values),
            description=message.description[:500],
        )
    )


# -- domain -> protobuf ----------------------------------------------------------------------


def date_out(value: date | None) -> date_pb2.Date | None:
    return None if value is None else date_pb2.Date(year=value.year, month=value.month, day=value.day)


def attribute_out(kind: AttributeType, value: object) -> profile_pb2.AttributeValue:
    if kind is AttributeType.DATE:
        return profile_pb2.AttributeValue(date_value=date_out(value))
    return profile_pb2.AttributeValue(**{f"{kind.value}_value": value})


def consent_out(consent: Consent) -> profile_pb2.Consent:
    return profile_pb2.Consent(
        channel=CHANNELS_PB[consent.channel],
        purpose=PURPOSES_PB[consent.purpose],
        granted=consent.granted,
        source=consent.source,
        record_time=timestamp(consent.recorded_at),
    )


def customer_out(customer: Customer) -> profile_pb2.Customer:
    return profile_pb2.Customer(
        customer_id=customer.customer_id,
        identifiers=[
            customer_pb2.Identifier(type=IDENTIFIER_TYPES_PB[i.type], value=i.value, namespace=i.namespace)
            for i in customer.identifiers
        ],
        given_name=customer.given_name,
        family_name=customer.family_name,
        birth_date=date_out(customer.birth_date),
        locale=customer.locale,
        attributes={name: attribute_out(kind, value) for name, (kind, value) in customer.attributes.items()},
        consents=[consent_out(c) for c in customer.consents],
        status=STATUSES_PB[customer.status],
        create_time=timestamp(customer.created_at),
        update_time=timestamp(customer.updated_at),
    )


def definition_out(definition: AttributeDefinition, created_at: datetime) -> profile_pb2.AttributeDefinition:
    return profile_pb2.AttributeDefinition(
        name=definition.name,
        type=ATTRIBUTE_TYPES_PB[definition.type],
        required=definition.required,
        enum_values=definition.enum_values,
        description=definition.description,
        create_time=timestamp(created_at),
    )


async def existing(
    repository: ProfileRepository, raw_id: str, field: str = "customer_id", *, lock: bool = False
):
    """The customer (or its survivor); unknown and another tenant's look exactly the same."""
    customer = await repository.load(customer_id(raw_id, field), lock=lock)
    if customer is None:
        raise NotFound("CUSTOMER_NOT_FOUND", "no such customer", field=field)
    return customer


async def reloaded(repository: ProfileRepository, raw_id: str) -> profile_pb2.Customer:
    """The customer as stored after a change, for the answer."""
    return customer_out(await repository.load(uuid.UUID(raw_id)))


class ProfileServicer(profile_service_pb2_grpc.ProfileServiceServicer):
    def __init__(self, database: Database) -> None:
        self._database = database

    async def _change(
        self,
        request: Message,
        response_type: type[Message],
        work: Callable[[ProfileRepository], Awaitable[Message]],
    ) -> Message:
        """One transaction for a state change: claim the idempotency key, do the work, remember the
        answer. Any refusal rolls everything back, the key included."""
        method = type(request).__name__.removesuffix("Request")
        async with self._database.transaction() as session:
            replay = await idempotency.claim(session, idempotency_keys, request, response_type, method=method)
            if replay is not None:
                return replay
            response = await work(ProfileRepository(session))
            await idempotency.remember(session, idempotency_keys, request.idempotency_key, response)
            return response

    async def _read(self, work: Callable[[ProfileRepository], Awaitable[Message]]) -> Message:
        async with self._database.transaction() as session:
            return await work(ProfileRepository(session))

    async def EnrolCustomer(self, request: api.EnrolCustomerRequest, context) -> api.EnrolCustomerResponse:
        now = datetime.now(UTC)
        identifiers = [identifier_in(m, f"identifiers[{i}]") for i, m in enumerate(request.identifiers)]
        domain.check_identifiers_unique(identifiers, "identifiers")
        customer = Customer(
            customer_id=str(uuid.uuid4()),
            identifiers=identifiers,
            given_name=domain.check_name(request.given_name, "given_name"),
            family_name=domain.check_name(request.family_name, "family_name"),
            birth_date=date_in(request.birth_date, "birth_date"),
            locale=domain.check_locale(request.locale),
            attributes={name: attribute_in(name, value) for name, value in request.attributes.items()},
            consents=[consent_in(c, f"consents[{i}]", now) for i, c in enumerate(request.consents)],
        )

        async def enrol(repository: ProfileRepository):
            schema = await repository.attribute_schema()
            customer.attributes = domain.check_attributes(customer.attributes, schema)
            domain.check_required(customer.attributes, schema)
            await repository.insert_customer(customer)
            await repository.publish("customer.created", customer.customer_id)
            stored = await repository.load(uuid.UUID(customer.customer_id))
            return api.EnrolCustomerResponse(customer=customer_out(stored))

        return await self._change(request, api.EnrolCustomerResponse, enrol)

    async def GetCustomer(self, request: api.GetCustomerRequest, context) -> api.GetCustomerResponse:
        async def get(repository: ProfileRepository):
            return api.GetCustomerResponse(
                customer=customer_out(await existing(repository, request.customer_id))
            )

        return await self._read(get)

    async def LookupCustomer(self, request: api.LookupCustomerRequest, context) -> api.LookupCustomerResponse:
        identifier = identifier_in(request.identifier, "identifier")

        async def lookup(repository: ProfileRepository):
            found = await repository.find_by_identifier(identifier)
            customer = await repository.load(found) if found else None
            if customer is None:
                raise NotFound("CUSTOMER_NOT_FOUND", "no customer has this identifier", field="identifier")
            return api.LookupCustomerResponse(customer=customer_out(customer))

        return await self._read(lookup)

    async def UpdateCustomer(self, request: api.UpdateCustomerRequest, context) -> api.UpdateCustomerResponse:
        changes = Customer(
            customer_id=request.customer.customer_id,
            identifiers=[],
            given_name=domain.check_name(request.customer.given_name, "customer.given_name"),
            family_name=domain.check_name(request.customer.family_name, "customer.family_name"),
            birth_date=date_in(request.customer.birth_date, "customer.birth_date"),
            locale=request.customer.locale,
            attributes={
                name: attribute_in(name, value) for name, value in request.customer.attributes.items()
            },
        )
        paths = list(request.update_mask.paths)

        async def update(repository: ProfileRepository):
            current = await existing(
                repository, request.customer.customer_id, "customer.customer_id", lock=True
            )
            updated = domain.apply_update(current, changes, paths, await repository.attribute_schema())
            await repository.save(updated)
            await repository.publish("customer.updated", updated.customer_id, fields=sorted(paths))
            return api.UpdateCustomerResponse(customer=await reloaded(repository, updated.customer_id))

        return await self._change(request, api.UpdateCustomerResponse, update)

    async def SearchCustomers(
        self, request: api.SearchCustomersRequest, context
    ) -> api.SearchCustomersResponse:
        limit = page_size(request.page_size, default=20, maximum=100)
        after = decode_token(request.page_token)
        query = request.query.strip()
        identifiers = domain.identifiers_read_from(query)

        async def search(repository: ProfileRepository):
            found = await repository.search(
                query, identifiers, customer_id(after, "page_token") if after else None, limit
            )
            token = encode_token(found[-1].customer_id) if len(found) == limit else ""
            return api.SearchCustomersResponse(
                customers=[customer_out(c) for c in found], next_page_token=token
            )

        return await self._read(search)

    async def AddIdentifier(self, request: api.AddIdentifierRequest, context) -> api.AddIdentifierResponse:
        identifier = identifier_in(request.identifier, "identifier")

        async def add(repository: ProfileRepository):
            customer = await existing(repository, request.customer_id, lock=True)
            if identifier not in customer.identifiers:
                await repository.claim_identifiers(customer.customer_id, [identifier])
                await repository.publish("customer.updated", customer.customer_id, fields=["identifiers"])
            return api.AddIdentifierResponse(customer=await reloaded(repository, customer.customer_id))

        return await self._change(request, api.AddIdentifierResponse, add)

    async def RemoveIdentifier(
        self, request: api.RemoveIdentifierRequest, context
    ) -> api.RemoveIdentifierResponse:
        identifier = identifier_in(request.identifier, "identifier")

        async def remove(repository: ProfileRepository):
            customer = await existing(repository, request.customer_id, lock=True)
            if identifier not in customer.identifiers:
                raise NotFound(
                    "CUSTOMER_NOT_FOUND", "the customer has no such identifier", field="identifier"
                )
            if len(customer.identifiers) == 1:
                raise InvalidArgument(
                    "INVALID_ARGUMENT", "the last identifier cannot be removed", field="identifier"
                )
            await repository.remove_identifier(customer.customer_id, identifier)
            await repository.publish("customer.updated", customer.customer_id, fields=["identifiers"])
            return api.RemoveIdentifierResponse(customer=await reloaded(repository, customer.customer_id))

        return await self._change(request, api.RemoveIdentifierResponse, remove)

    async def SetConsents(self, request: api.SetConsentsRequest, context) -> api.SetConsentsResponse:
        now = datetime.now(UTC)
        consents = [consent_in(c, f"consents[{i}]", now) for i, c in enumerate(request.consents)]
        if not consents:
            raise InvalidArgument("INVALID_ARGUMENT", "at least one consent is required", field="consents")

        async def set_consents(repository: ProfileRepository):
            customer = await existing(repository, request.customer_id, lock=True)
            await repository.upsert_consents(customer.customer_id, consents)
            await repository.publish("customer.updated", customer.customer_id, fields=["consents"])
            return api.SetConsentsResponse(customer=await reloaded(repository, customer.customer_id))

        return await self._change(request, api.SetConsentsResponse, set_consents)

    async def CheckConsent(self, request: api.CheckConsentRequest, context) -> api.CheckConsentResponse:
        if request.channel not in CHANNELS:
            raise InvalidArgument("INVALID_ARGUMENT", "channel is required", field="channel")
        if request.purpose not in PURPOSES:
            raise InvalidArgument("INVALID_ARGUMENT", "purpose is required", field="purpose")
        channel, purpose = CHANNELS[request.channel], PURPOSES[request.purpose]

        async def check(repository: ProfileRepository):
            customer = await existing(repository, request.customer_id)
            consent = next(
                (c for c in customer.consents if (c.channel, c.purpose) == (channel, purpose)), None
            )
            allowed = customer.status is domain.CustomerStatus.ACTIVE and domain.contact_allowed(
                consent, purpose
            )
            return api.CheckConsentResponse(
                allowed=allowed, consent=consent_out(consent) if consent else None
            )

        return await self._read(check)

    async def DefineAttribute(
        self, request: api.DefineAttributeRequest, context
    ) -> api.DefineAttributeResponse:
        wanted = definition_in(request.definition)

        async def define(repository: ProfileRepository):
            stored, created_at = await repository.define_attribute(wanted)
            domain.reconcile_definition(stored, wanted)
            return api.DefineAttributeResponse(definition=definition_out(stored, created_at))

        return await self._change(request, api.DefineAttributeResponse, define)

    async def ListAttributeDefinitions(self, request: api.ListAttributeDefinitionsRequest, context):
        limit = page_size(request.page_size, default=50, maximum=200)
        after = decode_token(request.page_token)

        async def list_definitions(repository: ProfileRepository):
            found = await repository.list_definitions(after, limit)
            token = encode_token(found[-1][0].name) if len(found) == limit else ""
            return api.ListAttributeDefinitionsResponse(
                definitions=[definition_out(d, created) for d, created in found], next_page_token=token
            )

        return await self._read(list_definitions)

    async def MergeCustomers(self, request: api.MergeCustomersRequest, context) -> api.MergeCustomersResponse:
        survivor_id = customer_id(request.survivor_customer_id, "survivor_customer_id")
        merged_id = customer_id(request.merged_customer_id, "merged_customer_id")

        async def merge(repository: ProfileRepository):
            # Lock both rows in id order, so two merges of the same pair cannot deadlock.
            locked = {}
            for role, raw in sorted(
                (("survivor", survivor_id), ("merged", merged_id)), key=lambda item: item[1]
            ):
                locked[role] = await repository.load(raw, lock=True, follow_merge=False)
            for role, field in (("survivor", "survivor_customer_id"), ("merged", "merged_customer_id")):
                if locked[role] is None:
                    raise NotFound("CUSTOMER_NOT_FOUND", "no such customer", field=field)
            survivor, duplicate = locked["survivor"], locked["merged"]
            domain.check_mergeable(survivor, duplicate)
            combined = domain.merged_profile(survivor, duplicate)
            await repository.move_identifiers(duplicate.customer_id, survivor.customer_id)
            await repository.upsert_consents(survivor.customer_id, combined.consents)
            await repository.mark_merged(duplicate.customer_id, survivor.customer_id)
            await repository.save(combined)
            await repository.publish(
                "customer.merged", survivor.customer_id, merged_customer_id=duplicate.customer_id
            )
            return api.MergeCustomersResponse(survivor=customer_out(await repository.load(survivor_id)))

        return await self._change(request, api.MergeCustomersResponse, merge)

    async def ExportCustomerData(self, request: api.ExportCustomerDataRequest, context):
        async def export(repository: ProfileRepository):
            customer = await existing(repository, request.customer_id)
            return api.ExportCustomerDataResponse(
                customer=customer_out(customer),
                merged_customer_ids=await repository.merged_ids(customer.customer_id),
                export_time=timestamp(datetime.now(UTC)),
            )

        return await self._read(export)

    async def EraseCustomer(self, request: api.EraseCustomerRequest, context) -> api.EraseCustomerResponse:
        now = datetime.now(UTC)

        async def erase(repository: ProfileRepository):
            customer = await existing(repository, request.customer_id, lock=True)
            erased = domain.erased_profile(customer, now)
            await repository.delete_identifiers(customer.customer_id)
            await repository.upsert_consents(customer.customer_id, erased.consents)
            await repository.save(erased)
            await repository.publish("customer.erased", customer.customer_id)
            return api.EraseCustomerResponse(customer_id=customer.customer_id, erase_time=timestamp(now))

        return await self._change(request, api.EraseCustomerResponse, erase)
