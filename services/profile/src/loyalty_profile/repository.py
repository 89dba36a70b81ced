"""SQL for the profile service. Takes a session inside the caller's transaction; every statement is
scoped by the current tenant."""

import uuid
from datetime import date, datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty_profile import domain
from loyalty_profile.domain import (
    AttributeDefinition,
    AttributeType,
    Consent,
    Customer,
    CustomerStatus,
    Identifier,
)
from loyalty_profile.models import AttributeDefinitionRow, ConsentRow, CustomerRow, IdentifierRow, outbox
from loyalty_runtime.context import current_tenant
from loyalty_runtime.errors import AlreadyExists
from loyalty_runtime.events import record_event


def _encode_attributes(attributes: dict[str, tuple[AttributeType, object]]) -> dict:
    return {
        name: {"t": kind.value, "v": value.isoformat() if isinstance(value, date) else value}
        for name, (kind, value) in attributes.items()
    }


def _decode_attributes(stored: dict) -> dict[str, tuple[AttributeType, object]]:
    decoded = {}
    for name, item in stored.items():
        kind = AttributeType(item["t"])
        decoded[name] = (kind, date.fromisoformat(item["v"]) if kind is AttributeType.DATE else item["v"])
    return decoded


class ProfileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.tenant = current_tenant()

    # -- customers ---------------------------------------------------------------------------

    async def insert_customer(self, customer: Customer) -> None:
        self.session.add(
            CustomerRow(
                id=uuid.UUID(customer.customer_id),
                tenant_id=self.tenant,
                given_name=customer.given_name,
                family_name=customer.family_name,
                birth_date=customer.birth_date,
                locale=customer.locale,
                attributes=_encode_attributes(customer.attributes),
                status=customer.status.value,
            )
        )
        await self.session.flush()
        await self.claim_identifiers(customer.customer_id, customer.identifiers)
        await self.upsert_consents(customer.customer_id, customer.consents)

    async def _row(self, customer_id: uuid.UUID, *, lock: bool) -> CustomerRow | None:
        query = select(CustomerRow).where(CustomerRow.tenant_id == self.tenant, CustomerRow.id == customer_id)
        if lock:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def load(
        self, customer_id: uuid.UUID, *, lock: bool = False, follow_merge: bool = True
    ) -> Customer | None:
        """The customer, or the survivor it was merged into; None when unknown in this tenant."""
        row = await self._row(customer_id, lock=lock)
        if row is not None and follow_merge and row.merged_into is not None:
            row = await self._row(row.merged_into, lock=lock)
        if row is None:
            return None
        identifiers = (
            await self.session.execute(
                select(IdentifierRow)
                .where(IdentifierRow.tenant_id == self.tenant, IdentifierRow.customer_id == row.id)
                .order_by(IdentifierRow.type, IdentifierRow.namespace, IdentifierRow.value)
            )
        ).scalars()
        consents = (
            await self.session.execute(
                select(ConsentRow)
                .where(ConsentRow.tenant_id == self.tenant, ConsentRow.customer_id == row.id)
                .order_by(ConsentRow.channel, ConsentRow.purpose)
            )
        ).scalars()
        return Customer(
            customer_id=str(row.id),
            identifiers=[
                Identifier(domain.IdentifierType(i.type), i.value, i.namespace) for i in identifiers
            ],
            given_name=row.given_name,
            family_name=row.family_name,
            birth_date=row.birth_date,
            locale=row.locale,
            attributes=_decode_attributes(row.attributes),
            consents=[Consent(c.channel, c.purpose, c.granted, c.source, c.recorded_at) for c in consents],
            status=CustomerStatus(row.status),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    async def save(self, customer: Customer) -> None:
        await self.session.execute(
            update(CustomerRow)
            .where(CustomerRow.tenant_id == self.tenant, CustomerRow.id == uuid.UUID(customer.customer_id))
            .values(
                given_name=customer.given_name,
                family_name=customer.family_name,
                birth_date=customer.birth_date,
                locale=customer.locale,
                attributes=_encode_attributes(customer.attributes),
                status=customer.status.value,
                updated_at=func.now(),
            )
        )

    async def search(
        self, name_prefix: str, identifiers: list[Identifier], after: uuid.UUID | None, limit: int
    ):
        """Customers whose names start with the prefix or who hold one of the identifiers, by id."""
        matches = []
        if name_prefix:
            pattern = name_prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            matches += [
                func.lower(CustomerRow.given_name).like(pattern),
                func.lower(CustomerRow.family_name).like(pattern),
            ]
        for identifier in identifiers:
            matches.append(
                CustomerRow.id.in_(
                    select(IdentifierRow.customer_id).where(
                        IdentifierRow.tenant_id == self.tenant,
                        IdentifierRow.type == identifier.type.value,
                        IdentifierRow.namespace == identifier.namespace,
                        IdentifierRow.value == identifier.value,
                    )
                )
            )
        query = select(CustomerRow.id).where(
            CustomerRow.tenant_id == self.tenant, CustomerRow.status == CustomerStatus.ACTIVE.value
        )
        if matches:
            query = query.where(or_(*matches))
        if after is not None:
            query = query.where(CustomerRow.id > after)
        ids = (await self.session.execute(query.order_by(CustomerRow.id).limit(limit))).scalars().all()
        return [await self.load(customer_id, follow_merge=False) for customer_id in ids]

    # -- identifiers -------------------------------------------------------------------------

    async def claim_identifiers(self, customer_id: str, identifiers: list[Identifier]) -> None:
        """Attach identifiers; if any already belongs to someone in this tenant, refuse them all
        (the caller's transaction rolls back)."""
        for index, identifier in enumerate(identifiers):
            inserted = await self.session.execute(
                insert(IdentifierRow)
                .values(
                    tenant_id=self.tenant,
                    type=identifier.type.value,
                    namespace=identifier.namespace,
                    value=identifier.value,
                    customer_id=uuid.UUID(customer_id),
                )
                .on_conflict_do_nothing()
                .returning(IdentifierRow.value)
            )
            if inserted.first() is None:
                raise AlreadyExists(
                    "IDENTIFIER_TAKEN",
                    "this identifier already belongs to a customer",
                    field=f"identifiers[{index}]",
                )

    async def find_by_identifier(self, identifier: Identifier) -> uuid.UUID | None:
        return (
            await self.session.execute(
                select(IdentifierRow.customer_id).where(
                    IdentifierRow.tenant_id == self.tenant,
                    IdentifierRow.type == identifier.type.value,
                    IdentifierRow.namespace == identifier.namespace,
                    IdentifierRow.value == identifier.value,
                )
            )
        ).scalar_one_or_none()

    async def remove_identifier(self, customer_id: str, identifier: Identifier) -> bool:
        removed = await self.session.execute(
            delete(IdentifierRow)
            .where(
                IdentifierRow.tenant_id == self.tenant,
                IdentifierRow.customer_id == uuid.UUID(customer_id),
                IdentifierRow.type == identifier.type.value,
                IdentifierRow.namespace == identifier.namespace,
                IdentifierRow.value == identifier.value,
            )
            .returning(IdentifierRow.value)
        )
        return removed.first() is not None

    async def move_identifiers(self, from_id: str, to_id: str) -> None:
        await self.session.execute(
            update(IdentifierRow)
            .where(IdentifierRow.tenant_id == self.tenant, IdentifierRow.customer_id == uuid.UUID(from_id))
            .values(customer_id=uuid.UUID(to_id))
        )

    async def delete_identifiers(self, customer_id: str) -> None:
        await self.session.execute(
            delete(IdentifierRow).where(
                IdentifierRow.tenant_id == self.tenant, IdentifierRow.customer_id == uuid.UUID(customer_id)
            )
        )

    # -- consents ----------------------------------------------------------------------------

    async def upsert_consents(self, customer_id: str, consents: list[Consent]) -> None:
        for consent in consents:
            values = {
                "granted": consent.granted,
                "source": consent.source,
                "recorded_at": consent.recorded_at,
            }
            await self.session.execute(
                insert(ConsentRow)
                .values(
                    tenant_id=self.tenant,
                    customer_id=uuid.UUID(customer_id),
                    channel=consent.channel,
                    purpose=consent.purpose,
                    **values,
                )
                .on_conflict_do_update(
                    index_elements=["tenant_id", "customer_id", "channel", "purpose"], set_=values
                )
            )

    # -- merges ------------------------------------------------------------------------------

    async def mark_merged(self, merged_id: str, survivor_id: str) -> None:
        """The duplicate, and anything merged into it before, now points at the survivor."""
        merged, survivor = uuid.UUID(merged_id), uuid.UUID(survivor_id)
        await self.session.execute(
            update(CustomerRow)
            .where(
                CustomerRow.tenant_id == self.tenant,
                or_(CustomerRow.id == merged, CustomerRow.merged_into == merged),
            )
            .values(status=CustomerStatus.MERGED.value, merged_into=survivor, updated_at=func.now())
        )
        await self.session.execute(
            delete(ConsentRow).where(ConsentRow.tenant_id == self.tenant, ConsentRow.customer_id == merged)
        )

    async def merged_ids(self, survivor_id: str) -> list[str]:
        rows = await self.session.execute(
            select(CustomerRow.id)
            .where(CustomerRow.tenant_id == self.tenant, CustomerRow.merged_into == uuid.UUID(survivor_id))
            .order_by(CustomerRow.id)
        )
        return [str(customer_id) for customer_id in rows.scalars()]

    # -- attribute schema --------------------------------------------------------------------

    async def attribute_schema(self) -> dict[str, AttributeDefinition]:
        rows = await self.session.execute(
            select(AttributeDefinitionRow).where(AttributeDefinitionRow.tenant_id == self.tenant)
        )
        return {row.name: _definition(row) for row in rows.scalars()}

    async def define_attribute(self, definition: AttributeDefinition) -> tuple[AttributeDefinition, datetime]:
        """Insert the definition unless one of that name exists; returns what is stored."""
        await self.session.execute(
            insert(AttributeDefinitionRow)
            .values(
                tenant_id=self.tenant,
                name=definition.name,
                type=definition.type.value,
                required=definition.required,
                enum_values=list(definition.enum_values),
                description=definition.description,
            )
            .on_conflict_do_nothing()
        )
        row = (
            await self.session.execute(
                select(AttributeDefinitionRow).where(
                    AttributeDefinitionRow.tenant_id == self.tenant,
                    AttributeDefinitionRow.name == definition.name,
                )
            )
        ).scalar_one()
        return _definition(row), row.created_at

    async def list_definitions(
        self, after_name: str, limit: int
    ) -> list[tuple[AttributeDefinition, datetime]]:
        rows = await self.session.execute(
            select(AttributeDefinitionRow)
            .where(AttributeDefinitionRow.tenant_id == self.tenant, AttributeDefinitionRow.name > after_name)
            .order_by(AttributeDefinitionRow.name)
            .limit(limit)
        )
        return [(_definition(row), row.created_at) for row in rows.scalars()]

    # -- events ------------------------------------------------------------------------------

    async def publish(self, event_type: str, customer_id: str, **facts) -> None:
        """Events name customers by id only: no personal data leaves the service in an event."""
        await record_event(
            self.session, outbox, event_type, customer_id, {"customer_id": customer_id, **facts}
        )


def _definition(row: AttributeDefinitionRow) -> AttributeDefinition:
    return AttributeDefinition(
        name=row.name,
        type=AttributeType(row.type),
        required=row.required,
        enum_values=tuple(row.enum_values),
        description=row.description,
    )
