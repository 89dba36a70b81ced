"""points.expiring from a real ledger server through notification's real consumer: one e-mail per
warned lot, in the customer's language and with the date as it falls in their time zone."""

import asyncio
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio import Redis

from loyalty.ledger.v1 import ledger_pb2, ledger_service_pb2 as ledger_api, ledger_service_pb2_grpc
from loyalty_ledger.service import DEFINITION as LEDGER
from loyalty_runtime.testing import migrated_settings, running_service
from tests.service.ledger.helpers import Client as LedgerClient
from tests.service.notification.helpers import EMAIL, key, variant

pytestmark = pytest.mark.usefixtures("workers")

MONATE = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
]
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(scope="module")
async def ledger(database_url, redis_url):
    settings = await migrated_settings(
        LEDGER, database_url, redis_url, expiry_interval_seconds=0, tier_interval_seconds=0
    )
    async with running_service(LEDGER, settings) as service:
        service.stub = ledger_service_pb2_grpc.LedgerServiceStub(service.channel)
        yield service


def late_evening_utc(days: int) -> datetime:
    """23:30 UTC `days` from today: already the next day in Berlin."""
    return datetime.combine(datetime.now(UTC).date() + timedelta(days=days), time(23, 30), UTC)


def stamp(at: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(at)
    return value


def german(at: datetime) -> str:
    local = at.astimezone(BERLIN)
    return f"{local.day}. {MONATE[local.month - 1]} {local.year}"


def text(email) -> str:
    part = next(p for p in email.walk() if p.get_content_type() == "text/plain")
    return part.get_payload(decode=True).decode().strip()


async def mails_to(smtp, address: str, count: int) -> list:
    for _ in range(400):
        found = [email for recipients, email in smtp.messages if recipients == [address]]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    return found


async def test_expiring_points_are_announced_once_per_lot_in_the_customers_locale_and_zone(
    tenant, ledger, smtp, redis_url, db
):
    warning = variant(
        EMAIL,
        "de",
        subject="{{ customer.given_name }}, Ihre Punkte verfallen",
        body="{{ points | number }} Punkte verfallen am {{ expiry_date | date }}.",
    )
    await tenant.template("points_expiring", variants=[warning])
    address = f"expiring.{key()[:8]}@example.com"
    # No marketing consent: the warning is about the customer's own account (transactional).
    customer = await tenant.enrol(email=address, locale="de-DE", time_zone="Europe/Berlin")
    books = LedgerClient(ledger, tenant.tenant_id)
    program = await books.program(
        expiry_policy=ledger_pb2.ExpiryPolicy(
            rule=ledger_pb2.EXPIRY_RULE_MONTHS_AFTER_EARN, months=12, warning_days=30
        )
    )
    account = await books.account(program, customer)
    first, second = late_evening_utc(10), late_evening_utc(20)
    await books.earn(account, 1250, expire_time=stamp(first))
    await books.RunExpiry(ledger_api.RunExpiryRequest(idempotency_key=key()))

    [email] = await mails_to(smtp, address, 1)
    assert email["Subject"] == "Ana, Ihre Punkte verfallen"
    assert text(email) == f"1.250 Punkte verfallen am {german(first)}."
    assert "List-Unsubscribe" not in email

    # The stream delivers the same event again, after the consumer forgot it had handled it (as
    # it does after `processed_events_retention_hours`); then the ledger warns of a later lot.
    redis = Redis.from_url(redis_url)
    try:
        [fields] = [
            f
            for _, f in await redis.xrange("ledger.events")
            if f[b"tenant"].decode() == tenant.tenant_id and f[b"type"] == b"points.expiring"
        ]
        forgotten = await db.execute(
            "DELETE FROM notification.processed_events WHERE event_id = $1", fields[b"id"].decode()
        )
        assert forgotten == "DELETE 1"
        await redis.xadd("ledger.events", fields)
    finally:
        await redis.aclose()
    await books.earn(account, 40, expire_time=stamp(second))
    await books.RunExpiry(ledger_api.RunExpiryRequest(idempotency_key=key()))

    # Events of one account are handled in stream order: the later lot's mail comes after the
    # redelivery was handled, and the redelivery sent nothing.
    await mails_to(smtp, address, 2)
    await asyncio.sleep(0.5)
    assert [text(email) for email in await mails_to(smtp, address, 2)] == [
        f"1.250 Punkte verfallen am {german(first)}.",
        f"40 Punkte verfallen am {german(second)}.",
    ]
