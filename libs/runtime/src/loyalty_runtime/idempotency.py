"""Idempotency keys for every state change (Stripe's model): the same key with the same request
replays the first answer; the same key with a different request is refused.

Inside the change's own transaction, `claim` inserts the key. A concurrent call with the same key
blocks on that uncommitted row, then finds it and replays the committed answer; if the first call
rolled back, the second goes ahead. So a retry can never apply a change twice.
"""

import hashlib
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import Column, DateTime, LargeBinary, MetaData, String, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty_runtime.context import current_tenant
from loyalty_runtime.errors import FailedPrecondition, InvalidArgument

ResponseT = TypeVar("ResponseT", bound=Message)


def fingerprint(request: Message, *, ignore: tuple[str, ...] = ("idempotency_key",)) -> str:
    """SHA-256 of the request's deterministic serialisation, without the key itself."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in ignore:
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def idempotency_table(metadata: MetaData) -> Table:
    return Table(
        "idempotency_keys",
        metadata,
        Column("tenant_id", String(64), primary_key=True),
        Column("key", String(200), primary_key=True),
        Column("method", String(100), nullable=False),
        Column("fingerprint", String(64), nullable=False),
        Column("response", LargeBinary),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def require_key(key: str, field: str = "idempotency_key") -> str:
    if not key or len(key) > 200:
        raise InvalidArgument(
            "INVALID_ARGUMENT", "an idempotency key of 1 to 200 characters is required", field=field
        )
    return key


async def claim(
    session: AsyncSession, table: Table, request: Message, response_type: type[ResponseT], *, method: str
) -> ResponseT | None:
    """Claim the request's idempotency key; returns the first answer when this is a replay."""
    key = require_key(request.idempotency_key)
    tenant = current_tenant()
    digest = fingerprint(request)
    inserted = await session.execute(
        insert(table)
        .values(tenant_id=tenant, key=key, method=method, fingerprint=digest)
        .on_conflict_do_nothing()
        .returning(table.c.key)
    )
    if inserted.first() is not None:
        return None
    row = (
        await session.execute(
            select(table.c.method, table.c.fingerprint, table.c.response).where(
                table.c.tenant_id == tenant, table.c.key == key
            )
        )
    ).one()
    if row.method != method or row.fingerprint != digest or row.response is None:
        raise FailedPrecondition(
            "IDEMPOTENCY_KEY_REUSED",
            "this idempotency key was used for a different request",
            field="idempotency_key",
        )
    return response_type.FromString(row.response)


async def remember(session: AsyncSession, table: Table, key: str, response: Message) -> None:
    """Store the answer for replays, in the same transaction as the change."""
    await session.execute(
        update(table)
        .where(table.c.tenant_id == current_tenant(), table.c.key == key)
        .values(response=response.SerializeToString(deterministic=True))
    )
