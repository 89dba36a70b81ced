"""The profile's use cases, one per RPC: each takes the unit of work and a command, asks the domain
to decide, has the repository read and write, and records the events. The servicer runs state
changes through `units.idempotent` (one transaction with the idempotency claim) and reads through
`units.read()` (no transaction).

Every change loads its customer locked, so erasure, merges and changes of one customer happen one
after the other. Every answer about a customer names them (`uow.concerns`), so erasing the customer
forgets the stored answers too.
"""

import uuid

from google.protobuf.message import Message

from loyalty.profile.v1 import events_pb2
from loyalty_profile import domain
from loyalty_profile.commands import (
    AddIdentifier,
    CheckConsent,
    DefineAttribute,
    EnrolCustomer,
    EraseCustomer,
    ExportCustomer,
    ExportCustomers,
    GetCustomer,
    ListAttributeDefinitions,
    LookupCustomer,
    MergeCustomers,
    RemoveIdentifier,
    SearchCustomers,
    SetConsents,
    UpdateCustomer,
)
from loyalty_profile.domain import AttributeDefinition, ConsentDecision, Customer, CustomerExport
from loyalty_profile.messages import customer_message
from loyalty_profile.repository import ProfileRepository
from loyalty_runtime.errors import AlreadyExists, NotFound, Reason
from loyalty_runtime.uow import UnitOfWork


def _found(customer: Customer | None, field: str) -> Customer:
    """Unknown and another tenant's customer look exactly the same."""
    if customer is None:
        raise NotFound(Reason.CUSTOMER_NOT_FOUND, "no such customer", field=field)
    return customer


def _identifier_taken(field: str) -> AlreadyExists:
    return AlreadyExists(
        Reason.IDENTIFIER_TAKEN, "this identifier already belongs to a customer", field=field
    )


def _birthday(customer: Customer) -> events_pb2.Birthday | None:
    """What promotion's birthday triggers need: month and day, never the year."""
    birth = customer.birth_date
    if birth is None:
        return None
    return events_pb2.Birthday(month=birth.month, day=birth.day, time_zone=customer.time_zone)


def _updated(uow: UnitOfWork, customer: Customer, fields: list[str]) -> None:
    birthday = _birthday(customer) if {"birth_date", "time_zone"} & set(fields) else None
    uow.record(
        events_pb2.CustomerUpdated(customer_id=customer.customer_id, fields=fields, birthday=birthday),
        key=customer.customer_id,
    )


async def enrol_customer(uow: UnitOfWork, command: EnrolCustomer) -> Customer:
    identifiers = domain.normalise_identifiers(command.identifiers, "identifiers")
    fields = domain.check_profile_fields(command.fields, uow.now.date())
    consents = domain.consents_given(command.consents, uow.now, "consents")
    customer = domain.new_customer(str(uuid.uuid4()), identifiers, fields, consents, uow.now)
    # One statement writes it all and reads the schema back; a refusal below rolls it all back.
    taken, schema = await ProfileRepository(uow).enrol(customer)
    domain.check_attributes(customer.attributes, schema)
    for index, identifier in enumerate(identifiers):
        if identifier in taken:
            raise _identifier_taken(f"identifiers[{index}]")
    uow.record(
        events_pb2.CustomerCreated(customer_id=customer.customer_id, birthday=_birthday(customer)),
        key=customer.customer_id,
    )
    uow.concerns(customer.customer_id)
    return customer


async def get_customer(uow: UnitOfWork, command: GetCustomer) -> Customer:
    return _found(await ProfileRepository(uow).load(command.customer_id), "customer_id")


async def lookup_customer(uow: UnitOfWork, command: LookupCustomer) -> Customer:
    identifier = domain.normalise_identifier(command.identifier, "identifier")
    customer = await ProfileRepository(uow).find(identifier)
    if customer is None:
        raise NotFound(Reason.CUSTOMER_NOT_FOUND, "no customer has this identifier", field="identifier")
    return customer


async def update_customer(uow: UnitOfWork, command: UpdateCustomer) -> Customer:
    mask = domain.parse_update_mask(command.paths)
    changes = domain.check_profile_fields(command.changes, uow.now.date(), domain.UPDATE_PREFIX)
    repository = ProfileRepository(uow)
    if mask.touches_attributes:
        current, schema = await repository.lock_with_schema(command.customer_id)
    else:
        current, schema = await repository.lock(command.customer_id), {}
    current = _found(current, "customer.customer_id")
    updated = domain.apply_update(current, changes, mask, schema, uow.now)
    await repository.save(updated)
    _updated(uow, updated, mask.changed)
    uow.concerns(updated.customer_id)
    return updated


async def search_customers(uow: UnitOfWork, command: SearchCustomers) -> list[Customer]:
    query = command.query.strip()
    identifiers = domain.identifiers_read_from(query)
    return await ProfileRepository(uow).search(query, identifiers, command.after, command.limit)


async def export_customers(uow: UnitOfWork, command: ExportCustomers) -> list[Customer]:
    """One page of the bulk export: the tenant's active customers after `after`, by id."""
    return await ProfileRepository(uow).search("", [], command.after, command.limit)


async def add_identifier(uow: UnitOfWork, command: AddIdentifier) -> Customer:
    identifier = domain.normalise_identifier(command.identifier, "identifier")
    repository = ProfileRepository(uow)
    customer = _found(await repository.lock(command.customer_id), "customer_id")
    uow.concerns(customer.customer_id)
    updated = domain.with_identifier(customer, identifier, uow.now)
    if updated is None:
        return customer
    if not await repository.add_identifier(updated, identifier):
        raise _identifier_taken("identifier")
    _updated(uow, updated, ["identifiers"])
    return updated


async def remove_identifier(uow: UnitOfWork, command: RemoveIdentifier) -> Customer:
    identifier = domain.normalise_identifier(command.identifier, "identifier")
    repository = ProfileRepository(uow)
    customer = _found(await repository.lock(command.customer_id), "customer_id")
    updated = domain.without_identifier(customer, identifier, uow.now)
    await repository.remove_identifier(updated, identifier)
    _updated(uow, updated, ["identifiers"])
    uow.concerns(updated.customer_id)
    return updated


async def set_consents(uow: UnitOfWork, command: SetConsents) -> Customer:
    incoming = domain.consents_to_set(command.consents, uow.now)
    repository = ProfileRepository(uow)
    customer = _found(await repository.lock(command.customer_id), "customer_id")
    uow.concerns(customer.customer_id)
    updated, changed = domain.with_consents(customer, incoming, uow.now)
    if changed:
        await repository.record_consents(updated, changed)
        _updated(uow, updated, ["consents"])
    return updated


async def check_consent(uow: UnitOfWork, command: CheckConsent) -> ConsentDecision:
    customer = _found(await ProfileRepository(uow).load(command.customer_id), "customer_id")
    return domain.consent_decision(customer, command.channel, command.purpose)


async def define_attribute(uow: UnitOfWork, command: DefineAttribute) -> AttributeDefinition:
    wanted = domain.check_definition(command.definition)
    stored = await ProfileRepository(uow).define_attribute(wanted, uow.now)
    return domain.reconcile_definition(stored, wanted)


async def list_attribute_definitions(
    uow: UnitOfWork, command: ListAttributeDefinitions
) -> list[AttributeDefinition]:
    return await ProfileRepository(uow).definitions(command.after, command.limit)


async def merge_customers(uow: UnitOfWork, command: MergeCustomers) -> Customer:
    repository = ProfileRepository(uow)
    locked = await repository.lock_pair(command.survivor_id, command.merged_id)
    survivor = _found(locked.get(command.survivor_id), "survivor_customer_id")
    duplicate = _found(locked.get(command.merged_id), "merged_customer_id")
    domain.check_mergeable(survivor, duplicate)
    combined = domain.merged_profile(survivor, duplicate, uow.now)
    moved = domain.changed_consents(survivor.consents, combined.consents)
    await repository.merge(combined, moved, domain.absorbed_profile(duplicate, uow.now))
    uow.record(
        events_pb2.CustomerMerged(
            survivor_customer_id=survivor.customer_id, merged_customer_id=duplicate.customer_id
        ),
        key=survivor.customer_id,
    )
    uow.concerns(survivor.customer_id)
    return combined


async def export_customer(uow: UnitOfWork, command: ExportCustomer) -> CustomerExport:
    repository = ProfileRepository(uow)
    customer = _found(await repository.load(command.customer_id), "customer_id")
    return CustomerExport(customer, await repository.merged_into(customer.customer_id), uow.now)


async def export_customer_data(uow: UnitOfWork, customer_id: str) -> list[Message]:
    """The GDPR export hook (CustomerDataService): the customer's profile and what remains of the
    profiles merged into it, as the contract's Customer messages; none for an unknown customer."""
    command = ExportCustomer(domain.canonical_customer_id(customer_id, "customer_id"))
    try:
        export = await export_customer(uow, command)
    except NotFound:
        return []
    return [customer_message(customer) for customer in (export.customer, *export.merged)]


async def erase_customer(uow: UnitOfWork, command: EraseCustomer) -> Customer:
    """Erase the customer's personal data here, in every profile merged into them, and in every
    stored answer about any of them; the id stays. The answer itself holds no personal data, so a
    retry of this request is answered again rather than refused."""
    repository = ProfileRepository(uow)
    customer = _found(await repository.lock(command.customer_id), "customer_id")
    erased = domain.erased_profile(customer, uow.now)
    merged_ids = await repository.erase(erased)
    await uow.erase_answers(erased.customer_id, *merged_ids)
    uow.record(events_pb2.CustomerErased(customer_id=erased.customer_id), key=erased.customer_id)
    return erased
