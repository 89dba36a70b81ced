"""reward.granted (promotion) and purchase.committed (gateway) as their relays put them on the streams,
through notification's real consumer and delivery workers into a real SMTP receiver: one message
per grant and per checkout however often the event arrives, none without a template."""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.common.v1 import money_pb2
from loyalty.fraud.v1 import assessment_pb2, events_pb2 as fraud_events, review_pb2
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.notification.v1 import notification_service_pb2 as api
from loyalty.promotion.v1 import events_pb2 as promotion_events, reward_pb2
from tests.service.notification.helpers import EMAIL, key, publish, variant

pytestmark = pytest.mark.usefixtures("workers")


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


async def messages_of(tenant, customer_id: str) -> list:
    answer = await tenant.stub.ListMessages(
        api.ListMessagesRequest(customer_id=customer_id), metadata=tenant.md
    )
    return list(answer.messages)


def grant(
    customer_id: str, reward: reward_pb2.Reward, campaign_id: str = "spring"
) -> promotion_events.RewardGranted:
    return promotion_events.RewardGranted(
        grant_id=str(uuid.uuid4()),
        customer_id=customer_id,
        campaign_id=campaign_id,
        trigger_id="t-1",
        source_event_id="profile.events:1",
        reward=reward,
        program_id="club",
    )


def points(amount: int) -> reward_pb2.Reward:
    return reward_pb2.Reward(points=reward_pb2.PointsReward(points=amount))


def purchase(
    customer_id: str, *, net_minor: int, at: datetime, receipt: str
) -> gateway_events.PurchaseCommitted:
    when = Timestamp()
    when.FromDatetime(at)
    return gateway_events.PurchaseCommitted(
        checkout_id=str(uuid.uuid4()),
        customer_id=customer_id,
        net_total=money_pb2.Money(currency_code="EUR", amount_minor=net_minor),
        points_earned=123,
        points_burned=1000,
        receipt_number=receipt,
        purchase_time=when,
    )


async def handled(db, event_id: str) -> None:
    """Once notification's consumer has handled the event (its dedupe row is written)."""
    for _ in range(400):
        if await db.fetchval(
            "SELECT count(*) FROM notification.processed_events WHERE event_id = $1", event_id
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"event {event_id} not handled")


async def job_state(db, tenant_id: str, dedupe_key: str) -> str | None:
    for _ in range(400):
        state = await db.fetchval(
            "SELECT state FROM notification.jobs WHERE tenant_id = $1 AND dedupe_key = $2",
            tenant_id,
            dedupe_key,
        )
        if state not in (None, "queued"):
            return state
        await asyncio.sleep(0.05)
    return state


async def test_a_reward_grant_is_announced_once_even_if_delivered_twice(tenant, smtp, redis_url):
    body = (
        "{% if reward_kind == 'points' %}{{ points | number }} Punkte{% else %}Ein Gutschein{% endif %}"
        " aus {{ campaign_id }}."
    )
    await tenant.template("reward_granted", variants=[variant(EMAIL, "de", subject="Belohnung", body=body)])
    address = f"reward.{key()[:8]}@example.com"
    # No marketing consent: a reward the customer earned is news about their own account.
    customer = await tenant.enrol(email=address, locale="de-DE")

    first = grant(customer, points(1500))
    event_id = await publish(redis_url, "promotion.events", tenant.tenant_id, first)
    # Redelivered as is (a relay that died before deleting its batch), then under a new event id:
    # the grant, not the event, is what is announced once.
    await publish(redis_url, "promotion.events", tenant.tenant_id, first, event_id=event_id)
    await publish(redis_url, "promotion.events", tenant.tenant_id, first)
    voucher = reward_pb2.Reward(voucher=reward_pb2.VoucherReward(campaign_id="v-1"))
    second = grant(customer, voucher, "autumn")
    await publish(redis_url, "promotion.events", tenant.tenant_id, second)

    # One customer's events are handled in stream order: once the second grant's mail is there,
    # both redeliveries were handled.
    await mails_to(smtp, address, 2)
    await asyncio.sleep(0.5)
    mails = await mails_to(smtp, address, 2)
    assert sorted(text(email) for email in mails) == ["1.500 Punkte aus spring.", "Ein Gutschein aus autumn."]
    assert {email["Subject"] for email in mails} == {"Belohnung"}
    assert "List-Unsubscribe" not in mails[0]
    assert sorted(m.idempotency_key for m in await messages_of(tenant, customer)) == sorted(
        f"reward.granted:{g.grant_id}" for g in (first, second)
    )


async def test_a_receipt_is_sent_once_per_checkout_in_the_customers_locale(tenant, smtp, redis_url, db):
    await tenant.template(
        "receipt",
        variants=[
            variant(
                EMAIL,
                "de",
                subject="Beleg {{ receipt_number }}",
                body="{{ net_total | money }} am {{ purchase_time | date }}: +{{ points_earned | number }}"
                " / -{{ points_burned | number }} Punkte",
            )
        ],
    )
    address = f"receipt.{key()[:8]}@example.com"
    customer = await tenant.enrol(email=address, locale="de-DE", time_zone="Europe/Berlin")
    # 23:30 UTC on 31 May is 1 June in Berlin.
    bought = datetime(2030, 5, 31, 23, 30, tzinfo=UTC)
    checkout = purchase(customer, net_minor=123456, at=bought, receipt="R-1")

    event_id = await publish(redis_url, "gateway.events", tenant.tenant_id, checkout)
    await publish(redis_url, "gateway.events", tenant.tenant_id, checkout, event_id=event_id)
    await publish(redis_url, "gateway.events", tenant.tenant_id, checkout)
    anonymous = purchase("", net_minor=500, at=bought, receipt="R-anon")
    anonymous_event = await publish(redis_url, "gateway.events", tenant.tenant_id, anonymous)
    later = purchase(customer, net_minor=999, at=datetime(2030, 6, 2, 9, tzinfo=UTC), receipt="R-2")
    await publish(redis_url, "gateway.events", tenant.tenant_id, later)

    await mails_to(smtp, address, 2)
    await asyncio.sleep(0.5)
    mails = await mails_to(smtp, address, 2)
    assert sorted((email["Subject"], text(email)) for email in mails) == [
        ("Beleg R-1", "1.234,56 EUR am 1. Juni 2030: +123 / -1.000 Punkte"),
        ("Beleg R-2", "9,99 EUR am 2. Juni 2030: +123 / -1.000 Punkte"),
    ]
    assert len(await messages_of(tenant, customer)) == 2
    # The anonymous checkout was handled and asked for nothing.
    await handled(db, anonymous_event)
    assert not await db.fetchval(
        "SELECT count(*) FROM notification.jobs WHERE tenant_id = $1 AND dedupe_key = $2",
        tenant.tenant_id,
        f"purchase.committed:{anonymous.checkout_id}",
    )


async def test_a_tenant_without_the_templates_sends_nothing(tenant, smtp, redis_url, db):
    address = f"none.{key()[:8]}@example.com"
    customer = await tenant.enrol(email=address, locale="de-DE")
    rewarded = grant(customer, points(10))
    bought = purchase(customer, net_minor=100, at=datetime.now(UTC), receipt="R-x")
    await publish(redis_url, "promotion.events", tenant.tenant_id, rewarded)
    await publish(redis_url, "gateway.events", tenant.tenant_id, bought)

    # Each job ran to the end (no template is not a failure to retry) and stored nothing.
    assert await job_state(db, tenant.tenant_id, f"reward.granted:{rewarded.grant_id}") == "done"
    assert await job_state(db, tenant.tenant_id, f"purchase.committed:{bought.checkout_id}") == "done"
    assert await messages_of(tenant, customer) == []
    assert not [email for recipients, email in smtp.messages if recipients == [address]]


async def test_the_customer_hears_how_the_review_of_their_purchase_ended_once(tenant, smtp, redis_url):
    body = (
        "{% if approved %}Ihre Punkte für {{ checkout_id }} sind freigegeben.{% else %}Abgelehnt.{% endif %}"
    )
    await tenant.template("review_resolved", variants=[variant(EMAIL, "de", subject="Prüfung", body=body)])
    address = f"review.{key()[:8]}@example.com"
    customer = await tenant.enrol(email=address, locale="de-DE")
    case = fraud_events.CaseResolved(
        review_case_id=str(uuid.uuid4()),
        kind=assessment_pb2.ASSESSMENT_KIND_CHECKOUT,
        subject_id="chk-9",
        customer_id=customer,
        resolution=review_pb2.REVIEW_CASE_STATE_APPROVED,
    )
    event_id = await publish(redis_url, "fraud.events", tenant.tenant_id, case)
    await publish(redis_url, "fraud.events", tenant.tenant_id, case, event_id=event_id)
    await publish(redis_url, "fraud.events", tenant.tenant_id, case)  # the same case under a new id
    await mails_to(smtp, address, 1)
    await asyncio.sleep(0.5)
    [mail] = await mails_to(smtp, address, 1)
    assert text(mail) == "Ihre Punkte für chk-9 sind freigegeben."
