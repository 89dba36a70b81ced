"""Links under a public URL (NOTIFICATION_HTTP_PUBLIC_URL, as `make run` and the chart set it): an
e-mail's unsubscribe and tracking links point at it, and they work whether the ingress passes the
URL's path on (`/links/unsubscribe`) or strips it (`/open`). This module runs no other deliverer, so
the replica below, with that URL, sends every message."""

import asyncio
import re

import httpx
import pytest

from loyalty.notification.v1 import message_pb2 as mpb
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as profile_api
from loyalty_notification.service import DEFINITION, NotificationSettings
from loyalty_runtime.testing import running_service
from tests.service.notification.conftest import free_port
from tests.service.notification.helpers import EMAIL, MARKETING, key, variant

EMAIL_CONSENT = profile_pb2.CONSENT_CHANNEL_EMAIL


@pytest.fixture(scope="module")
async def published(notification_settings):
    port = free_port()
    base = f"http://127.0.0.1:{port}/links"
    # Built anew, not model_copy'd: the links' URLs follow from the public URL when settings load.
    settings = NotificationSettings(
        **notification_settings.model_dump()
        | {
            "unsubscribe_url": "",
            "tracking_url": "",
            "http_enabled": True,
            "http_port": port,
            "http_public_url": base,
            "delivery_workers": 1,
        }
    )
    assert settings.unsubscribe_url == f"{base}/unsubscribe"
    async with running_service(DEFINITION, settings) as service:
        service.base = base
        yield service


async def test_the_links_under_the_public_url_work_with_and_without_its_path(tenant, smtp, published):
    address = f"{key()[:8]}@example.com"
    customer = await tenant.enrol(email=address, marketing=[EMAIL_CONSENT])
    body = "<html><body><p>Hello {{ customer.given_name }}</p></body></html>"
    await tenant.template("news", purpose=MARKETING, variants=[variant(EMAIL, "en", html=body)])
    sent = await tenant.send(customer, "news", channels=(EMAIL,))
    assert (await tenant.settled(sent.message_id)).status == mpb.MESSAGE_STATUS_SENT
    [(_recipients, mail)] = [m for m in smtp.messages if m[0] == [address]]

    unsubscribe = mail["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith(f"{published.base}/unsubscribe?token=")
    html_part = next(p for p in mail.walk() if p.get_content_type() == "text/html")
    [pixel] = re.findall(r'<img src="([^"]+)"', html_part.get_payload(decode=True).decode())
    assert pixel.startswith(f"{published.base}/open?token=")

    async with httpx.AsyncClient(timeout=10.0) as client:
        for _ in range(100):  # the links' server starts beside the gRPC server
            try:
                done = await client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
        assert done.status_code == 200
        # An ingress that strips the path: the same link at the root.
        stripped = await client.get(pixel.replace("/links/open", "/open"))
        assert stripped.status_code == 200 and stripped.headers["content-type"] == "image/gif"
        assert (await client.get(f"{published.base}/elsewhere")).status_code == 404

    consent = await tenant.profile.stub.CheckConsent(
        profile_api.CheckConsentRequest(
            customer_id=customer, channel=EMAIL_CONSENT, purpose=profile_pb2.CONSENT_PURPOSE_MARKETING
        ),
        metadata=tenant.profile.metadata(tenant.tenant_id),
    )
    assert not consent.allowed
    assert (await tenant.message(sent.message_id)).HasField("open_time")
