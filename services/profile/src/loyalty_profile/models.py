"""Tables of the profile schema, described for Alembic (the service itself speaks SQL text, see
repository.py). Every table leads with tenant_id and every statement filters by it. CHECK
constraints back the domain's enums, so no other value can be stored."""

import uuid
from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Index,
    MetaData,
    String,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loyalty_profile.domain import (
    AttributeType,
    ConsentChannel,
    ConsentPurpose,
    CustomerStatus,
    IdentifierType,
)
from loyalty_profile.repository import SCHEMA
from loyalty_runtime.tables import add_runtime_tables


def one_of(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class CustomerRow(Base):
    __tablename__ = "customers"
    __table_args__ = (
        CheckConstraint(one_of("status", CustomerStatus), name="customers_status"),
        # Merged customers point at their survivor, and nothing else does.
        CheckConstraint("(status = 'merged') = (merged_into IS NOT NULL)", name="customers_merged_into"),
        # Name search is a case-insensitive prefix match within a tenant.
        Index("customers_tenant_names", "tenant_id", text("lower(family_name)"), text("lower(given_name)")),
        Index(
            "customers_merged", "tenant_id", "merged_into", postgresql_where=text("merged_into IS NOT NULL")
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    given_name: Mapped[str] = mapped_column(String(200))
    family_name: Mapped[str] = mapped_column(String(200))
    birth_date: Mapped[date | None] = mapped_column(Date)
    locale: Mapped[str] = mapped_column(String(35))
    # IANA zone name, checked against the tz database on write; '' = unknown.
    time_zone: Mapped[str] = mapped_column(String(64), server_default="")
    # {"name": {"t": "<type>", "v": <value>}}; checked against attribute_definitions on write.
    attributes: Mapped[dict] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    # Set when merged: lookups of this customer answer with the survivor.
    merged_into: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class IdentifierRow(Base):
    """One identifier belongs to one customer per tenant: the primary key is the uniqueness rule."""

    __tablename__ = "identifiers"
    __table_args__ = (
        ForeignKeyConstraint(["customer_id"], [f"{SCHEMA}.customers.id"]),
        CheckConstraint(one_of("type", IdentifierType), name="identifiers_type"),
        Index("identifiers_by_customer", "tenant_id", "customer_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(16), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(320), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)


class ConsentRow(Base):
    __tablename__ = "consents"
    __table_args__ = (
        ForeignKeyConstraint(["customer_id"], [f"{SCHEMA}.customers.id"]),
        CheckConstraint(one_of("channel", ConsentChannel), name="consents_channel"),
        CheckConstraint(one_of("purpose", ConsentPurpose), name="consents_purpose"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(100))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AttributeDefinitionRow(Base):
    __tablename__ = "attribute_definitions"
    __table_args__ = (CheckConstraint(one_of("type", AttributeType), name="attribute_definitions_type"),)

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    required: Mapped[bool] = mapped_column(Boolean)
    enum_values: Mapped[list[str]] = mapped_column(ARRAY(String(200)))
    description: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


add_runtime_tables(Base.metadata)
