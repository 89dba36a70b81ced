"""The notification service's use cases: one `async def` per RPC over a unit of work.

SendNotification decides synchronously (the contract says so): the customer, their contact points
and consents come from the profile service first, outside the transaction; then, in one
transaction under the request's idempotency key, the template is chosen, the message rendered
(strictly: a missing variable stores the message FAILED with the reason, it is never sent), the
frequency caps counted under a per-customer lock, quiet hours applied, and the message stored with
its delivery job (enqueued on the same connection: the job exists if and only if the message does).
Delivery is the job's (dispatch.py).
"""

import uuid
from dataclasses import replace
from datetime import datetime, timedelta

from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.notification.v1 import jobs_pb2
from loyalty_notification import repository
from loyalty_notification.commands import (
    CancelMessage,
    CreateTemplate,
    DeleteTemplate,
    GetMessage,
    GetTemplate,
    ListMessages,
    ListTemplates,
    RecordOpen,
    RenderResult,
    RenderTemplate,
    SendNotification,
    Unsubscribe,
    UpdateCapPolicy,
    UpdateTemplate,
)
from loyalty_notification.directory import Customer, Directory
from loyalty_notification.domain import policy, signing, templates
from loyalty_notification.domain.model import (
    SENT,
    CapPolicy,
    Channel,
    Message,
    Purpose,
    Status,
    Suppression,
    Template,
    TemplateState,
)
from loyalty_notification.domain.targets import TargetRefused
from loyalty_notification.encoding import encode_message, failed_event, opened_event
from loyalty_notification.providers import check_webhook_target
from loyalty_runtime.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Reason,
)
from loyalty_runtime.uow import UnitOfWork, UnitsOfWork, utcnow

DELIVER_JOB = "notification.deliver"


def new_id() -> str:
    return str(uuid.uuid4())


# --- templates ---


def require_valid_variants(template: Template) -> None:
    problems = templates.syntax_problems(template.variants)
    if problems:
        raise InvalidArgument(
            Reason.TEMPLATE_SYNTAX_ERROR,
            "a template body does not parse",
            violations=[FieldViolation(f"template.{p.field}", p.description) for p in problems],
        )


async def create_template(uow: UnitOfWork, command: CreateTemplate) -> Template:
    require_valid_variants(command.template)
    return await repository.insert_template(uow, command.template)


async def _active_template(uow: UnitOfWork, *, template_id: str = "", key: str = "") -> Template:
    found = (
        await repository.template_by_id(uow, template_id)
        if template_id
        else await repository.template_by_key(uow, key)
    )
    if found is None or found.state is TemplateState.ARCHIVED:
        raise NotFound(
            Reason.TEMPLATE_NOT_FOUND,
            "no such template",
            field="template_id" if template_id else "template_key",
        )
    return found


async def get_template(uow: UnitOfWork, command: GetTemplate) -> Template:
    found = (
        await repository.template_by_id(uow, command.template_id)
        if command.template_id
        else await repository.template_by_key(uow, command.key)
    )
    if found is None:
        raise NotFound(Reason.TEMPLATE_NOT_FOUND, "no such template")
    return found


async def list_templates(uow: UnitOfWork, command: ListTemplates) -> tuple[list[Template], str]:
    """One page by key, and the key to continue after ("" on the last page)."""
    found = await repository.templates(
        uow, command.purpose, command.show_archived, command.after_key, command.page_size + 1
    )
    page = found[: command.page_size]
    return page, page[-1].key if len(found) > command.page_size else ""


async def _changeable_template(uow: UnitOfWork, template_id: str, etag: str, field: str) -> Template:
    """The active template locked for a change, if `etag` (when given) is its current one."""
    current = await repository.template_for_update(uow, template_id)
    if current is None or current.state is TemplateState.ARCHIVED:
        raise NotFound(Reason.TEMPLATE_NOT_FOUND, "no such template", field=field)
    if etag and etag != str(current.version):
        raise Aborted(Reason.CONCURRENT_MODIFICATION, "the etag is not current; read it again", field="etag")
    return current


async def update_template(uow: UnitOfWork, command: UpdateTemplate) -> Template:
    current = await _changeable_template(uow, command.template_id, command.etag, "template.template_id")
    updated = replace(current, **command.changes)
    require_valid_variants(updated)
    return await repository.save_template(uow, updated)


async def delete_template(uow: UnitOfWork, command: DeleteTemplate) -> Template:
    current = await _changeable_template(uow, command.template_id, command.etag, "template_id")
    return await repository.save_template(uow, replace(current, state=TemplateState.ARCHIVED))


async def render_template(uow: UnitOfWork, command: RenderTemplate) -> RenderResult:
    template = await _active_template(uow, template_id=command.template_id)
    variant = templates.choose_variant(template, command.channel, command.locale)
    if variant is None:
        raise NotFound(
            Reason.TEMPLATE_VARIANT_NOT_FOUND, "the template has no variant for this channel", field="channel"
        )
    try:
        rendered = templates.render(variant, command.variables)
    except templates.MissingVariables as missing:
        return RenderResult("", "", "", variant.locale, missing.names)
    return RenderResult(rendered.subject, rendered.body, rendered.html_body, rendered.locale, [])


# --- sending ---


async def send_notification(
    units: UnitsOfWork, directory: Directory, command: SendNotification, encode, *, allow_loopback: bool
):
    if Channel.WEBHOOK in command.channels:
        try:
            await check_webhook_target(command.webhook_url, allow_loopback=allow_loopback)
        except TargetRefused as refused:
            raise InvalidArgument(Reason.WEBHOOK_URL_REFUSED, str(refused), field="webhook_url") from None
    customer = await directory.customer(command.recipient)
    return await units.idempotent(command.request, _decide, (command, customer), encode)


def _draft(
    uow: UnitOfWork, command: SendNotification, customer_id: str, template: Template | None
) -> Message:
    """The message before a decision: no channel, queued now."""
    now = uow.now
    return Message(
        message_id=new_id(),
        idempotency_key=command.idempotency_key,
        customer_id=customer_id,
        template_id=template.template_id if template else None,
        template_key=command.template_key,
        template_version=template.version if template else 0,
        channel=None,
        locale="",
        purpose=template.purpose if template else Purpose.TRANSACTIONAL,
        status=Status.QUEUED,
        suppression_reason=None,
        recipient="",
        recipient_hint="",
        subject="",
        body="",
        html_body="",
        correlation_id=command.correlation_id,
        failure_reason="",
        attempt_count=0,
        create_time=now,
        scheduled_time=max(now, command.send_time) if command.send_time else now,
        sent_time=None,
        update_time=now,
    )


def _candidates(
    command: SendNotification, customer: Customer, template: Template, locale: str
) -> list[policy.Candidate]:
    channels = list(command.channels) or templates.channels_of(template)
    contacts = {**customer.contacts, Channel.WEBHOOK: command.webhook_url}
    return [
        policy.Candidate(
            channel,
            contacts.get(channel, ""),
            templates.choose_variant(template, channel, locale) is not None,
        )
        for channel in channels
    ]


def _variables(command: SendNotification, customer: Customer) -> dict:
    person = {
        "customer_id": customer.customer_id,
        "given_name": customer.given_name,
        "family_name": customer.family_name,
    }
    return {"customer": {k: v for k, v in person.items() if v}, **command.variables}


async def _decide(uow: UnitOfWork, args: tuple[SendNotification, Customer | None]) -> Message:
    return await decide(uow, *args)


async def decide(uow: UnitOfWork, command: SendNotification, customer: Customer | None) -> Message:
    """Choose, render, cap, defer and store the message (with its delivery job, unless it is
    suppressed or failed); NotFound for an unknown template, Aborted if its key is taken."""
    template = await _active_template(uow, key=command.template_key)
    if customer is None:
        return await _store(
            uow, _suppressed(_draft(uow, command, "", template), Suppression.CUSTOMER_UNAVAILABLE)
        )
    uow.concerns(customer.customer_id)
    draft = _draft(uow, command, customer.customer_id, template)
    # The caller's locale, the customer's, then the tenant's (the template's default comes last).
    locale = command.locale or customer.locale or await repository.default_locale(uow)
    chosen = policy.choose_channel(
        _candidates(command, customer, template, locale), customer.consents, template.purpose
    )
    if isinstance(chosen, Suppression):
        return await _store(uow, _suppressed(draft, chosen))
    if not policy.valid_contact(chosen.channel, chosen.contact):
        raise InvalidArgument(
            Reason.INVALID_RECIPIENT, "the customer's contact point cannot be delivered to", field="recipient"
        )
    variant = templates.choose_variant(template, chosen.channel, locale)
    draft = _addressed(draft, chosen, variant.locale)
    try:
        rendered = templates.render(variant, _variables(command, customer))
    except templates.MissingVariables as missing:
        failed = _with(draft, status=Status.FAILED, failure_reason=f"missing template variables: {missing}")
        stored = await _store(uow, failed)
        uow.record(failed_event(stored), key=stored.message_id)
        return stored
    draft = _with(draft, subject=rendered.subject, body=rendered.body, html_body=rendered.html_body)
    if template.purpose is Purpose.MARKETING:
        held = await _marketing_limits(uow, draft, customer)
        if held is not None:
            draft = held
    if draft.status is Status.SUPPRESSED:
        return await _store(uow, draft)
    stored = await _store(uow, draft)
    await uow.enqueue(
        DELIVER_JOB,
        jobs_pb2.DeliverMessageJob(message_id=stored.message_id),
        run_at=_wall(uow, stored.scheduled_time),
    )
    return stored


async def _marketing_limits(uow: UnitOfWork, draft: Message, customer: Customer) -> Message | None:
    """Capped (suppressed) or deferred by quiet hours; None when neither applies."""
    caps = await repository.cap_policy(uow)
    if caps.caps:
        await repository.lock_customer(uow, customer.customer_id)
        counts = await repository.counted_messages(uow, customer.customer_id, caps.caps)
        if policy.caps_exceeded(caps.caps, draft.channel, counts):
            return _suppressed(draft, Suppression.FREQUENCY_CAPPED)
    until = policy.quiet_until(caps.quiet_hours, customer.time_zone, draft.scheduled_time)
    if until is not None:
        return _with(draft, status=Status.SCHEDULED, scheduled_time=until)
    if draft.scheduled_time > uow.now:
        return _with(draft, status=Status.SCHEDULED)
    return None


def _wall(uow: UnitOfWork, due: datetime) -> datetime:
    """A due time on the unit of work's clock as a wall-clock time for the job table (PostgreSQL's
    clock decides when jobs run): the same delay from now. Under the real clock they are equal."""
    return utcnow() + max(timedelta(0), due - uow.now)


def _with(message: Message, **changes) -> Message:
    return replace(message, **changes)


def _suppressed(message: Message, reason: Suppression) -> Message:
    return _with(message, status=Status.SUPPRESSED, suppression_reason=reason)


def _addressed(message: Message, chosen: policy.Candidate, locale: str) -> Message:
    return _with(
        message,
        channel=chosen.channel,
        recipient=chosen.contact,
        recipient_hint=policy.mask(chosen.channel, chosen.contact),
        locale=locale,
    )


async def _store(uow: UnitOfWork, message: Message) -> Message:
    stored = await repository.insert_message(uow, message)
    if stored is None:
        # A concurrent call with the same key stored it first: its answer is the answer.
        raise Aborted(Reason.CONCURRENT_MODIFICATION, "the same message is being requested concurrently")
    return stored


async def get_message(uow: UnitOfWork, command: GetMessage) -> Message:
    found = await repository.message(uow, command.message_id)
    if found is None:
        raise NotFound(Reason.MESSAGE_NOT_FOUND, "no such message", field="message_id")
    return found


async def list_messages(uow: UnitOfWork, command: ListMessages) -> tuple[list[Message], Message | None]:
    """One page, newest first, and the message to continue after (None on the last page)."""
    found = await repository.messages(uow, command.query, command.page_size + 1)
    page = found[: command.page_size]
    return page, page[-1] if len(found) > command.page_size else None


async def _existing_message(uow: UnitOfWork, message_id: str) -> Message:
    found = await repository.message(uow, message_id)
    if found is None:
        raise NotFound(Reason.MESSAGE_NOT_FOUND, "no such message", field="message_id")
    return found


async def cancel_message(uow: UnitOfWork, command: CancelMessage) -> Message:
    """Its delivery job stays and finds nothing to do (a delivery skips what is not pending)."""
    cancelled = await repository.cancel_message(uow, command.message_id)
    found = await _existing_message(uow, command.message_id)
    if cancelled is None:
        raise FailedPrecondition(
            Reason.MESSAGE_NOT_CANCELLABLE,
            f"the message is {found.status.value}: only one not sent yet can be cancelled",
            field="message_id",
        )
    uow.concerns(found.customer_id)
    return found


async def record_open(uow: UnitOfWork, command: RecordOpen) -> Message:
    """The first open of a sent message sets its open time and publishes `notification.opened`;
    a later one changes nothing."""
    opened = await repository.mark_opened(uow, command.message_id)
    found = await _existing_message(uow, command.message_id)
    if opened is not None:
        uow.concerns(found.customer_id)
        uow.record(opened_event(opened), key=opened.message_id)
    elif found.status not in SENT:
        raise FailedPrecondition(
            Reason.MESSAGE_NOT_SENT, f"the message is {found.status.value}, not sent", field="message_id"
        )
    return found


# --- frequency caps ---


async def get_cap_policy(uow: UnitOfWork, _command=None) -> CapPolicy:
    return await repository.cap_policy(uow)


async def update_cap_policy(uow: UnitOfWork, command: UpdateCapPolicy) -> CapPolicy:
    current = await repository.cap_policy(uow)
    merged = CapPolicy(
        caps=command.policy.caps if command.caps else current.caps,
        quiet_hours=command.policy.quiet_hours if command.quiet_hours else current.quiet_hours,
    )
    return await repository.save_cap_policy(uow, merged)


# --- the tenant's settings ---


async def tenant_settings_changed(uow: UnitOfWork, event: gateway_events.TenantSettingsChanged) -> None:
    """The gateway's default locale becomes the tenant's here: the texts of a customer without a
    locale of their own are chosen by it."""
    await repository.follow_gateway_settings(uow, event.settings.default_locale, event.version)


# --- unsubscribe ---


def _token_invalid() -> InvalidArgument:
    return InvalidArgument(
        Reason.UNSUBSCRIBE_TOKEN_INVALID, "the unsubscribe link is not valid", field="token"
    )


async def unsubscribe(directory: Directory, command: Unsubscribe, secret: str, tenant: str):
    """Withdraw the marketing consent the token names, in the profile service (idempotent there on a
    key derived from this request's). A customer the tenant does not know makes the token invalid;
    an erased one has withdrawn everything already."""
    subject = signing.read_unsubscribe_token(secret, command.token)
    if subject is None or subject.tenant_id != tenant or subject.channel not in {c.value for c in Channel}:
        raise _token_invalid()
    channel = Channel(subject.channel)
    known = await directory.withdraw_marketing(
        subject.customer_id, channel, f"unsubscribe:{command.idempotency_key}"
    )
    if not known:
        raise _token_invalid()
    return subject.customer_id, channel


# --- customer data ---


async def export_customer_data(uow: UnitOfWork, customer_id: str) -> list:
    return [encode_message(m) for m in await repository.customer_messages(uow, customer_id)]


async def erase_customer(uow: UnitOfWork, customer_id: str) -> None:
    await repository.erase_customer(uow, customer_id)


async def merge_customers(uow: UnitOfWork, survivor_id: str, merged_id: str) -> None:
    await repository.move_messages(uow, survivor_id, merged_id)
