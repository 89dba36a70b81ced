"""Tables of the profile schema. Every table leads with tenant_id and every query filters by it."""

import uuid
from datetime import date, datetime

from sqlalchemy import Boolean, Date, DateTime, ForeignKeyConstraint, Index, MetaData, String, Uuid, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loyalty_runtime.events import outbox_table
from loyalty_runtime.idempotency import idempotency_table

SCHEMA = "profile"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class CustomerRow(Base):
    __tablename__ = "customers"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    given_name: Mapped[str] = mapped_column(String(200), default="")
    family_name: Mapped[str] = mapped_column(String(200), default="")
    birth_date: Mapped[date | None] = mapped_column(Date)
    locale: Mapped[str] = mapped_column(String(35), default="")
    # {"name": {"t": "<type>", "v": <value>}}; validated against attribute_definitions on write.
    attributes: Mapped[dict] = mapped_column(JSONB, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    # Set when merged: lookups of this customer answer with the survivor.
    merged_into: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# Name search is a case-insensitive prefix match within a tenant.
Index(
    "customers_tenant_names",
    CustomerRow.tenant_id,
    func.lower(CustomerRow.family_name),
    func.lower(CustomerRow.given_name),
)


class IdentifierRow(Base):
    """One identifier belongs to one customer per tenant: the primary key is the uniqueness rule."""

    __tablename__ = "identifiers"
    __table_args__ = (
        ForeignKeyConstraint(["customer_id"], [f"{SCHEMA}.customers.id"]),
        Index("identifiers_by_customer", "tenant_id", "customer_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(16), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(320), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid)


class ConsentRow(Base):
    __tablename__ = "consents"
    __table_args__ = (ForeignKeyConstraint(["customer_id"], [f"{SCHEMA}.customers.id"]),)

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(100))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AttributeDefinitionRow(Base):
    __tablename__ = "attribute_definitions"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    required: Mapped[bool] = mapped_column(Boolean)
    enum_values: Mapped[list[str]] = mapped_column(ARRAY(String(200)))
    description: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


outbox = outbox_table(Base.metadata)
idempotency_keys = idempotency_table(Base.metadata)
