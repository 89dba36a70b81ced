"""SQL on asyncpg for vouchers, budgets, customer limits, reservations and redemptions. Every
statement filters by the caller's tenant. Limits hold under concurrency because each use is taken
by one guarded statement (`UPDATE ... WHERE <room left> RETURNING`, or an upsert whose DO UPDATE
has the same guard): the row lock orders concurrent takers, and each sees the previous one's count."""

import json
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from loyalty_promotion.domain.vouchers import Usage, VoucherFacts
from loyalty_promotion.repository import SCHEMA

_VOUCHER = """voucher_id, campaign_id, code, unique_code, start_time, end_time, max_redemptions,
    max_per_customer, holder_customer_id, referrer_customer_id, redemption_count, reserved_count, batch_id, metadata,
    disabled_at, version, created_at, updated_at"""


@dataclass(frozen=True)
class StoredVoucher:
    voucher_id: str
    campaign_id: str
    code: str
    unique_code: bool
    start_time: datetime | None
    end_time: datetime | None
    max_redemptions: int
    max_per_customer: int
    holder_customer_id: str | None
    referrer_customer_id: str | None
    redemption_count: int
    reserved_count: int
    batch_id: str | None
    metadata: dict[str, str]
    disabled_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def facts(self) -> VoucherFacts:
        return VoucherFacts(
            self.voucher_id,
            self.campaign_id,
            self.code,
            self.disabled_at is not None,
            self.start_time,
            self.end_time,
            self.max_redemptions,
            self.max_per_customer,
            self.holder_customer_id,
            self.redemption_count,
            self.reserved_count,
        )


def _voucher(row) -> StoredVoucher | None:
    if row is None:
        return None
    values = dict(row)
    for name in ("voucher_id", "campaign_id"):
        values[name] = str(values[name])
    values["batch_id"] = str(values["batch_id"]) if values["batch_id"] else None
    metadata = values["metadata"]
    values["metadata"] = json.loads(metadata) if isinstance(metadata, str) else dict(metadata or {})
    return StoredVoucher(**values)


def _codes_lock(tenant: str) -> str:
    """The advisory lock that every writer of the tenant's codes shares and a switch of
    ignore_dashes_in_codes takes alone: no code is written under the old rule while the tenant's
    codes are rewritten under the new one."""
    return f"promotion.codes:{tenant}"


async def code_settings(connection: asyncpg.Connection, tenant: str) -> bytes | None:
    """The tenant's PromotionSettings bytes (None: the defaults), read under the codes' shared lock
    until the transaction ends. Two statements: one statement's snapshot is taken before its lock
    wait, so it would read the settings as they were before a switch it waited for."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", _codes_lock(tenant)
    )
    return await connection.fetchval(
        f"SELECT payload FROM {SCHEMA}.tenant_settings WHERE tenant_id = $1", tenant
    )


async def strip_code_dashes(connection: asyncpg.Connection, tenant: str) -> str | None:
    """Rewrites the tenant's codes without their dashes, under the codes' exclusive lock; when two
    codes differ only by dashes nothing is rewritten and the form they share is returned."""
    await connection.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", _codes_lock(tenant))
    shared = await connection.fetchval(
        f"""SELECT replace(code, '-', '') FROM {SCHEMA}.vouchers WHERE tenant_id = $1
            GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 1""",
        tenant,
    )
    if shared is not None:
        return shared
    await connection.execute(
        f"""UPDATE {SCHEMA}.vouchers SET code = replace(code, '-', ''), version = version + 1
            WHERE tenant_id = $1 AND strpos(code, '-') > 0""",
        tenant,
    )
    return None


async def insert_voucher(connection: asyncpg.Connection, tenant: str, voucher: StoredVoucher) -> bool:
    """False when the tenant has the code already."""
    return bool(
        await connection.fetchval(
            f"""INSERT INTO {SCHEMA}.vouchers (tenant_id, voucher_id, campaign_id, code, unique_code,
                    start_time, end_time, max_redemptions, max_per_customer, holder_customer_id,
                    batch_id, metadata, created_at, updated_at, referrer_customer_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $13, $14)
                ON CONFLICT DO NOTHING RETURNING true""",
            tenant,
            voucher.voucher_id,
            voucher.campaign_id,
            voucher.code,
            voucher.unique_code,
            voucher.start_time,
            voucher.end_time,
            voucher.max_redemptions,
            voucher.max_per_customer,
            voucher.holder_customer_id,
            voucher.batch_id,
            json.dumps(voucher.metadata),
            voucher.created_at,
            voucher.referrer_customer_id,
        )
    )


async def get_voucher(
    connection: asyncpg.Connection, tenant: str, *, voucher_id: str = "", code: str = "", lock: bool = False
) -> StoredVoucher | None:
    where = "voucher_id = $2" if voucher_id else "code = $2"
    row = await connection.fetchrow(
        f"SELECT {_VOUCHER} FROM {SCHEMA}.vouchers WHERE tenant_id = $1 AND {where}"
        + (" FOR UPDATE" if lock else ""),
        tenant,
        voucher_id or code,
    )
    return _voucher(row)


async def vouchers_by_code(
    connection: asyncpg.Connection, tenant: str, codes: Sequence[str]
) -> dict[str, StoredVoucher]:
    rows = await connection.fetch(
        f"SELECT {_VOUCHER} FROM {SCHEMA}.vouchers WHERE tenant_id = $1 AND code = ANY($2::varchar[])",
        tenant,
        list(codes),
    )
    return {v.code: v for v in map(_voucher, rows)}


async def list_vouchers(
    connection: asyncpg.Connection,
    tenant: str,
    campaign_id: str,
    *,
    holder: str,
    batch_id: str | None,
    after: str | None,
    limit: int,
) -> list[StoredVoucher]:
    rows = await connection.fetch(
        f"""SELECT {_VOUCHER} FROM {SCHEMA}.vouchers
            WHERE tenant_id = $1 AND campaign_id = $2
              AND ($3::varchar = '' OR holder_customer_id = $3::varchar)
              AND ($4::uuid IS NULL OR batch_id = $4)
              AND ($5::uuid IS NULL OR voucher_id > $5)
            ORDER BY voucher_id LIMIT $6""",
        tenant,
        campaign_id,
        holder,
        batch_id,
        after,
        limit,
    )
    return [_voucher(row) for row in rows]


async def update_voucher(
    connection: asyncpg.Connection, tenant: str, voucher: StoredVoucher
) -> StoredVoucher:
    """Writes the editable fields (the caller holds the row's lock)."""
    row = await connection.fetchrow(
        f"""UPDATE {SCHEMA}.vouchers SET start_time = $3, end_time = $4, max_redemptions = $5,
                max_per_customer = $6, holder_customer_id = $7, metadata = $8::jsonb, disabled_at = $9,
                version = version + 1, updated_at = $10
            WHERE tenant_id = $1 AND voucher_id = $2 RETURNING {_VOUCHER}""",
        tenant,
        voucher.voucher_id,
        voucher.start_time,
        voucher.end_time,
        voucher.max_redemptions,
        voucher.max_per_customer,
        voucher.holder_customer_id,
        json.dumps(voucher.metadata),
        voucher.disabled_at,
        voucher.updated_at,
    )
    return _voucher(row)


async def usage_of(
    connection: asyncpg.Connection, tenant: str, campaign_ids: Sequence[str], store_id: str | None = None
) -> dict[str, Usage]:
    """Each campaign's usage; with `store_id`, its uses at that store too."""
    rows = await connection.fetch(
        f"""SELECT c.campaign_id, coalesce(u.redemptions_reserved + u.redemptions_committed, 0) AS redemptions,
                   coalesce(u.discount_reserved + u.discount_committed, 0) AS discount,
                   coalesce(u.points_reserved + u.points_committed, 0) AS points,
                   coalesce(s.uses, 0) AS at_store
            FROM unnest($2::uuid[]) AS c(campaign_id)
            LEFT JOIN {SCHEMA}.campaign_usage u ON u.tenant_id = $1 AND u.campaign_id = c.campaign_id
            LEFT JOIN {SCHEMA}.store_usage s
                   ON s.tenant_id = $1 AND s.campaign_id = c.campaign_id AND s.store_id = $3::varchar
            WHERE u.campaign_id IS NOT NULL OR s.campaign_id IS NOT NULL""",
        tenant,
        list(campaign_ids),
        store_id,
    )
    return {
        str(r["campaign_id"]): Usage(r["redemptions"], r["discount"], r["points"], r["at_store"])
        for r in rows
    }


async def usage_rows(connection: asyncpg.Connection, tenant: str, campaign_id: str) -> dict[str, int] | None:
    row = await connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.campaign_usage WHERE tenant_id = $1 AND campaign_id = $2",
        tenant,
        campaign_id,
    )
    return dict(row) if row else None


async def customer_uses(
    connection: asyncpg.Connection, tenant: str, customer_id: str, scopes: Sequence[str]
) -> dict[str, int]:
    rows = await connection.fetch(
        f"""SELECT scope, uses FROM {SCHEMA}.customer_usage
            WHERE tenant_id = $1 AND customer_id = $2 AND scope = ANY($3::varchar[])""",
        tenant,
        customer_id,
        list(scopes),
    )
    return {r["scope"]: r["uses"] for r in rows}


# --- reservations and redemptions ---


@dataclass(frozen=True)
class StoredReservation:
    checkout_id: str
    state: str
    customer_id: str | None
    fingerprint: bytes
    result: bytes
    basket: bytes
    expire_at: datetime
    created_at: datetime
    commit_at: datetime | None
    rollback_at: datetime | None


_RESERVATION = "checkout_id, state, customer_id, fingerprint, result, basket, expire_at, created_at, commit_at, rollback_at"


def _reservation(row) -> StoredReservation | None:
    if row is None:
        return None
    values = dict(row)
    for name in ("fingerprint", "result", "basket"):
        values[name] = bytes(values[name])
    return StoredReservation(**values)


async def claim_reservation(
    connection: asyncpg.Connection,
    tenant: str,
    checkout_id: str,
    state: str,
    fingerprint: bytes,
    expire_at: datetime,
    now: datetime,
) -> bool:
    """Inserts the checkout's reservation; False when it exists (a concurrent claim waits for the
    first one's commit, then finds it)."""
    return bool(
        await connection.fetchval(
            f"""INSERT INTO {SCHEMA}.reservations
                    (tenant_id, checkout_id, state, fingerprint, result, basket, expire_at, created_at, rollback_at)
                VALUES ($1, $2, $3::varchar, $4, '', '', $5, $6::timestamptz, CASE WHEN $3::varchar = 'rolled_back' THEN $6::timestamptz END)
                ON CONFLICT DO NOTHING RETURNING true""",
            tenant,
            checkout_id,
            state,
            fingerprint,
            expire_at,
            now,
        )
    )


async def get_reservation(
    connection: asyncpg.Connection, tenant: str, checkout_id: str, *, lock: bool = False
) -> StoredReservation | None:
    row = await connection.fetchrow(
        f"SELECT {_RESERVATION} FROM {SCHEMA}.reservations WHERE tenant_id = $1 AND checkout_id = $2"
        + (" FOR UPDATE" if lock else ""),
        tenant,
        checkout_id,
    )
    return _reservation(row)


async def renew_reservation(
    connection: asyncpg.Connection, tenant: str, checkout_id: str, expire_at: datetime, now: datetime
) -> None:
    """An expired reservation reserved again: its expired redemptions go (they held nothing)."""
    await connection.execute(
        f"""WITH gone AS (
                DELETE FROM {SCHEMA}.redemptions WHERE tenant_id = $1 AND checkout_id = $2 AND state = 'expired'
            )
            UPDATE {SCHEMA}.reservations SET state = 'reserved', expire_at = $3, created_at = $4,
                rollback_at = NULL, commit_at = NULL, result = ''
            WHERE tenant_id = $1 AND checkout_id = $2""",
        tenant,
        checkout_id,
        expire_at,
        now,
    )


async def set_reservation_state(
    connection: asyncpg.Connection, tenant: str, checkout_id: str, state: str, now: datetime
) -> StoredReservation:
    row = await connection.fetchrow(
        f"""UPDATE {SCHEMA}.reservations SET state = $3::varchar,
                commit_at = CASE WHEN $3::varchar = 'committed' THEN $4::timestamptz ELSE commit_at END,
                rollback_at = CASE WHEN $3::varchar IN ('rolled_back', 'expired') THEN $4::timestamptz ELSE rollback_at END
            WHERE tenant_id = $1 AND checkout_id = $2 RETURNING {_RESERVATION}""",
        tenant,
        checkout_id,
        state,
        now,
    )
    return _reservation(row)


@dataclass(frozen=True)
class StoredRedemption:
    redemption_id: str
    checkout_id: str
    customer_id: str | None
    campaign_id: str
    promotion_id: str
    voucher_id: str | None
    code: str | None
    state: str
    currency: str
    discount: int
    points: int
    discount_reversed: int
    points_reversed: int
    scopes: list[str]
    first: bool
    budgeted: bool
    created_at: datetime
    updated_at: datetime
    store_id: str | None = None
    store_limited: bool = False


_REDEMPTION = """redemption_id, checkout_id, customer_id, campaign_id, promotion_id, voucher_id, code,
    state, currency, discount, points, discount_reversed, points_reversed, scopes, first, budgeted,
    created_at, updated_at, store_id, store_limited"""


def _redemption(row) -> StoredRedemption:
    values = dict(row)
    for name in ("redemption_id", "campaign_id", "promotion_id", "voucher_id"):
        values[name] = str(values[name]) if values[name] else None
    values["scopes"] = list(values["scopes"])
    return StoredRedemption(**values)


@dataclass(frozen=True)
class Holds:
    """What one round of a reservation takes, in the order rows are locked: the customer's scopes
    (key, limit), the campaigns' per-store limits (campaign, limit), their budgets (campaign,
    redemptions, discount, points, max redemptions, max discount, max points), the vouchers."""

    scopes: list[tuple[str, int]]
    stores: list[tuple[str, int]]
    budgets: list[tuple[str, int, int, int, int, int, int]]
    vouchers: list[str]


@dataclass(frozen=True)
class Taken:
    """What a take_holds statement took, and whether it saved the reservation."""

    scopes: list[str]
    stores: list[str]
    budgets: list[str]
    vouchers: list[str]
    saved: bool


@dataclass(frozen=True)
class Reserved:
    """The reservation's content, saved by the statement that takes its holds when all were taken."""

    checkout_id: str
    customer_id: str | None
    result: bytes
    basket: bytes
    redemptions: Sequence[StoredRedemption]
    revenue: int
    now: datetime


def _columns(rows: list[tuple], width: int) -> list[list]:
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


_TAKE_HOLDS = f"""
    WITH scopes AS (
        SELECT * FROM unnest($3::varchar[], $4::bigint[]) AS s(scope, lim)
    ), stores AS (
        SELECT * FROM unnest($6::uuid[], $7::bigint[]) AS s(campaign_id, lim)
    ), budgets AS (
        SELECT * FROM unnest($8::uuid[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[],
                             $13::bigint[], $14::bigint[]) AS b(campaign_id, n, d, p, max_n, max_d, max_p)
    ), scope_takes AS (
        INSERT INTO {SCHEMA}.customer_usage AS u (tenant_id, customer_id, scope, uses)
        SELECT $1, $2, scope, 1 FROM scopes ORDER BY scope
        ON CONFLICT (tenant_id, customer_id, scope) DO UPDATE SET uses = u.uses + 1
        WHERE u.uses < (SELECT lim FROM scopes WHERE scopes.scope = EXCLUDED.scope)
        RETURNING scope
    ), store_takes AS (
        INSERT INTO {SCHEMA}.store_usage AS u (tenant_id, campaign_id, store_id, uses)
        SELECT $1, campaign_id, $5, 1 FROM stores ORDER BY campaign_id
        ON CONFLICT (tenant_id, campaign_id, store_id) DO UPDATE SET uses = u.uses + 1
        WHERE u.uses < (SELECT lim FROM stores WHERE stores.campaign_id = EXCLUDED.campaign_id)
        RETURNING campaign_id
    ), budget_takes AS (
        INSERT INTO {SCHEMA}.campaign_usage AS u
            (tenant_id, campaign_id, redemptions_reserved, discount_reserved, points_reserved)
        SELECT $1, campaign_id, n, d, p FROM budgets ORDER BY campaign_id
        ON CONFLICT (tenant_id, campaign_id) DO UPDATE SET
            redemptions_reserved = u.redemptions_reserved + EXCLUDED.redemptions_reserved,
            discount_reserved = u.discount_reserved + EXCLUDED.discount_reserved,
            points_reserved = u.points_reserved + EXCLUDED.points_reserved
        WHERE (SELECT (b.max_n = 0 OR u.redemptions_reserved + u.redemptions_committed + b.n <= b.max_n)
                  AND (b.max_d = 0 OR u.discount_reserved + u.discount_committed + b.d <= b.max_d)
                  AND (b.max_p = 0 OR u.points_reserved + u.points_committed + b.p <= b.max_p)
               FROM budgets b WHERE b.campaign_id = EXCLUDED.campaign_id)
        RETURNING campaign_id
    ), voucher_takes AS (
        UPDATE {SCHEMA}.vouchers SET reserved_count = reserved_count + 1
        WHERE tenant_id = $1 AND voucher_id = ANY($15::uuid[]) AND disabled_at IS NULL
          AND (max_redemptions = 0 OR redemption_count + reserved_count < max_redemptions)
        RETURNING voucher_id
    ), taken AS (
        SELECT (SELECT coalesce(array_agg(scope), '{{}}') FROM scope_takes) AS scopes,
               (SELECT coalesce(array_agg(campaign_id), '{{}}') FROM store_takes) AS stores,
               (SELECT coalesce(array_agg(campaign_id), '{{}}') FROM budget_takes) AS budgets,
               (SELECT coalesce(array_agg(voucher_id), '{{}}') FROM voucher_takes) AS vouchers
    ), complete AS (
        SELECT $16::bool AND cardinality(scopes) = cardinality($3::varchar[])
               AND cardinality(stores) = cardinality($6::uuid[])
               AND cardinality(budgets) = cardinality($8::uuid[])
               AND cardinality(vouchers) = cardinality($15::uuid[]) AS ok
        FROM taken
    ), saved AS (
        UPDATE {SCHEMA}.reservations SET customer_id = nullif($2, ''), result = $18, basket = $19
        WHERE tenant_id = $1 AND checkout_id = $17 AND (SELECT ok FROM complete)
        RETURNING true
    ), added AS (
        INSERT INTO {SCHEMA}.redemptions (tenant_id, redemption_id, checkout_id, customer_id,
            campaign_id, promotion_id, voucher_id, code, state, currency, discount, points, scopes,
            first, budgeted, created_at, updated_at, basket_revenue, store_id, store_limited)
        SELECT $1, r.id, $17, nullif($2, ''), r.campaign, r.promotion, r.voucher, r.code, 'reserved',
               r.currency, r.discount, r.points, r.scopes::varchar[], r.first, r.budgeted, $20, $20,
               CASE WHEN r.first THEN $21::bigint ELSE 0 END, nullif($5, ''), r.store_limited
        FROM unnest($22::uuid[], $23::uuid[], $24::uuid[], $25::uuid[], $26::varchar[], $27::varchar[],
                    $28::bigint[], $29::bigint[], $30::text[], $31::bool[], $32::bool[], $33::bool[])
             AS r(id, campaign, promotion, voucher, code, currency, discount, points, scopes, first,
                  budgeted, store_limited)
        WHERE (SELECT ok FROM complete)
        RETURNING 1
    )
    SELECT taken.*, (SELECT count(*) FROM saved) = 1 AS saved, (SELECT count(*) FROM added) AS added
    FROM taken"""


async def take_holds(
    connection: asyncpg.Connection,
    tenant: str,
    customer_id: str,
    store_id: str,
    holds: Holds,
    reserved: Reserved | None,
) -> Taken:
    """Takes every hold of one round in one statement, each by a guarded upsert or UPDATE (the row
    lock orders concurrent takers, and each sees the previous one's count); and, when every one was
    taken and `reserved` is given, saves the reservation's result, basket and redemptions in the
    same statement. A round that took only part of its holds is undone by give_back."""
    rows = reserved.redemptions if reserved else []
    redemptions = _columns(
        [
            (
                r.redemption_id,
                r.campaign_id,
                r.promotion_id,
                r.voucher_id,
                r.code,
                r.currency,
                r.discount,
                r.points,
                "{" + ",".join(r.scopes) + "}",
                r.first,
                r.budgeted,
                r.store_limited,
            )
            for r in rows
        ],
        12,
    )
    row = await connection.fetchrow(
        _TAKE_HOLDS,
        tenant,
        customer_id,
        *_columns(holds.scopes, 2),
        store_id,
        *_columns(holds.stores, 2),
        *_columns(holds.budgets, 7),
        holds.vouchers,
        reserved is not None,
        reserved.checkout_id if reserved else "",
        reserved.result if reserved else b"",
        reserved.basket if reserved else b"",
        reserved.now if reserved else None,
        reserved.revenue if reserved else 0,
        *redemptions,
    )
    return Taken(
        list(row["scopes"]),
        [str(c) for c in row["stores"]],
        [str(c) for c in row["budgets"]],
        [str(v) for v in row["vouchers"]],
        row["saved"],
    )


async def give_back(
    connection: asyncpg.Connection, tenant: str, customer_id: str, store_id: str, holds: Holds, taken: Taken
) -> None:
    """Undoes what a round took (in the same transaction, still under its row locks)."""
    budgets = [b for b in holds.budgets if b[0] in taken.budgets]
    await connection.execute(
        f"""WITH scopes AS (
                UPDATE {SCHEMA}.customer_usage SET uses = uses - 1
                WHERE tenant_id = $1 AND customer_id = $2 AND scope = ANY($3::varchar[])
            ), stores AS (
                UPDATE {SCHEMA}.store_usage SET uses = uses - 1
                WHERE tenant_id = $1 AND store_id = $4 AND campaign_id = ANY($5::uuid[])
            ), budgets AS (
                UPDATE {SCHEMA}.campaign_usage u SET redemptions_reserved = u.redemptions_reserved - b.n,
                    discount_reserved = u.discount_reserved - b.d, points_reserved = u.points_reserved - b.p
                FROM unnest($6::uuid[], $7::bigint[], $8::bigint[], $9::bigint[]) AS b(campaign_id, n, d, p)
                WHERE u.tenant_id = $1 AND u.campaign_id = b.campaign_id
            )
            UPDATE {SCHEMA}.vouchers SET reserved_count = reserved_count - 1
            WHERE tenant_id = $1 AND voucher_id = ANY($10::uuid[])""",
        tenant,
        customer_id,
        taken.scopes,
        store_id,
        taken.stores,
        *_columns([b[:4] for b in budgets], 4),
        taken.vouchers,
    )


async def recent_committed_baskets(connection: asyncpg.Connection, tenant: str, limit: int) -> list:
    """(checkout_id, basket) of the tenant's most recent committed checkouts, newest first."""
    rows = await connection.fetch(
        f"""SELECT checkout_id, basket FROM {SCHEMA}.reservations
            WHERE tenant_id = $1 AND state = 'committed' AND basket <> ''
            ORDER BY commit_at DESC NULLS LAST, checkout_id LIMIT $2""",
        tenant,
        limit,
    )
    return [(row["checkout_id"], row["basket"]) for row in rows]


async def redemptions_of(
    connection: asyncpg.Connection, tenant: str, checkout_id: str
) -> list[StoredRedemption]:
    rows = await connection.fetch(
        f"""SELECT {_REDEMPTION} FROM {SCHEMA}.redemptions WHERE tenant_id = $1 AND checkout_id = $2
            ORDER BY campaign_id, promotion_id""",
        tenant,
        checkout_id,
    )
    return [_redemption(row) for row in rows]


async def list_redemptions(
    connection: asyncpg.Connection,
    tenant: str,
    *,
    campaign_id: str | None,
    customer_id: str,
    voucher_id: str | None,
    state: str,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[StoredRedemption]:
    """Newest first; `before` = (created_at, redemption_id) of the last one seen."""
    rows = await connection.fetch(
        f"""SELECT {_REDEMPTION} FROM {SCHEMA}.redemptions
            WHERE tenant_id = $1 AND ($2::uuid IS NULL OR campaign_id = $2)
              AND ($3::varchar = '' OR customer_id = $3::varchar) AND ($4::uuid IS NULL OR voucher_id = $4)
              AND ($5::varchar = '' OR state = $5::varchar)
              AND ($6::timestamptz IS NULL OR (created_at, redemption_id) < ($6, $7::uuid))
            ORDER BY created_at DESC, redemption_id DESC LIMIT $8""",
        tenant,
        campaign_id,
        customer_id,
        voucher_id,
        state,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [_redemption(row) for row in rows]


async def move_uses(
    connection: asyncpg.Connection,
    tenant: str,
    checkout_id: str,
    *,
    from_state: str,
    to_state: str,
    now: datetime,
) -> list[StoredRedemption]:
    """Moves a checkout's held uses in one statement (so the hot rows, a popular code's voucher and
    its campaign's budget, are locked for the rest of the transaction only, which is its COMMIT):
    reserved -> committed (commit), or reserved / committed -> given back (release). Customer
    limits change only on release: they count reserved and committed uses alike. Returns the
    redemptions as they are now."""
    commit = to_state == "committed"
    held = "reserved_count" if from_state == "reserved" else "redemption_count"
    voucher_to = ", redemption_count = v.redemption_count + r.n" if commit else ""
    side = "reserved" if from_state == "reserved" else "committed"
    budget_to = (
        """, redemptions_committed = u.redemptions_committed + r.n,
           discount_committed = u.discount_committed + r.d, points_committed = u.points_committed + r.p"""
        if commit
        else ""
    )
    rows = await connection.fetch(
        f"""WITH moved AS (
                UPDATE {SCHEMA}.redemptions SET state = $4::varchar, updated_at = $5
                WHERE tenant_id = $1 AND checkout_id = $2 AND state = $3::varchar
                RETURNING {_REDEMPTION}
            ), by_voucher AS (
                UPDATE {SCHEMA}.vouchers v SET {held} = v.{held} - r.n{voucher_to}
                FROM (SELECT voucher_id, count(*) AS n FROM moved
                      WHERE first AND voucher_id IS NOT NULL GROUP BY voucher_id) r
                WHERE v.tenant_id = $1 AND v.voucher_id = r.voucher_id
                RETURNING 1
            ), by_budget AS (
                UPDATE {SCHEMA}.campaign_usage u SET redemptions_{side} = u.redemptions_{side} - r.n,
                    discount_{side} = u.discount_{side} - r.d, points_{side} = u.points_{side} - r.p{budget_to}
                FROM (SELECT campaign_id, count(*) FILTER (WHERE first) AS n,
                             sum(discount - discount_reversed) AS d, sum(points - points_reversed) AS p
                      FROM moved WHERE budgeted GROUP BY campaign_id) r
                WHERE u.tenant_id = $1 AND u.campaign_id = r.campaign_id
                RETURNING 1
            ), by_customer AS (
                UPDATE {SCHEMA}.customer_usage c SET uses = c.uses - r.n
                FROM (SELECT customer_id, scope, count(*) AS n FROM moved, unnest(moved.scopes) AS scope
                      WHERE NOT $6::bool GROUP BY customer_id, scope) r
                WHERE c.tenant_id = $1 AND c.customer_id = r.customer_id AND c.scope = r.scope
                RETURNING 1
            ), by_store AS (
                UPDATE {SCHEMA}.store_usage s SET uses = s.uses - r.n
                FROM (SELECT campaign_id, coalesce(store_id, '') AS store_id, count(*) AS n FROM moved
                      WHERE store_limited AND NOT $6::bool GROUP BY 1, 2) r
                WHERE s.tenant_id = $1 AND s.campaign_id = r.campaign_id AND s.store_id = r.store_id
                RETURNING 1
            )
            SELECT * FROM moved ORDER BY campaign_id, promotion_id""",
        tenant,
        checkout_id,
        from_state,
        to_state,
        now,
        commit,
    )
    return [_redemption(row) for row in rows]


async def commit_reserved(
    connection: asyncpg.Connection, tenant: str, checkout_id: str, now: datetime
) -> tuple[StoredReservation, list[StoredRedemption]] | None:
    """A reserved, unexpired checkout committed in one statement: its state, its redemptions and
    their uses (the voucher's and the budget's reserved parts become committed); the reservation
    and its redemptions as they are now. None when it is not reserved or expired any more (the
    caller reads it under a lock and answers why): the guarded UPDATE takes the row lock, so a
    rollback or expiry racing this commit either happened before it (no row) or waits for it."""
    rows = await connection.fetch(
        f"""WITH committed AS (
                UPDATE {SCHEMA}.reservations SET state = 'committed', commit_at = $3
                WHERE tenant_id = $1 AND checkout_id = $2 AND state = 'reserved' AND expire_at > $3
                RETURNING {_RESERVATION}
            ), moved AS (
                UPDATE {SCHEMA}.redemptions SET state = 'committed', updated_at = $3
                WHERE tenant_id = $1 AND checkout_id = $2 AND state = 'reserved'
                  AND EXISTS (SELECT 1 FROM committed)
                RETURNING {_REDEMPTION}
            ), by_voucher AS (
                UPDATE {SCHEMA}.vouchers v SET reserved_count = v.reserved_count - r.n,
                    redemption_count = v.redemption_count + r.n
                FROM (SELECT voucher_id, count(*) AS n FROM moved
                      WHERE first AND voucher_id IS NOT NULL GROUP BY voucher_id) r
                WHERE v.tenant_id = $1 AND v.voucher_id = r.voucher_id
                RETURNING 1
            ), by_budget AS (
                UPDATE {SCHEMA}.campaign_usage u SET redemptions_reserved = u.redemptions_reserved - r.n,
                    discount_reserved = u.discount_reserved - r.d, points_reserved = u.points_reserved - r.p,
                    redemptions_committed = u.redemptions_committed + r.n,
                    discount_committed = u.discount_committed + r.d, points_committed = u.points_committed + r.p
                FROM (SELECT campaign_id, count(*) FILTER (WHERE first) AS n, sum(discount) AS d,
                             sum(points) AS p
                      FROM moved WHERE budgeted GROUP BY campaign_id) r
                WHERE u.tenant_id = $1 AND u.campaign_id = r.campaign_id
                RETURNING 1
            )
            SELECT c.checkout_id AS r_checkout_id, c.state AS r_state, c.customer_id AS r_customer_id,
                   c.fingerprint AS r_fingerprint, c.result AS r_result, c.basket AS r_basket,
                   c.expire_at AS r_expire_at, c.created_at AS r_created_at, c.commit_at AS r_commit_at,
                   c.rollback_at AS r_rollback_at, m.*
            FROM committed c LEFT JOIN moved m ON true
            ORDER BY m.campaign_id, m.promotion_id""",
        tenant,
        checkout_id,
        now,
    )
    if not rows:
        return None
    first = rows[0]
    reservation = _reservation({name: first[f"r_{name}"] for name in _RESERVATION.split(", ")})
    redemptions = [
        _redemption({k: v for k, v in row.items() if not k.startswith("r_")})
        for row in rows
        if row["redemption_id"] is not None
    ]
    return reservation, redemptions


async def expired_reservations(
    connection: asyncpg.Connection, now: datetime, limit: int
) -> list[tuple[str, str]]:
    """(tenant, checkout id) of reservations past their expiry, every tenant's (the sweep's own
    query: it releases each in the tenant it belongs to)."""
    rows = await connection.fetch(
        f"""SELECT tenant_id, checkout_id FROM {SCHEMA}.reservations
            WHERE state = 'reserved' AND expire_at <= $1 ORDER BY expire_at LIMIT $2""",
        now,
        limit,
    )
    return [(r["tenant_id"], r["checkout_id"]) for r in rows]


async def reversals_of(connection: asyncpg.Connection, tenant: str, checkout_id: str) -> list[bytes]:
    rows = await connection.fetch(
        f"""SELECT payload FROM {SCHEMA}.reversals WHERE tenant_id = $1 AND checkout_id = $2
            ORDER BY created_at, return_id""",
        tenant,
        checkout_id,
    )
    return [bytes(r["payload"]) for r in rows]


async def get_reversal(
    connection: asyncpg.Connection, tenant: str, checkout_id: str, return_id: str
) -> tuple[bytes, bytes] | None:
    """(fingerprint, RedemptionReversal bytes) of a processed return."""
    row = await connection.fetchrow(
        f"""SELECT fingerprint, payload FROM {SCHEMA}.reversals
            WHERE tenant_id = $1 AND checkout_id = $2 AND return_id = $3""",
        tenant,
        checkout_id,
        return_id,
    )
    return (bytes(row["fingerprint"]), bytes(row["payload"])) if row else None


async def insert_reversal(
    connection: asyncpg.Connection,
    tenant: str,
    checkout_id: str,
    return_id: str,
    fingerprint: bytes,
    payload: bytes,
    now: datetime,
) -> None:
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.reversals (tenant_id, checkout_id, return_id, fingerprint, payload, created_at)
            VALUES ($1, $2, $3, $4, $5, $6)""",
        tenant,
        checkout_id,
        return_id,
        fingerprint,
        payload,
        now,
    )


async def reverse_redemptions(
    connection: asyncpg.Connection,
    tenant: str,
    changes: Sequence[tuple[str, int, int, bool]],
    now: datetime,
) -> None:
    """Applies (redemption id, discount taken back, points taken back, now fully reversed) in one
    statement: the budget gets the amounts back, and a fully reversed redemption gives back its
    code's use and the customer's uses too."""
    if not changes:
        return
    ids, discounts, points, done = (list(c) for c in zip(*changes, strict=True))
    await connection.execute(
        f"""WITH changed AS (
                UPDATE {SCHEMA}.redemptions d SET discount_reversed = d.discount_reversed + c.discount,
                    points_reversed = d.points_reversed + c.points,
                    state = CASE WHEN c.done THEN 'reversed' ELSE d.state END, updated_at = $6
                FROM unnest($2::uuid[], $3::bigint[], $4::bigint[], $5::bool[]) AS c(id, discount, points, done)
                WHERE d.tenant_id = $1 AND d.redemption_id = c.id AND d.state = 'committed'
                RETURNING d.*, c.discount AS back_discount, c.points AS back_points, c.done
            ), by_budget AS (
                UPDATE {SCHEMA}.campaign_usage u
                SET discount_committed = u.discount_committed - r.d, points_committed = u.points_committed - r.p,
                    redemptions_committed = u.redemptions_committed - r.n
                FROM (SELECT campaign_id, sum(back_discount) AS d, sum(back_points) AS p,
                             count(*) FILTER (WHERE done AND first) AS n
                      FROM changed WHERE budgeted GROUP BY campaign_id) r
                WHERE u.tenant_id = $1 AND u.campaign_id = r.campaign_id
                RETURNING 1
            ), by_voucher AS (
                UPDATE {SCHEMA}.vouchers v SET redemption_count = v.redemption_count - r.n
                FROM (SELECT voucher_id, count(*) AS n FROM changed
                      WHERE done AND first AND voucher_id IS NOT NULL GROUP BY voucher_id) r
                WHERE v.tenant_id = $1 AND v.voucher_id = r.voucher_id
                RETURNING 1
            ), by_store AS (
                UPDATE {SCHEMA}.store_usage s SET uses = s.uses - r.n
                FROM (SELECT campaign_id, coalesce(store_id, '') AS store_id, count(*) AS n FROM changed
                      WHERE done AND store_limited GROUP BY 1, 2) r
                WHERE s.tenant_id = $1 AND s.campaign_id = r.campaign_id AND s.store_id = r.store_id
                RETURNING 1
            )
            UPDATE {SCHEMA}.customer_usage c SET uses = c.uses - r.n
            FROM (SELECT customer_id, scope, count(*) AS n FROM changed, unnest(changed.scopes) AS scope
                  WHERE done GROUP BY customer_id, scope) r
            WHERE c.tenant_id = $1 AND c.customer_id = r.customer_id AND c.scope = r.scope""",
        tenant,
        ids,
        discounts,
        points,
        done,
        now,
    )


# --- batches ---


async def insert_batch(
    connection: asyncpg.Connection, tenant: str, batch_id: str, campaign_id: str, payload: bytes
) -> None:
    await connection.execute(
        f"INSERT INTO {SCHEMA}.voucher_batches (tenant_id, batch_id, campaign_id, payload) VALUES ($1, $2, $3, $4)",
        tenant,
        batch_id,
        campaign_id,
        payload,
    )


async def get_batch(
    connection: asyncpg.Connection, tenant: str, batch_id: str, *, lock: bool = False
) -> bytes | None:
    payload = await connection.fetchval(
        f"SELECT payload FROM {SCHEMA}.voucher_batches WHERE tenant_id = $1 AND batch_id = $2"
        + (" FOR UPDATE" if lock else ""),
        tenant,
        batch_id,
    )
    return bytes(payload) if payload is not None else None


async def save_batch(connection: asyncpg.Connection, tenant: str, batch_id: str, payload: bytes) -> None:
    await connection.execute(
        f"UPDATE {SCHEMA}.voucher_batches SET payload = $3 WHERE tenant_id = $1 AND batch_id = $2",
        tenant,
        batch_id,
        payload,
    )


@dataclass(frozen=True)
class CodeTerms:
    """What every code of one batch shares."""

    campaign_id: str
    batch_id: str
    start_time: datetime | None
    end_time: datetime | None
    max_redemptions: int
    max_per_customer: int
    metadata: dict[str, str]
    now: datetime


def ordered_ids(count: int) -> list[uuid.UUID]:
    """UUIDv7-style ids (milliseconds, then random bits): a batch's ids grow, so its rows append
    to the primary-key and campaign indexes instead of landing at random pages of them, which is
    most of what a million-row insert costs."""
    high = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76
    randoms = secrets.token_bytes(10 * count)
    ids = []
    for n in range(count):
        low = int.from_bytes(randoms[10 * n : 10 * n + 10])
        rand_a, rand_b = (low >> 68) & 0xFFF, low & ((1 << 62) - 1)
        ids.append(uuid.UUID(int=high | rand_a << 64 | 0b10 << 62 | rand_b))
    return sorted(ids)


async def copy_codes(
    connection: asyncpg.Connection, tenant: str, terms: CodeTerms, codes: Sequence[tuple[str, str | None]]
) -> list[str]:
    """Writes (code, holder) rows with COPY into a staging table, then into vouchers in one
    statement that skips codes the tenant has already; returns the skipped ones (to draw again)."""
    await connection.execute(
        "CREATE TEMP TABLE IF NOT EXISTS staged_codes (voucher_id uuid, code varchar(64), holder varchar(64))"
        " ON COMMIT DELETE ROWS"
    )
    ids = ordered_ids(len(codes))
    await connection.copy_records_to_table(
        "staged_codes",
        records=[(voucher_id, code, holder) for voucher_id, (code, holder) in zip(ids, codes, strict=True)],
        columns=["voucher_id", "code", "holder"],
    )
    return [
        row["code"]
        for row in await connection.fetch(
            f"""WITH added AS (
                    INSERT INTO {SCHEMA}.vouchers (tenant_id, voucher_id, campaign_id, code, unique_code,
                        start_time, end_time, max_redemptions, max_per_customer, holder_customer_id,
                        batch_id, metadata, created_at, updated_at)
                    SELECT $1, s.voucher_id, $2, s.code, true, $3, $4, $5, $6, s.holder, $7, $8::jsonb, $9, $9
                    FROM staged_codes s ORDER BY s.voucher_id
                    ON CONFLICT (tenant_id, code) DO NOTHING
                    RETURNING code
                )
                SELECT s.code FROM staged_codes s WHERE NOT EXISTS (SELECT 1 FROM added a WHERE a.code = s.code)""",
            tenant,
            terms.campaign_id,
            terms.start_time,
            terms.end_time,
            terms.max_redemptions,
            terms.max_per_customer,
            terms.batch_id,
            json.dumps(terms.metadata),
            terms.now,
        )
    ]


async def vouchers_of_holder(
    connection: asyncpg.Connection, tenant: str, customer_id: str, limit: int
) -> list[StoredVoucher]:
    rows = await connection.fetch(
        f"""SELECT {_VOUCHER} FROM {SCHEMA}.vouchers WHERE tenant_id = $1 AND holder_customer_id = $2
            ORDER BY voucher_id LIMIT $3""",
        tenant,
        customer_id,
        limit,
    )
    return [_voucher(row) for row in rows]


# --- referrals ---


async def referral_code(
    connection: asyncpg.Connection, tenant: str, campaign_id: str, referrer: str
) -> StoredVoucher | None:
    row = await connection.fetchrow(
        f"""SELECT {_VOUCHER} FROM {SCHEMA}.vouchers
            WHERE tenant_id = $1 AND campaign_id = $2 AND referrer_customer_id = $3""",
        tenant,
        campaign_id,
        referrer,
    )
    return _voucher(row)


async def list_referral_codes(
    connection: asyncpg.Connection,
    tenant: str,
    campaign_id: str | None,
    referrer: str,
    after: str | None,
    limit: int,
) -> list[tuple[StoredVoucher, int]]:
    """Referral codes by voucher id, each with its confirmed conversions."""
    rows = await connection.fetch(
        f"""SELECT {_VOUCHER}, (SELECT count(*) FROM {SCHEMA}.referral_conversions c
                                WHERE c.tenant_id = v.tenant_id AND c.voucher_id = v.voucher_id
                                  AND c.state = 'confirmed') AS conversions
            FROM {SCHEMA}.vouchers v
            WHERE tenant_id = $1 AND referrer_customer_id IS NOT NULL
              AND ($2::uuid IS NULL OR campaign_id = $2) AND ($3::varchar = '' OR referrer_customer_id = $3::varchar)
              AND ($4::uuid IS NULL OR voucher_id > $4)
            ORDER BY voucher_id LIMIT $5""",
        tenant,
        campaign_id,
        referrer,
        after,
        limit,
    )
    found = []
    for row in rows:
        values = dict(row)
        conversions = values.pop("conversions")
        found.append((_voucher(values), conversions))
    return found


async def lock_referral_code(connection: asyncpg.Connection, tenant: str, voucher_id: str) -> None:
    """Acceptances of one referrer's code take turns, so its cap per period holds under concurrency."""
    await connection.execute(
        f"SELECT 1 FROM {SCHEMA}.vouchers WHERE tenant_id = $1 AND voucher_id = $2 FOR UPDATE",
        tenant,
        voucher_id,
    )


async def referral_acceptances(
    connection: asyncpg.Connection, tenant: str, voucher: StoredVoucher, referee: str, since: datetime
) -> tuple[int, str | None, str | None]:
    """The code's acceptances since `since`, and the code and grant of the referee's acceptance in
    the programme (None when not referred yet). Read after the code's lock, in a statement of its own
    (a fresh snapshot), so a concurrent acceptance committed meanwhile is counted."""
    row = await connection.fetchrow(
        f"""SELECT (SELECT count(*) FROM {SCHEMA}.referral_acceptances
                    WHERE tenant_id = $1 AND voucher_id = $2 AND created_at >= $4) AS in_period,
                   a.voucher_id::text AS voucher_id, a.referee_grant_id::text AS grant_id
            FROM (SELECT 1) one
            LEFT JOIN {SCHEMA}.referral_acceptances a
              ON a.tenant_id = $1 AND a.campaign_id = $3 AND a.referee_customer_id = $5""",
        tenant,
        voucher.voucher_id,
        voucher.campaign_id,
        since,
        referee,
    )
    return row["in_period"], row["voucher_id"], row["grant_id"]


async def add_referral_acceptance(
    connection: asyncpg.Connection,
    tenant: str,
    voucher: StoredVoucher,
    referee: str,
    grant_id: str | None,
    now: datetime,
) -> bool:
    inserted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.referral_acceptances (tenant_id, acceptance_id, campaign_id, voucher_id,
                code, referrer_customer_id, referee_customer_id, referee_grant_id, created_at)
            VALUES ($1, gen_random_uuid(), $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (tenant_id, campaign_id, referee_customer_id) DO NOTHING RETURNING true""",
        tenant,
        voucher.campaign_id,
        voucher.voucher_id,
        voucher.code,
        voucher.referrer_customer_id,
        referee,
        grant_id,
        now,
    )
    return bool(inserted)


async def open_acceptances(connection: asyncpg.Connection, tenant: str, referee: str) -> list[str]:
    """The programmes the referee was accepted into and has not converted yet."""
    rows = await connection.fetch(
        f"""SELECT campaign_id::text FROM {SCHEMA}.referral_acceptances
            WHERE tenant_id = $1 AND referee_customer_id = $2 AND converted_at IS NULL""",
        tenant,
        referee,
    )
    return [row["campaign_id"] for row in rows]


async def convert_acceptances(
    connection: asyncpg.Connection,
    tenant: str,
    referee: str,
    checkout_id: str,
    delays: dict[str, float],
    now: datetime,
) -> list[dict]:
    """The referee's first committed purchase after their acceptance (in the campaigns of `delays`,
    the programmes it qualifies for): the acceptance is marked converted, once, and a conversion
    added (pending or confirmed, as at a commit with the code; none twice for one checkout)."""
    rows = await connection.fetch(
        f"""WITH converted AS (
                UPDATE {SCHEMA}.referral_acceptances a SET converted_at = $6
                FROM unnest($4::uuid[], $5::float8[]) AS d(campaign_id, seconds)
                WHERE a.tenant_id = $1 AND a.referee_customer_id = $3 AND a.converted_at IS NULL
                  AND a.campaign_id = d.campaign_id
                RETURNING a.campaign_id, a.voucher_id, a.code, a.referrer_customer_id, d.seconds)
            {_conversions_from("converted")}""",
        tenant,
        checkout_id,
        referee,
        list(delays),
        list(delays.values()),
        now,
    )
    return [dict(r) for r in rows]


def _conversions_from(source: str) -> str:
    """Conversions inserted from `source` (campaign_id, voucher_id, code, referrer_customer_id and the
    confirmation delay in `seconds`) for referee $3 and checkout $2 at $6: confirmed at once without a
    delay, pending otherwise; once per checkout and code."""
    return f"""INSERT INTO {SCHEMA}.referral_conversions (tenant_id, conversion_id, campaign_id, voucher_id,
                code, referrer_customer_id, referee_customer_id, checkout_id, state, confirm_at, created_at,
                confirmed_at)
            SELECT $1::varchar, gen_random_uuid(), s.campaign_id, s.voucher_id, s.code, s.referrer_customer_id,
                   $3::varchar, $2::varchar,
                   CASE WHEN s.seconds > 0 THEN 'pending' ELSE 'confirmed' END,
                   $6::timestamptz + make_interval(secs => s.seconds), $6,
                   CASE WHEN s.seconds > 0 THEN NULL ELSE $6::timestamptz END
            FROM {source} s
            ON CONFLICT DO NOTHING
            RETURNING {_CONVERSION}"""


_CONVERSION = """conversion_id, campaign_id, voucher_id, code, referrer_customer_id, referee_customer_id,
    checkout_id, state, confirm_at, created_at, confirmed_at"""


async def add_conversions(
    connection: asyncpg.Connection,
    tenant: str,
    checkout_id: str,
    referee: str,
    voucher_ids: Sequence[str],
    delays: dict[str, float],
    now: datetime,
) -> list[dict]:
    """A conversion per referral code among these vouchers (once per checkout and code): confirmed
    at once where its campaign has no confirmation delay, pending otherwise."""
    rows = await connection.fetch(
        _conversions_from(
            f"""(SELECT v.campaign_id, v.voucher_id, v.code, v.referrer_customer_id, d.seconds
                 FROM {SCHEMA}.vouchers v
                 JOIN unnest($4::uuid[], $5::float8[]) AS d(campaign_id, seconds) ON d.campaign_id = v.campaign_id
                 WHERE v.tenant_id = $1::varchar AND v.voucher_id = ANY($7::uuid[])
                   AND v.referrer_customer_id IS NOT NULL)"""
        ),
        tenant,
        checkout_id,
        referee,
        list(delays),
        list(delays.values()),
        now,
        list(voucher_ids),
    )
    return [dict(r) for r in rows]


async def cancel_conversions(connection: asyncpg.Connection, tenant: str, checkout_id: str) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.referral_conversions SET state = 'cancelled'
            WHERE tenant_id = $1 AND checkout_id = $2 AND state = 'pending'""",
        tenant,
        checkout_id,
    )


async def due_conversions(connection: asyncpg.Connection, now: datetime, limit: int) -> list[tuple[str, str]]:
    """(tenant, conversion id) of pending conversions past their confirmation time, every tenant's."""
    rows = await connection.fetch(
        f"""SELECT tenant_id, conversion_id FROM {SCHEMA}.referral_conversions
            WHERE state = 'pending' AND confirm_at <= $1 ORDER BY confirm_at LIMIT $2""",
        now,
        limit,
    )
    return [(r["tenant_id"], str(r["conversion_id"])) for r in rows]


async def confirm_conversion(
    connection: asyncpg.Connection, tenant: str, conversion_id: str, now: datetime
) -> dict | None:
    row = await connection.fetchrow(
        f"""UPDATE {SCHEMA}.referral_conversions SET state = 'confirmed', confirmed_at = $3
            WHERE tenant_id = $1 AND conversion_id = $2 AND state = 'pending' AND confirm_at <= $3
            RETURNING {_CONVERSION}""",
        tenant,
        conversion_id,
        now,
    )
    return dict(row) if row else None


async def list_conversions(
    connection: asyncpg.Connection,
    tenant: str,
    *,
    campaign_id: str | None,
    referrer: str,
    referee: str,
    state: str,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[dict]:
    rows = await connection.fetch(
        f"""SELECT {_CONVERSION} FROM {SCHEMA}.referral_conversions
            WHERE tenant_id = $1 AND ($2::uuid IS NULL OR campaign_id = $2)
              AND ($3::varchar = '' OR referrer_customer_id = $3::varchar)
              AND ($4::varchar = '' OR referee_customer_id = $4::varchar)
              AND ($5::varchar = '' OR state = $5::varchar)
              AND ($6::timestamptz IS NULL OR (created_at, conversion_id) < ($6, $7::uuid))
            ORDER BY created_at DESC, conversion_id DESC LIMIT $8""",
        tenant,
        campaign_id,
        referrer,
        referee,
        state,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [dict(r) for r in rows]


async def redemption_figures(
    connection: asyncpg.Connection, tenant: str, campaign_id: str, first: datetime | None, last: datetime
) -> dict:
    """A campaign's redemptions in [first, last): per promotion (committed count, currency, net
    discount and points), the campaign's released count and distinct customers, its vouchers
    (existing, redeemed) and its confirmed referral conversions. One index range each."""
    per_promotion = await connection.fetch(
        f"""SELECT promotion_id, currency, count(*) FILTER (WHERE state = 'committed') AS n,
                   sum(discount - discount_reversed) FILTER (WHERE state = 'committed')::bigint AS discount,
                   sum(points - points_reversed) FILTER (WHERE state = 'committed')::bigint AS points
            FROM {SCHEMA}.redemptions
            WHERE tenant_id = $1 AND campaign_id = $2 AND ($3::timestamptz IS NULL OR created_at >= $3)
              AND created_at < $4
            GROUP BY promotion_id, currency ORDER BY promotion_id, currency""",
        tenant,
        campaign_id,
        first,
        last,
    )
    totals = await connection.fetchrow(
        f"""SELECT count(DISTINCT checkout_id) FILTER (WHERE state = 'committed') AS committed,
                   count(DISTINCT checkout_id) FILTER (WHERE state IN ('rolled_back', 'expired')) AS released,
                   count(DISTINCT customer_id) FILTER (WHERE state = 'committed') AS customers,
                   coalesce(sum(basket_revenue) FILTER (WHERE state = 'committed' AND first), 0)::bigint
                       AS revenue
            FROM {SCHEMA}.redemptions
            WHERE tenant_id = $1 AND campaign_id = $2 AND ($3::timestamptz IS NULL OR created_at >= $3)
              AND created_at < $4""",
        tenant,
        campaign_id,
        first,
        last,
    )
    vouchers = await connection.fetchrow(
        f"""SELECT count(*) AS existing, count(*) FILTER (WHERE redemption_count > 0) AS redeemed
            FROM {SCHEMA}.vouchers WHERE tenant_id = $1 AND campaign_id = $2 AND created_at < $3""",
        tenant,
        campaign_id,
        last,
    )
    conversions = await connection.fetchval(
        f"""SELECT count(*) FROM {SCHEMA}.referral_conversions
            WHERE tenant_id = $1 AND campaign_id = $2 AND state = 'confirmed'
              AND ($3::timestamptz IS NULL OR created_at >= $3) AND created_at < $4""",
        tenant,
        campaign_id,
        first,
        last,
    )
    grants = await connection.fetchval(
        f"""SELECT count(*) FROM {SCHEMA}.reward_grants
            WHERE tenant_id = $1 AND campaign_id = $2 AND state <> 'reversed'
              AND ($3::timestamptz IS NULL OR created_at >= $3) AND created_at < $4""",
        tenant,
        campaign_id,
        first,
        last,
    )
    return {
        "promotions": [dict(r) for r in per_promotion],
        "revenue": totals["revenue"],
        "grants": grants,
        "committed": totals["committed"],
        "released": totals["released"],
        "customers": totals["customers"],
        "vouchers": vouchers["existing"],
        "redeemed_vouchers": vouchers["redeemed"],
        "conversions": conversions,
    }
