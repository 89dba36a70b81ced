"""A test's view of one tenant: enrol customers in profile, define templates, send, look."""

import asyncio
import uuid
from datetime import UTC, datetime

from redis.asyncio import Redis

from loyalty.common.v1 import customer_pb2
from loyalty.notification.v1 import (
    message_pb2 as mpb,
    notification_service_pb2 as api,
    template_pb2 as tpb,
)
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as profile_api
from loyalty_runtime.events import Envelope
from loyalty_runtime.uow import event_type_of

EMAIL, SMS, PUSH, WEBHOOK = (
    tpb.NOTIFICATION_CHANNEL_EMAIL,
    tpb.NOTIFICATION_CHANNEL_SMS,
    tpb.NOTIFICATION_CHANNEL_PUSH,
    tpb.NOTIFICATION_CHANNEL_WEBHOOK,
)
TRANSACTIONAL, MARKETING = tpb.MESSAGE_PURPOSE_TRANSACTIONAL, tpb.MESSAGE_PURPOSE_MARKETING
S = mpb  # statuses: S.MESSAGE_STATUS_SENT ...
FINAL = {
    mpb.MESSAGE_STATUS_SENT,
    mpb.MESSAGE_STATUS_FAILED,
    mpb.MESSAGE_STATUS_SUPPRESSED,
    mpb.MESSAGE_STATUS_CANCELLED,
}


def key() -> str:
    return uuid.uuid4().hex


def variant(
    channel=WEBHOOK,
    locale="en",
    subject="Hi {{ customer.given_name }}",
    body="You have {{ points | number }} points",
    html="",
):
    return tpb.TemplateVariant(channel=channel, locale=locale, subject=subject, body=body, html_body=html)


class Client:
    def __init__(self, service, profile, tenant_id: str) -> None:
        self.service = service
        self.stub = service.stub
        self.profile = profile
        self.tenant_id = tenant_id
        self.md = service.metadata(tenant_id)

    async def enrol(
        self,
        *,
        email: str = "",
        phone: str = "",
        marketing=(),
        locale: str = "en",
        time_zone: str = "",
        attributes=None,
    ) -> str:
        identifiers = [
            customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, value=key()[:16])
        ]
        if email:
            identifiers.append(customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_EMAIL, value=email))
        if phone:
            identifiers.append(customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_PHONE, value=phone))
        consents = [
            profile_pb2.Consent(
                channel=channel, purpose=profile_pb2.CONSENT_PURPOSE_MARKETING, granted=True, source="test"
            )
            for channel in marketing
        ]
        answer = await self.profile.stub.EnrolCustomer(
            profile_api.EnrolCustomerRequest(
                idempotency_key=key(),
                identifiers=identifiers,
                given_name="Ana",
                locale=locale,
                time_zone=time_zone,
                consents=consents,
                attributes=attributes or {},
            ),
            metadata=self.profile.metadata(self.tenant_id),
        )
        return answer.customer.customer_id

    async def template(
        self, template_key: str = "points", *, purpose=TRANSACTIONAL, variants=None, default_locale="en"
    ):
        answer = await self.stub.CreateTemplate(
            api.CreateTemplateRequest(
                idempotency_key=key(),
                template=tpb.Template(
                    key=template_key,
                    display_name=template_key,
                    purpose=purpose,
                    variants=variants or [variant()],
                    default_locale=default_locale,
                ),
            ),
            metadata=self.md,
        )
        return answer.template

    def send_request(
        self,
        customer_id: str,
        template_key: str = "points",
        *,
        channels=(WEBHOOK,),
        url: str = "",
        points=1200,
        idempotency_key=None,
        extra_variables=None,
        **extra,
    ):
        variables = {"points": mpb.TemplateValue(int_value=points)} if points is not None else {}
        variables.update(extra_variables or {})
        return api.SendNotificationRequest(
            idempotency_key=idempotency_key or key(),
            recipient=customer_pb2.CustomerRef(customer_id=customer_id),
            template_key=template_key,
            channels=list(channels),
            variables=variables,
            webhook_url=url,
            **extra,
        )

    async def send(self, customer_id: str, template_key: str = "points", **kwargs) -> mpb.Message:
        request = self.send_request(customer_id, template_key, **kwargs)
        return (await self.stub.SendNotification(request, metadata=self.md)).message

    async def message(self, message_id: str) -> mpb.Message:
        return (
            await self.stub.GetMessage(api.GetMessageRequest(message_id=message_id), metadata=self.md)
        ).message

    async def settled(self, message_id: str, *, within: float = 60.0) -> mpb.Message:
        """The message once it is sent, failed, suppressed or cancelled (or as it stands at the
        timeout)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            found = await self.message(message_id)
            if found.status in FINAL or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.05)


async def publish(redis_url: str, stream: str, tenant_id: str, event, *, event_id: str = "") -> str:
    """`event` on `stream` as another service's outbox relay puts it there; its event id."""
    envelope = Envelope(
        event_id=event_id or f"test:{uuid.uuid4()}",
        event_type=event_type_of(event.DESCRIPTOR),
        tenant_id=tenant_id,
        key=getattr(event, "customer_id", tenant_id),
        payload=event.SerializeToString(),
        occurred_at=datetime.now(UTC),
        trace_parent=None,
    )
    redis = Redis.from_url(redis_url)
    try:
        await redis.xadd(stream, envelope.to_fields())
    finally:
        await redis.aclose()
    return envelope.event_id
