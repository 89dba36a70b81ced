"""ProfileService: each RPC decodes its request into a command, runs one use case (app.py) and
encodes the answer. No SQL, no rules, no transactions here. The runtime has authenticated the
caller and validated the request against the contract before any of this runs."""

from collections.abc import Mapping
from datetime import date

from loyalty.common.v1 import customer_pb2, date_pb2
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as api
from loyalty_profile import app, commands, domain
from loyalty_profile.domain import (
    AttributeDefinition,
    AttributeValue,
    ConsentAnswer,
    Customer,
    Identifier,
    ProfileFields,
)
from loyalty_profile.messages import (
    ATTRIBUTE_TYPES,
    CONSENT_CHANNELS,
    CONSENT_PURPOSES,
    IDENTIFIER_TYPES,
    VALUE_TYPES,
    consent_message,
    customer_message,
    definition_message,
)
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.paging import decode_token, encode_token, page_size
from loyalty_runtime.protobuf import moment, timestamp
from loyalty_runtime.uow import UnitsOfWork

CUSTOMERS_PAGE = {"default": 20, "maximum": 100}
DEFINITIONS_PAGE = {"default": 50, "maximum": 200}
EXPORT_PAGE = {"default": 500, "maximum": 1000}

# -- protobuf -> commands --------------------------------------------------------------------


def identifier_in(message: customer_pb2.Identifier, field: str) -> Identifier:
    kind = IDENTIFIER_TYPES.decode(message.type, f"{field}.type")
    return Identifier(kind, message.value, message.namespace)


def date_in(message: date_pb2.Date, field: str) -> date | None:
    """A calendar date, or None when all of it is left unset."""
    if not (message.year or message.month or message.day):
        return None
    try:
        return date(message.year, message.month, message.day)
    except ValueError:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "not a calendar date", field=field) from None


def attribute_in(message: profile_pb2.AttributeValue, field: str) -> AttributeValue:
    kind = message.WhichOneof("value")
    if kind is None:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "attribute value is empty", field=field)
    if kind == "date_value":
        value = date_in(message.date_value, field)
        if value is None:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, "not a calendar date", field=field)
        return VALUE_TYPES[kind], value
    return VALUE_TYPES[kind], getattr(message, kind)


def attributes_in(values: Mapping[str, profile_pb2.AttributeValue], prefix: str) -> dict[str, AttributeValue]:
    return {name: attribute_in(value, domain.attribute_field(name, prefix)) for name, value in values.items()}


def profile_fields_in(
    message: api.EnrolCustomerRequest | profile_pb2.Customer, prefix: str = ""
) -> ProfileFields:
    """The personal fields, which enrolment requests and Customer messages spell alike."""
    return ProfileFields(
        given_name=message.given_name,
        family_name=message.family_name,
        birth_date=date_in(message.birth_date, f"{prefix}birth_date"),
        locale=message.locale,
        time_zone=message.time_zone,
        attributes=attributes_in(message.attributes, prefix),
    )


def consent_in(message: profile_pb2.Consent, field: str) -> ConsentAnswer:
    return ConsentAnswer(
        channel=CONSENT_CHANNELS.decode(message.channel, f"{field}.channel"),
        purpose=CONSENT_PURPOSES.decode(message.purpose, f"{field}.purpose"),
        granted=message.granted,
        source=message.source,
        given_at=moment(message, "record_time"),
    )


def consents_in(messages, field: str) -> list[ConsentAnswer]:
    return [consent_in(message, f"{field}[{index}]") for index, message in enumerate(messages)]


def definition_in(message: profile_pb2.AttributeDefinition) -> AttributeDefinition:
    return AttributeDefinition(
        name=message.name,
        type=ATTRIBUTE_TYPES.decode(message.type, "definition.type"),
        required=message.required,
        enum_values=tuple(message.enum_values),
        description=message.description,
    )


def customers_after(token: str) -> str | None:
    after = decode_token(token)
    return domain.canonical_customer_id(after, "page_token") if after else None


def definitions_after(token: str) -> str:
    after = decode_token(token)
    if after and not domain.ATTRIBUTE_NAME_PATTERN.fullmatch(after):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "page_token is not one this service issued", field="page_token"
        )
    return after


# -- results -> protobuf ---------------------------------------------------------------------


def next_token(page: list, limit: int, last_key) -> str:
    return encode_token(last_key(page[-1])) if len(page) == limit else ""


def enrolled(customer: Customer) -> api.EnrolCustomerResponse:
    return api.EnrolCustomerResponse(customer=customer_message(customer))


def updated(customer: Customer) -> api.UpdateCustomerResponse:
    return api.UpdateCustomerResponse(customer=customer_message(customer))


def identifier_added(customer: Customer) -> api.AddIdentifierResponse:
    return api.AddIdentifierResponse(customer=customer_message(customer))


def identifier_removed(customer: Customer) -> api.RemoveIdentifierResponse:
    return api.RemoveIdentifierResponse(customer=customer_message(customer))


def consents_set(customer: Customer) -> api.SetConsentsResponse:
    return api.SetConsentsResponse(customer=customer_message(customer))


def defined(definition: AttributeDefinition) -> api.DefineAttributeResponse:
    return api.DefineAttributeResponse(definition=definition_message(definition))


def merged(survivor: Customer) -> api.MergeCustomersResponse:
    return api.MergeCustomersResponse(survivor=customer_message(survivor))


def erased(customer: Customer) -> api.EraseCustomerResponse:
    return api.EraseCustomerResponse(
        customer_id=customer.customer_id, erase_time=timestamp(customer.updated_at)
    )


class ProfileServicer:
    def __init__(self, units: UnitsOfWork) -> None:
        self.units = units

    async def EnrolCustomer(self, request: api.EnrolCustomerRequest, context) -> api.EnrolCustomerResponse:
        command = commands.EnrolCustomer(
            identifiers=[identifier_in(m, f"identifiers[{i}]") for i, m in enumerate(request.identifiers)],
            fields=profile_fields_in(request),
            consents=consents_in(request.consents, "consents"),
        )
        return await self.units.idempotent(request, app.enrol_customer, command, enrolled)

    async def GetCustomer(self, request: api.GetCustomerRequest, context) -> api.GetCustomerResponse:
        command = commands.GetCustomer(domain.canonical_customer_id(request.customer_id, "customer_id"))
        async with self.units.read() as uow:
            customer = await app.get_customer(uow, command)
        return api.GetCustomerResponse(customer=customer_message(customer))

    async def LookupCustomer(self, request: api.LookupCustomerRequest, context) -> api.LookupCustomerResponse:
        command = commands.LookupCustomer(identifier_in(request.identifier, "identifier"))
        async with self.units.read() as uow:
            customer = await app.lookup_customer(uow, command)
        return api.LookupCustomerResponse(customer=customer_message(customer))

    async def UpdateCustomer(self, request: api.UpdateCustomerRequest, context) -> api.UpdateCustomerResponse:
        prefix = domain.UPDATE_PREFIX
        command = commands.UpdateCustomer(
            customer_id=domain.canonical_customer_id(request.customer.customer_id, f"{prefix}customer_id"),
            changes=profile_fields_in(request.customer, prefix),
            paths=list(request.update_mask.paths),
        )
        return await self.units.idempotent(request, app.update_customer, command, updated)

    async def SearchCustomers(
        self, request: api.SearchCustomersRequest, context
    ) -> api.SearchCustomersResponse:
        command = commands.SearchCustomers(
            query=request.query,
            limit=page_size(request.page_size, **CUSTOMERS_PAGE),
            after=customers_after(request.page_token),
        )
        async with self.units.read() as uow:
            found = await app.search_customers(uow, command)
        return api.SearchCustomersResponse(
            customers=[customer_message(c) for c in found],
            next_page_token=next_token(found, command.limit, lambda c: c.customer_id),
        )

    async def ExportCustomers(self, request: api.ExportCustomersRequest, context):
        """Keyset pages, each read in its own transaction: a long export holds none open."""
        after = request.start_after_customer_id
        command = commands.ExportCustomers(
            limit=page_size(request.page_size, **EXPORT_PAGE),
            after=domain.canonical_customer_id(after, "start_after_customer_id") if after else None,
        )
        while True:
            async with self.units.read() as uow:
                page = await app.export_customers(uow, command)
            if not page:
                return
            last = page[-1].customer_id
            yield api.ExportCustomersResponse(
                customers=[customer_message(c) for c in page], last_customer_id=last
            )
            if len(page) < command.limit:
                return
            command = commands.ExportCustomers(limit=command.limit, after=last)

    async def AddIdentifier(self, request: api.AddIdentifierRequest, context) -> api.AddIdentifierResponse:
        command = commands.AddIdentifier(
            customer_id=domain.canonical_customer_id(request.customer_id, "customer_id"),
            identifier=identifier_in(request.identifier, "identifier"),
        )
        return await self.units.idempotent(request, app.add_identifier, command, identifier_added)

    async def RemoveIdentifier(
        self, request: api.RemoveIdentifierRequest, context
    ) -> api.RemoveIdentifierResponse:
        command = commands.RemoveIdentifier(
            customer_id=domain.canonical_customer_id(request.customer_id, "customer_id"),
            identifier=identifier_in(request.identifier, "identifier"),
        )
        return await self.units.idempotent(request, app.remove_identifier, command, identifier_removed)

    async def SetConsents(self, request: api.SetConsentsRequest, context) -> api.SetConsentsResponse:
        command = commands.SetConsents(
            customer_id=domain.canonical_customer_id(request.customer_id, "customer_id"),
            consents=consents_in(request.consents, "consents"),
        )
        return await self.units.idempotent(request, app.set_consents, command, consents_set)

    async def CheckConsent(self, request: api.CheckConsentRequest, context) -> api.CheckConsentResponse:
        command = commands.CheckConsent(
            customer_id=domain.canonical_customer_id(request.customer_id, "customer_id"),
            channel=CONSENT_CHANNELS.decode(request.channel, "channel"),
            purpose=CONSENT_PURPOSES.decode(request.purpose, "purpose"),
        )
        async with self.units.read() as uow:
            decision = await app.check_consent(uow, command)
        return api.CheckConsentResponse(
            allowed=decision.allowed, consent=consent_message(decision.consent) if decision.consent else None
        )

    async def DefineAttribute(
        self, request: api.DefineAttributeRequest, context
    ) -> api.DefineAttributeResponse:
        command = commands.DefineAttribute(definition_in(request.definition))
        return await self.units.idempotent(request, app.define_attribute, command, defined)

    async def ListAttributeDefinitions(
        self, request: api.ListAttributeDefinitionsRequest, context
    ) -> api.ListAttributeDefinitionsResponse:
        command = commands.ListAttributeDefinitions(
            limit=page_size(request.page_size, **DEFINITIONS_PAGE),
            after=definitions_after(request.page_token),
        )
        async with self.units.read() as uow:
            found = await app.list_attribute_definitions(uow, command)
        return api.ListAttributeDefinitionsResponse(
            definitions=[definition_message(d) for d in found],
            next_page_token=next_token(found, command.limit, lambda d: d.name),
        )

    async def MergeCustomers(self, request: api.MergeCustomersRequest, context) -> api.MergeCustomersResponse:
        command = commands.MergeCustomers(
            survivor_id=domain.canonical_customer_id(request.survivor_customer_id, "survivor_customer_id"),
            merged_id=domain.canonical_customer_id(request.merged_customer_id, "merged_customer_id"),
        )
        return await self.units.idempotent(request, app.merge_customers, command, merged)

    async def ExportCustomerData(
        self, request: api.ExportCustomerDataRequest, context
    ) -> api.ExportCustomerDataResponse:
        command = commands.ExportCustomer(domain.canonical_customer_id(request.customer_id, "customer_id"))
        async with self.units.read() as uow:
            export = await app.export_customer(uow, command)
        return api.ExportCustomerDataResponse(
            customer=customer_message(export.customer),
            merged_customer_ids=[c.customer_id for c in export.merged],
            export_time=timestamp(export.exported_at),
        )

    async def EraseCustomer(self, request: api.EraseCustomerRequest, context) -> api.EraseCustomerResponse:
        command = commands.EraseCustomer(domain.canonical_customer_id(request.customer_id, "customer_id"))
        return await self.units.idempotent(request, app.erase_customer, command, erased)
