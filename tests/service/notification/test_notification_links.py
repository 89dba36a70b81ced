"""The links in messages, through a real HTTP client against the service's real HTTP endpoint: RFC
8058 one-click unsubscribe (withdrawing the consent in the real profile service), the open-tracking
pixel and RecordMessageOpened (the first open recorded and published once, also when opened
concurrently); forged, altered and other tenants' tokens and ids refused or changing nothing."""

import asyncio
import html
import re
import uuid
from urllib.parse import urljoin

import grpc
import httpx
import pytest
from redis.asyncio import Redis

from loyalty.notification.v1 import events_pb2, message_pb2 as mpb, notification_service_pb2 as api
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as profile_api
from loyalty_notification.domain import signing
from loyalty_notification.service import DEFINITION
from loyalty_runtime.testing import running_service
from tests.conftest import rpc_failure
from tests.service.notification.conftest import TRACKING_SECRET, UNSUBSCRIBE_SECRET, free_port
from tests.service.notification.helpers import EMAIL, MARKETING, Client, key, variant
from tests.service.notification.receivers import HttpReceiver

pytestmark = pytest.mark.usefixtures("workers")

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
EMAIL_CONSENT = profile_pb2.CONSENT_CHANNEL_EMAIL


@pytest.fixture
async def http(notification):
    async with httpx.AsyncClient(base_url=notification.links, timeout=10.0) as client:
        for _ in range(100):  # the links' server starts beside the gRPC server
            try:
                await client.get("/open")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
        yield client


@pytest.fixture
async def receiver():
    server = await HttpReceiver().start()
    yield server
    await server.stop()


async def _marketing_email(tenant: Client, smtp, address: str):
    """A marketing e-mail sent over real SMTP: (customer id, message, the e-mail as received)."""
    customer = await tenant.enrol(email=address, marketing=[EMAIL_CONSENT])
    body = "<html><body><p>Hello {{ customer.given_name }}</p></body></html>"
    await tenant.template("news", purpose=MARKETING, variants=[variant(EMAIL, "en", html=body)])
    sent = await tenant.send(customer, "news", channels=(EMAIL,))
    message = await tenant.settled(sent.message_id)
    assert message.status == mpb.MESSAGE_STATUS_SENT
    [(_recipients, mail)] = [m for m in smtp.messages if m[0] == [address]]
    return customer, message, mail


def _token(link: str) -> str:
    return link.split("token=", 1)[1]


def _pixel_token(mail) -> str:
    part = next(p for p in mail.walk() if p.get_content_type() == "text/html")
    text = part.get_payload(decode=True).decode()
    [src] = re.findall(r'<img src="https://loyalty\.example/open\?token=([^"]+)" width="1" height="1"', text)
    assert text.index("<img") < text.index("</body>")
    return src


async def _marketing_allowed(tenant: Client, customer: str) -> bool:
    check = await tenant.profile.stub.CheckConsent(
        profile_api.CheckConsentRequest(
            customer_id=customer, channel=EMAIL_CONSENT, purpose=profile_pb2.CONSENT_PURPOSE_MARKETING
        ),
        metadata=tenant.profile.metadata(tenant.tenant_id),
    )
    return check.allowed


async def test_one_click_unsubscribe_over_http_withdraws_the_consent_in_profile(tenant, smtp, http):
    customer, _message, mail = await _marketing_email(tenant, smtp, f"{key()[:8]}@example.com")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = _token(mail["List-Unsubscribe"].strip("<>"))

    page = await http.get("/unsubscribe", params={"token": token})
    assert page.status_code == 200 and 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert await _marketing_allowed(tenant, customer)  # a GET (a link scanner) changes nothing

    # The page's button, as a browser submits it: its form's action against the page's URL.
    [action] = re.findall(r'<form method="post" action="([^"]+)">', page.text)
    done = await http.post(urljoin(str(page.url), html.unescape(action)), data=ONE_CLICK)
    assert done.status_code == 200 and done.headers["cache-control"].startswith("no-store")
    assert not await _marketing_allowed(tenant, customer)
    again = await http.post(
        "/unsubscribe", params={"token": token}, files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert again.status_code == 200  # multipart, as RFC 8058 also allows; withdrawing twice is harmless
    suppressed = await tenant.send(customer, "news", channels=(EMAIL,))
    assert suppressed.suppression_reason == mpb.SUPPRESSION_REASON_NO_CONSENT


async def test_unsubscribe_refuses_bad_requests_and_other_tenants_and_changes_nothing(
    tenant, notification, smtp, http
):
    customer, _message, mail = await _marketing_email(tenant, smtp, f"{key()[:8]}@example.com")
    token = _token(mail["List-Unsubscribe"].strip("<>"))
    other = f"o-{key()[:8]}"
    cases = [
        ({"token": token}, {}, "INVALID_ARGUMENT", "List-Unsubscribe"),
        ({"token": token}, {"List-Unsubscribe": "Yes"}, "INVALID_ARGUMENT", "List-Unsubscribe"),
        ({}, ONE_CLICK, "UNSUBSCRIBE_TOKEN_INVALID", "token"),
        ({"token": token[:-2] + "xx"}, ONE_CLICK, "UNSUBSCRIBE_TOKEN_INVALID", "token"),
        ({"token": "not-a-token"}, ONE_CLICK, "UNSUBSCRIBE_TOKEN_INVALID", "token"),
        # Signed with another secret.
        (
            {
                "token": signing.unsubscribe_token(
                    "guess", signing.Unsubscription(tenant.tenant_id, customer, "email")
                )
            },
            ONE_CLICK,
            "UNSUBSCRIBE_TOKEN_INVALID",
            "token",
        ),
        # Validly signed, but for another tenant: this tenant's customer is unknown there.
        (
            {
                "token": signing.unsubscribe_token(
                    UNSUBSCRIBE_SECRET, signing.Unsubscription(other, customer, "email")
                )
            },
            ONE_CLICK,
            "UNSUBSCRIBE_TOKEN_INVALID",
            "token",
        ),
        (
            {
                "token": signing.unsubscribe_token(
                    UNSUBSCRIBE_SECRET, signing.Unsubscription("Not A Tenant", customer, "email")
                )
            },
            ONE_CLICK,
            "UNSUBSCRIBE_TOKEN_INVALID",
            "token",
        ),
        # An open-tracking token is not an unsubscribe token.
        ({"token": _pixel_token(mail)}, ONE_CLICK, "UNSUBSCRIBE_TOKEN_INVALID", "token"),
    ]
    for params, form, reason, field in cases:
        answer = await http.post("/unsubscribe", params=params, data=form)
        assert (answer.status_code, answer.json()) == (400, {"reason": reason, "field": field}), params
    page = await http.get("/unsubscribe", params={"token": token[:-2] + "xx"})
    assert page.status_code == 400
    assert await _marketing_allowed(tenant, customer)


async def test_unsubscribe_answers_503_while_profile_does_not_answer(
    notification_settings, tenant, smtp, http
):
    _customer, _message, mail = await _marketing_email(tenant, smtp, f"{key()[:8]}@example.com")
    port = free_port()
    settings = notification_settings.model_copy(
        update={"profile_target": "127.0.0.1:9", "http_enabled": True, "http_port": port}
    )
    base = f"http://127.0.0.1:{port}"
    async with (
        running_service(DEFINITION, settings),
        httpx.AsyncClient(base_url=base, timeout=10.0) as client,
    ):
        for _ in range(100):
            try:
                answer = await client.post(
                    "/unsubscribe",
                    params={"token": _token(mail["List-Unsubscribe"].strip("<>"))},
                    data=ONE_CLICK,
                )
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
    assert answer.json() == {"reason": "UNAVAILABLE"}


async def _opened_events(redis_url: str, message_id: str) -> list[events_pb2.NotificationOpened]:
    redis = Redis.from_url(redis_url)
    try:
        entries = await redis.xrange("notification.events")
    finally:
        await redis.aclose()
    return [
        events_pb2.NotificationOpened.FromString(fields[b"payload"])
        for _id, fields in entries
        if fields[b"type"] == b"notification.opened" and fields[b"key"].decode() == message_id
    ]


async def _published_once(redis_url: str, message_id: str) -> list[events_pb2.NotificationOpened]:
    for _ in range(200):
        if await _opened_events(redis_url, message_id):
            await asyncio.sleep(0.3)  # one published twice would show by now
            return await _opened_events(redis_url, message_id)
        await asyncio.sleep(0.05)
    return []


async def test_the_pixel_records_the_first_open_once_even_when_opened_concurrently(
    tenant, smtp, http, redis_url
):
    customer, message, mail = await _marketing_email(tenant, smtp, f"{key()[:8]}@example.com")
    assert not message.HasField("open_time")
    token = _pixel_token(mail)
    answers = await asyncio.gather(*(http.get("/open", params={"token": token}) for _ in range(10)))
    assert {(a.status_code, a.headers["content-type"], a.content[:6]) for a in answers} == {
        (200, "image/gif", b"GIF89a")
    }
    assert all(a.headers["cache-control"].startswith("no-store") for a in answers)
    opened = await tenant.message(message.message_id)
    assert opened.HasField("open_time") and opened.status == mpb.MESSAGE_STATUS_SENT
    [event] = await _published_once(redis_url, message.message_id)
    assert (event.message_id, event.customer_id, event.template_key, event.channel) == (
        message.message_id,
        customer,
        "news",
        EMAIL,
    )


async def test_the_pixel_refuses_forged_tokens_and_another_tenants_token_opens_nothing(
    tenant, smtp, http, redis_url
):
    _customer, message, mail = await _marketing_email(tenant, smtp, f"{key()[:8]}@example.com")
    token = _pixel_token(mail)
    for bad in (
        token[:-2] + "xx",
        "",
        _token(mail["List-Unsubscribe"].strip("<>")),  # an unsubscribe token
        signing.tracking_token("guess", signing.Tracked(tenant.tenant_id, message.message_id)),
        signing.tracking_token(TRACKING_SECRET, signing.Tracked(tenant.tenant_id, "not-a-uuid")),
        signing.tracking_token(TRACKING_SECRET, signing.Tracked("Not A Tenant", message.message_id)),
    ):
        answer = await http.get("/open", params={"token": bad})
        assert (answer.status_code, answer.json()) == (
            400,
            {"reason": "TRACKING_TOKEN_INVALID", "field": "token"},
        )
    elsewhere = signing.tracking_token(TRACKING_SECRET, signing.Tracked(f"o-{key()[:8]}", message.message_id))
    answer = await http.get("/open", params={"token": elsewhere})
    assert answer.status_code == 200  # a pixel all the same, but in that tenant there is no such message
    assert not (await tenant.message(message.message_id)).HasField("open_time")
    assert await _opened_events(redis_url, message.message_id) == []


async def test_record_message_opened_sets_the_first_open_and_refuses_what_was_not_sent(
    tenant, notification, receiver, redis_url
):
    customer = await tenant.enrol()
    await tenant.template()
    await tenant.template("offer", purpose=MARKETING)
    sent = await tenant.settled((await tenant.send(customer, url=receiver.url)).message_id)
    assert sent.status == mpb.MESSAGE_STATUS_SENT

    def record(client: Client, message_id: str, idempotency_key: str | None = None):
        request = api.RecordMessageOpenedRequest(
            idempotency_key=idempotency_key or key(), message_id=message_id
        )
        return client.stub.RecordMessageOpened(request, metadata=client.md)

    first = (await record(tenant, sent.message_id)).message
    assert first.HasField("open_time")
    later = (await record(tenant, sent.message_id)).message
    assert later.open_time == first.open_time  # the first open stands
    [_event] = await _published_once(redis_url, sent.message_id)

    suppressed = await tenant.send(customer, "offer", url=receiver.url)
    not_sent = await rpc_failure(record(tenant, suppressed.message_id))
    assert (not_sent.code, not_sent.reason, not_sent.fields) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "MESSAGE_NOT_SENT",
        ["message_id"],
    )
    other = Client(notification, tenant.profile, f"o-{key()[:8]}")
    answers = [await rpc_failure(record(other, m)) for m in (sent.message_id, str(uuid.uuid4()))]
    assert {(a.code, a.reason) for a in answers} == {(grpc.StatusCode.NOT_FOUND, "MESSAGE_NOT_FOUND")}
    malformed = await rpc_failure(record(tenant, "nope"))
    assert (malformed.code, malformed.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["message_id"])
    reused_key = key()
    await record(tenant, sent.message_id, reused_key)
    reused = await rpc_failure(record(tenant, suppressed.message_id, reused_key))
    assert reused.reason == "IDEMPOTENCY_KEY_REUSED"
