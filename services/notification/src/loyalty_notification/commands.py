"""Commands the servicer builds from requests and the use cases take."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from loyalty_notification.domain.model import CapPolicy, Channel, Purpose, Status, Template


@dataclass(frozen=True)
class CreateTemplate:
    template: Template


@dataclass(frozen=True)
class GetTemplate:
    template_id: str = ""
    key: str = ""


@dataclass(frozen=True)
class ListTemplates:
    purpose: Purpose | None
    show_archived: bool
    after_key: str
    page_size: int


@dataclass(frozen=True)
class UpdateTemplate:
    template_id: str
    # Template field -> its new value (decoded and checked), for the fields the mask names.
    changes: dict[str, Any]
    etag: str


@dataclass(frozen=True)
class DeleteTemplate:
    template_id: str
    etag: str


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


@dataclass(frozen=True)
class MessageQuery:
    customer_id: str = ""
    status: Status | None = None
    channel: Channel | None = None
    template_key: str = ""
    correlation_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    # The last message of the previous page: (create_time, message_id).
    after: tuple[datetime, str] | None = None


@dataclass(frozen=True)
class ListMessages:
    query: MessageQuery
    page_size: int


@dataclass(frozen=True)
class CancelMessage:
    message_id: str


@dataclass(frozen=True)
class RecordOpen:
    message_id: str
