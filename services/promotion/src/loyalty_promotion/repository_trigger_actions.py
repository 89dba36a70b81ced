"""SQL on asyncpg for what triggers' conditions and actions read from promotion's own tables.
Every statement filters by the caller's tenant."""

import asyncpg

from loyalty_promotion.repository import SCHEMA


async def redeemed_codes(
    connection: asyncpg.Connection, tenant: str, customer_id: str, codes: list[str]
) -> frozenset[str]:
    """Which of these codes the customer has redeemed (committed: rolled back, expired and
    reversed redemptions do not count), by the index on the customer's committed redemptions."""
    rows = await connection.fetch(
        f"""SELECT DISTINCT code FROM {SCHEMA}.redemptions
            WHERE tenant_id = $1 AND customer_id = $2 AND code = ANY($3::varchar[]) AND state = 'committed'""",
        tenant,
        customer_id,
        codes,
    )
    return frozenset(row["code"] for row in rows)
