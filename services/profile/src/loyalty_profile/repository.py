"""SQL of the profile service, on the unit of work's asyncpg connection. Every statement is scoped by
the caller's tenant (`$1` is always `uow.tenant`); a customer of another tenant is never read.

A customer is read in one statement: its identifiers and consents come along as arrays of rows,
in the order the domain lists them (byte-wise, so Python's sorting agrees). Writes are one
statement per use case where the work allows, using data-modifying CTEs.

Identifiers are unique per tenant (their primary key). Claiming one inserts it with `ON CONFLICT
DO NOTHING`, which waits for a concurrent claim of the same identifier to commit or roll back and
then tells which identifiers were taken, without aborting the transaction; the use case turns that
into IDENTIFIER_TAKEN. Identifiers are inserted in one canonical order, so two enrolments claiming
the same pair cannot deadlock.
"""

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime

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
    Schema,
    identifier_order,
)
from loyalty_runtime.uow import UnitOfWork

SCHEMA = "profile"

_CUSTOMER = f"""
    c.id::text AS customer_id, c.given_name, c.family_name, c.birth_date, c.locale, c.attributes,
    c.status, c.created_at, c.updated_at, c.time_zone,
    array(SELECT row(i.type, i.namespace, i.value) FROM {SCHEMA}.identifiers i
          WHERE i.tenant_id = $1 AND i.customer_id = c.id
          ORDER BY i.type COLLATE "C", i.namespace COLLATE "C", i.value COLLATE "C") AS identifiers,
    array(SELECT row(s.channel, s.purpose, s.granted, s.source, s.recorded_at) FROM {SCHEMA}.consents s
          WHERE s.tenant_id = $1 AND s.customer_id = c.id
          ORDER BY s.channel COLLATE "C", s.purpose COLLATE "C") AS consents"""
# JSON rather than an array of rows: asyncpg cannot decode an array (enum_values) inside a row.
_ATTRIBUTE_SCHEMA = f"""
    (SELECT coalesce(json_agg(json_build_array(d.name, d.type, d.required, d.enum_values, d.description)),
                     '[]')
     FROM {SCHEMA}.attribute_definitions d WHERE d.tenant_id = $1) AS attribute_schema"""
# A merged customer's id stands for its survivor (merges repoint earlier duplicates, so one hop).
_BY_ID = f"""
    c.tenant_id = $1 AND c.id = (
        SELECT coalesce(m.merged_into, m.id) FROM {SCHEMA}.customers m
        WHERE m.tenant_id = $1 AND m.id = $2)"""
# Changes lock the customer's row; NO KEY, so inserting identifiers and consents that reference
# it (a foreign key check) never waits for it.
_LOCK = "FOR NO KEY UPDATE OF c"

LOAD = f"SELECT {_CUSTOMER} FROM {SCHEMA}.customers c WHERE {_BY_ID}"
LOCK = f"{LOAD} {_LOCK}"
LOCK_WITH_SCHEMA = f"""
    SELECT {_CUSTOMER}, {_ATTRIBUTE_SCHEMA} FROM {SCHEMA}.customers c WHERE {_BY_ID} {_LOCK}"""
# Both customers of a merge as they are (merges not followed), locked in id order, so two merges of
# one pair cannot deadlock.
LOCK_PAIR = f"""
    SELECT {_CUSTOMER} FROM {SCHEMA}.customers c WHERE c.tenant_id = $1 AND c.id = ANY($2::uuid[])
    ORDER BY c.id {_LOCK}"""
BY_IDENTIFIER = f"""
    SELECT {_CUSTOMER} FROM {SCHEMA}.customers c WHERE c.tenant_id = $1 AND c.id = (
        SELECT i.customer_id FROM {SCHEMA}.identifiers i
        WHERE i.tenant_id = $1 AND i.type = $2 AND i.namespace = $3 AND i.value = $4)"""
MERGED_INTO = f"""
    SELECT {_CUSTOMER} FROM {SCHEMA}.customers c WHERE c.tenant_id = $1 AND c.merged_into = $2
    ORDER BY c.id"""
SEARCH = f"""
    SELECT {_CUSTOMER} FROM {SCHEMA}.customers c
    WHERE c.tenant_id = $1 AND c.status = 'active' AND ($2::uuid IS NULL OR c.id > $2)
      AND ($3::text IS NULL
           OR lower(c.given_name) LIKE $3 OR lower(c.family_name) LIKE $3
           OR c.id IN (SELECT i.customer_id FROM {SCHEMA}.identifiers i
                       JOIN unnest($4::text[], $5::text[], $6::text[]) AS q(type, namespace, value)
                         ON (i.type, i.namespace, i.value) = (q.type, q.namespace, q.value)
                       WHERE i.tenant_id = $1))
    ORDER BY c.id LIMIT $7"""

_UPSERT_CONSENTS = f"""
    INSERT INTO {SCHEMA}.consents
        (tenant_id, customer_id, channel, purpose, granted, source, recorded_at)
    SELECT $1, $2, n.channel, n.purpose, n.granted, n.source, n.recorded_at
    FROM unnest(${{0}}::text[], ${{1}}::text[], ${{2}}::bool[], ${{3}}::text[], ${{4}}::timestamptz[])
         AS n(channel, purpose, granted, source, recorded_at)
    ON CONFLICT (tenant_id, customer_id, channel, purpose) DO UPDATE
    SET granted = excluded.granted, source = excluded.source, recorded_at = excluded.recorded_at"""


def _upsert_consents(first: int) -> str:
    """The consent upsert with its five arrays at parameters $first ... $first+4."""
    return _UPSERT_CONSENTS.format(*range(first, first + 5))


# Enrolment writes the customer, claims the identifiers and records the consents in one statement,
# and reads back the identifiers that were taken already and the tenant's attribute schema: the use
# case checks the attributes against it and refuses (rolling all of it back) if they do not fit.
# One round trip for the common case, where they do.
ENROL = f"""
    WITH customer AS (
        INSERT INTO {SCHEMA}.customers (id, tenant_id, given_name, family_name, birth_date, locale,
                                        attributes, status, created_at, updated_at, time_zone)
        VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $9, $9, $10)),
    given AS (SELECT * FROM unnest($11::text[], $12::text[], $13::text[]) AS g(type, namespace, value)),
    claimed AS (
        INSERT INTO {SCHEMA}.identifiers (tenant_id, type, namespace, value, customer_id)
        SELECT $1, g.type, g.namespace, g.value, $2 FROM given g
        ORDER BY g.type COLLATE "C", g.namespace COLLATE "C", g.value COLLATE "C"
        ON CONFLICT DO NOTHING RETURNING type, namespace, value),
    consents AS ({_upsert_consents(14)})
    SELECT array(SELECT row(g.type, g.namespace, g.value) FROM given g WHERE NOT EXISTS (
                     SELECT 1 FROM claimed k
                     WHERE (k.type, k.namespace, k.value) = (g.type, g.namespace, g.value))) AS taken,
           {_ATTRIBUTE_SCHEMA}"""
SAVE = f"""
    UPDATE {SCHEMA}.customers
    SET given_name = $3, family_name = $4, birth_date = $5, locale = $6, attributes = $7, status = $8,
        updated_at = $9, time_zone = $10
    WHERE tenant_id = $1 AND id = $2"""
_TOUCH = f"UPDATE {SCHEMA}.customers SET updated_at = $3 WHERE tenant_id = $1 AND id = $2"
ADD_IDENTIFIER = f"""
    WITH touched AS ({_TOUCH})
    INSERT INTO {SCHEMA}.identifiers (tenant_id, type, namespace, value, customer_id)
    VALUES ($1, $4, $5, $6, $2) ON CONFLICT DO NOTHING RETURNING true"""
REMOVE_IDENTIFIER = f"""
    WITH touched AS ({_TOUCH})
    DELETE FROM {SCHEMA}.identifiers
    WHERE tenant_id = $1 AND customer_id = $2 AND type = $4 AND namespace = $5 AND value = $6"""
RECORD_CONSENTS = f"WITH touched AS ({_TOUCH}) {_upsert_consents(4)}"
# The duplicate ($3) and whatever was merged into it before point at the survivor ($2) and keep no
# personal data; identifiers move, consents move as decided, the survivor takes its merged profile.
MERGE = f"""
    WITH moved AS (
        UPDATE {SCHEMA}.identifiers SET customer_id = $2 WHERE tenant_id = $1 AND customer_id = $3),
    dropped AS (DELETE FROM {SCHEMA}.consents WHERE tenant_id = $1 AND customer_id = $3),
    consents AS ({_upsert_consents(12)}),
    absorbed AS (
        UPDATE {SCHEMA}.customers
        SET merged_into = $2, given_name = $17, family_name = $18, birth_date = $19, locale = $20,
            attributes = $21, status = $22, updated_at = $23, time_zone = $24
        WHERE tenant_id = $1 AND (id = $3 OR merged_into = $3))
    UPDATE {SCHEMA}.customers
    SET given_name = $4, family_name = $5, birth_date = $6, locale = $7, attributes = $8, status = $9,
        updated_at = $10, time_zone = $11
    WHERE tenant_id = $1 AND id = $2"""
# The erased profile's (empty) personal fields also overwrite every customer merged into it.
ERASE = f"""
    WITH removed AS (DELETE FROM {SCHEMA}.identifiers WHERE tenant_id = $1 AND customer_id = $2),
    consents AS ({_upsert_consents(11)}),
    absorbed AS (
        UPDATE {SCHEMA}.customers
        SET given_name = $3, family_name = $4, birth_date = $5, locale = $6, attributes = $7,
            updated_at = $9, time_zone = $10
        WHERE tenant_id = $1 AND merged_into = $2 RETURNING id::text AS customer_id),
    erased AS ({SAVE})
    SELECT array(SELECT customer_id FROM absorbed ORDER BY customer_id)"""

_DEFINITION = "name, type, required, enum_values, description, created_at"
DEFINITION = f"SELECT {_DEFINITION} FROM {SCHEMA}.attribute_definitions WHERE tenant_id = $1 AND name = $2"
# The stored definition: the new one, or the one that was there (compared by the use case).
DEFINE = f"""
    WITH inserted AS (
        INSERT INTO {SCHEMA}.attribute_definitions (tenant_id, {_DEFINITION})
        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING {_DEFINITION})
    SELECT * FROM inserted UNION ALL ({DEFINITION})"""
DEFINITIONS = f"""
    SELECT {_DEFINITION} FROM {SCHEMA}.attribute_definitions WHERE tenant_id = $1 AND name > $2
    ORDER BY name LIMIT $3"""


class ProfileRepository:
    def __init__(self, uow: UnitOfWork) -> None:
        self.connection = uow.connection
        self.tenant = uow.tenant

    # -- reading customers -------------------------------------------------------------------

    async def load(self, customer_id: str) -> Customer | None:
        """The customer, or the survivor it was merged into; None when unknown in this tenant."""
        return _customer_or_none(await self.connection.fetchrow(LOAD, self.tenant, customer_id))

    async def lock(self, customer_id: str) -> Customer | None:
        """`load`, and the row locked until the transaction ends."""
        return _customer_or_none(await self.connection.fetchrow(LOCK, self.tenant, customer_id))

    async def lock_with_schema(self, customer_id: str) -> tuple[Customer | None, Schema]:
        """`lock`, and the tenant's attribute schema in the same round trip."""
        row = await self.connection.fetchrow(LOCK_WITH_SCHEMA, self.tenant, customer_id)
        if row is None:
            return None, {}
        return _customer(row), _schema(row["attribute_schema"])

    async def lock_pair(self, first_id: str, second_id: str) -> dict[str, Customer]:
        """Both customers by their own ids (merges not followed), locked."""
        rows = await self.connection.fetch(LOCK_PAIR, self.tenant, [first_id, second_id])
        return {row["customer_id"]: _customer(row) for row in rows}

    async def find(self, identifier: Identifier) -> Customer | None:
        row = await self.connection.fetchrow(
            BY_IDENTIFIER, self.tenant, identifier.type.value, identifier.namespace, identifier.value
        )
        return _customer_or_none(row)

    async def merged_into(self, survivor_id: str) -> list[Customer]:
        """What remains of the customers merged into this one."""
        return [_customer(row) for row in await self.connection.fetch(MERGED_INTO, self.tenant, survivor_id)]

    async def search(
        self, name_prefix: str, identifiers: Sequence[Identifier], after: str | None, limit: int
    ) -> list[Customer]:
        """Active customers whose names start with the prefix or who hold one of the identifiers
        (all of them for an empty prefix), by id."""
        pattern = None
        if name_prefix:
            pattern = name_prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self.connection.fetch(
            SEARCH, self.tenant, after, pattern, *_identifier_columns(identifiers), limit
        )
        return [_customer(row) for row in rows]

    # -- writing customers -------------------------------------------------------------------

    async def enrol(self, customer: Customer) -> tuple[set[Identifier], Schema]:
        """Insert the customer with its identifiers and consents. Returns the identifiers someone
        else holds (none, normally) and the tenant's attribute schema."""
        row = await self.connection.fetchrow(
            ENROL,
            self.tenant,
            customer.customer_id,
            *_profile_columns(customer),
            *_identifier_columns(customer.identifiers),
            *_consent_columns(customer.consents),
        )
        return set(_identifiers(row["taken"])), _schema(row["attribute_schema"])

    async def save(self, customer: Customer) -> None:
        """The customer's personal fields, status and update time as given."""
        await self.connection.execute(SAVE, self.tenant, customer.customer_id, *_profile_columns(customer))

    async def add_identifier(self, customer: Customer, identifier: Identifier) -> bool:
        """Attach the identifier; False when another customer of the tenant holds it."""
        claimed = await self.connection.fetchval(
            ADD_IDENTIFIER, self.tenant, customer.customer_id, customer.updated_at, *_identifier(identifier)
        )
        return bool(claimed)

    async def remove_identifier(self, customer: Customer, identifier: Identifier) -> None:
        await self.connection.execute(
            REMOVE_IDENTIFIER,
            self.tenant,
            customer.customer_id,
            customer.updated_at,
            *_identifier(identifier),
        )

    async def record_consents(self, customer: Customer, consents: Sequence[Consent]) -> None:
        await self.connection.execute(
            RECORD_CONSENTS,
            self.tenant,
            customer.customer_id,
            customer.updated_at,
            *_consent_columns(consents),
        )

    async def merge(self, survivor: Customer, moved_consents: Sequence[Consent], absorbed: Customer) -> None:
        """Fold `absorbed` (the duplicate) into `survivor`: both as the domain decided."""
        await self.connection.execute(
            MERGE,
            self.tenant,
            survivor.customer_id,
            absorbed.customer_id,
            *_profile_columns(survivor),
            *_consent_columns(moved_consents),
            *_profile_columns(absorbed),
        )

    async def erase(self, erased: Customer) -> list[str]:
        """Store the erased profile, drop its identifiers, and wipe the customers merged into it;
        returns their ids."""
        return await self.connection.fetchval(
            ERASE,
            self.tenant,
            erased.customer_id,
            *_profile_columns(erased),
            *_consent_columns(erased.consents),
        )

    # -- attribute schema --------------------------------------------------------------------

    async def define_attribute(self, definition: AttributeDefinition, now: datetime) -> AttributeDefinition:
        """Insert the definition unless one of that name exists; returns the one stored."""
        args = (
            definition.name,
            definition.type.value,
            definition.required,
            list(definition.enum_values),
            definition.description,
        )
        row = await self.connection.fetchrow(DEFINE, self.tenant, *args, now)
        if row is None:
            # A concurrent definition committed after this statement's snapshot was taken.
            row = await self.connection.fetchrow(DEFINITION, self.tenant, definition.name)
        return _definition(row)

    async def definitions(self, after_name: str, limit: int) -> list[AttributeDefinition]:
        return [
            _definition(row)
            for row in await self.connection.fetch(DEFINITIONS, self.tenant, after_name, limit)
        ]


# -- rows <-> domain -------------------------------------------------------------------------


def _customer_or_none(row) -> Customer | None:
    return None if row is None else _customer(row)


def _customer(row) -> Customer:
    return Customer(
        customer_id=row["customer_id"],
        identifiers=list(_identifiers(row["identifiers"])),
        given_name=row["given_name"],
        family_name=row["family_name"],
        birth_date=row["birth_date"],
        locale=row["locale"],
        time_zone=row["time_zone"],
        attributes=_decode_attributes(row["attributes"]),
        consents=[
            Consent(ConsentChannel(channel), ConsentPurpose(purpose), granted, source, recorded_at)
            for channel, purpose, granted, source, recorded_at in row["consents"]
        ],
        status=CustomerStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _identifiers(rows) -> Iterator[Identifier]:
    return (Identifier(IdentifierType(kind), value, namespace) for kind, namespace, value in rows)


def _profile_columns(customer: Customer) -> tuple:
    """given_name, family_name, birth_date, locale, attributes, status, updated_at, time_zone."""
    return (
        customer.given_name,
        customer.family_name,
        customer.birth_date,
        customer.locale,
        _encode_attributes(customer.attributes),
        customer.status.value,
        customer.updated_at,
        customer.time_zone,
    )


def _identifier(identifier: Identifier) -> tuple[str, str, str]:
    return identifier.type.value, identifier.namespace, identifier.value


def _identifier_columns(identifiers: Iterable[Identifier]) -> tuple[list, list, list]:
    ordered = sorted(identifiers, key=identifier_order)
    return [i.type.value for i in ordered], [i.namespace for i in ordered], [i.value for i in ordered]


def _consent_columns(consents: Sequence[Consent]) -> tuple[list, list, list, list, list]:
    return (
        [c.channel.value for c in consents],
        [c.purpose.value for c in consents],
        [c.granted for c in consents],
        [c.source for c in consents],
        [c.recorded_at for c in consents],
    )


def _encode_attributes(attributes: dict[str, AttributeValue]) -> dict:
    """{"name": {"t": "<type>", "v": <value>}}: each value with its type, dates as ISO text (the
    connection encodes JSON)."""
    return {
        name: {"t": kind.value, "v": value.isoformat() if isinstance(value, date) else value}
        for name, (kind, value) in attributes.items()
    }


def _decode_attributes(stored: dict) -> dict[str, AttributeValue]:
    decoded = {}
    for name, item in stored.items():
        kind = AttributeType(item["t"])
        decoded[name] = (kind, date.fromisoformat(item["v"]) if kind is AttributeType.DATE else item["v"])
    return decoded


def _schema(definitions: list) -> dict[str, AttributeDefinition]:
    """From `_ATTRIBUTE_SCHEMA`'s JSON: [name, type, required, enum_values, description] each."""
    return {
        name: AttributeDefinition(name, AttributeType(kind), required, tuple(enum_values), description)
        for name, kind, required, enum_values, description in definitions
    }


def _definition(row) -> AttributeDefinition:
    name, kind, required, enum_values, description, created_at = row
    return AttributeDefinition(
        name, AttributeType(kind), required, tuple(enum_values), description, created_at
    )
