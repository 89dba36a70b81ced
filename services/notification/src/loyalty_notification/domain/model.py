"""What the service talks about: channels, purposes, statuses, templates and messages.

Enum values are the words stored in PostgreSQL (CHECK constraints in the migration back them)."""

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Channel(enum.Enum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    IN_APP = "in_app"
    WEBHOOK = "webhook"


class Purpose(enum.Enum):
    TRANSACTIONAL = "transactional"
    MARKETING = "marketing"


class TemplateState(enum.Enum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class Status(enum.Enum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"  # deferred: requested later, or held back by quiet hours
    SENDING = "sending"  # an attempt failed, the next is due with backoff
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"


# A message in one of these may still be attempted (and so may still be cancelled).
PENDING = frozenset({Status.QUEUED, Status.SCHEDULED, Status.SENDING})
# A message in one of these reached the customer, so it can be opened.
SENT = frozenset({Status.SENT, Status.DELIVERED})


class Suppression(enum.Enum):
    NO_CONSENT = "no_consent"
    FREQUENCY_CAPPED = "frequency_capped"
    NO_CONTACT_POINT = "no_contact_point"
    CUSTOMER_UNAVAILABLE = "customer_unavailable"
    NO_VARIANT = "no_variant"


class AttemptStatus(enum.Enum):
    SUCCEEDED = "succeeded"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Variant:
    channel: Channel
    locale: str
    subject: str = ""
    body: str = ""
    html_body: str = ""


@dataclass(frozen=True)
class Template:
    template_id: str
    key: str
    display_name: str
    purpose: Purpose
    state: TemplateState
    default_locale: str
    variants: tuple[Variant, ...]
    variable_names: tuple[str, ...] = ()
    version: int = 1
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str
    html_body: str
    locale: str


@dataclass(frozen=True)
class Attempt:
    attempt_number: int
    attempt_time: datetime
    status: AttemptStatus
    provider: str
    provider_message_id: str = ""
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True)
class Message:
    message_id: str
    idempotency_key: str
    customer_id: str
    template_id: str | None
    template_key: str
    template_version: int
    channel: Channel | None
    locale: str
    purpose: Purpose
    status: Status
    suppression_reason: Suppression | None
    recipient: str
    recipient_hint: str
    subject: str
    body: str
    html_body: str
    correlation_id: str
    failure_reason: str
    attempt_count: int
    create_time: datetime
    scheduled_time: datetime | None
    sent_time: datetime | None
    update_time: datetime
    attempts: tuple[Attempt, ...] = field(default=())
    opened_time: datetime | None = None


@dataclass(frozen=True)
class Cap:
    channel: Channel | None  # None: across all channels
    max_messages: int
    window_seconds: int


@dataclass(frozen=True)
class QuietHours:
    start_minute: int
    end_minute: int
    default_time_zone: str


@dataclass(frozen=True)
class CapPolicy:
    caps: tuple[Cap, ...] = ()
    quiet_hours: QuietHours | None = None
    version: int = 0
    update_time: datetime | None = None
