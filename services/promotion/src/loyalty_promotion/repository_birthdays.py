"""SQL on asyncpg for the customers' birthdays (month and day only) that promotion copies from
profile's events. Every statement filters by the caller's tenant, but the scheduler's read of
candidates across tenants; a birthday is celebrated once a year by a guarded update."""

from collections.abc import Sequence

import asyncpg

from loyalty_promotion.domain.birthdays import Birthday
from loyalty_promotion.repository import SCHEMA


async def remember(
    connection: asyncpg.Connection, tenant: str, customer_id: str, month: int, day: int, time_zone: str
) -> None:
    """Keep the customer's birthday; a new date keeps the year last celebrated, so moving it within
    a year does not celebrate twice."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.customer_birthdays (tenant_id, customer_id, birth_month, birth_day, time_zone)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (tenant_id, customer_id) DO UPDATE
            SET birth_month = excluded.birth_month, birth_day = excluded.birth_day, time_zone = excluded.time_zone""",
        tenant,
        customer_id,
        month,
        day,
        time_zone,
    )


async def forget(connection: asyncpg.Connection, tenant: str, customer_id: str) -> None:
    await connection.execute(
        f"DELETE FROM {SCHEMA}.customer_birthdays WHERE tenant_id = $1 AND customer_id = $2",
        tenant,
        customer_id,
    )


async def candidates(
    connection: asyncpg.Connection, days: Sequence[tuple[int, int]], before_year: int, limit: int
) -> list[Birthday]:
    """Every tenant's birthdays on `days` not celebrated in `before_year` or later."""
    rows = await connection.fetch(
        f"""SELECT tenant_id, customer_id, birth_month, birth_day, time_zone, celebrated_year
            FROM {SCHEMA}.customer_birthdays
            WHERE (birth_month, birth_day) IN (SELECT * FROM unnest($1::smallint[], $2::smallint[]))
              AND (celebrated_year IS NULL OR celebrated_year < $3)
            LIMIT $4""",
        [month for month, _ in days],
        [day for _, day in days],
        before_year,
        limit,
    )
    return [Birthday(*row) for row in rows]


async def celebrate(
    connection: asyncpg.Connection, tenant: str, customer_ids: Sequence[str], years: Sequence[int]
) -> list[tuple[str, int]]:
    """Mark the birthdays celebrated in their years, each once: those this call marked."""
    rows = await connection.fetch(
        f"""UPDATE {SCHEMA}.customer_birthdays AS b SET celebrated_year = c.year
            FROM unnest($2::varchar[], $3::int[]) AS c(customer_id, year)
            WHERE b.tenant_id = $1 AND b.customer_id = c.customer_id
              AND b.celebrated_year IS DISTINCT FROM c.year
            RETURNING b.customer_id, c.year""",
        tenant,
        list(customer_ids),
        list(years),
    )
    return [tuple(row) for row in rows]
