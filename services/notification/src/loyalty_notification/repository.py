"""The notification service's SQL, as PostgreSQL text on the unit of work's asyncpg connection.
Every statement names the caller's tenant (`uow.tenant`)."""

from datetime import datetime, timedelta

import asyncpg

from loyalty_notification.commands import MessageQuery
from loyalty_notification.domain.model import (
    PENDING,
    SENT,
    Attempt,
    AttemptStatus,
    Cap,
    CapPolicy,
    Channel,
    Message,
    Purpose,
    QuietHours,
    Status,
    Suppression,
    Template,
    TemplateState,
    Variant,
)
from loyalty_runtime.errors import AlreadyExists, Reason
from loyalty_runtime.uow import UnitOfWork

SCHEMA = "notification"

# Messages that count against a frequency cap: everything not suppressed, failed or cancelled.
COUNTED = ("queued", "scheduled", "sending", "sent", "delivered")


# --- templates ---


def _stored_variants(variants: tuple[Variant, ...]) -> list[dict]:
    """The variants as JSON values (the connection's codec encodes jsonb)."""
    return [
        {
            "channel": v.channel.value,
            "locale": v.locale,
            "subject": v.subject,
            "body": v.body,
            "html_body": v.html_body,
        }
        for v in variants
    ]


def _template(row) -> Template:
    variants = tuple(
        Variant(Channel(v["channel"]), v["locale"], v["subject"], v["body"], v["html_body"])
        for v in row["variants"]
    )
    return Template(
        template_id=str(row["template_id"]),
        key=row["key"],
        display_name=row["display_name"],
        purpose=Purpose(row["purpose"]),
        state=TemplateState(row["state"]),
        default_locale=row["default_locale"],
        variants=variants,
        variable_names=tuple(row["variable_names"]),
        version=row["version"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


async def insert_template(uow: UnitOfWork, template: Template) -> Template:
    try:
        row = await uow.connection.fetchrow(
            f"""INSERT INTO {SCHEMA}.templates (tenant_id, template_id, key, display_name, purpose, state,
                    default_locale, variable_names, variants, version, create_time, update_time)
                VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, 1, $9, $9) RETURNING *""",
            uow.tenant,
            template.template_id,
            template.key,
            template.display_name,
            template.purpose.value,
            template.default_locale,
            list(template.variable_names),
            _stored_variants(template.variants),
            uow.now,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(
            Reason.TEMPLATE_KEY_TAKEN, "a template with this key exists", field="template.key"
        ) from None
    return _template(row)


async def template_by_id(uow: UnitOfWork, template_id: str) -> Template | None:
    row = await uow.connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.templates WHERE tenant_id = $1 AND template_id = $2", uow.tenant, template_id
    )
    return _template(row) if row else None


async def template_by_key(uow: UnitOfWork, key: str) -> Template | None:
    row = await uow.connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.templates WHERE tenant_id = $1 AND key = $2", uow.tenant, key
    )
    return _template(row) if row else None


async def template_for_update(uow: UnitOfWork, template_id: str) -> Template | None:
    """The template, locked until COMMIT (a concurrent update waits, then sees the new version)."""
    row = await uow.connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.templates WHERE tenant_id = $1 AND template_id = $2 FOR UPDATE",
        uow.tenant,
        template_id,
    )
    return _template(row) if row else None


async def save_template(uow: UnitOfWork, template: Template) -> Template:
    """The template's content and state as given, its version bumped (so its etag changes)."""
    row = await uow.connection.fetchrow(
        f"""UPDATE {SCHEMA}.templates SET display_name = $3, purpose = $4, state = $5, default_locale = $6,
                variable_names = $7, variants = $8, version = version + 1, update_time = $9
            WHERE tenant_id = $1 AND template_id = $2 RETURNING *""",
        uow.tenant,
        template.template_id,
        template.display_name,
        template.purpose.value,
        template.state.value,
        template.default_locale,
        list(template.variable_names),
        _stored_variants(template.variants),
        uow.now,
    )
    return _template(row)


async def templates(
    uow: UnitOfWork, purpose: Purpose | None, show_archived: bool, after_key: str, limit: int
) -> list[Template]:
    """By key, after `after_key`."""
    rows = await uow.connection.fetch(
        f"""SELECT * FROM {SCHEMA}.templates
            WHERE tenant_id = $1 AND key > $2 AND ($3::varchar IS NULL OR purpose = $3)
              AND ($4 OR state = 'active')
            ORDER BY key LIMIT $5""",
        uow.tenant,
        after_key,
        purpose.value if purpose else None,
        show_archived,
        limit,
    )
    return [_template(row) for row in rows]


# --- the tenant's settings (a copy of the gateway's) ---


async def default_locale(uow: UnitOfWork) -> str:
    """The tenant's default locale as the gateway last said; empty until it did."""
    return (
        await uow.connection.fetchval(
            f"SELECT default_locale FROM {SCHEMA}.tenant_settings WHERE tenant_id = $1", uow.tenant
        )
        or ""
    )


async def follow_gateway_settings(uow: UnitOfWork, locale: str, gateway_version: int) -> None:
    """Keep the gateway's `gateway_version` of the default locale unless a newer one is kept."""
    await uow.connection.execute(
        f"""INSERT INTO {SCHEMA}.tenant_settings AS s (tenant_id, default_locale, gateway_version, update_time)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (tenant_id) DO UPDATE SET default_locale = EXCLUDED.default_locale,
                gateway_version = EXCLUDED.gateway_version, update_time = EXCLUDED.update_time
            WHERE s.gateway_version < EXCLUDED.gateway_version""",
        uow.tenant,
        locale,
        gateway_version,
        uow.now,
    )


# --- cap policies ---


async def cap_policy(uow: UnitOfWork) -> CapPolicy:
    row = await uow.connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.cap_policies WHERE tenant_id = $1", uow.tenant
    )
    if row is None:
        return CapPolicy()
    caps = tuple(
        Cap(Channel(c["channel"]) if c["channel"] else None, c["max_messages"], c["window_seconds"])
        for c in row["caps"]
    )
    quiet = (
        QuietHours(row["quiet_start_minute"], row["quiet_end_minute"], row["default_time_zone"])
        if row["quiet_start_minute"] is not None
        else None
    )
    return CapPolicy(caps, quiet, row["version"], row["update_time"])


async def save_cap_policy(uow: UnitOfWork, policy: CapPolicy) -> CapPolicy:
    caps = [
        {
            "channel": c.channel.value if c.channel else None,
            "max_messages": c.max_messages,
            "window_seconds": c.window_seconds,
        }
        for c in policy.caps
    ]
    quiet = policy.quiet_hours
    await uow.connection.execute(
        f"""INSERT INTO {SCHEMA}.cap_policies AS p (tenant_id, caps, quiet_start_minute, quiet_end_minute,
                default_time_zone, version, update_time)
            VALUES ($1, $2, $3, $4, $5, 1, $6)
            ON CONFLICT (tenant_id) DO UPDATE SET caps = EXCLUDED.caps,
                quiet_start_minute = EXCLUDED.quiet_start_minute, quiet_end_minute = EXCLUDED.quiet_end_minute,
                default_time_zone = EXCLUDED.default_time_zone, version = p.version + 1,
                update_time = EXCLUDED.update_time""",
        uow.tenant,
        caps,
        quiet.start_minute if quiet else None,
        quiet.end_minute if quiet else None,
        quiet.default_time_zone if quiet else "",
        uow.now,
    )
    return await cap_policy(uow)


async def lock_customer(uow: UnitOfWork, customer_id: str) -> None:
    """Serialises cap checks for one customer until COMMIT (two concurrent sends cannot both take
    the last slot)."""
    await uow.connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"notification:{uow.tenant}:{customer_id}"
    )


async def counted_messages(
    uow: UnitOfWork, customer_id: str, caps: tuple[Cap, ...]
) -> dict[tuple[Channel | None, int], int]:
    """Marketing messages of the customer inside each cap's window (per channel, or all)."""
    counts = {}
    for cap in caps:
        counts[(cap.channel, cap.window_seconds)] = await uow.connection.fetchval(
            f"""SELECT count(*) FROM {SCHEMA}.messages
                WHERE tenant_id = $1 AND customer_id = $2 AND purpose = 'marketing'
                  AND status = ANY($3::varchar[]) AND create_time > $4
                  AND ($5::varchar IS NULL OR channel = $5)""",
            uow.tenant,
            customer_id,
            list(COUNTED),
            uow.now - timedelta(seconds=cap.window_seconds),
            cap.channel.value if cap.channel else None,
        )
    return counts


# --- messages ---


def _message(row, attempts: tuple[Attempt, ...] = ()) -> Message:
    return Message(
        message_id=str(row["message_id"]),
        idempotency_key=row["idempotency_key"],
        customer_id=row["customer_id"],
        template_id=str(row["template_id"]) if row["template_id"] else None,
        template_key=row["template_key"],
        template_version=row["template_version"],
        channel=Channel(row["channel"]) if row["channel"] else None,
        locale=row["locale"],
        purpose=Purpose(row["purpose"]),
        status=Status(row["status"]),
        suppression_reason=Suppression(row["suppression_reason"]) if row["suppression_reason"] else None,
        recipient=row["recipient"],
        recipient_hint=row["recipient_hint"],
        subject=row["subject"],
        body=row["body"],
        html_body=row["html_body"],
        correlation_id=row["correlation_id"],
        failure_reason=row["failure_reason"],
        attempt_count=row["attempt_count"],
        create_time=row["create_time"],
        scheduled_time=row["scheduled_time"],
        sent_time=row["sent_time"],
        update_time=row["update_time"],
        attempts=attempts,
        opened_time=row["opened_time"],
    )


MESSAGE_COLUMNS = (
    "message_id, idempotency_key, customer_id, template_id, template_key, template_version, channel, locale,"
    " purpose, status, suppression_reason, recipient, recipient_hint, subject, body, html_body,"
    " correlation_id, failure_reason, create_time, scheduled_time, update_time"
)


async def insert_message(uow: UnitOfWork, m: Message) -> Message | None:
    """The new message; None when its idempotency key already names one (a concurrent twin)."""
    row = await uow.connection.fetchrow(
        f"""INSERT INTO {SCHEMA}.messages (tenant_id, {MESSAGE_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                    $20, $21, $20)
            ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING *""",
        uow.tenant,
        m.message_id,
        m.idempotency_key,
        m.customer_id,
        m.template_id,
        m.template_key,
        m.template_version,
        m.channel.value if m.channel else None,
        m.locale,
        m.purpose.value,
        m.status.value,
        m.suppression_reason.value if m.suppression_reason else None,
        m.recipient,
        m.recipient_hint,
        m.subject,
        m.body,
        m.html_body,
        m.correlation_id,
        m.failure_reason,
        m.create_time,
        m.scheduled_time,
    )
    return _message(row) if row else None


async def message_for_delivery(uow: UnitOfWork, message_id: str) -> Message | None:
    """The message, locked until COMMIT, without its attempts (a delivery needs only their count)."""
    row = await uow.connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.messages WHERE tenant_id = $1 AND message_id = $2 FOR UPDATE",
        uow.tenant,
        message_id,
    )
    return _message(row) if row else None


async def message(uow: UnitOfWork, message_id: str) -> Message | None:
    row = await uow.connection.fetchrow(
        f"SELECT * FROM {SCHEMA}.messages WHERE tenant_id = $1 AND message_id = $2", uow.tenant, message_id
    )
    if row is None:
        return None
    attempts = await uow.connection.fetch(
        f"""SELECT * FROM {SCHEMA}.delivery_attempts WHERE tenant_id = $1 AND message_id = $2
            ORDER BY attempt_number""",
        uow.tenant,
        message_id,
    )
    return _message(
        row,
        tuple(
            Attempt(
                a["attempt_number"],
                a["attempt_time"],
                AttemptStatus(a["status"]),
                a["provider"],
                a["provider_message_id"],
                a["error_code"],
                a["error_message"],
            )
            for a in attempts
        ),
    )


async def record_attempt(
    uow: UnitOfWork,
    message_id: str,
    attempt: Attempt,
    status: Status,
    failure_reason: str,
    next_attempt_time: datetime | None,
) -> None:
    """The attempt's row and the message's new state, in one statement."""
    await uow.connection.execute(
        f"""WITH attempt AS (
                INSERT INTO {SCHEMA}.delivery_attempts (tenant_id, message_id, attempt_number, attempt_time,
                    status, provider, provider_message_id, error_code, error_message)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9))
            UPDATE {SCHEMA}.messages SET status = $10::varchar, failure_reason = $11, attempt_count = $3,
                sent_time = CASE WHEN $10::varchar = 'sent' THEN $4 ELSE sent_time END, update_time = $4,
                scheduled_time = COALESCE($12::timestamptz, scheduled_time)
            WHERE tenant_id = $1 AND message_id = $2""",
        uow.tenant,
        message_id,
        attempt.attempt_number,
        attempt.attempt_time,
        attempt.status.value,
        attempt.provider,
        attempt.provider_message_id,
        attempt.error_code,
        attempt.error_message,
        status.value,
        failure_reason,
        next_attempt_time,
    )


async def messages(uow: UnitOfWork, query: MessageQuery, limit: int) -> list[Message]:
    """Newest first (create_time, then id, descending), after the query's cursor; no attempts."""
    after_time, after_id = query.after or (None, None)
    rows = await uow.connection.fetch(
        f"""SELECT * FROM {SCHEMA}.messages
            WHERE tenant_id = $1
              AND ($2::varchar IS NULL OR customer_id = $2)
              AND ($3::varchar IS NULL OR status = $3)
              AND ($4::varchar IS NULL OR channel = $4)
              AND ($5::varchar IS NULL OR template_key = $5)
              AND ($6::varchar IS NULL OR correlation_id = $6)
              AND ($7::timestamptz IS NULL OR create_time >= $7)
              AND ($8::timestamptz IS NULL OR create_time < $8)
              AND ($9::timestamptz IS NULL OR (create_time, message_id) < ($9, $10::uuid))
            ORDER BY create_time DESC, message_id DESC LIMIT $11""",
        uow.tenant,
        query.customer_id or None,
        query.status.value if query.status else None,
        query.channel.value if query.channel else None,
        query.template_key or None,
        query.correlation_id or None,
        query.start_time,
        query.end_time,
        after_time,
        after_id,
        limit,
    )
    return [_message(row) for row in rows]


async def cancel_message(uow: UnitOfWork, message_id: str) -> Message | None:
    """Cancelled if it was still pending; None otherwise. A delivery holding the message's lock is
    waited for, and the status re-checked after it commits, so a message is never both sent and
    cancelled."""
    row = await uow.connection.fetchrow(
        f"""UPDATE {SCHEMA}.messages SET status = 'cancelled', update_time = $3
            WHERE tenant_id = $1 AND message_id = $2 AND status = ANY($4::varchar[]) RETURNING *""",
        uow.tenant,
        message_id,
        uow.now,
        [status.value for status in PENDING],
    )
    return _message(row) if row else None


async def mark_opened(uow: UnitOfWork, message_id: str) -> Message | None:
    """open_time set, if the message was sent and not opened before; None otherwise (so the first
    open, and only it, is told)."""
    row = await uow.connection.fetchrow(
        f"""UPDATE {SCHEMA}.messages SET opened_time = $3, update_time = $3
            WHERE tenant_id = $1 AND message_id = $2 AND opened_time IS NULL
              AND status = ANY($4::varchar[]) RETURNING *""",
        uow.tenant,
        message_id,
        uow.now,
        [status.value for status in SENT],
    )
    return _message(row) if row else None


# --- customer data (GDPR export, erasure, merges) ---


async def customer_messages(uow: UnitOfWork, customer_id: str) -> list[Message]:
    """Every message to the customer, oldest first, with its attempts."""
    rows = await uow.connection.fetch(
        f"""SELECT m.*, coalesce((
                SELECT json_agg(json_build_array(a.attempt_number, a.attempt_time, a.status, a.provider,
                                                 a.provider_message_id, a.error_code, a.error_message)
                                ORDER BY a.attempt_number)
                FROM {SCHEMA}.delivery_attempts a
                WHERE a.tenant_id = m.tenant_id AND a.message_id = m.message_id), '[]') AS attempt_rows
            FROM {SCHEMA}.messages m WHERE m.tenant_id = $1 AND m.customer_id = $2
            ORDER BY m.create_time, m.message_id""",
        uow.tenant,
        customer_id,
    )
    return [
        _message(
            row,
            tuple(
                Attempt(number, datetime.fromisoformat(at), AttemptStatus(status), *rest)
                for number, at, status, *rest in row["attempt_rows"]
            ),
        )
        for row in rows
    ]


async def erase_customer(uow: UnitOfWork, customer_id: str) -> None:
    """Addresses, rendered texts and providers' error texts go; what is still pending is cancelled,
    so nothing more reaches the erased customer. Ids, statuses and times stay for the statistics."""
    await uow.connection.execute(
        f"""WITH attempts AS (
                UPDATE {SCHEMA}.delivery_attempts a SET error_message = ''
                FROM {SCHEMA}.messages m
                WHERE m.tenant_id = $1 AND m.customer_id = $2
                  AND a.tenant_id = m.tenant_id AND a.message_id = m.message_id)
            UPDATE {SCHEMA}.messages SET recipient = '', recipient_hint = '', subject = '', body = '',
                html_body = '', update_time = $3,
                status = CASE WHEN status = ANY($4::varchar[]) THEN 'cancelled' ELSE status END
            WHERE tenant_id = $1 AND customer_id = $2""",
        uow.tenant,
        customer_id,
        uow.now,
        [status.value for status in PENDING],
    )


async def move_messages(uow: UnitOfWork, survivor_id: str, merged_id: str) -> None:
    """The duplicate's messages become the survivor's (and count against the survivor's caps)."""
    await uow.connection.execute(
        f"UPDATE {SCHEMA}.messages SET customer_id = $2 WHERE tenant_id = $1 AND customer_id = $3",
        uow.tenant,
        survivor_id,
        merged_id,
    )
