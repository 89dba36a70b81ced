"""Domain values <-> protobuf messages (the servicer's and the events' one translation)."""

from datetime import UTC, date

from google.protobuf.duration_pb2 import Duration

from loyalty.notification.v1 import (
    events_pb2,
    frequency_cap_pb2 as caps_pb,
    message_pb2 as message_pb,
    template_pb2 as template_pb,
)
from loyalty_notification.domain.model import (
    AttemptStatus,
    Cap,
    CapPolicy,
    Channel,
    Message,
    Purpose,
    QuietHours,
    Status,
    Suppression,
    Template,
    TemplateState,
    Variant,
)
from loyalty_notification.domain.templates import Money
from loyalty_runtime.protobuf import timestamp

CHANNELS_PB = {
    Channel.EMAIL: template_pb.NOTIFICATION_CHANNEL_EMAIL,
    Channel.SMS: template_pb.NOTIFICATION_CHANNEL_SMS,
    Channel.PUSH: template_pb.NOTIFICATION_CHANNEL_PUSH,
    Channel.IN_APP: template_pb.NOTIFICATION_CHANNEL_IN_APP,
    Channel.WEBHOOK: template_pb.NOTIFICATION_CHANNEL_WEBHOOK,
}
CHANNELS = {number: channel for channel, number in CHANNELS_PB.items()}
PURPOSES_PB = {
    Purpose.TRANSACTIONAL: template_pb.MESSAGE_PURPOSE_TRANSACTIONAL,
    Purpose.MARKETING: template_pb.MESSAGE_PURPOSE_MARKETING,
}
PURPOSES = {number: purpose for purpose, number in PURPOSES_PB.items()}
STATES_PB = {
    TemplateState.ACTIVE: template_pb.TEMPLATE_STATE_ACTIVE,
    TemplateState.ARCHIVED: template_pb.TEMPLATE_STATE_ARCHIVED,
}
STATUSES_PB = {
    Status.QUEUED: message_pb.MESSAGE_STATUS_QUEUED,
    Status.SCHEDULED: message_pb.MESSAGE_STATUS_SCHEDULED,
    Status.SENDING: message_pb.MESSAGE_STATUS_SENDING,
    Status.SENT: message_pb.MESSAGE_STATUS_SENT,
    Status.DELIVERED: message_pb.MESSAGE_STATUS_DELIVERED,
    Status.FAILED: message_pb.MESSAGE_STATUS_FAILED,
    Status.SUPPRESSED: message_pb.MESSAGE_STATUS_SUPPRESSED,
    Status.CANCELLED: message_pb.MESSAGE_STATUS_CANCELLED,
}
SUPPRESSIONS_PB = {
    Suppression.NO_CONSENT: message_pb.SUPPRESSION_REASON_NO_CONSENT,
    Suppression.FREQUENCY_CAPPED: message_pb.SUPPRESSION_REASON_FREQUENCY_CAPPED,
    Suppression.NO_CONTACT_POINT: message_pb.SUPPRESSION_REASON_NO_CONTACT_POINT,
    Suppression.CUSTOMER_UNAVAILABLE: message_pb.SUPPRESSION_REASON_CUSTOMER_UNAVAILABLE,
    Suppression.NO_VARIANT: message_pb.SUPPRESSION_REASON_NO_VARIANT,
}
ATTEMPTS_PB = {
    AttemptStatus.SUCCEEDED: message_pb.DELIVERY_ATTEMPT_STATUS_SUCCEEDED,
    AttemptStatus.RETRYABLE: message_pb.DELIVERY_ATTEMPT_STATUS_FAILED_RETRYABLE,
    AttemptStatus.PERMANENT: message_pb.DELIVERY_ATTEMPT_STATUS_FAILED_PERMANENT,
}


def decode_variant(variant: template_pb.TemplateVariant) -> Variant:
    return Variant(
        CHANNELS[variant.channel], variant.locale, variant.subject, variant.body, variant.html_body
    )


def encode_template(template: Template) -> template_pb.Template:
    return template_pb.Template(
        template_id=template.template_id,
        key=template.key,
        display_name=template.display_name,
        purpose=PURPOSES_PB[template.purpose],
        state=STATES_PB[template.state],
        variants=[
            template_pb.TemplateVariant(
                channel=CHANNELS_PB[v.channel],
                locale=v.locale,
                subject=v.subject,
                body=v.body,
                html_body=v.html_body,
            )
            for v in template.variants
        ],
        default_locale=template.default_locale,
        variable_names=list(template.variable_names),
        version=template.version,
        create_time=timestamp(template.create_time),
        update_time=timestamp(template.update_time),
        etag=str(template.version),
    )


def decode_value(value: message_pb.TemplateValue):
    kind = value.WhichOneof("kind")
    if kind == "money_value":
        return Money(value.money_value.currency_code, value.money_value.amount_minor)
    if kind == "date_value":
        d = value.date_value
        return date(d.year, d.month, d.day)
    if kind == "timestamp_value":
        return value.timestamp_value.ToDatetime(tzinfo=UTC)
    return getattr(value, kind) if kind else None


def encode_message(message: Message) -> message_pb.Message:
    return message_pb.Message(
        message_id=message.message_id,
        idempotency_key=message.idempotency_key,
        customer_id=message.customer_id,
        template_id=message.template_id or "",
        template_key=message.template_key,
        template_version=message.template_version,
        channel=CHANNELS_PB.get(message.channel, 0),
        locale=message.locale,
        purpose=PURPOSES_PB[message.purpose],
        status=STATUSES_PB[message.status],
        suppression_reason=SUPPRESSIONS_PB.get(message.suppression_reason, 0),
        recipient_hint=message.recipient_hint,
        attempts=[
            message_pb.DeliveryAttempt(
                attempt_number=a.attempt_number,
                attempt_time=timestamp(a.attempt_time),
                status=ATTEMPTS_PB[a.status],
                provider=a.provider,
                provider_message_id=a.provider_message_id,
                error_code=a.error_code,
                error_message=a.error_message,
            )
            for a in message.attempts
        ],
        correlation_id=message.correlation_id,
        create_time=timestamp(message.create_time),
        scheduled_time=timestamp(message.scheduled_time),
        sent_time=timestamp(message.sent_time),
        update_time=timestamp(message.update_time),
        failure_reason=message.failure_reason,
        attempt_count=message.attempt_count,
        open_time=timestamp(message.opened_time),
    )


def decode_caps(policy: caps_pb.FrequencyCapPolicy) -> CapPolicy:
    caps = tuple(
        Cap(CHANNELS.get(c.channel), c.max_messages, int(c.window.ToTimedelta().total_seconds()))
        for c in policy.caps
    )
    quiet = None
    if policy.HasField("quiet_hours"):
        q = policy.quiet_hours
        quiet = QuietHours(q.start_minute, q.end_minute, q.default_time_zone)
    return CapPolicy(caps, quiet)


def encode_caps(policy: CapPolicy) -> caps_pb.FrequencyCapPolicy:
    encoded = caps_pb.FrequencyCapPolicy(
        caps=[
            caps_pb.FrequencyCap(
                channel=CHANNELS_PB.get(c.channel, 0),
                max_messages=c.max_messages,
                window=Duration(seconds=c.window_seconds),
            )
            for c in policy.caps
        ],
        update_time=timestamp(policy.update_time),
        etag=str(policy.version),
    )
    if policy.quiet_hours is not None:
        q = policy.quiet_hours
        encoded.quiet_hours.CopyFrom(
            caps_pb.QuietHours(
                start_minute=q.start_minute, end_minute=q.end_minute, default_time_zone=q.default_time_zone
            )
        )
    return encoded


def _event_fields(message: Message) -> dict:
    return {
        "message_id": message.message_id,
        "customer_id": message.customer_id,
        "template_key": message.template_key,
        "channel": CHANNELS_PB.get(message.channel, 0),
        "correlation_id": message.correlation_id,
    }


def failed_event(message: Message) -> events_pb2.NotificationFailed:
    return events_pb2.NotificationFailed(
        **_event_fields(message), failure_reason=message.failure_reason, attempt_count=message.attempt_count
    )


def sent_event(message: Message, attempt_count: int) -> events_pb2.NotificationSent:
    return events_pb2.NotificationSent(**_event_fields(message), attempt_count=attempt_count)


def opened_event(message: Message) -> events_pb2.NotificationOpened:
    return events_pb2.NotificationOpened(**_event_fields(message))
