"""SQL of the reward catalogue and its redemptions. Stock is taken and given back by guarded
single-statement updates, so concurrent redemptions can never take more than there is."""

import asyncpg

from loyalty_promotion.repository import SCHEMA

WINDOW = "(start_time IS NULL OR start_time <= $3) AND (end_time IS NULL OR end_time > $3)"


async def insert_reward(connection: asyncpg.Connection, tenant: str, values: dict):
    columns = list(values)
    return await connection.fetchrow(
        f"""INSERT INTO {SCHEMA}.catalogue_rewards (tenant_id, redeemed_count, {", ".join(columns)})
            VALUES ($1, 0, {", ".join(f"${i}" for i in range(2, 2 + len(columns)))}) RETURNING *""",
        tenant,
        *values.values(),
    )


async def reward(connection: asyncpg.Connection, tenant: str, reward_id: str, *, lock: bool = False):
    return await connection.fetchrow(
        f"""SELECT * FROM {SCHEMA}.catalogue_rewards
            WHERE tenant_id = $1 AND reward_id = $2 AND deleted_at IS NULL{" FOR UPDATE" if lock else ""}""",
        tenant,
        reward_id,
    )


async def rewards(
    connection: asyncpg.Connection,
    tenant: str,
    after,
    limit: int,
    now,
    *,
    available_only: bool,
    max_cost,
    program,
):
    return await connection.fetch(
        f"""SELECT * FROM {SCHEMA}.catalogue_rewards
            WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::uuid IS NULL OR reward_id > $2)
              AND (NOT $5 OR ({WINDOW} AND (stock IS NULL OR redeemed_count < stock)))
              AND ($6::bigint IS NULL OR points_cost <= $6) AND ($7 = '' OR program_id = $7)
            ORDER BY reward_id LIMIT $4""",
        tenant,
        after,
        now,
        limit,
        available_only,
        max_cost,
        program,
    )


async def update_reward(connection: asyncpg.Connection, tenant: str, reward_id: str, values: dict):
    """None when the reward is gone or its new stock is below what was redeemed."""
    columns = list(values)
    return await connection.fetchrow(
        f"""UPDATE {SCHEMA}.catalogue_rewards
            SET {", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=3))}
            WHERE tenant_id = $1 AND reward_id = $2 AND deleted_at IS NULL
              AND (stock IS NULL OR stock >= redeemed_count)
            RETURNING *""",
        tenant,
        reward_id,
        *values.values(),
    )


async def delete_reward(connection: asyncpg.Connection, tenant: str, reward_id: str, now) -> bool:
    return bool(
        await connection.fetchval(
            f"""UPDATE {SCHEMA}.catalogue_rewards SET deleted_at = $3
                WHERE tenant_id = $1 AND reward_id = $2 AND deleted_at IS NULL RETURNING true""",
            tenant,
            reward_id,
            now,
        )
    )


async def take_stock(connection: asyncpg.Connection, tenant: str, reward_id: str, now):
    """One of the reward's stock, if it is offered now and has any left: the reward, or None."""
    return await connection.fetchrow(
        f"""UPDATE {SCHEMA}.catalogue_rewards SET redeemed_count = redeemed_count + 1
            WHERE tenant_id = $1 AND reward_id = $2 AND deleted_at IS NULL AND {WINDOW}
              AND (stock IS NULL OR redeemed_count < stock)
            RETURNING *""",
        tenant,
        reward_id,
        now,
    )


async def give_stock(connection: asyncpg.Connection, tenant: str, reward_id: str) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.catalogue_rewards SET redeemed_count = redeemed_count - 1
            WHERE tenant_id = $1 AND reward_id = $2""",
        tenant,
        reward_id,
    )


async def redemption(connection: asyncpg.Connection, tenant: str, redemption_id: str):
    """Locked until the transaction ends."""
    return await connection.fetchrow(
        f"""SELECT * FROM {SCHEMA}.catalogue_redemptions
            WHERE tenant_id = $1 AND redemption_id = $2 FOR UPDATE""",
        tenant,
        redemption_id,
    )


async def insert_redemption(
    connection: asyncpg.Connection,
    tenant: str,
    redemption_id: str,
    reward_id,
    customer_id: str,
    payload: bytes,
    now,
) -> bool:
    """False when a concurrent reservation of the same id was first."""
    return bool(
        await connection.fetchval(
            f"""INSERT INTO {SCHEMA}.catalogue_redemptions (tenant_id, redemption_id, reward_id,
                    customer_id, state, payload, created_at, updated_at)
                VALUES ($1, $2, $3, $4, 'reserved', $5, $6, $6) ON CONFLICT DO NOTHING RETURNING true""",
            tenant,
            redemption_id,
            reward_id,
            customer_id,
            payload,
            now,
        )
    )


async def save_redemption(
    connection: asyncpg.Connection, tenant: str, redemption_id: str, state: str, payload: bytes, now
) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.catalogue_redemptions SET state = $3, payload = $4, updated_at = $5
            WHERE tenant_id = $1 AND redemption_id = $2""",
        tenant,
        redemption_id,
        state,
        payload,
        now,
    )
