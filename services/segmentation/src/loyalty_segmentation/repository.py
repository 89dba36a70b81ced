"""SQL of the segmentation schema on asyncpg. Every statement is scoped by the caller's tenant ($1).

METRICS is the per-customer relation `m` that compiled rules (domain/rules.py) are predicates over:
counts, net spend and returns per rolling window ending at $2 (the unit of work's `now`), and
recency, computed set-based from the purchases and returns tables. `scope` narrows it to some
customers (incremental membership) or not at all (bulk).
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

from loyalty_runtime.uow import UnitOfWork
from loyalty_segmentation.domain.rules import WINDOW_DAYS

SCHEMA = "segmentation"
S = SCHEMA

ENTERED, LEFT = "segment.entered", "segment.left"


def _window(column: str, suffix: str) -> str:
    if suffix == "life":
        return f"{column} <= $2::timestamptz"
    return (
        f"{column} > $2::timestamptz - interval '{WINDOW_DAYS[suffix]} days' AND {column} <= $2::timestamptz"
    )


SUFFIXES = ("7", "30", "90", "365", "life")


def metrics(scope: str) -> str:
    """The metrics relation for the customers `scope` (an SQL condition on c.customer_id) selects."""
    purchase_columns = ", ".join(
        f"count(*) FILTER (WHERE {_window('purchased_at', w)}) AS n_{w}, "
        f"coalesce(sum(net_total) FILTER (WHERE {_window('purchased_at', w)}), 0)::bigint AS s_{w}"
        for w in SUFFIXES
    )
    return_columns = ", ".join(
        f"count(*) FILTER (WHERE {_window('returned_at', w)}) AS n_{w}, "
        f"coalesce(sum(refunded_total) FILTER (WHERE {_window('returned_at', w)}), 0)::bigint AS s_{w}"
        for w in SUFFIXES
    )
    outputs = ", ".join(
        f"coalesce(p.n_{w}, 0) AS purchases_{w}, coalesce(p.s_{w}, 0) - coalesce(r.s_{w}, 0) AS spend_{w}, "
        f"coalesce(r.n_{w}, 0) AS returns_{w}"
        for w in SUFFIXES
    )
    return f"""
        SELECT c.customer_id, {outputs},
               floor(extract(epoch FROM $2::timestamptz - p.last_at) / 86400)::bigint AS days_since_last,
               floor(extract(epoch FROM $2::timestamptz - p.first_at) / 86400)::bigint AS days_since_first,
               p.first_at, p.last_at
        FROM {S}.customers c
        LEFT JOIN (
            SELECT customer_id, {purchase_columns},
                   min(purchased_at) FILTER (WHERE purchased_at <= $2::timestamptz) AS first_at,
                   max(purchased_at) FILTER (WHERE purchased_at <= $2::timestamptz) AS last_at
            FROM {S}.purchases c WHERE tenant_id = $1 AND {scope} GROUP BY customer_id
        ) p USING (customer_id)
        LEFT JOIN (
            SELECT customer_id, {return_columns}
            FROM {S}.returns c WHERE tenant_id = $1 AND {scope} GROUP BY customer_id
        ) r USING (customer_id)
        WHERE c.tenant_id = $1 AND {scope}"""


ALL_CUSTOMERS = "true"
SOME_CUSTOMERS = "c.customer_id = ANY($3::varchar[])"


# Protobuf encoding of SegmentEntered / SegmentLeft {1: segment_id, 2: customer_id} built in SQL,
# so a bulk recompute writes its events in the statement that changes membership (no round trip
# per member). Field tags 0x0a and 0x12; each length fits one varint byte: ids are at most 64 bytes.
_PAYLOAD = (
    "'\\x0a'::bytea || set_byte('\\x00'::bytea, 0, octet_length({s})) || convert_to({s}, 'UTF8')"
    " || '\\x12'::bytea || set_byte('\\x00'::bytea, 0, octet_length({c})) || convert_to({c}, 'UTF8')"
)


def event_payload_sql(segment: str, customer: str) -> str:
    return _PAYLOAD.format(s=segment, c=customer)


def bulk_recompute(predicate: str) -> str:
    """ONE statement: match every customer against the rule, add the new members, remove the ones
    who no longer match, write an event per change to the outbox, refresh the segment's count, and
    return who changed (for the cache). $1 tenant, $2 now, $3 segment id (text), rule values $4..."""
    payload = event_payload_sql("$3::text", "changed.customer_id")
    return f"""
        WITH m AS (SELECT m.customer_id, {predicate} AS hit FROM ({metrics(ALL_CUSTOMERS)}) m),
        diff AS (
            SELECT m.customer_id, m.hit, s.customer_id IS NOT NULL AS was FROM m
            LEFT JOIN {S}.segment_members s
              ON s.tenant_id = $1 AND s.segment_id = $3::uuid AND s.customer_id = m.customer_id),
        entered AS (
            INSERT INTO {S}.segment_members (tenant_id, segment_id, customer_id, joined_at)
            SELECT $1, $3::uuid, customer_id, $2 FROM diff WHERE hit AND NOT was
            ON CONFLICT DO NOTHING RETURNING customer_id),
        gone AS (
            DELETE FROM {S}.segment_members s USING diff d
            WHERE s.tenant_id = $1 AND s.segment_id = $3::uuid AND s.customer_id = d.customer_id
              AND d.was AND NOT d.hit
            RETURNING s.customer_id),
        changed AS (
            SELECT '{ENTERED}' AS event_type, customer_id FROM entered
            UNION ALL SELECT '{LEFT}', customer_id FROM gone),
        events AS (
            INSERT INTO {S}.outbox (tenant_id, event_type, key, payload)
            SELECT $1, changed.event_type, changed.customer_id, {payload} FROM changed),
        counted AS (
            UPDATE {S}.segments SET member_count = (SELECT count(*) FROM diff WHERE hit), refreshed_at = $2
            WHERE tenant_id = $1 AND segment_id = $3::uuid)
        SELECT customer_id FROM changed"""


def evaluate_for(predicates: list[str]) -> str:
    """Which of the given predicates (one per segment, in order) the customers of $3 match now:
    one row per customer with a boolean array."""
    tests = ", ".join(predicates) or "false"
    return f"SELECT m.customer_id, ARRAY[{tests}] AS matches FROM ({metrics(SOME_CUSTOMERS)}) m"


@dataclass(frozen=True)
class SegmentRow:
    segment_id: uuid.UUID
    display_name: str
    description: str
    type: str
    rule: bytes | None
    labels: dict
    member_count: int
    refreshed_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


SEGMENT_COLUMNS = (
    "segment_id, display_name, description, type, rule, labels, member_count, refreshed_at, version,"
    " created_at, updated_at, deleted_at"
)


def _segment(row) -> SegmentRow | None:
    return None if row is None else SegmentRow(**row)


async def insert_segment(
    uow: UnitOfWork,
    segment_id: uuid.UUID,
    name: str,
    description: str,
    type_: str,
    rule: bytes | None,
    labels: dict,
) -> bool:
    """False when a live segment of the tenant already has this name."""
    return bool(
        await uow.connection.fetchval(
            f"""INSERT INTO {S}.segments (tenant_id, segment_id, display_name, description, type, rule,
                    labels, member_count, version, created_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 1, $8, $8)
                ON CONFLICT (tenant_id, display_name) WHERE deleted_at IS NULL DO NOTHING RETURNING true""",
            uow.tenant,
            segment_id,
            name,
            description,
            type_,
            rule,
            labels,
            uow.now,
        )
    )


async def segment(uow: UnitOfWork, segment_id: uuid.UUID, *, lock: bool = False) -> SegmentRow | None:
    row = await uow.connection.fetchrow(
        f"SELECT {SEGMENT_COLUMNS} FROM {S}.segments WHERE tenant_id = $1 AND segment_id = $2"
        + (" FOR UPDATE" if lock else ""),
        uow.tenant,
        segment_id,
    )
    return _segment(row)


async def list_segments(
    uow: UnitOfWork, after: str, limit: int, type_: str | None, show_deleted: bool, labels: dict
) -> list[SegmentRow]:
    rows = await uow.connection.fetch(
        f"""SELECT {SEGMENT_COLUMNS} FROM {S}.segments
            WHERE tenant_id = $1 AND (display_name, segment_id::text) > ($2, $3)
              AND ($4::varchar IS NULL OR type = $4) AND ($5 OR deleted_at IS NULL) AND labels @> $6
            ORDER BY display_name, segment_id LIMIT $7""",
        uow.tenant,
        *_name_key(after),
        type_,
        show_deleted,
        labels,
        limit,
    )
    return [SegmentRow(**row) for row in rows]


def _name_key(after: str) -> tuple[str, str]:
    name, _, segment_id = after.rpartition("\x00")
    return name, segment_id


async def update_segment(uow: UnitOfWork, segment: SegmentRow) -> None:
    await uow.connection.execute(
        f"""UPDATE {S}.segments SET display_name = $3, description = $4, rule = $5, labels = $6,
                version = version + 1, updated_at = $7, deleted_at = $8, member_count = $9
            WHERE tenant_id = $1 AND segment_id = $2""",
        uow.tenant,
        segment.segment_id,
        segment.display_name,
        segment.description,
        segment.rule,
        segment.labels,
        uow.now,
        segment.deleted_at,
        segment.member_count,
    )


async def name_taken(uow: UnitOfWork, name: str, segment_id: uuid.UUID) -> bool:
    return bool(
        await uow.connection.fetchval(
            f"""SELECT true FROM {S}.segments WHERE tenant_id = $1 AND display_name = $2
                AND segment_id <> $3 AND deleted_at IS NULL""",
            uow.tenant,
            name,
            segment_id,
        )
    )


async def live_rule_segments(uow: UnitOfWork) -> list[SegmentRow]:
    """The tenant's live rule segments, locked against a concurrent bulk recompute (which takes them
    FOR UPDATE), so an incremental update and a recompute never interleave. KEY SHARE, not SHARE:
    incremental updates of other customers still adjust the member count (an UPDATE that leaves
    the key alone) without waiting on each other's locks in a cycle."""
    rows = await uow.connection.fetch(
        f"""SELECT {SEGMENT_COLUMNS} FROM {S}.segments
            WHERE tenant_id = $1 AND type = 'rule' AND deleted_at IS NULL ORDER BY segment_id FOR KEY SHARE""",
        uow.tenant,
    )
    return [SegmentRow(**row) for row in rows]


async def recompute(uow: UnitOfWork, segment_id: uuid.UUID, predicate: str, values: list[int]) -> list[str]:
    rows = await uow.connection.fetch(
        bulk_recompute(predicate), uow.tenant, uow.now, str(segment_id), *values
    )
    return [row["customer_id"] for row in rows]


async def evaluate(uow: UnitOfWork, predicates: list[str], values: list[int], customers: list[str]):
    return await uow.connection.fetch(evaluate_for(predicates), uow.tenant, uow.now, customers, *values)


async def count_matching(
    uow: UnitOfWork, predicate: str, values: list[int], sample: int
) -> tuple[int, int, list[str]]:
    row = await uow.connection.fetchrow(
        f"""WITH m AS ({metrics(ALL_CUSTOMERS)})
            SELECT count(*) FILTER (WHERE {predicate}) AS matching, count(*) AS total,
                   (array_agg(m.customer_id ORDER BY m.customer_id) FILTER (WHERE {predicate}))[1:$3]
                   AS sample
            FROM m""",
        uow.tenant,
        uow.now,
        sample,
        *values,
    )
    return row["matching"], row["total"], list(row["sample"] or [])


async def touch_customer(uow: UnitOfWork, customer_id: str) -> None:
    """Know the customer, and lock them: their records and membership changes take turns."""
    await uow.connection.execute(
        f"""INSERT INTO {S}.customers (tenant_id, customer_id, first_seen_at) VALUES ($1, $2, $3)
            ON CONFLICT (tenant_id, customer_id) DO UPDATE SET first_seen_at = {S}.customers.first_seen_at""",
        uow.tenant,
        customer_id,
        uow.now,
    )


async def insert_purchase(
    uow: UnitOfWork, key: str, customer_id: str, at: datetime, total: int, currency: str
) -> bool:
    return bool(
        await uow.connection.fetchval(
            f"""INSERT INTO {S}.purchases (tenant_id, purchase_key, customer_id, purchased_at, net_total,
                    currency_code) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true""",
            uow.tenant,
            key,
            customer_id,
            at,
            total,
            currency,
        )
    )


async def insert_return(
    uow: UnitOfWork, key: str, customer_id: str, checkout_id: str, at: datetime, total: int
) -> bool:
    return bool(
        await uow.connection.fetchval(
            f"""INSERT INTO {S}.returns (tenant_id, return_key, customer_id, checkout_id, returned_at,
                    refunded_total) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true""",
            uow.tenant,
            key,
            customer_id,
            checkout_id,
            at,
            total,
        )
    )


async def memberships(uow: UnitOfWork, customer_id: str) -> list:
    return await uow.connection.fetch(
        f"""SELECT m.segment_id, m.joined_at FROM {S}.segment_members m
            WHERE m.tenant_id = $1 AND m.customer_id = $2 ORDER BY m.segment_id""",
        uow.tenant,
        customer_id,
    )


async def rule_memberships(uow: UnitOfWork, customer_ids: list[str]) -> set[tuple[uuid.UUID, str]]:
    rows = await uow.connection.fetch(
        f"""SELECT m.segment_id, m.customer_id FROM {S}.segment_members m
            JOIN {S}.segments s USING (tenant_id, segment_id)
            WHERE m.tenant_id = $1 AND m.customer_id = ANY($2::varchar[]) AND s.type = 'rule'""",
        uow.tenant,
        customer_ids,
    )
    return {(row["segment_id"], row["customer_id"]) for row in rows}


async def add_members(uow: UnitOfWork, segment_id: uuid.UUID, customer_ids: list[str]) -> list[str]:
    rows = await uow.connection.fetch(
        f"""INSERT INTO {S}.segment_members (tenant_id, segment_id, customer_id, joined_at)
            SELECT $1, $2, c, $3 FROM unnest($4::varchar[]) c ON CONFLICT DO NOTHING RETURNING customer_id""",
        uow.tenant,
        segment_id,
        uow.now,
        customer_ids,
    )
    return [row["customer_id"] for row in rows]


async def remove_members(uow: UnitOfWork, segment_id: uuid.UUID, customer_ids: list[str]) -> list[str]:
    rows = await uow.connection.fetch(
        f"""DELETE FROM {S}.segment_members WHERE tenant_id = $1 AND segment_id = $2
            AND customer_id = ANY($3::varchar[]) RETURNING customer_id""",
        uow.tenant,
        segment_id,
        customer_ids,
    )
    return [row["customer_id"] for row in rows]


async def all_members(uow: UnitOfWork, segment_id: uuid.UUID) -> list[str]:
    rows = await uow.connection.fetch(
        f"SELECT customer_id FROM {S}.segment_members WHERE tenant_id = $1 AND segment_id = $2",
        uow.tenant,
        segment_id,
    )
    return [row["customer_id"] for row in rows]


async def set_member_count(uow: UnitOfWork, segment_id: uuid.UUID) -> None:
    await uow.connection.execute(
        f"""UPDATE {S}.segments SET member_count = (SELECT count(*) FROM {S}.segment_members
                WHERE tenant_id = $1 AND segment_id = $2) WHERE tenant_id = $1 AND segment_id = $2""",
        uow.tenant,
        segment_id,
    )


async def adjust_counts(uow: UnitOfWork, deltas: dict[uuid.UUID, int]) -> None:
    await uow.connection.execute(
        f"""UPDATE {S}.segments s SET member_count = s.member_count + d.delta
            FROM unnest($2::uuid[], $3::bigint[]) AS d(segment_id, delta)
            WHERE s.tenant_id = $1 AND s.segment_id = d.segment_id""",
        uow.tenant,
        list(deltas),
        list(deltas.values()),
    )


async def known_customers(uow: UnitOfWork, customer_ids: list[str]) -> set[str]:
    rows = await uow.connection.fetch(
        f"SELECT customer_id FROM {S}.customers WHERE tenant_id = $1 AND customer_id = ANY($2::varchar[])",
        uow.tenant,
        customer_ids,
    )
    return {row["customer_id"] for row in rows}


async def members_page(uow: UnitOfWork, segment_id: uuid.UUID, after: str, limit: int) -> list:
    return await uow.connection.fetch(
        f"""SELECT customer_id, joined_at FROM {S}.segment_members
            WHERE tenant_id = $1 AND segment_id = $2 AND customer_id > $3 ORDER BY customer_id LIMIT $4""",
        uow.tenant,
        segment_id,
        after,
        limit,
    )


async def purchase_facts(uow: UnitOfWork, customer_id: str):
    return await uow.connection.fetchrow(
        f"""SELECT count(*) AS lifetime, max(purchased_at) AS last_at FROM {S}.purchases
            WHERE tenant_id = $1 AND customer_id = $2""",
        uow.tenant,
        customer_id,
    )


async def customer_metrics(uow: UnitOfWork, customer_id: str):
    return await uow.connection.fetchrow(metrics(SOME_CUSTOMERS), uow.tenant, uow.now, [customer_id])


async def erase_customer(uow: UnitOfWork, customer_id: str) -> list[uuid.UUID]:
    """Forget the customer's purchases, returns and memberships; the segments they left."""
    for table in ("purchases", "returns", "customers"):
        await uow.connection.execute(
            f"DELETE FROM {S}.{table} WHERE tenant_id = $1 AND customer_id = $2", uow.tenant, customer_id
        )
    rows = await uow.connection.fetch(
        f"""DELETE FROM {S}.segment_members WHERE tenant_id = $1 AND customer_id = $2 RETURNING segment_id""",
        uow.tenant,
        customer_id,
    )
    return [row["segment_id"] for row in rows]


async def move_history(uow: UnitOfWork, survivor: str, merged: str) -> None:
    for table in ("purchases", "returns"):
        await uow.connection.execute(
            f"UPDATE {S}.{table} SET customer_id = $2 WHERE tenant_id = $1 AND customer_id = $3",
            uow.tenant,
            survivor,
            merged,
        )


async def tenants(connection) -> list[str]:
    rows = await connection.fetch(f"SELECT DISTINCT tenant_id FROM {S}.segments WHERE deleted_at IS NULL")
    return [row["tenant_id"] for row in rows]
