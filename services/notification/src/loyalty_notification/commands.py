"""Commands the servicer builds from requests and the use cases take."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from loyalty_notification.domain.model import CapPolicy, Channel, Template


@dataclass(frozen=True)
class CreateTemplate:
    template: Template


@dataclass(frozen=True)
class GetTemplate:
    template_id: str = ""
    key: str = ""


@dataclass(frozen=True)
class RenderTemplate:
    template_id: str
    channel: Channel
    locale: str
    variables: dict[str, Any]


@dataclass(frozen=True)
class RenderResult:
    subject: str
    body: str
    html_body: str
    locale: str
    missing_variables: list[str]


@dataclass(frozen=True)
class SendNotification:
    request: ProtoMessage  # for the idempotency fingerprint
    idempotency_key: str
    recipient: ProtoMessage  # loyalty.common.v1.CustomerRef
    template_key: str
    channels: tuple[Channel, ...]
    locale: str
    variables: dict[str, Any] = field(default_factory=dict)
    send_time: datetime | None = None
    correlation_id: str = ""
    webhook_url: str = ""


@dataclass(frozen=True)
class GetMessage:
    message_id: str


@dataclass(frozen=True)
class UpdateCapPolicy:
    policy: CapPolicy
    caps: bool
    quiet_hours: bool


@dataclass(frozen=True)
class Unsubscribe:
    idempotency_key: str
    token: str
