"""SQL on asyncpg for triggers, their per-customer counts and the reward grants. Every statement
filters by the caller's tenant. A count is taken by one upsert (its row lock orders concurrent
events of one customer); a grant is inserted once per (trigger, event) by a unique index."""

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from loyalty_promotion.repository import SCHEMA

_TRIGGER = "trigger_id::text, campaign_id::text, version, payload, created_at, updated_at"
_GRANT = "grant_id::text, trigger_id::text, campaign_id::text, customer_id, source_event_id, state, reward, created_at"


@dataclass(frozen=True)
class StoredTrigger:
    trigger_id: str
    campaign_id: str
    version: int
    payload: bytes
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StoredGrant:
    grant_id: str
    trigger_id: str
    campaign_id: str
    customer_id: str
    source_event_id: str
    state: str
    reward: bytes
    created_at: datetime


def _trigger(row) -> StoredTrigger | None:
    return StoredTrigger(*row) if row is not None else None


async def insert_trigger(
    connection: asyncpg.Connection,
    tenant: str,
    trigger_id: str,
    campaign_id: str,
    event_type: str,
    state: str,
    payload: bytes,
    now: datetime,
) -> StoredTrigger:
    row = await connection.fetchrow(
        f"""INSERT INTO {SCHEMA}.triggers
                (tenant_id, trigger_id, campaign_id, event_type, state, version, payload, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $7) RETURNING {_TRIGGER}""",
        tenant,
        trigger_id,
        campaign_id,
        event_type,
        state,
        payload,
        now,
    )
    return _trigger(row)


async def get_trigger(
    connection: asyncpg.Connection, tenant: str, trigger_id: str, *, lock: bool = False
) -> StoredTrigger | None:
    row = await connection.fetchrow(
        f"SELECT {_TRIGGER} FROM {SCHEMA}.triggers WHERE tenant_id = $1 AND trigger_id = $2"
        + (" FOR UPDATE" if lock else ""),
        tenant,
        trigger_id,
    )
    return _trigger(row)


async def list_triggers(
    connection: asyncpg.Connection,
    tenant: str,
    campaign_id: str | None,
    event_type: str | None,
    after: str | None,
    limit: int,
) -> list[StoredTrigger]:
    rows = await connection.fetch(
        f"""SELECT {_TRIGGER} FROM {SCHEMA}.triggers
            WHERE tenant_id = $1 AND ($2::uuid IS NULL OR campaign_id = $2::uuid)
              AND ($3::varchar IS NULL OR event_type = $3) AND ($4::uuid IS NULL OR trigger_id > $4::uuid)
            ORDER BY trigger_id LIMIT $5""",
        tenant,
        campaign_id,
        event_type,
        after,
        limit,
    )
    return [StoredTrigger(*row) for row in rows]


async def update_trigger(
    connection: asyncpg.Connection,
    tenant: str,
    trigger_id: str,
    event_type: str,
    state: str,
    payload: bytes,
    now: datetime,
) -> StoredTrigger:
    row = await connection.fetchrow(
        f"""UPDATE {SCHEMA}.triggers SET event_type = $3, state = $4, payload = $5, updated_at = $6,
                version = version + 1
            WHERE tenant_id = $1 AND trigger_id = $2 RETURNING {_TRIGGER}""",
        tenant,
        trigger_id,
        event_type,
        state,
        payload,
        now,
    )
    return _trigger(row)


async def delete_trigger(connection: asyncpg.Connection, tenant: str, trigger_id: str) -> None:
    await connection.execute(
        f"DELETE FROM {SCHEMA}.triggers WHERE tenant_id = $1 AND trigger_id = $2", tenant, trigger_id
    )


async def listening(connection: asyncpg.Connection, tenant: str, event_type: str) -> list[StoredTrigger]:
    """The tenant's enabled triggers for an event type."""
    rows = await connection.fetch(
        f"""SELECT {_TRIGGER} FROM {SCHEMA}.triggers
            WHERE tenant_id = $1 AND event_type = $2 AND state = 'enabled' ORDER BY trigger_id""",
        tenant,
        event_type,
    )
    return [StoredTrigger(*row) for row in rows]


async def count_match(
    connection: asyncpg.Connection, tenant: str, trigger_id: str, customer_id: str, period: str
) -> int:
    """One more matching event of the customer in the period; the count with it."""
    return await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.trigger_counts AS c (tenant_id, trigger_id, customer_id, period, matched)
            VALUES ($1, $2, $3, $4, 1)
            ON CONFLICT (tenant_id, trigger_id, customer_id, period) DO UPDATE SET matched = c.matched + 1
            RETURNING matched""",
        tenant,
        trigger_id,
        customer_id,
        period,
    )


async def rewards_so_far(
    connection: asyncpg.Connection, tenant: str, trigger_id: str, customer_id: str
) -> tuple[int, datetime | None]:
    """How often the trigger rewarded the customer, and when last. Read without a lock: a trigger
    listens to one event type, whose stream one consumer handles one event after another, so two
    events of one trigger never race here."""
    row = await connection.fetchrow(
        f"""SELECT count(*), max(created_at) FROM {SCHEMA}.reward_grants
            WHERE tenant_id = $1 AND trigger_id = $2 AND customer_id = $3 AND state <> 'reversed'""",
        tenant,
        trigger_id,
        customer_id,
    )
    return row[0], row[1]


async def insert_grant(
    connection: asyncpg.Connection,
    tenant: str,
    grant_id: str,
    trigger_id: str,
    campaign_id: str,
    customer_id: str,
    source_event_id: str,
    reward: bytes,
    now: datetime,
) -> bool:
    """The grant, unless this trigger already rewarded this event (then False)."""
    inserted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.reward_grants (tenant_id, grant_id, trigger_id, campaign_id, customer_id,
                source_event_id, state, reward, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)
            ON CONFLICT (tenant_id, trigger_id, source_event_id) DO NOTHING RETURNING true""",
        tenant,
        grant_id,
        trigger_id,
        campaign_id,
        customer_id,
        source_event_id,
        reward,
        now,
    )
    return bool(inserted)


async def list_grants(
    connection: asyncpg.Connection,
    tenant: str,
    customer_id: str | None,
    campaign_id: str | None,
    trigger_id: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[StoredGrant]:
    """Newest first."""
    rows = await connection.fetch(
        f"""SELECT {_GRANT} FROM {SCHEMA}.reward_grants
            WHERE tenant_id = $1 AND ($2::varchar IS NULL OR customer_id = $2)
              AND ($3::uuid IS NULL OR campaign_id = $3::uuid) AND ($4::uuid IS NULL OR trigger_id = $4::uuid)
              AND ($5::timestamptz IS NULL OR (created_at, grant_id) < ($5, $6::uuid))
            ORDER BY created_at DESC, grant_id DESC LIMIT $7""",
        tenant,
        customer_id,
        campaign_id,
        trigger_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [StoredGrant(*row) for row in rows]
