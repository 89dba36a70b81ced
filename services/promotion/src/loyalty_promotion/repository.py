"""SQL on asyncpg for the promotion service's own schema. Every statement filters by the caller's
tenant; a row of another tenant is indistinguishable from a missing one."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

SCHEMA = "promotion"


@dataclass(frozen=True)
class StoredCampaign:
    campaign_id: str
    state: str
    version: int
    payload: bytes


@dataclass(frozen=True)
class StoredPromotion:
    promotion_id: str
    campaign_id: str
    version: int
    payload: bytes


@dataclass(frozen=True)
class StatisticsDelta:
    """What one replica counted since its last flush for one (campaign, promotion, currency, day)."""

    tenant_id: str
    campaign_id: str
    promotion_id: str
    currency: str
    day: date
    evaluations: int
    discount: int
    points: int


def _campaign(row) -> StoredCampaign | None:
    if row is None:
        return None
    return StoredCampaign(str(row["campaign_id"]), row["state"], row["version"], bytes(row["payload"]))


def _promotion(row) -> StoredPromotion | None:
    if row is None:
        return None
    return StoredPromotion(
        str(row["promotion_id"]), str(row["campaign_id"]), row["version"], bytes(row["payload"])
    )


_CAMPAIGN = "campaign_id, state, version, payload"
_PROMOTION = "promotion_id, campaign_id, version, payload"


async def insert_campaign(
    connection: asyncpg.Connection,
    tenant: str,
    campaign_id: str,
    state: str,
    priority: int,
    payload: bytes,
    end_at: datetime | None,
) -> None:
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.campaigns (tenant_id, campaign_id, state, priority, version, payload, end_at)
            VALUES ($1, $2, $3, $4, 1, $5, $6)""",
        tenant,
        campaign_id,
        state,
        priority,
        payload,
        end_at,
    )


async def get_campaign(
    connection: asyncpg.Connection, tenant: str, campaign_id: str, *, lock: bool = False
) -> StoredCampaign | None:
    """One campaign; with `lock`, its row is held until the transaction ends, so concurrent changes
    of one campaign run one after the other."""
    row = await connection.fetchrow(
        f"SELECT {_CAMPAIGN} FROM {SCHEMA}.campaigns WHERE tenant_id = $1 AND campaign_id = $2"
        + (" FOR UPDATE" if lock else ""),
        tenant,
        campaign_id,
    )
    return _campaign(row)


async def update_campaign(
    connection: asyncpg.Connection,
    tenant: str,
    campaign_id: str,
    state: str,
    priority: int,
    payload: bytes,
    end_at: datetime | None,
) -> int:
    """Writes the new version (the row is locked by this transaction); returns its version. A moved
    end is announced again when it comes."""
    return await connection.fetchval(
        f"""UPDATE {SCHEMA}.campaigns SET state = $3, priority = $4, payload = $5,
                   version = version + 1, updated_at = now(),
                   ended_at = CASE WHEN end_at IS DISTINCT FROM $6 THEN NULL ELSE ended_at END,
                   end_at = $6
            WHERE tenant_id = $1 AND campaign_id = $2 RETURNING version""",
        tenant,
        campaign_id,
        state,
        priority,
        payload,
        end_at,
    )


async def ending_campaigns(
    connection: asyncpg.Connection, now: datetime, limit: int
) -> list[tuple[str, str]]:
    """(tenant, campaign id) of live campaigns, every tenant's, whose schedule ended by `now` and
    whose end was not announced yet (the sweep's own read, across tenants), soonest first."""
    rows = await connection.fetch(
        f"""SELECT tenant_id, campaign_id FROM {SCHEMA}.campaigns
            WHERE ended_at IS NULL AND state IN ('scheduled', 'active') AND end_at <= $1
            ORDER BY end_at LIMIT $2""",
        now,
        limit,
    )
    return [(row["tenant_id"], str(row["campaign_id"])) for row in rows]


async def mark_ended(
    connection: asyncpg.Connection, tenant: str, campaign_id: str, now: datetime
) -> datetime | None:
    """Claims the announcement of the campaign's end (one statement, so of two sweeps only one
    claims it); its end when claimed, None when it is not due or was claimed already."""
    return await connection.fetchval(
        f"""UPDATE {SCHEMA}.campaigns SET ended_at = end_at
            WHERE tenant_id = $1 AND campaign_id = $2 AND ended_at IS NULL
              AND state IN ('scheduled', 'active') AND end_at <= $3
            RETURNING end_at""",
        tenant,
        campaign_id,
        now,
    )


async def delete_campaign(connection: asyncpg.Connection, tenant: str, campaign_id: str) -> None:
    await connection.execute(
        f"DELETE FROM {SCHEMA}.campaigns WHERE tenant_id = $1 AND campaign_id = $2", tenant, campaign_id
    )


async def list_campaigns(
    connection: asyncpg.Connection,
    tenant: str,
    states: Sequence[str],
    after: tuple[int, str] | None,
    limit: int,
) -> list[StoredCampaign]:
    """Highest priority first, then by id; `after` = the (priority, id) of the last one seen."""
    rows = await connection.fetch(
        f"""SELECT {_CAMPAIGN} FROM {SCHEMA}.campaigns
            WHERE tenant_id = $1 AND state = ANY($2::varchar[])
              AND ($3::int IS NULL OR (-priority, campaign_id) > (-$3::int, $4::uuid))
            ORDER BY -priority, campaign_id LIMIT $5""",
        tenant,
        list(states),
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_campaign(row) for row in rows]


async def campaigns_in_states(
    connection: asyncpg.Connection, tenant: str, states: Sequence[str]
) -> list[StoredCampaign]:
    rows = await connection.fetch(
        f"SELECT {_CAMPAIGN} FROM {SCHEMA}.campaigns WHERE tenant_id = $1 AND state = ANY($2::varchar[])",
        tenant,
        list(states),
    )
    return [_campaign(row) for row in rows]


async def insert_promotion(
    connection: asyncpg.Connection,
    tenant: str,
    promotion_id: str,
    campaign_id: str,
    priority: int,
    payload: bytes,
) -> None:
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.promotions (tenant_id, promotion_id, campaign_id, priority, version, payload)
            VALUES ($1, $2, $3, $4, 1, $5)""",
        tenant,
        promotion_id,
        campaign_id,
        priority,
        payload,
    )


async def get_promotion(
    connection: asyncpg.Connection, tenant: str, promotion_id: str
) -> StoredPromotion | None:
    row = await connection.fetchrow(
        f"SELECT {_PROMOTION} FROM {SCHEMA}.promotions WHERE tenant_id = $1 AND promotion_id = $2",
        tenant,
        promotion_id,
    )
    return _promotion(row)


async def update_promotion(
    connection: asyncpg.Connection, tenant: str, promotion_id: str, priority: int, payload: bytes
) -> int:
    return await connection.fetchval(
        f"""UPDATE {SCHEMA}.promotions SET priority = $3, payload = $4, version = version + 1
            WHERE tenant_id = $1 AND promotion_id = $2 RETURNING version""",
        tenant,
        promotion_id,
        priority,
        payload,
    )


async def delete_promotion(connection: asyncpg.Connection, tenant: str, promotion_id: str) -> None:
    await connection.execute(
        f"DELETE FROM {SCHEMA}.promotions WHERE tenant_id = $1 AND promotion_id = $2", tenant, promotion_id
    )


async def promotions_of(
    connection: asyncpg.Connection, tenant: str, campaign_ids: Sequence[str]
) -> list[StoredPromotion]:
    """The promotions of these campaigns, highest priority first within each."""
    rows = await connection.fetch(
        f"""SELECT {_PROMOTION} FROM {SCHEMA}.promotions
            WHERE tenant_id = $1 AND campaign_id = ANY($2::uuid[])
            ORDER BY campaign_id, -priority, promotion_id""",
        tenant,
        list(campaign_ids),
    )
    return [_promotion(row) for row in rows]


async def bump_catalog_version(connection: asyncpg.Connection, tenant: str) -> int:
    """Counts one more change of what the tenant's catalog is compiled from (in the change's
    transaction, so the version and the change commit together)."""
    return await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.catalog_versions (tenant_id, version) VALUES ($1, 1)
            ON CONFLICT (tenant_id) DO UPDATE SET version = catalog_versions.version + 1
            RETURNING version""",
        tenant,
    )


async def catalog_version(connection: asyncpg.Connection, tenant: str) -> int:
    version = await connection.fetchval(
        f"SELECT version FROM {SCHEMA}.catalog_versions WHERE tenant_id = $1", tenant
    )
    return version or 0


async def get_settings(
    connection: asyncpg.Connection, tenant: str, *, lock: bool = False
) -> tuple[int, bytes] | None:
    """(version, PromotionSettings bytes), None while the tenant has the defaults."""
    row = await connection.fetchrow(
        f"SELECT version, payload FROM {SCHEMA}.tenant_settings WHERE tenant_id = $1"
        + (" FOR UPDATE" if lock else ""),
        tenant,
    )
    return (row["version"], bytes(row["payload"])) if row else None


async def save_settings(connection: asyncpg.Connection, tenant: str, payload: bytes) -> int:
    """Insert or replace (the caller holds the row's lock, or there is no row yet and the primary
    key makes a racing insert wait and then update); returns the new version."""
    return await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.tenant_settings (tenant_id, version, payload) VALUES ($1, 1, $2)
            ON CONFLICT (tenant_id) DO UPDATE SET payload = excluded.payload,
                version = tenant_settings.version + 1
            RETURNING version""",
        tenant,
        payload,
    )


async def gateway_settings_version(connection: asyncpg.Connection, tenant: str, *, lock: bool = False) -> int:
    """The version of the gateway's tenant settings the time zone was copied from; 0: never."""
    return (
        await connection.fetchval(
            f"SELECT gateway_version FROM {SCHEMA}.tenant_settings WHERE tenant_id = $1"
            + (" FOR UPDATE" if lock else ""),
            tenant,
        )
        or 0
    )


async def save_followed_settings(
    connection: asyncpg.Connection, tenant: str, payload: bytes, gateway_version: int, *, replace: bool
) -> int | None:
    """Store settings that follow the gateway's `gateway_version`: replacing the row the caller holds
    locked, or inserting the first one (None if another insert came first: the caller retries, so
    the other's fields are not overwritten with defaults)."""
    conflict = (
        """DO UPDATE SET payload = excluded.payload, version = tenant_settings.version + 1,
               gateway_version = excluded.gateway_version"""
        if replace
        else "DO NOTHING"
    )
    return await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.tenant_settings (tenant_id, version, payload, gateway_version)
            VALUES ($1, 1, $2, $3) ON CONFLICT (tenant_id) {conflict} RETURNING version""",
        tenant,
        payload,
        gateway_version,
    )


async def add_statistics(connection: asyncpg.Connection, deltas: Sequence[StatisticsDelta]) -> None:
    """Adds one flush's counts in one statement (sorted, so two replicas flushing at once take the
    rows' locks in the same order and never deadlock)."""
    ordered = sorted(deltas, key=lambda d: (d.tenant_id, d.campaign_id, d.promotion_id, d.currency, d.day))
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.campaign_statistics AS s
                (tenant_id, campaign_id, promotion_id, currency, day, evaluations, discount, points)
            SELECT * FROM unnest($1::varchar[], $2::uuid[], $3::varchar[], $4::varchar[], $5::date[],
                                 $6::bigint[], $7::bigint[], $8::bigint[])
            ON CONFLICT (tenant_id, campaign_id, promotion_id, currency, day) DO UPDATE SET
                evaluations = s.evaluations + excluded.evaluations,
                discount = s.discount + excluded.discount,
                points = s.points + excluded.points""",
        [d.tenant_id for d in ordered],
        [d.campaign_id for d in ordered],
        [d.promotion_id for d in ordered],
        [d.currency for d in ordered],
        [d.day for d in ordered],
        [d.evaluations for d in ordered],
        [d.discount for d in ordered],
        [d.points for d in ordered],
    )


async def read_statistics(
    connection: asyncpg.Connection, tenant: str, campaign_id: str, first: date | None, last: date | None
) -> list[tuple[str, str, int, int, int]]:
    """(promotion_id, currency, evaluations, discount, points) summed over the days in range."""
    rows = await connection.fetch(
        f"""SELECT promotion_id, currency, sum(evaluations)::bigint AS evaluations,
                   sum(discount)::bigint AS discount, sum(points)::bigint AS points
            FROM {SCHEMA}.campaign_statistics
            WHERE tenant_id = $1 AND campaign_id = $2
              AND ($3::date IS NULL OR day >= $3) AND ($4::date IS NULL OR day <= $4)
            GROUP BY promotion_id, currency ORDER BY promotion_id, currency""",
        tenant,
        campaign_id,
        first,
        last,
    )
    return [(r["promotion_id"], r["currency"], r["evaluations"], r["discount"], r["points"]) for r in rows]


# --- earning rules and burn policies ---


@dataclass(frozen=True)
class StoredRule:
    earning_rule_id: str
    version: int
    payload: bytes


def _rule(row) -> StoredRule | None:
    return (
        None
        if row is None
        else StoredRule(str(row["earning_rule_id"]), row["version"], bytes(row["payload"]))
    )


async def insert_earning_rule(
    connection: asyncpg.Connection, tenant: str, rule_id: str, program_id: str, priority: int, payload: bytes
) -> None:
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.earning_rules (tenant_id, earning_rule_id, program_id, priority, version, payload)
            VALUES ($1, $2, $3, $4, 1, $5)""",
        tenant,
        rule_id,
        program_id,
        priority,
        payload,
    )


async def get_earning_rule(
    connection: asyncpg.Connection, tenant: str, rule_id: str, *, lock: bool = False
) -> StoredRule | None:
    row = await connection.fetchrow(
        f"""SELECT earning_rule_id, version, payload FROM {SCHEMA}.earning_rules
            WHERE tenant_id = $1 AND earning_rule_id = $2"""
        + (" FOR UPDATE" if lock else ""),
        tenant,
        rule_id,
    )
    return _rule(row)


async def update_earning_rule(
    connection: asyncpg.Connection, tenant: str, rule_id: str, priority: int, payload: bytes
) -> int:
    return await connection.fetchval(
        f"""UPDATE {SCHEMA}.earning_rules SET priority = $3, payload = $4, version = version + 1
            WHERE tenant_id = $1 AND earning_rule_id = $2 RETURNING version""",
        tenant,
        rule_id,
        priority,
        payload,
    )


async def delete_earning_rule(connection: asyncpg.Connection, tenant: str, rule_id: str) -> None:
    await connection.execute(
        f"DELETE FROM {SCHEMA}.earning_rules WHERE tenant_id = $1 AND earning_rule_id = $2", tenant, rule_id
    )


async def list_earning_rules(
    connection: asyncpg.Connection,
    tenant: str,
    program_id: str,
    after: tuple[int, str] | None,
    limit: int | None,
) -> list[StoredRule]:
    """Highest priority first, then by id; every programme's when program_id is empty."""
    rows = await connection.fetch(
        f"""SELECT earning_rule_id, version, payload FROM {SCHEMA}.earning_rules
            WHERE tenant_id = $1 AND ($2::varchar = '' OR program_id = $2::varchar)
              AND ($3::int IS NULL OR (-priority, earning_rule_id) > (-$3::int, $4::uuid))
            ORDER BY -priority, earning_rule_id LIMIT $5""",
        tenant,
        program_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_rule(row) for row in rows]


async def get_burn_policy(
    connection: asyncpg.Connection, tenant: str, program_id: str, *, lock: bool = False
) -> tuple[int, bytes] | None:
    row = await connection.fetchrow(
        f"SELECT version, payload FROM {SCHEMA}.burn_policies WHERE tenant_id = $1 AND program_id = $2"
        + (" FOR UPDATE" if lock else ""),
        tenant,
        program_id,
    )
    return (row["version"], bytes(row["payload"])) if row else None


async def save_burn_policy(
    connection: asyncpg.Connection, tenant: str, program_id: str, payload: bytes
) -> int:
    return await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.burn_policies (tenant_id, program_id, version, payload) VALUES ($1, $2, 1, $3)
            ON CONFLICT (tenant_id, program_id) DO UPDATE SET payload = excluded.payload,
                version = burn_policies.version + 1
            RETURNING version""",
        tenant,
        program_id,
        payload,
    )


async def burn_policies(connection: asyncpg.Connection, tenant: str) -> list[bytes]:
    rows = await connection.fetch(
        f"SELECT payload FROM {SCHEMA}.burn_policies WHERE tenant_id = $1 ORDER BY program_id", tenant
    )
    return [bytes(r["payload"]) for r in rows]
