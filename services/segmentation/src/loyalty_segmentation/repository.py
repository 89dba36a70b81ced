"""SQL of the segmentation schema on asyncpg. Every statement is scoped by the caller's tenant ($1).

METRICS is the per-customer relation `m` that compiled rules (domain/rules.py) are predicates over:
counts, net spend and returns per rolling window ending at $2 (the unit of work's `now`), and
recency, computed set-based from the purchases and returns tables. `scope` narrows it to some
customers (incremental membership) or not at all (bulk).
"""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from loyalty_runtime.uow import UnitOfWork
from loyalty_segmentation.domain.rules import window_sql

SCHEMA = "segmentation"
S = SCHEMA

ENTERED, LEFT = "segment.entered", "segment.left"


SUFFIXES = ("7", "30", "90", "365", "life")
# Every metric column: what GetCustomerMetrics and the exports read.
EVERYTHING = frozenset(
    [f"{name}_{w}" for name in ("purchases", "spend", "returns") for w in SUFFIXES]
    + ["first_at", "last_at", "rfm"]
)


def metrics(scope: str, needs: frozenset[str] | set[str] = EVERYTHING) -> str:
    """The metrics relation for the customers `scope` (an SQL condition on c.customer_id) selects,
    with the profile attributes and only the metric columns in `needs`: a rule over spend in one
    window aggregates the purchases once for that one sum, and joins no returns it does not read.
    (`evaluated_at` keeps $2 typed when no column reads it.)"""
    purchased, returned, outputs = [], [], []
    for w in SUFFIXES:
        in_window = window_sql("purchased_at", w)
        if f"purchases_{w}" in needs:
            purchased.append(f"count(*) FILTER (WHERE {in_window}) AS n_{w}")
            outputs.append(f"coalesce(p.n_{w}, 0) AS purchases_{w}")
        if f"spend_{w}" in needs:
            purchased.append(f"coalesce(sum(net_total) FILTER (WHERE {in_window}), 0)::bigint AS s_{w}")
            returned.append(
                f"coalesce(sum(refunded_total) FILTER (WHERE {window_sql('returned_at', w)}), 0)::bigint AS s_{w}"
            )
            outputs.append(f"coalesce(p.s_{w}, 0) - coalesce(r.s_{w}, 0) AS spend_{w}")
        if f"returns_{w}" in needs:
            returned.append(f"count(*) FILTER (WHERE {window_sql('returned_at', w)}) AS n_{w}")
            outputs.append(f"coalesce(r.n_{w}, 0) AS returns_{w}")
    for moment, aggregate in (("first_at", "min"), ("last_at", "max")):
        if moment in needs:
            purchased.append(
                f"{aggregate}(purchased_at) FILTER (WHERE purchased_at <= $2::timestamptz) AS {moment}"
            )
            outputs.append(f"p.{moment}")
    joins = []
    if purchased:
        joins.append(
            f"""LEFT JOIN (SELECT customer_id, {", ".join(purchased)} FROM {S}.purchases c
                WHERE tenant_id = $1 AND {scope} GROUP BY customer_id) p USING (customer_id)"""
        )
    if returned:
        joins.append(
            f"""LEFT JOIN (SELECT customer_id, {", ".join(returned)} FROM {S}.returns c
                WHERE tenant_id = $1 AND {scope} GROUP BY customer_id) r USING (customer_id)"""
        )
    if "rfm" in needs:
        joins.append(f"LEFT JOIN {S}.rfm_scores f ON f.tenant_id = $1 AND f.customer_id = c.customer_id")
        outputs += [
            f"coalesce(f.{score}_score, 0) AS rfm_{score}" for score in ("recency", "frequency", "monetary")
        ]
    return f"""
        SELECT c.customer_id, c.birth_date, c.locale, coalesce(c.enrolled_at, c.first_seen_at) AS enrolled_at,
               c.attributes, c.consents, $2::timestamptz AS evaluated_at{"".join(", " + o for o in outputs)}
        FROM {S}.customers c {" ".join(joins)}
        WHERE c.tenant_id = $1 AND {scope}"""


ALL_CUSTOMERS = "true"
SOME_CUSTOMERS = "c.customer_id = ANY($3::varchar[])"
# A slice of the population by customer id: after $4, up to and including $5 (NULL: to the end).
SLICE = "c.customer_id > $4::varchar AND ($5::varchar IS NULL OR c.customer_id <= $5::varchar)"


# Protobuf encoding of SegmentEntered / SegmentLeft {1: segment_id, 2: customer_id} built in SQL,
# so a bulk recompute writes its events in the statement that changes membership (no round trip
# per member). Field tags 0x0a and 0x12; each length fits one varint byte: ids are at most 64 bytes.
_PAYLOAD = (
    "'\\x0a'::bytea || set_byte('\\x00'::bytea, 0, octet_length({s})) || convert_to({s}, 'UTF8')"
    " || '\\x12'::bytea || set_byte('\\x00'::bytea, 0, octet_length({c})) || convert_to({c}, 'UTF8')"
)


def event_payload_sql(segment: str, customer: str) -> str:
    return _PAYLOAD.format(s=segment, c=customer)


def bulk_recompute(predicate: str, needs: set[str]) -> str:
    """ONE statement for one slice of the population: match its customers against the rule, add the
    new members, remove the ones who no longer match, write an event per change to the outbox,
    move the segment's count and progress (and finish it after the last slice), and return who
    changed (for the cache). $1 tenant, $2 now, $3 segment id (text), $4/$5 the slice, rule values
    $6..."""
    payload = event_payload_sql("$3::text", "changed.customer_id")
    return f"""
        WITH m AS (SELECT m.customer_id, {predicate} AS hit FROM ({metrics(SLICE, needs)}) m),
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
            UPDATE {S}.segments SET
                member_count = member_count + (SELECT count(*) FROM entered) - (SELECT count(*) FROM gone),
                recompute_done = recompute_done + (SELECT count(*) FROM m),
                computing = $5::varchar IS NOT NULL,
                refreshed_at = CASE WHEN $5::varchar IS NULL THEN $2 ELSE refreshed_at END
            WHERE tenant_id = $1 AND segment_id = $3::uuid)
        SELECT customer_id FROM changed"""


def evaluate_for(predicates: list[str], needs: set[str]) -> str:
    """Which of the given predicates (one per segment, in order) the customers of $3 match now:
    one row per customer with a boolean array."""
    tests = ", ".join(predicates) or "false"
    return f"SELECT m.customer_id, ARRAY[{tests}] AS matches FROM ({metrics(SOME_CUSTOMERS, needs)}) m"


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
    rule_version: int
    computing: bool
    recompute_done: int
    recompute_total: int


SEGMENT_COLUMNS = (
    "segment_id, display_name, description, type, rule, labels, member_count, refreshed_at, version,"
    " created_at, updated_at, deleted_at, rule_version, computing, recompute_done, recompute_total"
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
                version = version + 1, updated_at = $7, deleted_at = $8, member_count = $9, computing = $10
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
        segment.computing,
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


async def live_segment_ids(uow: UnitOfWork, segment_ids: list[str], *, lock: bool = False) -> set[str]:
    """Those of `segment_ids` (text) that are live segments of the tenant; `lock`: kept so (FOR
    SHARE: a delete waits) until this transaction ends."""
    rows = await uow.connection.fetch(
        f"""SELECT segment_id::text AS segment_id FROM {S}.segments
            WHERE tenant_id = $1 AND segment_id::text = ANY($2::varchar[]) AND deleted_at IS NULL"""
        + (" ORDER BY segment_id FOR SHARE" if lock else ""),
        uow.tenant,
        segment_ids,
    )
    return {row["segment_id"] for row in rows}


async def lock_rules(uow: UnitOfWork) -> None:
    """The tenant's rule changes and deletes take turns (a transaction-scoped advisory lock)."""
    await uow.connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('segmentation.rules:' || $1, 0))", uow.tenant
    )


async def evaluate(
    uow: UnitOfWork, predicates: list[str], needs: set[str], values: list, customers: list[str]
):
    return await uow.connection.fetch(
        evaluate_for(predicates, needs), uow.tenant, uow.now, customers, *values
    )


async def count_matching(
    uow: UnitOfWork, predicate: str, needs: set[str], values: list, sample: int
) -> tuple[int, int, list[str]]:
    row = await uow.connection.fetchrow(
        f"""WITH m AS ({metrics(ALL_CUSTOMERS, needs)})
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


async def insert_categories(
    uow: UnitOfWork, key: str, customer_id: str, at: datetime, categories: list[str]
) -> None:
    await uow.connection.execute(
        f"""INSERT INTO {S}.purchase_categories (tenant_id, purchase_key, category, customer_id, purchased_at)
            SELECT $1, $2, c, $3, $4 FROM unnest($5::varchar[]) c ON CONFLICT DO NOTHING""",
        uow.tenant,
        key,
        customer_id,
        at,
        categories,
    )


async def insert_code_redemptions(
    uow: UnitOfWork,
    customer_id: str,
    checkout_id: str,
    at: datetime,
    redemptions: list[tuple[str, str]],
    *,
    released: bool = False,
) -> int:
    """(redemption id, voucher id) pairs, each recorded once, committed or `released`; how many
    changed. A release marks the row (or leaves one for a commit delivered after it)."""
    conflict = (
        f"DO UPDATE SET released_at = excluded.released_at WHERE {S}.code_redemptions.released_at IS NULL"
        if released
        else "DO NOTHING"
    )
    return await uow.connection.fetchval(
        f"""WITH changed AS (
                INSERT INTO {S}.code_redemptions (tenant_id, redemption_id, customer_id, checkout_id,
                    voucher_id, redeemed_at, released_at)
                SELECT $1, r, $2, $3, v, $4::timestamptz, CASE WHEN $7::boolean THEN $4::timestamptz END
                FROM unnest($5::varchar[], $6::varchar[]) AS x(r, v)
                ON CONFLICT (tenant_id, redemption_id) {conflict} RETURNING 1)
            SELECT count(*) FROM changed""",
        uow.tenant,
        customer_id,
        checkout_id,
        at,
        [r for r, _ in redemptions],
        [v for _, v in redemptions],
        released,
    )


async def window_counts(uow: UnitOfWork, customer_id: str) -> dict[str, tuple[int, int]]:
    """Per window suffix: (distinct categories bought, codes redeemed)."""
    counted = []
    for table, column, count, only in (
        ("purchase_categories", "purchased_at", "count(DISTINCT category)", "true"),
        ("code_redemptions", "redeemed_at", "count(*)", "released_at IS NULL"),
    ):
        windows = ", ".join(
            f"{count} FILTER (WHERE {only} AND {window_sql(column, w)}) AS n_{w}" for w in SUFFIXES
        )
        counted.append(
            await uow.connection.fetchrow(
                f"SELECT {windows} FROM {S}.{table} WHERE tenant_id = $1 AND customer_id = $3",
                uow.tenant,
                uow.now,
                customer_id,
            )
        )
    categories, codes = counted
    return {w: (categories[f"n_{w}"], codes[f"n_{w}"]) for w in SUFFIXES}


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


async def change_memberships(
    uow: UnitOfWork, entered: list[tuple[uuid.UUID, str]], left: list[tuple[uuid.UUID, str]]
) -> None:
    """(segment, customer) pairs enter and leave, and each segment's count follows: one statement."""
    await uow.connection.execute(
        f"""WITH entered AS (
                INSERT INTO {S}.segment_members (tenant_id, segment_id, customer_id, joined_at)
                SELECT $1, e.s, e.c, $2 FROM unnest($3::uuid[], $4::varchar[]) AS e(s, c)
                ON CONFLICT DO NOTHING RETURNING segment_id),
            gone AS (
                DELETE FROM {S}.segment_members m USING unnest($5::uuid[], $6::varchar[]) AS l(s, c)
                WHERE m.tenant_id = $1 AND m.segment_id = l.s AND m.customer_id = l.c RETURNING m.segment_id),
            deltas AS (
                SELECT segment_id, sum(delta) AS delta FROM (
                    SELECT segment_id, 1 AS delta FROM entered UNION ALL SELECT segment_id, -1 FROM gone) x
                GROUP BY segment_id)
            UPDATE {S}.segments s SET member_count = s.member_count + d.delta FROM deltas d
            WHERE s.tenant_id = $1 AND s.segment_id = d.segment_id""",
        uow.tenant,
        uow.now,
        [segment for segment, _ in entered],
        [customer for _, customer in entered],
        [segment for segment, _ in left],
        [customer for _, customer in left],
    )


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
    for table in (
        "purchases",
        "purchase_categories",
        "returns",
        "activities",
        "code_redemptions",
        "rfm_scores",
        "customers",
    ):
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
    for table in ("purchases", "purchase_categories", "returns", "activities", "code_redemptions"):
        await uow.connection.execute(
            f"UPDATE {S}.{table} SET customer_id = $2 WHERE tenant_id = $1 AND customer_id = $3",
            uow.tenant,
            survivor,
            merged,
        )


async def tenants(connection) -> list[str]:
    rows = await connection.fetch(f"SELECT DISTINCT tenant_id FROM {S}.segments WHERE deleted_at IS NULL")
    return [row["tenant_id"] for row in rows]


# --- background recompute ---------------------------------------------------------------------------


async def start_recompute(uow: UnitOfWork, segment_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Mark the segments computing from the first customer, over today's population, under a new
    version: a chain still computing an older one (an older rule, or one whose job died) stops at
    its next slice. Returns each segment's version."""
    rows = await uow.connection.fetch(
        f"""UPDATE {S}.segments SET computing = true, recompute_done = 0,
                recompute_total = (SELECT count(*) FROM {S}.customers WHERE tenant_id = $1),
                rule_version = rule_version + 1
            WHERE tenant_id = $1 AND segment_id = ANY($2::uuid[]) RETURNING segment_id, rule_version""",
        uow.tenant,
        segment_ids,
    )
    return {row["segment_id"]: row["rule_version"] for row in rows}


async def slice_end(uow: UnitOfWork, after: str, size: int) -> str | None:
    """The last customer id of the slice of `size` customers after `after`; None: the slice runs
    to the end of the population."""
    return await uow.connection.fetchval(
        f"""SELECT customer_id FROM {S}.customers WHERE tenant_id = $1 AND customer_id > $2
            ORDER BY customer_id OFFSET $3 LIMIT 1""",
        uow.tenant,
        after,
        size - 1,
    )


async def recompute(
    uow: UnitOfWork,
    segment_id: uuid.UUID,
    predicate: str,
    needs: set[str],
    values: list,
    after: str,
    upto: str | None,
) -> list[str]:
    rows = await uow.connection.fetch(
        bulk_recompute(predicate, needs), uow.tenant, uow.now, str(segment_id), after, upto, *values
    )
    return [row["customer_id"] for row in rows]


# --- profile attributes -----------------------------------------------------------------------------


async def attribute_types(uow: UnitOfWork) -> dict[str, str]:
    rows = await uow.connection.fetch(
        f"SELECT name, type FROM {S}.attribute_types WHERE tenant_id = $1", uow.tenant
    )
    return {row["name"]: row["type"] for row in rows}


async def rule_context(uow: UnitOfWork) -> tuple[dict[str, str], str]:
    """What compiling the tenant's rules takes, in one round trip: its attribute types and its time
    zone (UTC until set)."""
    row = await uow.connection.fetchrow(
        f"""SELECT (SELECT coalesce(jsonb_object_agg(name, type), '{{}}'::jsonb) FROM {S}.attribute_types
                    WHERE tenant_id = $1) AS attributes,
                   (SELECT time_zone FROM {S}.tenant_settings WHERE tenant_id = $1) AS time_zone""",
        uow.tenant,
    )
    return row["attributes"], row["time_zone"] or "UTC"


async def settings(uow: UnitOfWork, *, lock: bool = False):
    """(time zone, version, updated_at, gateway_version) of the tenant's settings; None while it has
    the defaults."""
    return await uow.connection.fetchrow(
        f"""SELECT time_zone, version, updated_at, gateway_version FROM {S}.tenant_settings
            WHERE tenant_id = $1"""
        + (" FOR UPDATE" if lock else ""),
        uow.tenant,
    )


async def save_settings(uow: UnitOfWork, time_zone: str):
    return await uow.connection.fetchrow(
        f"""INSERT INTO {S}.tenant_settings (tenant_id, time_zone, version, updated_at) VALUES ($1, $2, 1, $3)
            ON CONFLICT (tenant_id) DO UPDATE SET time_zone = excluded.time_zone,
                version = {S}.tenant_settings.version + 1, updated_at = excluded.updated_at
            RETURNING time_zone, version, updated_at, gateway_version""",
        uow.tenant,
        time_zone,
        uow.now,
    )


async def follow_gateway_settings(uow: UnitOfWork, time_zone: str, gateway_version: int):
    """Copy the gateway's time zone unless a copy of this or a newer version is kept already; the
    zone it replaced as `previous` (None: the defaults), no row if it was older."""
    return await uow.connection.fetchrow(
        f"""WITH kept AS (SELECT time_zone FROM {S}.tenant_settings WHERE tenant_id = $1 FOR UPDATE)
            INSERT INTO {S}.tenant_settings AS s (tenant_id, time_zone, version, updated_at, gateway_version)
            VALUES ($1, $2, 1, $3, $4)
            ON CONFLICT (tenant_id) DO UPDATE SET time_zone = excluded.time_zone, version = s.version + 1,
                updated_at = excluded.updated_at, gateway_version = excluded.gateway_version
            WHERE s.gateway_version < excluded.gateway_version
            RETURNING (SELECT time_zone FROM kept) AS previous""",
        uow.tenant,
        time_zone,
        uow.now,
        gateway_version,
    )


async def learn_attribute_types(uow: UnitOfWork, kinds: dict[str, str], *, authoritative: bool) -> None:
    """Record attribute types: profile's schema is `authoritative` (it overwrites); types seen in
    values only fill in names not known yet."""
    conflict = "DO UPDATE SET type = excluded.type" if authoritative else "DO NOTHING"
    await uow.connection.execute(
        f"""INSERT INTO {S}.attribute_types (tenant_id, name, type)
            SELECT $1, n, t FROM unnest($2::varchar[], $3::varchar[]) AS k(n, t)
            ON CONFLICT (tenant_id, name) {conflict}""",
        uow.tenant,
        list(kinds),
        list(kinds.values()),
    )


async def save_profiles(uow: UnitOfWork, profiles: list) -> None:
    """Upsert segmentation's copy of these profiles in one statement (they join the population)."""
    await uow.connection.execute(
        f"""INSERT INTO {S}.customers (tenant_id, customer_id, first_seen_at, birth_date, locale,
                enrolled_at, attributes, consents)
            SELECT $1, p.id, $2, p.birth_date, p.locale, p.enrolled_at, p.attributes::jsonb, p.consents::jsonb
            FROM unnest($3::varchar[], $4::date[], $5::varchar[], $6::timestamptz[], $7::text[], $8::text[])
                 AS p(id, birth_date, locale, enrolled_at, attributes, consents)
            ON CONFLICT (tenant_id, customer_id) DO UPDATE SET birth_date = excluded.birth_date,
                locale = excluded.locale, enrolled_at = excluded.enrolled_at,
                attributes = excluded.attributes, consents = excluded.consents""",
        uow.tenant,
        uow.now,
        [p.customer_id for p in profiles],
        [p.birth_date for p in profiles],
        [p.locale for p in profiles],
        [p.enrolled_at for p in profiles],
        [json.dumps(p.attributes) for p in profiles],
        [json.dumps(p.consents) for p in profiles],
    )


async def start_backfill(uow: UnitOfWork) -> bool:
    """False when the tenant's backfill is running already (one started over an hour ago and not
    finished is taken for dead, its last job out of attempts, and started afresh)."""
    return bool(
        await uow.connection.fetchval(
            f"""INSERT INTO {S}.profile_backfills (tenant_id, copied, started_at) VALUES ($1, 0, $2)
                ON CONFLICT (tenant_id) DO UPDATE SET copied = 0, started_at = $2, finished_at = NULL
                WHERE {S}.profile_backfills.finished_at IS NOT NULL
                   OR {S}.profile_backfills.started_at < $2 - interval '1 hour'
                RETURNING true""",
            uow.tenant,
            uow.now,
        )
    )


async def backfill_progress(uow: UnitOfWork, copied: int, *, finished: bool) -> None:
    await uow.connection.execute(
        f"""UPDATE {S}.profile_backfills SET copied = copied + $2,
                finished_at = CASE WHEN $3 THEN $4::timestamptz END WHERE tenant_id = $1""",
        uow.tenant,
        copied,
        finished,
        uow.now,
    )


# --- activities and RFM -----------------------------------------------------------------------------


async def insert_activity(
    uow: UnitOfWork, key: str, customer_id: str, activity_type: str, at: datetime
) -> bool:
    return bool(
        await uow.connection.fetchval(
            f"""INSERT INTO {S}.activities (tenant_id, activity_key, customer_id, activity_type, occurred_at)
                VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true""",
            uow.tenant,
            key,
            customer_id,
            activity_type,
            at,
        )
    )


async def activity_counts(uow: UnitOfWork, customer_id: str) -> list:
    windows = ", ".join(f"count(*) FILTER (WHERE {window_sql('occurred_at', w)}) AS n_{w}" for w in SUFFIXES)
    return await uow.connection.fetch(
        f"""SELECT activity_type, {windows} FROM {S}.activities WHERE tenant_id = $1 AND customer_id = $3
            GROUP BY activity_type ORDER BY activity_type""",
        uow.tenant,
        uow.now,
        customer_id,
    )


def _quintile(order: str) -> str:
    """1 to 5 by rank among the tenant's purchasing customers: equal values get equal scores."""
    return f"(1 + floor(5.0 * (rank() OVER (ORDER BY {order}) - 1) / count(*) OVER ()))::smallint"


# One statement: score every purchasing customer by recency (last purchase), frequency (purchases)
# and monetary value (net spend), replace the tenant's table, and count the scored.
COMPUTE_RFM = f"""
    WITH bought AS (
        SELECT customer_id, max(purchased_at) AS last_at, count(*) AS purchases, sum(net_total) AS gross
        FROM {S}.purchases WHERE tenant_id = $1 AND purchased_at <= $2 GROUP BY customer_id),
    refunded AS (
        SELECT customer_id, sum(refunded_total) AS refunded FROM {S}.returns
        WHERE tenant_id = $1 AND returned_at <= $2 GROUP BY customer_id),
    scored AS (
        SELECT b.customer_id, {_quintile("b.last_at")} AS r, {_quintile("b.purchases")} AS f,
               {_quintile("b.gross - coalesce(x.refunded, 0)")} AS m
        FROM bought b LEFT JOIN refunded x USING (customer_id)),
    dropped AS (
        DELETE FROM {S}.rfm_scores s WHERE s.tenant_id = $1
          AND NOT EXISTS (SELECT 1 FROM scored WHERE scored.customer_id = s.customer_id)),
    saved AS (
        INSERT INTO {S}.rfm_scores (tenant_id, customer_id, recency_score, frequency_score, monetary_score,
            computed_at)
        SELECT $1, customer_id, r, f, m, $2 FROM scored
        ON CONFLICT (tenant_id, customer_id) DO UPDATE SET recency_score = excluded.recency_score,
            frequency_score = excluded.frequency_score, monetary_score = excluded.monetary_score,
            computed_at = excluded.computed_at
        RETURNING 1)
    SELECT count(*) FROM saved"""


async def compute_rfm(uow: UnitOfWork) -> int:
    return await uow.connection.fetchval(COMPUTE_RFM, uow.tenant, uow.now)


async def rfm_of(uow: UnitOfWork, customer_id: str):
    return await uow.connection.fetchrow(
        f"""SELECT recency_score, frequency_score, monetary_score, computed_at FROM {S}.rfm_scores
            WHERE tenant_id = $1 AND customer_id = $2""",
        uow.tenant,
        customer_id,
    )


async def customer_tenants(connection) -> list[str]:
    rows = await connection.fetch(f"SELECT DISTINCT tenant_id FROM {S}.purchases")
    return [row["tenant_id"] for row in rows]


# --- exports ----------------------------------------------------------------------------------------


async def rfm_page(uow: UnitOfWork, after: str, limit: int) -> list:
    return await uow.connection.fetch(
        f"""SELECT customer_id, recency_score, frequency_score, monetary_score, computed_at FROM {S}.rfm_scores
            WHERE tenant_id = $1 AND customer_id > $2 ORDER BY customer_id LIMIT $3""",
        uow.tenant,
        after,
        limit,
    )
