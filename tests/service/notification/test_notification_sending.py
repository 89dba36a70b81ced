"""SendNotification end to end: a real profile server, real webhook and SMTP receivers."""

import asyncio
import json
import time

import grpc
import pytest

from loyalty.notification.v1 import message_pb2 as mpb, notification_service_pb2 as api
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as profile_api
from loyalty_notification.domain.signing import SignatureRefused, verify_webhook
from tests.conftest import rpc_failure
from tests.service.notification.conftest import SECRET
from tests.service.notification.helpers import EMAIL, MARKETING, key, variant
from tests.service.notification.receivers import HttpReceiver

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
async def receiver():
    server = await HttpReceiver().start()
    yield server
    await server.stop()


async def test_a_webhook_message_is_delivered_once_signed_and_recorded(tenant, receiver):
    customer = await tenant.enrol()
    await tenant.template()
    sent = await tenant.send(customer, url=receiver.url)
    assert sent.status == mpb.MESSAGE_STATUS_QUEUED

    done = await tenant.settled(sent.message_id)

    assert done.status == mpb.MESSAGE_STATUS_SENT
    assert [a.status for a in done.attempts] == [mpb.DELIVERY_ATTEMPT_STATUS_SUCCEEDED]
    [request] = receiver.requests
    body = json.loads(request.body)
    assert body["message_id"] == sent.message_id
    assert body["subject"] == "Hi Ana" and body["body"] == "You have 1,200 points"
    verify_webhook(SECRET, request.headers["loyalty-signature"], request.body, int(time.time()))


async def test_the_signature_refuses_a_replay_and_a_tampered_body(tenant, receiver):
    customer = await tenant.enrol()
    await tenant.template()
    sent = await tenant.send(customer, url=receiver.url)
    await tenant.settled(sent.message_id)
    [request] = receiver.requests
    header = request.headers["loyalty-signature"]
    with pytest.raises(SignatureRefused, match="replay"):
        verify_webhook(SECRET, header, request.body, int(time.time()) + 301)
    with pytest.raises(SignatureRefused, match="does not match"):
        verify_webhook(SECRET, header, request.body.replace(b"1,200", b"9,999"), int(time.time()))
    with pytest.raises(SignatureRefused):
        verify_webhook("another-secret", header, request.body, int(time.time()))


async def test_the_same_key_twice_stores_and_sends_one_message(tenant, receiver):
    customer = await tenant.enrol()
    await tenant.template()
    request = tenant.send_request(customer, url=receiver.url)
    first, second = [
        (await tenant.stub.SendNotification(request, metadata=tenant.md)).message for _ in range(2)
    ]
    assert first.message_id == second.message_id
    await tenant.settled(first.message_id)
    again = (await tenant.stub.SendNotification(request, metadata=tenant.md)).message
    assert again.message_id == first.message_id
    assert len(receiver.requests) == 1


async def test_the_same_key_asked_concurrently_stores_one_message(tenant, receiver, db):
    customer = await tenant.enrol()
    await tenant.template()
    request = tenant.send_request(customer, url=receiver.url)
    answers = await asyncio.gather(
        *(tenant.stub.SendNotification(request, metadata=tenant.md) for _ in range(5))
    )
    assert len({a.message.message_id for a in answers}) == 1
    await tenant.settled(answers[0].message.message_id)
    assert (
        await db.fetchval("SELECT count(*) FROM notification.messages WHERE tenant_id = $1", tenant.tenant_id)
        == 1
    )
    assert len(receiver.requests) == 1


async def test_a_missing_placeholder_fails_the_message_and_sends_nothing(tenant, receiver):
    customer = await tenant.enrol()
    await tenant.template()
    failed = await tenant.send(customer, url=receiver.url, points=None)
    assert failed.status == mpb.MESSAGE_STATUS_FAILED
    assert "points" in failed.failure_reason
    assert (await tenant.message(failed.message_id)).status == mpb.MESSAGE_STATUS_FAILED
    assert receiver.requests == []


async def test_retry_then_success_after_a_receiver_that_fails_twice(tenant, receiver):
    answers = iter([503, 500])
    receiver.respond = lambda _request: next(answers, 200)
    customer = await tenant.enrol()
    await tenant.template()
    sent = await tenant.send(customer, url=receiver.url)
    done = await tenant.settled(sent.message_id)
    assert done.status == mpb.MESSAGE_STATUS_SENT
    assert [a.status for a in done.attempts] == [
        mpb.DELIVERY_ATTEMPT_STATUS_FAILED_RETRYABLE,
        mpb.DELIVERY_ATTEMPT_STATUS_FAILED_RETRYABLE,
        mpb.DELIVERY_ATTEMPT_STATUS_SUCCEEDED,
    ]
    assert [a.error_code for a in done.attempts[:2]] == ["http_503", "http_500"]
    assert len({r.headers["loyalty-message-id"] for r in receiver.requests}) == 1


async def test_dead_letter_after_max_attempts(tenant, receiver):
    receiver.respond = lambda _request: 503
    customer = await tenant.enrol()
    await tenant.template()
    sent = await tenant.send(customer, url=receiver.url)
    done = await tenant.settled(sent.message_id)
    assert done.status == mpb.MESSAGE_STATUS_FAILED
    assert done.attempt_count == 3 and len(done.attempts) == 3  # the suite's max_attempts
    assert done.failure_reason == "dead letter after 3 attempts: http_503"
    assert len(receiver.requests) == 3


async def test_a_4xx_is_permanent(tenant, receiver):
    receiver.respond = lambda _request: 410
    customer = await tenant.enrol()
    await tenant.template()
    done = await tenant.settled((await tenant.send(customer, url=receiver.url)).message_id)
    assert done.status == mpb.MESSAGE_STATUS_FAILED
    assert [a.status for a in done.attempts] == [mpb.DELIVERY_ATTEMPT_STATUS_FAILED_PERMANENT]
    assert len(receiver.requests) == 1


async def test_marketing_without_consent_is_suppressed_and_transactional_is_not(tenant, receiver):
    customer = await tenant.enrol()
    await tenant.template("offer", purpose=MARKETING)
    await tenant.template()
    refused = await tenant.send(customer, "offer", url=receiver.url)
    assert refused.status == mpb.MESSAGE_STATUS_SUPPRESSED
    assert refused.suppression_reason == mpb.SUPPRESSION_REASON_NO_CONSENT
    allowed = await tenant.send(customer, url=receiver.url)
    assert (await tenant.settled(allowed.message_id)).status == mpb.MESSAGE_STATUS_SENT
    assert [json.loads(r.body)["message_id"] for r in receiver.requests] == [allowed.message_id]


async def test_an_unknown_customer_is_suppressed_like_an_erased_one(tenant, receiver):
    await tenant.template()
    unknown = await tenant.send("00000000-0000-0000-0000-000000000000", url=receiver.url)
    assert unknown.suppression_reason == mpb.SUPPRESSION_REASON_CUSTOMER_UNAVAILABLE
    assert receiver.requests == []


async def test_marketing_email_over_real_smtp_with_one_click_unsubscribe(tenant, smtp):
    customer = await tenant.enrol(
        email="ana.canary@example.com", marketing=[profile_pb2.CONSENT_CHANNEL_EMAIL]
    )
    html = "<p>Hello {{ customer.given_name }}, {{ offer }}</p>"
    await tenant.template("news", purpose=MARKETING, variants=[variant(EMAIL, "en", html=html)])
    sent = await tenant.send(
        customer,
        "news",
        channels=(EMAIL,),
        extra_variables={"offer": mpb.TemplateValue(string_value="<b>20%</b>")},
    )
    assert (await tenant.settled(sent.message_id)).status == mpb.MESSAGE_STATUS_SENT
    [(_recipients, email)] = [m for m in smtp.messages if m[0] == ["ana.canary@example.com"]]
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = email["List-Unsubscribe"].strip("<>")
    html_part = next(part for part in email.walk() if part.get_content_type() == "text/html")
    assert "&lt;b&gt;20%&lt;/b&gt;" in html_part.get_payload(decode=True).decode()  # autoescaped

    token = link.split("token=", 1)[1]
    answer = await tenant.stub.Unsubscribe(
        api.UnsubscribeRequest(idempotency_key=key(), token=token), metadata=tenant.md
    )
    assert answer.customer_id == customer
    check = await tenant.profile.stub.CheckConsent(
        profile_api.CheckConsentRequest(
            customer_id=customer,
            channel=profile_pb2.CONSENT_CHANNEL_EMAIL,
            purpose=profile_pb2.CONSENT_PURPOSE_MARKETING,
        ),
        metadata=tenant.profile.metadata(tenant.tenant_id),
    )
    assert not check.allowed
    again = await tenant.send(
        customer, "news", channels=(EMAIL,), extra_variables={"offer": mpb.TemplateValue(string_value="x")}
    )
    assert again.suppression_reason == mpb.SUPPRESSION_REASON_NO_CONSENT
    forged = await rpc_failure(
        tenant.stub.Unsubscribe(
            api.UnsubscribeRequest(idempotency_key=key(), token=token[:-2] + "xx"), metadata=tenant.md
        )
    )
    assert forged.code == grpc.StatusCode.INVALID_ARGUMENT and forged.reason == "UNSUBSCRIBE_TOKEN_INVALID"


async def test_a_welcome_email_follows_customer_created(tenant, smtp):
    welcome = variant(EMAIL, "en", subject="Welcome {{ customer.given_name }}", body="Glad you joined.")
    await tenant.template("welcome", variants=[welcome])
    customer = await tenant.enrol(email="welcome.canary@example.com")

    async def arrived():
        for _ in range(200):
            found = [m for m in smtp.messages if m[0] == ["welcome.canary@example.com"]]
            if found:
                return found
            await asyncio.sleep(0.05)
        return []

    [(_recipients, email)] = await arrived()
    assert email["Subject"] == "Welcome Ana"
    assert "List-Unsubscribe" not in email  # transactional
    assert customer
