"""SQL on asyncpg for achievements (progress per customer), delayed rewards and clawbacks. Every
statement filters by the caller's tenant, but the sweep's read of due rewards across tenants.

A customer's achievement rows are taken with one upsert whose row locks order that customer's
concurrent events on the triggers, so completion is decided by one of them at a time; a delayed
reward is claimed by a guarded `UPDATE ... WHERE state = 'pending'`, so it is given once however
many sweeps race for it."""

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from loyalty_promotion.domain.achievements import Contribution, Counted
from loyalty_promotion.repository import SCHEMA


async def lock_achievements(
    connection: asyncpg.Connection, tenant: str, trigger_ids: Sequence[str], customer_id: str
) -> dict[str, tuple[str | None, datetime | None]]:
    """Lock the customer's achievement rows of these triggers, made on first use, in trigger id
    order (the one order every event takes): for each, the event that completed it and when (None:
    not completed). One statement for every achievement an event matches."""
    rows = await connection.fetch(
        f"""INSERT INTO {SCHEMA}.achievements AS a (tenant_id, trigger_id, customer_id)
            SELECT $1, t, $2 FROM unnest($3::uuid[]) AS t ORDER BY t
            ON CONFLICT (tenant_id, trigger_id, customer_id) DO UPDATE SET customer_id = a.customer_id
            RETURNING trigger_id::text, completing_event_id, completed_at""",
        tenant,
        customer_id,
        sorted(trigger_ids),
    )
    return {row[0]: (row[1], row[2]) for row in rows}


async def add_contributions(
    connection: asyncpg.Connection,
    tenant: str,
    customer_id: str,
    source_event_id: str,
    contributions: dict[str, Sequence[Contribution]],
    subject: str,
    occurred_at: datetime,
    refundable: int,
) -> None:
    """The event's contributions to each trigger's achievement, once (a redelivered event adds
    nothing); after lock_achievements, so concurrent events wait on the row locks, never here."""
    rows = [(t, c.value, c.amount) for t in sorted(contributions) for c in contributions[t]]
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.achievement_contributions (tenant_id, trigger_id, customer_id,
                source_event_id, value, amount, subject, occurred_at, refundable, refunded)
            SELECT $1, c.trigger_id, $2, $3, c.value, c.amount, $7, $8, $9, 0
            FROM unnest($4::uuid[], $5::varchar[], $6::bigint[]) AS c(trigger_id, value, amount)
            ON CONFLICT DO NOTHING""",
        tenant,
        customer_id,
        source_event_id,
        [row[0] for row in rows],
        [row[1] for row in rows],
        [row[2] for row in rows],
        subject,
        occurred_at,
        refundable,
    )


async def counted(
    connection: asyncpg.Connection, tenant: str, trigger_ids: Sequence[str], customer_id: str
) -> dict[str, list[Counted]]:
    """The customer's contributions to each of the triggers' achievements."""
    rows = await connection.fetch(
        f"""SELECT trigger_id::text, source_event_id, value, amount, occurred_at, refundable, refunded
            FROM {SCHEMA}.achievement_contributions
            WHERE tenant_id = $1 AND trigger_id = ANY($2::uuid[]) AND customer_id = $3""",
        tenant,
        list(trigger_ids),
        customer_id,
    )
    found: dict[str, list[Counted]] = {trigger_id: [] for trigger_id in trigger_ids}
    for row in rows:
        found[row[0]].append(Counted(*row[1:]))
    return found


async def set_completed(
    connection: asyncpg.Connection,
    tenant: str,
    trigger_id: str,
    customer_id: str,
    completing_event_id: str | None,
    at: datetime | None,
) -> None:
    """Mark the achievement completed by an event (or, with None, open again after a clawback)."""
    await connection.execute(
        f"""UPDATE {SCHEMA}.achievements SET completing_event_id = $4, completed_at = $5
            WHERE tenant_id = $1 AND trigger_id = $2 AND customer_id = $3""",
        tenant,
        trigger_id,
        customer_id,
        completing_event_id,
        at,
    )


async def completions(
    connection: asyncpg.Connection, tenant: str, trigger_ids: Sequence[str], customer_id: str
) -> dict[str, datetime]:
    rows = await connection.fetch(
        f"""SELECT trigger_id::text, completed_at FROM {SCHEMA}.achievements
            WHERE tenant_id = $1 AND trigger_id = ANY($2::uuid[]) AND customer_id = $3
              AND completed_at IS NOT NULL""",
        tenant,
        list(trigger_ids),
        customer_id,
    )
    return dict(rows)


async def refund(
    connection: asyncpg.Connection, tenant: str, customer_id: str, checkout_id: str, amount: int
) -> set[str]:
    """Add a return's refund to the contributions of its purchase; the triggers they count for."""
    rows = await connection.fetch(
        f"""UPDATE {SCHEMA}.achievement_contributions SET refunded = LEAST(refunded + $4, refundable)
            WHERE tenant_id = $1 AND customer_id = $2 AND subject = $3 AND subject <> ''
            RETURNING trigger_id::text""",
        tenant,
        customer_id,
        checkout_id,
        amount,
    )
    return {row[0] for row in rows}


async def reverse_grant(
    connection: asyncpg.Connection, tenant: str, trigger_id: str, source_event_id: str
) -> tuple[str, bytes] | None:
    """Mark the trigger's grant for the event reversed, once: its id and reward (None: there is
    none, or it was reversed before)."""
    row = await connection.fetchrow(
        f"""UPDATE {SCHEMA}.reward_grants SET state = 'reversed'
            WHERE tenant_id = $1 AND trigger_id = $2 AND source_event_id = $3 AND state <> 'reversed'
            RETURNING grant_id::text, reward""",
        tenant,
        trigger_id,
        source_event_id,
    )
    return (row[0], row[1]) if row else None


# --- delayed rewards -----------------------------------------------------------------------------


async def insert_delayed(
    connection: asyncpg.Connection,
    tenant: str,
    trigger_id: str,
    source_event_id: str,
    customer_id: str,
    occurred_at: datetime,
    due_at: datetime,
    cancel_on_event_type: str,
) -> None:
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.delayed_rewards (tenant_id, trigger_id, source_event_id, customer_id,
                occurred_at, due_at, cancel_on_event_type, state)
            VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') ON CONFLICT DO NOTHING""",
        tenant,
        trigger_id,
        source_event_id,
        customer_id,
        occurred_at,
        due_at,
        cancel_on_event_type,
    )


async def cancel_on_event(
    connection: asyncpg.Connection, tenant: str, customer_id: str, event_type: str, occurred_at: datetime
) -> int:
    """Cancel the customer's pending rewards that an event of this type, later than theirs, cancels."""
    status = await connection.execute(
        f"""UPDATE {SCHEMA}.delayed_rewards SET state = 'cancelled'
            WHERE tenant_id = $1 AND customer_id = $2 AND cancel_on_event_type = $3
              AND state = 'pending' AND occurred_at < $4""",
        tenant,
        customer_id,
        event_type,
        occurred_at,
    )
    return int(status.rsplit(" ", 1)[-1])


async def cancel_delayed(
    connection: asyncpg.Connection, tenant: str, trigger_id: str, source_event_id: str
) -> bool:
    """Cancel the trigger's pending reward for the event; False when there is none pending."""
    return bool(
        await connection.fetchval(
            f"""UPDATE {SCHEMA}.delayed_rewards SET state = 'cancelled'
                WHERE tenant_id = $1 AND trigger_id = $2 AND source_event_id = $3 AND state = 'pending'
                RETURNING true""",
            tenant,
            trigger_id,
            source_event_id,
        )
    )


async def due_rewards(
    connection: asyncpg.Connection, now: datetime, limit: int
) -> list[tuple[str, str, str, datetime]]:
    """(tenant, trigger, event, event time) of every tenant's pending rewards due by `now`, oldest
    first."""
    rows = await connection.fetch(
        f"""SELECT tenant_id, trigger_id::text, source_event_id, occurred_at FROM {SCHEMA}.delayed_rewards
            WHERE state = 'pending' AND due_at <= $1 ORDER BY due_at LIMIT $2""",
        now,
        limit,
    )
    return [tuple(row) for row in rows]


async def claim_due(
    connection: asyncpg.Connection, tenant: str, trigger_id: str, source_event_id: str, now: datetime
) -> str | None:
    """Take the pending reward if still due and pending: its customer."""
    return await connection.fetchval(
        f"""UPDATE {SCHEMA}.delayed_rewards SET state = 'done'
            WHERE tenant_id = $1 AND trigger_id = $2 AND source_event_id = $3
              AND state = 'pending' AND due_at <= $4
            RETURNING customer_id""",
        tenant,
        trigger_id,
        source_event_id,
        now,
    )
