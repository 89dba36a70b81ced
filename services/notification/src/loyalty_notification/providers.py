"""Delivery providers behind one interface: `await provider.send(delivery) -> Outcome`.

- webhook: an HTTP POST of the message as JSON, signed (domain/signing.py), to the message's URL,
  checked against the URL policy (domain/targets.py) again just before the attempt;
- smtp: real SMTP (aiosmtplib), a multipart text/HTML e-mail; marketing e-mail carries RFC 8058's
  `List-Unsubscribe` and `List-Unsubscribe-Post` headers;
- sms, push: an HTTP POST of {to, title, body} as JSON to a configured endpoint (an SMS or push
  gateway), with the message id as `Idempotency-Key` so a gateway can drop a repeated attempt.
A provider never raises for the recipient's or provider's fault: it returns the Outcome
(domain/delivery.py decides what it means). Every attempt is bounded by the provider's timeout.
"""

import asyncio
import email.policy
import json
import logging
import random
import socket
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
import httpx
from redis.asyncio import Redis

from loyalty_notification.domain import delivery, signing, targets
from loyalty_notification.domain.delivery import Outcome

# SMTP line endings, and headers folded only past RFC 5322's hard limit: the default policy would
# encode a long List-Unsubscribe URL as RFC 2047 words, which mail clients do not read as a URL.
EMAIL_POLICY = email.policy.SMTP.clone(max_line_length=998)
# httpx logs every request's URL at INFO; a webhook URL may carry a token in its query.
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Delivery:
    message_id: str
    customer_id: str
    template_key: str
    correlation_id: str
    recipient: str
    subject: str
    body: str
    html_body: str
    # RFC 8058 one-click link for marketing e-mail; "" otherwise.
    unsubscribe_url: str = ""


class Provider(Protocol):
    name: str

    async def send(self, message: Delivery) -> Outcome: ...


async def check_webhook_target(url: str, *, allow_loopback: bool) -> None:
    """TargetRefused unless the URL's shape and every address its host resolves to are allowed."""
    host, port = targets.parse_webhook_url(url)
    literal = targets.host_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise targets.TargetRefused("the webhook host does not resolve") from None
        addresses = [info[4][0] for info in infos]
    for address in addresses:
        if why := targets.refused_address(address, allow_loopback=allow_loopback):
            raise targets.TargetRefused(f"the webhook URL points at a {why} address")


async def _post(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
    try:
        answer = await client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        return delivery.retryable("timeout", "the provider did not answer in time")
    except httpx.TransportError as error:
        return delivery.retryable("connection", type(error).__name__)
    provider_id = answer.headers.get("x-message-id", "")
    return delivery.http_outcome(answer.status_code, answer.reason_phrase, provider_id)


class WebhookProvider:
    name = "webhook"

    def __init__(self, client: httpx.AsyncClient, secret: str, *, allow_loopback: bool) -> None:
        self.client = client
        self.secret = secret
        self.allow_loopback = allow_loopback

    async def send(self, message: Delivery) -> Outcome:
        try:
            await check_webhook_target(message.recipient, allow_loopback=self.allow_loopback)
        except targets.TargetRefused as refused:
            return delivery.permanent("target_refused", str(refused))
        body = json.dumps(
            {
                "message_id": message.message_id,
                "customer_id": message.customer_id,
                "template_key": message.template_key,
                "correlation_id": message.correlation_id,
                "subject": message.subject,
                "body": message.body,
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            signing.SIGNATURE_HEADER: signing.sign_webhook(self.secret, body, int(time.time())),
            signing.MESSAGE_ID_HEADER: message.message_id,
            "Idempotency-Key": message.message_id,
        }
        return await _post(self.client, message.recipient, body, headers)


class GatewayProvider:
    """SMS or push through an HTTP gateway at a configured endpoint."""

    def __init__(self, name: str, client: httpx.AsyncClient, endpoint: str) -> None:
        self.name = name
        self.client = client
        self.endpoint = endpoint

    async def send(self, message: Delivery) -> Outcome:
        if not self.endpoint:
            return delivery.permanent("not_configured", f"no {self.name} endpoint is configured")
        body = json.dumps(
            {
                "message_id": message.message_id,
                "to": message.recipient,
                "title": message.subject,
                "body": message.body,
            }
        ).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": message.message_id}
        return await _post(self.client, self.endpoint, body, headers)


class SmtpProvider:
    name = "smtp"

    def __init__(self, host: str, port: int, sender: str, *, timeout: float, start_tls: bool) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.timeout = timeout
        self.start_tls = start_tls

    def _email(self, message: Delivery) -> EmailMessage:
        mail = EmailMessage(policy=EMAIL_POLICY)
        mail["From"] = self.sender
        mail["To"] = message.recipient
        mail["Subject"] = message.subject
        mail["Message-ID"] = f"<{message.message_id}@{self.sender.rsplit('@', 1)[-1]}>"
        if message.unsubscribe_url:
            mail["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail.set_content(message.body)
        if message.html_body:
            mail.add_alternative(message.html_body, subtype="html")
        return mail

    async def send(self, message: Delivery) -> Outcome:
        try:
            # Flattened here: aiosmtplib would re-fold the headers with its own policy.
            await aiosmtplib.send(
                self._email(message).as_bytes(),
                sender=self.sender,
                recipients=[message.recipient],
                hostname=self.host,
                port=self.port,
                timeout=self.timeout,
                start_tls=self.start_tls,
                use_tls=False,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            code = min(reply.code for reply in error.recipients)
            return delivery.smtp_outcome(code, "recipient refused")
        except aiosmtplib.SMTPResponseException as error:
            return delivery.smtp_outcome(error.code, "the server refused the message")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            return delivery.retryable("connection", type(error).__name__)
        return delivery.accepted(message.message_id)


class RateLimiter:
    """At most `rate` attempts per second per provider, across every replica (a fixed one-second
    window counted in Redis). Over the limit an attempt is not made but deferred to the next window,
    so a large campaign is throttled, never dropped."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def wait_seconds(self, provider: str, rate: int) -> float:
        """0 if an attempt may go now (and it is counted), else how long to defer it."""
        if rate <= 0:
            return 0.0
        now = time.time()
        window = int(now)
        key = f"notification:rate:{provider}:{window}"
        async with self.redis.pipeline(transaction=True) as pipe:
            count, _ = await pipe.incr(key).expire(key, 2).execute()
        if count <= rate:
            return 0.0
        # The n-th attempt over the limit waits for the window it would fit in, at a random moment
        # of it, so a burst is spread over the seconds it needs rather than retried all at once.
        return (window + (count - 1) // rate - now) + random.uniform(0.0, 1.0)
