"""SQL of the gateway schema. Every statement filters by tenant, except the one that finds an API key
by its id: that lookup is what decides the tenant."""

import uuid
from datetime import datetime

import asyncpg

from loyalty_gateway.domain.audit import GENESIS, AuditEntry, chain_hash

SCHEMA = "gateway"

KEY_BY_ID = f"""
    SELECT k.*, t.store_id, t.state AS terminal_state
    FROM {SCHEMA}.api_keys k
    LEFT JOIN {SCHEMA}.terminals t ON t.tenant_id = k.tenant_id AND t.terminal_id = k.terminal_id
    WHERE k.api_key_id = $1"""


async def key_by_id(connection: asyncpg.Connection, key_id: uuid.UUID):
    return await connection.fetchrow(KEY_BY_ID, key_id)


async def tenant_settings(connection: asyncpg.Connection, tenant: str):
    return await connection.fetchrow(f"SELECT * FROM {SCHEMA}.tenant_settings WHERE tenant_id = $1", tenant)


async def put_tenant_settings(connection, tenant: str, values: dict, now):
    """Replaces the tenant's settings with `values` (every column but tenant_id and updated_at)."""
    columns = list(values)
    return await connection.fetchrow(
        f"""INSERT INTO {SCHEMA}.tenant_settings AS s (tenant_id, updated_at, version, {", ".join(columns)})
            VALUES ($1, $2, 1, {", ".join(f"${i}" for i in range(3, 3 + len(columns)))})
            ON CONFLICT (tenant_id) DO UPDATE
            SET updated_at = $2, version = s.version + 1, {", ".join(f"{c} = EXCLUDED.{c}" for c in columns)}
            RETURNING *""",
        tenant,
        now,
        *values.values(),
    )


async def insert_terminal(connection, tenant: str, terminal_id, name: str, store: str, labels: dict, now):
    return await connection.fetchrow(
        f"""INSERT INTO {SCHEMA}.terminals (tenant_id, terminal_id, display_name, store_id, labels, state,
                created_at) VALUES ($1, $2, $3, $4, $5, 'active', $6) RETURNING *""",
        tenant,
        terminal_id,
        name,
        store,
        labels,
        now,
    )


async def terminal(connection, tenant: str, terminal_id: uuid.UUID):
    return await connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.terminals WHERE tenant_id = $1 AND terminal_id = $2", tenant, terminal_id
    )


async def terminals(
    connection, tenant: str, store: str, show_revoked: bool, after: uuid.UUID | None, limit: int
):
    return await connection.fetch(
        f"""SELECT * FROM {SCHEMA}.terminals WHERE tenant_id = $1 AND ($2 = '' OR store_id = $2)
            AND ($3 OR state = 'active') AND ($4::uuid IS NULL OR terminal_id > $4)
            ORDER BY terminal_id LIMIT $5""",
        tenant,
        store,
        show_revoked,
        after,
        limit,
    )


async def revoke_terminal(connection, tenant: str, terminal_id: uuid.UUID, now):
    """Revokes the terminal and every key bound to it, in one statement."""
    return await connection.fetchrow(
        f"""WITH keys AS (
                UPDATE {SCHEMA}.api_keys SET state = 'revoked', revoked_at = $3
                WHERE tenant_id = $1 AND terminal_id = $2 AND state = 'active')
            UPDATE {SCHEMA}.terminals SET state = 'revoked', revoked_at = coalesce(revoked_at, $3)
            WHERE tenant_id = $1 AND terminal_id = $2 RETURNING *""",
        tenant,
        terminal_id,
        now,
    )


async def insert_key(connection, tenant: str, key, fields: dict, now):
    return await connection.fetchrow(
        f"""INSERT INTO {SCHEMA}.api_keys (api_key_id, tenant_id, display_name, scopes, terminal_id, channel,
                key_prefix, secret_hash, state, expire_at, created_at, created_by, rotated_from)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $11, $12) RETURNING *""",
        key.api_key_id,
        tenant,
        fields["display_name"],
        fields["scopes"],
        fields["terminal_id"],
        fields["channel"],
        key.display_prefix,
        key.secret_hash,
        fields["expire_at"],
        now,
        fields["created_by"],
        fields.get("rotated_from"),
    )


async def api_key(connection, tenant: str, key_id: uuid.UUID):
    return await connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.api_keys WHERE tenant_id = $1 AND api_key_id = $2", tenant, key_id
    )


async def api_keys(connection, tenant: str, terminal_id, show_inactive: bool, after, limit: int, now):
    return await connection.fetch(
        f"""SELECT * FROM {SCHEMA}.api_keys WHERE tenant_id = $1 AND ($2::uuid IS NULL OR terminal_id = $2)
            AND ($3 OR (state = 'active' AND (expire_at IS NULL OR expire_at > $6)))
            AND ($4::uuid IS NULL OR api_key_id > $4) ORDER BY api_key_id LIMIT $5""",
        tenant,
        terminal_id,
        show_inactive,
        after,
        limit,
        now,
    )


async def revoke_key(connection, tenant: str, key_id: uuid.UUID, now):
    return await connection.fetchrow(
        f"""UPDATE {SCHEMA}.api_keys SET state = 'revoked', revoked_at = coalesce(revoked_at, $3)
            WHERE tenant_id = $1 AND api_key_id = $2 RETURNING *""",
        tenant,
        key_id,
        now,
    )


async def expire_key(connection, tenant: str, key_id: uuid.UUID, at):
    return await connection.fetchrow(
        f"""UPDATE {SCHEMA}.api_keys SET expire_at = least(coalesce(expire_at, $3), $3)
            WHERE tenant_id = $1 AND api_key_id = $2 RETURNING *""",
        tenant,
        key_id,
        at,
    )


async def insert_admin_user(connection, tenant: str, user_id, username: str, password_hash: str, roles, now):
    return await connection.fetchrow(
        f"""INSERT INTO {SCHEMA}.admin_users (tenant_id, admin_user_id, username, password_hash, roles,
                created_at) VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (tenant_id, username) DO NOTHING RETURNING *""",
        tenant,
        user_id,
        username,
        password_hash,
        roles,
        now,
    )


async def admin_user_by_name(connection, tenant: str, username: str):
    return await connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.admin_users WHERE tenant_id = $1 AND username = $2", tenant, username
    )


async def append_audit(connection, tenant: str, principal: str, action: str, resource: str, fields, now):
    """Appends one record to the tenant's chain. The advisory lock serialises appends per tenant
    (until COMMIT), so two changes cannot both link to the same predecessor."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"gateway.audit:{tenant}"
    )
    last = await connection.fetchrow(
        f"SELECT sequence, hash FROM {SCHEMA}.audit_log WHERE tenant_id = $1 ORDER BY sequence DESC LIMIT 1",
        tenant,
    )
    sequence, previous = (last["sequence"] + 1, last["hash"]) if last else (1, GENESIS)
    entry = AuditEntry(sequence, principal, action, resource, tuple(fields), now)
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.audit_log (tenant_id, sequence, principal, action, resource, fields,
                created_at, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        tenant,
        sequence,
        principal,
        action,
        resource,
        list(fields),
        now,
        chain_hash(previous, entry),
    )


async def audit_records(connection, tenant: str, before: int | None, limit: int):
    return await connection.fetch(
        f"""SELECT * FROM {SCHEMA}.audit_log WHERE tenant_id = $1 AND ($2::bigint IS NULL OR sequence < $2)
            ORDER BY sequence DESC LIMIT $3""",
        tenant,
        before,
        limit,
    )


def audit_chain(connection, tenant: str):
    """Every record in sequence order, streamed (the log can be long); inside a transaction."""
    return connection.cursor(
        f"SELECT * FROM {SCHEMA}.audit_log WHERE tenant_id = $1 ORDER BY sequence", tenant, prefetch=500
    )


def audit_entry(row) -> AuditEntry:
    return AuditEntry(
        row["sequence"],
        row["principal"],
        row["action"],
        row["resource"],
        tuple(row["fields"]),
        row["created_at"],
    )


# --- checkouts ---


async def checkout(connection, tenant: str, checkout_id: str):
    return await connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.checkouts WHERE tenant_id = $1 AND checkout_id = $2", tenant, checkout_id
    )


async def open_checkout(
    connection, tenant: str, checkout_id: str, values: dict, lease: tuple[str, datetime], now: datetime
):
    """Creates the saga row with its lease taken by `lease` (owner, until); None when the checkout id
    is already taken."""
    return await connection.fetchrow(
        f"""INSERT INTO {SCHEMA}.checkouts (tenant_id, checkout_id, fingerprint, state, request, api_key_id,
                terminal_id, store_id, customer_id, account_id, hold_id, steps, rewards_withheld,
                receipt_number, purchase_at, created_at, updated_at, lease_owner, lease_until)
            VALUES ($1, $2, $3, 'processing', $4, $5, $6, $7, '', '', '', '{{}}', false, $8, $9, $10, $10,
                    $11, $12)
            ON CONFLICT DO NOTHING RETURNING *""",
        tenant,
        checkout_id,
        values["fingerprint"],
        values["request"],
        values["api_key_id"],
        values["terminal_id"],
        values["store_id"],
        values["receipt_number"],
        values["purchase_at"],
        now,
        *lease,
    )


async def claim_checkout(
    connection,
    tenant: str,
    checkout_id: str,
    lease: tuple[str, datetime],
    now: datetime,
    *,
    states: list[str],
    fingerprint: bytes | None,
):
    """Takes the saga's lease if nobody holds it (or a holder's ran out), the saga is still in one of
    `states` and (when given) it is the same sale; None otherwise. The state is checked by the same
    statement that takes the lease: a saga another call finished between our read and this claim
    (committed, cancelled) is never taken up again."""
    return await connection.fetchrow(
        f"""UPDATE {SCHEMA}.checkouts SET lease_owner = $3, lease_until = $4
            WHERE tenant_id = $1 AND checkout_id = $2 AND (lease_until IS NULL OR lease_until < $5)
              AND state = ANY($6::varchar[]) AND ($7::bytea IS NULL OR fingerprint = $7)
            RETURNING *""",
        tenant,
        checkout_id,
        *lease,
        now,
        states,
        fingerprint,
    )


SAGA_COLUMNS = (
    "state",
    "customer_id",
    "account_id",
    "hold_id",
    "evaluation",
    "result",
    "steps",
    "rewards_withheld",
    "expire_at",
    "committed_at",
    "receipt_number",
    "purchase_at",
)


async def save_checkout(
    connection, tenant: str, checkout_id: str, owner: str, values: dict, *, release: bool
):
    """Stores the saga's progress while holding the lease; the row as stored (None if the lease was
    lost meanwhile)."""
    sets = ", ".join(f"{column} = ${n}" for n, column in enumerate(SAGA_COLUMNS, start=5))
    release_sql = ", lease_owner = NULL, lease_until = NULL" if release else ""
    return await connection.fetchrow(
        f"""UPDATE {SCHEMA}.checkouts SET {sets}, updated_at = $4{release_sql}
            WHERE tenant_id = $1 AND checkout_id = $2 AND lease_owner = $3 RETURNING *""",
        tenant,
        checkout_id,
        owner,
        values["updated_at"],
        *(values[c] for c in SAGA_COLUMNS),
    )


async def returns_of(connection, tenant: str, checkout_id: str):
    return await connection.fetch(
        f"""SELECT * FROM {SCHEMA}.checkout_returns WHERE tenant_id = $1 AND checkout_id = $2
            ORDER BY created_at, return_id""",
        tenant,
        checkout_id,
    )


async def open_return(connection, tenant: str, checkout_id: str, return_id: str, fingerprint, units, now):
    return await connection.fetchrow(
        f"""INSERT INTO {SCHEMA}.checkout_returns (tenant_id, checkout_id, return_id, fingerprint, state, units,
                created_at) VALUES ($1, $2, $3, $4, 'processing', $5, $6) ON CONFLICT DO NOTHING RETURNING *""",
        tenant,
        checkout_id,
        return_id,
        fingerprint,
        units,
        now,
    )


async def complete_return(connection, tenant: str, checkout_id: str, return_id: str, answer: bytes) -> bool:
    """False when a concurrent retry completed it first."""
    return await connection.fetchval(
        f"""UPDATE {SCHEMA}.checkout_returns SET state = 'completed', answer = $4
            WHERE tenant_id = $1 AND checkout_id = $2 AND return_id = $3 AND state = 'processing'
            RETURNING true""",
        tenant,
        checkout_id,
        return_id,
        answer,
    )


async def lock_checkout(connection, tenant: str, checkout_id: str):
    """The checkout row, locked until COMMIT: returns against one checkout take turns."""
    return await connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.checkouts WHERE tenant_id = $1 AND checkout_id = $2 FOR UPDATE",
        tenant,
        checkout_id,
    )


# --- manual point adjustments ---


async def claim_adjustment(connection, tenant: str, key: str, values: dict):
    """The adjustment under `key`: a new one inserted from `values` (`created` true), or the one an
    earlier attempt left (`created` false). A concurrent first attempt is waited for by the insert;
    the second statement then sees it (a statement of its own: a fresh snapshot)."""
    columns = list(values)
    created = await connection.fetchrow(
        f"""INSERT INTO {SCHEMA}.adjustments (tenant_id, idempotency_key, state, {", ".join(columns)})
            VALUES ($1, $2, 'pending', {", ".join(f"${i}" for i in range(3, 3 + len(columns)))})
            ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
            RETURNING *, true AS created""",
        tenant,
        key,
        *values.values(),
    )
    return created or await connection.fetchrow(
        f"""SELECT *, false AS created FROM {SCHEMA}.adjustments
            WHERE tenant_id = $1 AND idempotency_key = $2""",
        tenant,
        key,
    )


async def count_adjustment(connection, tenant: str, principal: str, day, points: int, per_day: int):
    """Adds `points` to what `principal` adjusted on `day`, if the total stays within `per_day`: the
    new total, or None (nothing added). One guarded statement, so concurrent adjustments by one
    user queue on the day's row and can never pass the limit together."""
    return await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.adjustment_days AS d (tenant_id, principal, day, adjusted_points)
            SELECT $1, $2, $3::date, $4::bigint WHERE $4::bigint <= $5::bigint
            ON CONFLICT (tenant_id, principal, day) DO UPDATE
            SET adjusted_points = d.adjusted_points + EXCLUDED.adjusted_points
            WHERE d.adjusted_points + EXCLUDED.adjusted_points <= $5::bigint
            RETURNING adjusted_points""",
        tenant,
        principal,
        day,
        points,
        per_day,
    )


async def adjusted_points(connection, tenant: str, principal: str, day) -> int:
    return await connection.fetchval(
        f"""SELECT coalesce(max(adjusted_points), 0) FROM {SCHEMA}.adjustment_days
            WHERE tenant_id = $1 AND principal = $2 AND day = $3""",
        tenant,
        principal,
        day,
    )


async def post_adjustment(connection, tenant: str, key: str, answer: bytes) -> bool:
    """Marks a pending adjustment posted with its answer; False if another attempt did first."""
    done = await connection.fetchval(
        f"""UPDATE {SCHEMA}.adjustments SET state = 'posted', answer = $3
            WHERE tenant_id = $1 AND idempotency_key = $2 AND state = 'pending' RETURNING true""",
        tenant,
        key,
        answer,
    )
    return bool(done)


async def abandon_adjustment(connection, tenant: str, key: str) -> None:
    """Forgets a pending adjustment the ledger refused and gives its points back to the day."""
    await connection.execute(
        f"""WITH gone AS (
                DELETE FROM {SCHEMA}.adjustments
                WHERE tenant_id = $1 AND idempotency_key = $2 AND state = 'pending'
                RETURNING principal, day, abs(amount) AS points)
            UPDATE {SCHEMA}.adjustment_days d SET adjusted_points = d.adjusted_points - gone.points
            FROM gone WHERE d.tenant_id = $1 AND d.principal = gone.principal AND d.day = gone.day""",
        tenant,
        key,
    )


async def adjustment_answer(connection, tenant: str, key: str) -> bytes:
    return await connection.fetchval(
        f"SELECT answer FROM {SCHEMA}.adjustments WHERE tenant_id = $1 AND idempotency_key = $2",
        tenant,
        key,
    )
