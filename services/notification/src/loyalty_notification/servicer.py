"""NotificationService: each method decodes its request into a command, runs one use case in a
unit of work (`units.idempotent` for state changes), and encodes the result. No SQL, no rule."""

import re
import uuid
from datetime import datetime

from loyalty.common.v1 import customer_pb2
from loyalty.notification.v1 import notification_service_pb2 as api
from loyalty_notification import app
from loyalty_notification.commands import (
    CancelMessage,
    CreateTemplate,
    DeleteTemplate,
    GetMessage,
    GetTemplate,
    ListMessages,
    ListTemplates,
    MessageQuery,
    RecordOpen,
    RenderTemplate,
    SendNotification,
    Unsubscribe,
    UpdateCapPolicy,
    UpdateTemplate,
)
from loyalty_notification.directory import Directory
from loyalty_notification.domain import templates
from loyalty_notification.domain.model import Channel, Message, Purpose, Template, TemplateState
from loyalty_notification.domain.policy import EMAIL, zone
from loyalty_notification.encoding import (
    CHANNELS,
    CHANNELS_PB,
    PURPOSES,
    STATUSES_PB,
    decode_caps,
    decode_value,
    decode_variant,
    encode_caps,
    encode_message,
    encode_template,
)
from loyalty_runtime.context import current_call
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.paging import decode_token, encode_token, page_size
from loyalty_runtime.protobuf import moment
from loyalty_runtime.uow import UnitsOfWork, require_key

KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,99}$")
MAX_VARIABLES = 100
# What UpdateTemplate may change (the contract's update_mask paths, named as the domain's fields).
TEMPLATE_FIELDS = frozenset({"display_name", "purpose", "variants", "default_locale", "variable_names"})
STATUSES = {number: status for status, number in STATUSES_PB.items()}


def _invalid(field: str, description: str, reason: Reason = Reason.INVALID_ARGUMENT) -> InvalidArgument:
    return InvalidArgument(reason, description, field=field)


def _uuid(value: str, field: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _invalid(field, "must be an id this service issued") from None


def _locale(value: str, field: str, *, required: bool = False) -> str:
    if (value or required) and not templates.LOCALE.match(value):
        raise _invalid(field, "must be a BCP 47 language tag such as pt-BR")
    return value


def _channel(number: int, field: str) -> Channel:
    if number not in CHANNELS:
        raise _invalid(field, "must be a delivery channel")
    return CHANNELS[number]


def _purpose(number: int, field: str) -> Purpose:
    if number not in PURPOSES:
        raise _invalid(field, "must be TRANSACTIONAL or MARKETING")
    return PURPOSES[number]


def _variants(messages, field: str) -> tuple:
    variants = []
    seen = set()
    for index, variant in enumerate(messages):
        path = f"{field}[{index}]"
        _channel(variant.channel, f"{path}.channel")
        _locale(variant.locale, f"{path}.locale", required=True)
        if (variant.channel, variant.locale.lower()) in seen:
            raise _invalid(path, "at most one variant per channel and locale")
        seen.add((variant.channel, variant.locale.lower()))
        variants.append(decode_variant(variant))
    if not variants:
        raise _invalid(field, "at least one variant is required")
    return tuple(variants)


def _template_fields(message, field: str, names) -> dict:
    """The named fields of a Template message, decoded and checked (the syntax of bodies is the
    use case's check)."""
    decoders = {
        "display_name": lambda: message.display_name,
        "purpose": lambda: _purpose(message.purpose, f"{field}.purpose"),
        "default_locale": lambda: _locale(message.default_locale, f"{field}.default_locale", required=True),
        "variants": lambda: _variants(message.variants, f"{field}.variants"),
        "variable_names": lambda: tuple(message.variable_names),
    }
    return {name: decoders[name]() for name in sorted(names)}


def _decode_template(message, field: str = "template") -> Template:
    if not KEY.match(message.key):
        raise _invalid(f"{field}.key", "lower-case letters, digits, '_', '.', '-', starting with a letter")
    return Template(
        template_id=str(uuid.uuid4()),
        key=message.key,
        state=TemplateState.ACTIVE,
        **_template_fields(message, field, TEMPLATE_FIELDS),
    )


def _update_template_command(request: api.UpdateTemplateRequest) -> UpdateTemplate:
    require_key(request.idempotency_key)
    template_id = _uuid(request.template.template_id, "template.template_id")
    paths = set(request.update_mask.paths) or TEMPLATE_FIELDS
    if paths - TEMPLATE_FIELDS:
        raise _invalid("update_mask", f"updatable: {', '.join(sorted(TEMPLATE_FIELDS))}")
    return UpdateTemplate(
        template_id, _template_fields(request.template, "template", paths), request.template.etag
    )


def _text(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise _invalid(field, f"at most {limit} characters")
    return value


def _message_cursor(token: str) -> tuple[datetime, str] | None:
    """A ListMessages page token: the last message's create time and id."""
    text = decode_token(token)
    if not text:
        return None
    try:
        moment_text, message_id = text.split("|", 1)
        return datetime.fromisoformat(moment_text), str(uuid.UUID(message_id))
    except ValueError:
        raise _invalid("page_token", "page_token is not one this service issued") from None


def _message_query(request: api.ListMessagesRequest) -> MessageQuery:
    if request.status and request.status not in STATUSES:
        raise _invalid("status", "must be a message status")
    start, end = moment(request, "start_time"), moment(request, "end_time")
    if start and end and end <= start:
        raise _invalid("end_time", "must be after start_time")
    return MessageQuery(
        customer_id=_text(request.customer_id, "customer_id", 64),
        status=STATUSES.get(request.status),
        channel=_channel(request.channel, "channel") if request.channel else None,
        template_key=_text(request.template_key, "template_key", 100),
        correlation_id=_text(request.correlation_id, "correlation_id", 200),
        start_time=start,
        end_time=end,
        after=_message_cursor(request.page_token),
    )


def _next_messages_token(last: Message | None) -> str:
    return encode_token(f"{last.create_time.isoformat()}|{last.message_id}") if last else ""


def _variables(values) -> dict:
    if len(values) > MAX_VARIABLES:
        raise _invalid("variables", f"at most {MAX_VARIABLES} variables")
    decoded = {}
    for name, value in values.items():
        if not value.WhichOneof("kind"):
            raise _invalid(f"variables[{name}]", "exactly one kind of value must be set")
        decoded[name] = decode_value(value)
    return decoded


def _send_command(request: api.SendNotificationRequest) -> SendNotification:
    require_key(request.idempotency_key)
    kind = request.recipient.WhichOneof("ref")
    if kind is None:
        raise _invalid("recipient", "a customer id or identifier is required")
    if kind == "customer_id" and not request.recipient.customer_id:
        raise _invalid("recipient.customer_id", "must not be empty", Reason.INVALID_RECIPIENT)
    if kind == "identifier":
        identifier = request.recipient.identifier
        if not identifier.value or (
            identifier.type == customer_pb2.IDENTIFIER_TYPE_EMAIL and not EMAIL.match(identifier.value)
        ):
            raise _invalid(
                "recipient.identifier.value", "not an address a message can reach", Reason.INVALID_RECIPIENT
            )
    if not request.template_key:
        raise _invalid("template_key", "is required")
    channels = tuple(_channel(c, f"channels[{i}]") for i, c in enumerate(request.channels))
    if Channel.WEBHOOK not in channels and request.webhook_url:
        raise _invalid("webhook_url", "only for the WEBHOOK channel")
    return SendNotification(
        request=request,
        idempotency_key=request.idempotency_key,
        recipient=request.recipient,
        template_key=request.template_key,
        channels=channels,
        locale=_locale(request.locale, "locale"),
        variables=_variables(request.variables),
        send_time=moment(request, "send_time"),
        correlation_id=request.correlation_id,
        webhook_url=request.webhook_url,
    )


def _caps_command(request: api.UpdateFrequencyCapPolicyRequest) -> UpdateCapPolicy:
    paths = set(request.update_mask.paths) or {"caps", "quiet_hours"}
    if paths - {"caps", "quiet_hours"}:
        raise _invalid("update_mask", "updatable: caps, quiet_hours")
    for index, cap in enumerate(request.policy.caps):
        if cap.max_messages < 0 or cap.window.seconds <= 0:
            raise _invalid(f"policy.caps[{index}]", "max_messages >= 0 and a positive window are required")
        if cap.channel and cap.channel not in CHANNELS:
            raise _invalid(f"policy.caps[{index}].channel", "must be a delivery channel")
    quiet = request.policy.quiet_hours
    if request.policy.HasField("quiet_hours"):
        for name in ("start_minute", "end_minute"):
            if not 0 <= getattr(quiet, name) <= 1439:
                raise _invalid(f"policy.quiet_hours.{name}", "minutes after midnight, 0..1439")
        if quiet.default_time_zone and zone(quiet.default_time_zone) is None:
            raise _invalid(
                "policy.quiet_hours.default_time_zone", "must be an IANA time zone such as Europe/Berlin"
            )
    return UpdateCapPolicy(decode_caps(request.policy), "caps" in paths, "quiet_hours" in paths)


class NotificationServicer:
    def __init__(
        self, units: UnitsOfWork, directory: Directory, *, allow_loopback: bool, unsubscribe_secret: str
    ) -> None:
        self.units = units
        self.directory = directory
        self.allow_loopback = allow_loopback
        self.unsubscribe_secret = unsubscribe_secret

    async def CreateTemplate(self, request: api.CreateTemplateRequest, context) -> api.CreateTemplateResponse:
        command = CreateTemplate(_decode_template(request.template))
        return await self.units.idempotent(
            request,
            app.create_template,
            command,
            lambda t: api.CreateTemplateResponse(template=encode_template(t)),
        )

    async def GetTemplate(self, request: api.GetTemplateRequest, context) -> api.GetTemplateResponse:
        if request.WhichOneof("template") == "template_id":
            command = GetTemplate(template_id=_uuid(request.template_id, "template_id"))
        elif request.key:
            command = GetTemplate(key=request.key)
        else:
            raise _invalid("template", "a template id or key is required")
        async with self.units.read() as uow:
            return api.GetTemplateResponse(template=encode_template(await app.get_template(uow, command)))

    async def ListTemplates(self, request: api.ListTemplatesRequest, context) -> api.ListTemplatesResponse:
        command = ListTemplates(
            purpose=_purpose(request.purpose, "purpose") if request.purpose else None,
            show_archived=request.show_archived,
            after_key=decode_token(request.page_token),
            page_size=page_size(request.page_size, default=50, maximum=500),
        )
        async with self.units.read() as uow:
            found, after = await app.list_templates(uow, command)
        return api.ListTemplatesResponse(
            templates=[encode_template(t) for t in found],
            next_page_token=encode_token(after) if after else "",
        )

    async def UpdateTemplate(self, request: api.UpdateTemplateRequest, context) -> api.UpdateTemplateResponse:
        return await self.units.idempotent(
            request,
            app.update_template,
            _update_template_command(request),
            lambda t: api.UpdateTemplateResponse(template=encode_template(t)),
        )

    async def DeleteTemplate(self, request: api.DeleteTemplateRequest, context) -> api.DeleteTemplateResponse:
        require_key(request.idempotency_key)
        command = DeleteTemplate(_uuid(request.template_id, "template_id"), request.etag)
        return await self.units.idempotent(
            request,
            app.delete_template,
            command,
            lambda t: api.DeleteTemplateResponse(template=encode_template(t)),
        )

    async def RenderTemplate(self, request: api.RenderTemplateRequest, context) -> api.RenderTemplateResponse:
        command = RenderTemplate(
            template_id=_uuid(request.template_id, "template_id"),
            channel=_channel(request.channel, "channel"),
            locale=_locale(request.locale, "locale"),
            variables=_variables(request.variables),
        )
        async with self.units.read() as uow:
            result = await app.render_template(uow, command)
        return api.RenderTemplateResponse(
            subject=result.subject,
            body=result.body,
            html_body=result.html_body,
            locale=result.locale,
            missing_variables=result.missing_variables,
        )

    async def SendNotification(
        self, request: api.SendNotificationRequest, context
    ) -> api.SendNotificationResponse:
        return await app.send_notification(
            self.units,
            self.directory,
            _send_command(request),
            lambda m: api.SendNotificationResponse(message=encode_message(m)),
            allow_loopback=self.allow_loopback,
        )

    async def GetMessage(self, request: api.GetMessageRequest, context) -> api.GetMessageResponse:
        command = GetMessage(_uuid(request.message_id, "message_id"))
        async with self.units.read() as uow:
            return api.GetMessageResponse(message=encode_message(await app.get_message(uow, command)))

    async def ListMessages(self, request: api.ListMessagesRequest, context) -> api.ListMessagesResponse:
        command = ListMessages(
            _message_query(request), page_size(request.page_size, default=100, maximum=1000)
        )
        async with self.units.read() as uow:
            found, last = await app.list_messages(uow, command)
        return api.ListMessagesResponse(
            messages=[encode_message(m) for m in found], next_page_token=_next_messages_token(last)
        )

    async def CancelMessage(self, request: api.CancelMessageRequest, context) -> api.CancelMessageResponse:
        require_key(request.idempotency_key)
        return await self.units.idempotent(
            request,
            app.cancel_message,
            CancelMessage(_uuid(request.message_id, "message_id")),
            lambda m: api.CancelMessageResponse(message=encode_message(m)),
        )

    async def RecordMessageOpened(
        self, request: api.RecordMessageOpenedRequest, context
    ) -> api.RecordMessageOpenedResponse:
        require_key(request.idempotency_key)
        return await self.units.idempotent(
            request,
            app.record_open,
            RecordOpen(_uuid(request.message_id, "message_id")),
            lambda m: api.RecordMessageOpenedResponse(message=encode_message(m)),
        )

    async def GetFrequencyCapPolicy(self, request, context) -> api.GetFrequencyCapPolicyResponse:
        async with self.units.read() as uow:
            return api.GetFrequencyCapPolicyResponse(policy=encode_caps(await app.get_cap_policy(uow)))

    async def UpdateFrequencyCapPolicy(
        self, request: api.UpdateFrequencyCapPolicyRequest, context
    ) -> api.UpdateFrequencyCapPolicyResponse:
        return await self.units.idempotent(
            request,
            app.update_cap_policy,
            _caps_command(request),
            lambda p: api.UpdateFrequencyCapPolicyResponse(policy=encode_caps(p)),
        )

    async def Unsubscribe(self, request: api.UnsubscribeRequest, context) -> api.UnsubscribeResponse:
        command = Unsubscribe(require_key(request.idempotency_key), request.token)
        customer_id, channel = await app.unsubscribe(
            self.directory, command, self.unsubscribe_secret, current_call().tenant_id
        )
        return api.UnsubscribeResponse(customer_id=customer_id, channel=CHANNELS_PB[channel])
