"""SQL on asyncpg for the fraud service's tables (models.py). Every statement is scoped by the
caller's tenant ($1)."""

from datetime import datetime

from loyalty_fraud.domain.patterns import Needs, ToRecord
from loyalty_fraud.models import SCHEMA
from loyalty_runtime.uow import UnitOfWork

S = SCHEMA

# --- rules and settings ---------------------------------------------------------------------------


async def config(uow: UnitOfWork) -> list:
    """The tenant's configuration in one statement: rows of (part, body, version) where part is
    'version', 'rule' (enabled and shadow) or 'settings'."""
    return list(
        await uow.connection.fetch(
            f"""SELECT 'version' AS part, NULL::bytea AS body, version FROM {S}.config_versions WHERE tenant_id = $1
                UNION ALL SELECT 'rule', body, NULL FROM {S}.rules WHERE tenant_id = $1 AND state <> 'disabled'
                UNION ALL SELECT 'settings', body, NULL FROM {S}.settings WHERE tenant_id = $1""",
            uow.tenant,
        )
    )


async def config_version(uow: UnitOfWork) -> int:
    version = await uow.connection.fetchval(
        f"SELECT version FROM {S}.config_versions WHERE tenant_id = $1", uow.tenant
    )
    return version or 0


async def bump_config_version(uow: UnitOfWork) -> int:
    """Inside the change's transaction: the caches see the change once it commits."""
    return await uow.connection.fetchval(
        f"""INSERT INTO {S}.config_versions (tenant_id, version) VALUES ($1, 1)
            ON CONFLICT (tenant_id) DO UPDATE SET version = {S}.config_versions.version + 1
            RETURNING version""",
        uow.tenant,
    )


# How much history one assessment reads at most: the newest rows win.
HISTORY_ROWS = 2000
# Rows a store's earn statistics are spread over (models.EarnStatsRow): a busy store's earns add to one of
# them at random instead of all waiting on one row's lock.
STORE_SHARDS = 8


async def assessment_inputs(
    uow: UnitOfWork,
    kind: str,
    subject_key: str,
    types: list[str],
    values: list[str],
    *,
    ranges: bool,
    needs: Needs,
    customer_id: str,
    device_hash: str,
) -> list:
    """Everything an assessment reads, in one statement. Rows of (part, body, fingerprint, customer_id,
    fact, subject_key, amount, value, at, earns) where part is 'assessment' (the decision already
    recorded under this key), 'blocklist' (unexpired entries with one of the exact (type, value)
    pairs, and every IP range if asked), and the history the pattern rules need (`needs`): 'stats'
    (earn statistics: customer_id = scope, subject_key = its id), 'activity' (the customer's facts),
    'fingerprint' (fact = type) and 'referral' (referrals from the device). A part not needed costs
    a one-time filter."""
    return list(
        await uow.connection.fetch(
            f"""SELECT 'assessment' AS part, body, fingerprint, NULL AS customer_id, NULL AS fact,
                    NULL AS subject_key, NULL::bigint AS amount, NULL AS value, NULL::timestamptz AS at,
                    NULL::bigint AS earns
                    FROM {S}.assessments WHERE tenant_id = $1 AND kind = $2 AND subject_key = $3
                UNION ALL SELECT 'blocklist', body, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
                    FROM {S}.blocklist_entries
                    WHERE tenant_id = $1 AND (expire_at IS NULL OR expire_at > $4)
                    AND ((type, value) IN (SELECT * FROM unnest($5::text[], $6::text[]))
                         OR ($7 AND type = 'ip_range'))
                UNION ALL (SELECT 'stats', NULL, NULL, scope, NULL, scope_id, sum(points)::bigint, NULL, NULL,
                    sum(earns)::bigint
                    FROM {S}.earn_stats
                    WHERE tenant_id = $1 AND (scope, scope_id) IN (SELECT * FROM unnest($8::text[], $9::text[]))
                    GROUP BY scope, scope_id)
                UNION ALL (SELECT 'activity', NULL, NULL, customer_id, fact, subject_key, amount, value, at, NULL
                    FROM {S}.activity
                    WHERE $10::bigint > 0 AND tenant_id = $1 AND customer_id = $11
                    AND at > $4 - make_interval(secs => $10::bigint / 1000.0)
                    ORDER BY at DESC LIMIT {HISTORY_ROWS})
                UNION ALL SELECT 'fingerprint', NULL, NULL, customer_id, type, NULL, NULL, value, first_seen_at, NULL
                    FROM {S}.customer_fingerprints WHERE tenant_id = $1 AND customer_id = ANY($12::text[])
                UNION ALL (SELECT 'referral', NULL, NULL, customer_id, fact, subject_key, amount, value, at, NULL
                    FROM {S}.activity
                    WHERE $13::bigint > 0 AND tenant_id = $1 AND fact = 'referral' AND value = $14
                    AND at > $4 - make_interval(secs => $13::bigint / 1000.0)
                    ORDER BY at DESC LIMIT {HISTORY_ROWS})""",
            uow.tenant,
            kind,
            subject_key,
            uow.now,
            types,
            values,
            ranges,
            [scope for scope, _ in needs.stats],
            [scope_id for _, scope_id in needs.stats],
            needs.activity_ms,
            customer_id,
            list(needs.fingerprints),
            needs.referrals_ms,
            device_hash,
        )
    )


async def insert_rule(uow: UnitOfWork, rule_id: str, state: str, body: bytes) -> None:
    await uow.connection.execute(
        f"INSERT INTO {S}.rules (tenant_id, rule_id, state, body, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $5)",
        uow.tenant,
        rule_id,
        state,
        body,
        uow.now,
    )


async def rule(uow: UnitOfWork, rule_id: str, *, lock: bool = False) -> bytes | None:
    return await uow.connection.fetchval(
        f"SELECT body FROM {S}.rules WHERE tenant_id = $1 AND rule_id = $2" + (" FOR UPDATE" if lock else ""),
        uow.tenant,
        rule_id,
    )


async def update_rule(uow: UnitOfWork, rule_id: str, state: str, body: bytes) -> None:
    await uow.connection.execute(
        f"UPDATE {S}.rules SET state = $3, body = $4, updated_at = $5 WHERE tenant_id = $1 AND rule_id = $2",
        uow.tenant,
        rule_id,
        state,
        body,
        uow.now,
    )


async def delete_rule(uow: UnitOfWork, rule_id: str) -> bool:
    return (
        await uow.connection.execute(
            f"DELETE FROM {S}.rules WHERE tenant_id = $1 AND rule_id = $2", uow.tenant, rule_id
        )
        != "DELETE 0"
    )


async def list_rules(uow: UnitOfWork, state: str | None, after: str, limit: int) -> list[bytes]:
    rows = await uow.connection.fetch(
        f"""SELECT body FROM {S}.rules WHERE tenant_id = $1 AND ($2::text IS NULL OR state = $2)
            AND rule_id > $3 ORDER BY rule_id LIMIT $4""",
        uow.tenant,
        state,
        after,
        limit,
    )
    return [row["body"] for row in rows]


async def settings(uow: UnitOfWork, *, lock: bool = False) -> bytes | None:
    return await uow.connection.fetchval(
        f"SELECT body FROM {S}.settings WHERE tenant_id = $1" + (" FOR UPDATE" if lock else ""), uow.tenant
    )


async def put_settings(uow: UnitOfWork, body: bytes) -> None:
    await uow.connection.execute(
        f"""INSERT INTO {S}.settings (tenant_id, body, updated_at) VALUES ($1, $2, $3)
            ON CONFLICT (tenant_id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at""",
        uow.tenant,
        body,
        uow.now,
    )


# --- blocklist ------------------------------------------------------------------------------------


async def insert_entry(
    uow: UnitOfWork, entry_id: str, kind: str, value: str, expire_at: datetime | None, body: bytes
) -> bytes | None:
    """The new entry's body, or None when the value is blocked already."""
    return await uow.connection.fetchval(
        f"""INSERT INTO {S}.blocklist_entries (tenant_id, entry_id, type, value, expire_at, body, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING body""",
        uow.tenant,
        entry_id,
        kind,
        value,
        expire_at,
        body,
        uow.now,
    )


async def entry_by_value(uow: UnitOfWork, kind: str, value: str) -> bytes | None:
    return await uow.connection.fetchval(
        f"SELECT body FROM {S}.blocklist_entries WHERE tenant_id = $1 AND type = $2 AND value = $3",
        uow.tenant,
        kind,
        value,
    )


async def entry(uow: UnitOfWork, entry_id: str) -> bytes | None:
    return await uow.connection.fetchval(
        f"SELECT body FROM {S}.blocklist_entries WHERE tenant_id = $1 AND entry_id = $2", uow.tenant, entry_id
    )


async def entry_for_update(uow: UnitOfWork, entry_id: str) -> bytes | None:
    return await uow.connection.fetchval(
        f"SELECT body FROM {S}.blocklist_entries WHERE tenant_id = $1 AND entry_id = $2 FOR UPDATE",
        uow.tenant,
        entry_id,
    )


async def update_entry(uow: UnitOfWork, entry_id: str, expire_at: datetime | None, body: bytes) -> None:
    await uow.connection.execute(
        f"UPDATE {S}.blocklist_entries SET expire_at = $3, body = $4 WHERE tenant_id = $1 AND entry_id = $2",
        uow.tenant,
        entry_id,
        expire_at,
        body,
    )


async def delete_entry(uow: UnitOfWork, entry_id: str) -> bool:
    status = await uow.connection.execute(
        f"DELETE FROM {S}.blocklist_entries WHERE tenant_id = $1 AND entry_id = $2", uow.tenant, entry_id
    )
    return status != "DELETE 0"


async def list_entries(
    uow: UnitOfWork, kind: str | None, value: str, show_expired: bool, after: str, limit: int
) -> list[bytes]:
    rows = await uow.connection.fetch(
        f"""SELECT body FROM {S}.blocklist_entries WHERE tenant_id = $1
            AND ($2::text IS NULL OR type = $2) AND ($3 = '' OR value = $3)
            AND ($4 OR expire_at IS NULL OR expire_at > $5) AND entry_id > $6
            ORDER BY entry_id LIMIT $7""",
        uow.tenant,
        kind,
        value,
        show_expired,
        uow.now,
        after,
        limit,
    )
    return [row["body"] for row in rows]


# --- assessments ----------------------------------------------------------------------------------


async def assessment_by_subject(uow: UnitOfWork, kind: str, subject_key: str):
    return await uow.connection.fetchrow(
        f"SELECT fingerprint, body FROM {S}.assessments WHERE tenant_id = $1 AND kind = $2 AND subject_key = $3",
        uow.tenant,
        kind,
        subject_key,
    )


async def record_assessment(
    uow: UnitOfWork,
    assessment_id: str,
    kind: str,
    subject_key: str,
    fingerprint: bytes,
    customer_id: str,
    decision: str,
    body: bytes,
    review_case_id: str,
    history: ToRecord,
) -> bool:
    """Record the decision, its review case (when `review_case_id`) with the case's audit line, and
    the history it adds, in one statement; False when a concurrent call with the same key committed
    first (this one waited), and then nothing of this call is written."""
    facts, earns, prints = history.facts, history.earns, history.fingerprints
    return bool(
        await uow.connection.fetchval(
            f"""WITH recorded AS (
                    INSERT INTO {S}.assessments (tenant_id, assessment_id, kind, subject_key, fingerprint,
                        customer_id, decision, created_at, body)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING assessment_id),
                opened AS (
                    INSERT INTO {S}.review_cases (tenant_id, review_case_id, assessment_id, customer_id, state,
                        created_at)
                    SELECT $1, $10::text, assessment_id, $6, 'open', $8 FROM recorded WHERE $10::text <> ''
                    RETURNING review_case_id),
                audited AS (
                    INSERT INTO {S}.review_case_audit (tenant_id, review_case_id, action, principal, note, at)
                    SELECT $1, review_case_id, 'open', $11, '', $8 FROM opened),
                facts AS (
                    INSERT INTO {S}.activity (tenant_id, customer_id, fact, subject_key, amount, value, at)
                    SELECT $1, f.customer_id, f.fact, $4, f.amount, f.value, $8
                    FROM unnest($12::text[], $13::text[], $14::bigint[], $15::text[])
                        AS f(customer_id, fact, amount, value)
                    WHERE EXISTS (SELECT 1 FROM recorded)),
                earned AS (
                    INSERT INTO {S}.earn_stats AS s (tenant_id, scope, scope_id, shard, earns, points)
                    SELECT $1, e.scope, e.scope_id,
                        CASE WHEN e.scope = 'store' THEN floor(random() * {STORE_SHARDS})::smallint ELSE 0 END,
                        1, e.points
                    FROM unnest($16::text[], $17::text[], $18::bigint[]) AS e(scope, scope_id, points)
                    WHERE EXISTS (SELECT 1 FROM recorded)
                    ON CONFLICT (tenant_id, scope, scope_id, shard)
                    DO UPDATE SET earns = s.earns + 1, points = s.points + excluded.points),
                seen AS (
                    INSERT INTO {S}.customer_fingerprints (tenant_id, customer_id, type, value, first_seen_at)
                    SELECT $1, p.customer_id, p.type, p.value, $8
                    FROM unnest($19::text[], $20::text[], $21::text[]) AS p(customer_id, type, value)
                    WHERE EXISTS (SELECT 1 FROM recorded)
                    ON CONFLICT DO NOTHING)
                SELECT count(*) > 0 FROM recorded""",
            uow.tenant,
            assessment_id,
            kind,
            subject_key,
            fingerprint,
            customer_id,
            decision,
            uow.now,
            body,
            review_case_id,
            uow.call.principal or "",
            [f.customer_id for f in facts],
            [f.fact for f in facts],
            [f.amount for f in facts],
            [f.value for f in facts],
            [scope for scope, _, _ in earns],
            [scope_id for _, scope_id, _ in earns],
            [points for _, _, points in earns],
            [customer for customer, _, _ in prints],
            [kind_.value for _, kind_, _ in prints],
            [value for _, _, value in prints],
        )
    )


async def record_account_change(uow: UnitOfWork, customer_id: str, event_key: str, fields: str) -> None:
    """An account change (profile's customer.updated) for the takeover rule."""
    await uow.connection.execute(
        f"""INSERT INTO {S}.activity (tenant_id, customer_id, fact, subject_key, amount, value, at)
            VALUES ($1, $2, 'account_change', $3, 0, $4, $5)""",
        uow.tenant,
        customer_id,
        event_key,
        fields,
        uow.now,
    )


async def assessment(uow: UnitOfWork, assessment_id: str) -> bytes | None:
    return await uow.connection.fetchval(
        f"SELECT body FROM {S}.assessments WHERE tenant_id = $1 AND assessment_id = $2",
        uow.tenant,
        assessment_id,
    )


async def list_assessments(
    uow: UnitOfWork,
    *,
    customer_id: str,
    kind: str | None,
    decision: str | None,
    start: datetime | None,
    end: datetime | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list:
    """Newest first; `before` is the (created_at, assessment_id) of the last row of the page before."""
    rows = await uow.connection.fetch(
        f"""SELECT assessment_id, created_at, body FROM {S}.assessments WHERE tenant_id = $1
            AND ($2 = '' OR customer_id = $2) AND ($3::text IS NULL OR kind = $3)
            AND ($4::text IS NULL OR decision = $4)
            AND ($5::timestamptz IS NULL OR created_at >= $5) AND ($6::timestamptz IS NULL OR created_at < $6)
            AND ($7::timestamptz IS NULL OR (created_at, assessment_id) < ($7, $8))
            ORDER BY created_at DESC, assessment_id DESC LIMIT $9""",
        uow.tenant,
        customer_id,
        kind,
        decision,
        start,
        end,
        before[0] if before else None,
        before[1] if before else "",
        limit,
    )
    return list(rows)


# --- review cases ---------------------------------------------------------------------------------

CASE_COLUMNS = """c.review_case_id, c.state, c.customer_id, c.resolved_by, c.resolution_note, c.created_at,
    c.resolved_at, c.assignee, a.body AS assessment"""


async def case(uow: UnitOfWork, case_id: str):
    return await uow.connection.fetchrow(
        f"""SELECT {CASE_COLUMNS} FROM {S}.review_cases c
            JOIN {S}.assessments a ON a.tenant_id = c.tenant_id AND a.assessment_id = c.assessment_id
            WHERE c.tenant_id = $1 AND c.review_case_id = $2""",
        uow.tenant,
        case_id,
    )


async def list_cases(
    uow: UnitOfWork,
    state: str | None,
    customer_id: str,
    assignee: str,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list:
    """Oldest first (the queue's order)."""
    return list(
        await uow.connection.fetch(
            f"""SELECT {CASE_COLUMNS} FROM {S}.review_cases c
                JOIN {S}.assessments a ON a.tenant_id = c.tenant_id AND a.assessment_id = c.assessment_id
                WHERE c.tenant_id = $1 AND ($2::text IS NULL OR c.state = $2) AND ($3 = '' OR c.customer_id = $3)
                AND ($4::timestamptz IS NULL OR (c.created_at, c.review_case_id) > ($4, $5))
                AND ($7 = '' OR c.assignee = $7)
                ORDER BY c.created_at, c.review_case_id LIMIT $6""",
            uow.tenant,
            state,
            customer_id,
            after[0] if after else None,
            after[1] if after else "",
            limit,
            assignee,
        )
    )


async def resolve_case(uow: UnitOfWork, case_id: str, state: str, note: str) -> bool:
    """Resolve an open case and audit it in one statement; False when it was not open."""
    return bool(
        await uow.connection.fetchval(
            f"""WITH resolved AS (
                    UPDATE {S}.review_cases SET state = $3, resolution_note = $4, resolved_by = $5, resolved_at = $6
                    WHERE tenant_id = $1 AND review_case_id = $2 AND state = 'open' RETURNING review_case_id),
                audited AS (
                    INSERT INTO {S}.review_case_audit (tenant_id, review_case_id, action, principal, note, at)
                    SELECT $1, review_case_id, $3, $5, $4, $6 FROM resolved)
                SELECT count(*) > 0 FROM resolved""",
            uow.tenant,
            case_id,
            state,
            note,
            uow.call.principal or "",
            uow.now,
        )
    )


async def assign_case(uow: UnitOfWork, case_id: str, assignee: str) -> bool:
    """Assign an open case and audit it in one statement; False when it was not open."""
    return bool(
        await uow.connection.fetchval(
            f"""WITH assigned AS (
                    UPDATE {S}.review_cases SET assignee = $3
                    WHERE tenant_id = $1 AND review_case_id = $2 AND state = 'open' RETURNING review_case_id),
                audited AS (
                    INSERT INTO {S}.review_case_audit (tenant_id, review_case_id, action, principal, note, at)
                    SELECT $1, review_case_id, 'assign', $4, $3, $5 FROM assigned)
                SELECT count(*) > 0 FROM assigned""",
            uow.tenant,
            case_id,
            assignee,
            uow.call.principal or "",
            uow.now,
        )
    )


async def case_audit(uow: UnitOfWork, case_id: str) -> list:
    return list(
        await uow.connection.fetch(
            f"""SELECT action, principal, note, at FROM {S}.review_case_audit
                WHERE tenant_id = $1 AND review_case_id = $2 ORDER BY seq""",
            uow.tenant,
            case_id,
        )
    )


# --- customer data --------------------------------------------------------------------------------


async def customer_assessments(uow: UnitOfWork, customer_id: str) -> list[bytes]:
    rows = await uow.connection.fetch(
        f"SELECT body FROM {S}.assessments WHERE tenant_id = $1 AND customer_id = $2 ORDER BY created_at, assessment_id",
        uow.tenant,
        customer_id,
    )
    return [row["body"] for row in rows]


async def customer_fingerprints(uow: UnitOfWork, customer_id: str) -> list:
    return list(
        await uow.connection.fetch(
            f"SELECT type, value FROM {S}.customer_fingerprints WHERE tenant_id = $1 AND customer_id = $2"
            " ORDER BY type, value",
            uow.tenant,
            customer_id,
        )
    )


async def erase_history(uow: UnitOfWork, customer_id: str) -> None:
    """The pattern rules' history of the customer; their recorded decisions keep the (pseudonymous) id."""
    await uow.connection.execute(
        f"""WITH facts AS (DELETE FROM {S}.activity WHERE tenant_id = $1 AND customer_id = $2),
                prints AS (DELETE FROM {S}.customer_fingerprints WHERE tenant_id = $1 AND customer_id = $2),
                lockouts AS (DELETE FROM {S}.code_lockouts WHERE tenant_id = $1 AND key = 'customer' AND value = $2)
            DELETE FROM {S}.earn_stats WHERE tenant_id = $1 AND scope = 'customer' AND scope_id = $2""",
        uow.tenant,
        customer_id,
    )


async def merge_history(uow: UnitOfWork, survivor_id: str, merged_id: str) -> None:
    """The duplicate's history becomes the survivor's (its earns add to the survivor's usual)."""
    await uow.connection.execute(
        f"""WITH lockouts AS (UPDATE {S}.code_lockouts SET value = $2
                              WHERE tenant_id = $1 AND key = 'customer' AND value = $3)
            UPDATE {S}.activity SET customer_id = $2 WHERE tenant_id = $1 AND customer_id = $3""",
        uow.tenant,
        survivor_id,
        merged_id,
    )
    await uow.connection.execute(
        f"""WITH moved AS (DELETE FROM {S}.customer_fingerprints WHERE tenant_id = $1 AND customer_id = $3
                RETURNING type, value, first_seen_at)
            INSERT INTO {S}.customer_fingerprints (tenant_id, customer_id, type, value, first_seen_at)
            SELECT $1, $2, type, value, first_seen_at FROM moved
            ON CONFLICT (tenant_id, customer_id, type, value)
            DO UPDATE SET first_seen_at = least({S}.customer_fingerprints.first_seen_at, excluded.first_seen_at)""",
        uow.tenant,
        survivor_id,
        merged_id,
    )
    await uow.connection.execute(
        f"""WITH moved AS (DELETE FROM {S}.earn_stats WHERE tenant_id = $1 AND scope = 'customer' AND scope_id = $3
                RETURNING earns, points)
            INSERT INTO {S}.earn_stats AS s (tenant_id, scope, scope_id, shard, earns, points)
            SELECT $1, 'customer', $2, 0, earns, points FROM moved
            ON CONFLICT (tenant_id, scope, scope_id, shard)
            DO UPDATE SET earns = s.earns + excluded.earns, points = s.points + excluded.points""",
        uow.tenant,
        survivor_id,
        merged_id,
    )


# --- retention ------------------------------------------------------------------------------------


async def history_tenants(connection) -> list[str]:
    """Every tenant with history (the retention's only cross-tenant read)."""
    rows = await connection.fetch(f"SELECT DISTINCT tenant_id FROM {S}.activity")
    return [row["tenant_id"] for row in rows]


async def forget_old_activity(uow: UnitOfWork, before: datetime, limit: int) -> int:
    """Delete up to `limit` of the tenant's facts older than `before`; how many went."""
    status = await uow.connection.execute(
        f"""DELETE FROM {S}.activity WHERE seq IN (
                SELECT seq FROM {S}.activity WHERE tenant_id = $1 AND at < $2 LIMIT $3)""",
        uow.tenant,
        before,
        limit,
    )
    return int(status.split()[-1])


# --- code lockouts --------------------------------------------------------------------------------


async def record_lockout(uow: UnitOfWork, key: str, value: str, locked_at: datetime, body: bytes) -> None:
    await uow.connection.execute(
        f"""INSERT INTO {S}.code_lockouts (tenant_id, key, value, locked_at, body)
            VALUES ($1, $2, $3, $4, $5)""",
        uow.tenant,
        key,
        value,
        locked_at,
        body,
    )


async def list_lockouts(
    uow: UnitOfWork, key: str | None, value: str, before: int | None, limit: int
) -> list[tuple[int, str, bytes]]:
    """(seq, value, body), newest first."""
    rows = await uow.connection.fetch(
        f"""SELECT seq, value, body FROM {S}.code_lockouts WHERE tenant_id = $1
            AND ($2::text IS NULL OR key = $2) AND ($3 = '' OR value = $3)
            AND ($4::bigint IS NULL OR seq < $4)
            ORDER BY seq DESC LIMIT $5""",
        uow.tenant,
        key,
        value,
        before,
        limit,
    )
    return [(row["seq"], row["value"], row["body"]) for row in rows]
