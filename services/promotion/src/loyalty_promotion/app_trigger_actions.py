"""Use cases of triggers' actions: the checks of what actions name when a trigger is saved, and
what a fired trigger does.

A trigger fires once per (trigger, event): its grant's unique index says so. Its actions then run
once per grant, which is the occurrence:
- award_points: `reward.granted`, published with the grant (app_triggers); the ledger posts it
  keyed by the grant id;
- issue_code: a unique code of the campaign, held by the customer (their wallet), valid for
  `valid_for` from now (else the campaign's schedule), written in the grant's own transaction;
- send_notification, add_to_segment, call_webhook: a job each, enqueued in that transaction with the
  grant id and the action's position as its dedupe key, run by the job worker with retries and
  backoff; the downstream call carries that key as its idempotency key (the webhook as
  `Idempotency-Key`), so a retry after a lost answer is recognisable and harmless."""

import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import httpx

from loyalty.common.v1 import customer_pb2
from loyalty.notification.v1 import message_pb2, notification_service_pb2 as notification_api
from loyalty.promotion.v1 import trigger_jobs_pb2, trigger_pb2, voucher_pb2
from loyalty.segmentation.v1 import segment_pb2, segmentation_service_pb2 as segmentation_api
from loyalty_promotion import app_codes, repository_codes
from loyalty_promotion.domain import codegen, trigger_actions as rules
from loyalty_promotion.domain.trigger_actions import Refusal
from loyalty_promotion.trigger_links import TriggerLinks, call
from loyalty_runtime.errors import DomainError, FieldViolation, Reason, Unavailable
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork
from loyalty_runtime.webhooks import SIGNATURE_HEADER, sign_webhook

log = logging.getLogger("loyalty.promotion.triggers")

ACTION_JOB = "promotion.trigger-action"
CODE_PATTERN = "########"
CODE_DRAWS = 5
OUTSIDE = frozenset({"send_notification", "add_to_segment", "call_webhook"})


# --- on save -------------------------------------------------------------------------------------


async def target_refusals(
    uow: UnitOfWork, links: TriggerLinks, trigger: trigger_pb2.Trigger
) -> list[Refusal]:
    """What the actions name and does not exist: a voucher campaign, a template, a static segment."""
    found = []

    def missing(field: str, description: str) -> None:
        found.append(Refusal(Reason.TRIGGER_ACTION_TARGET_NOT_FOUND, FieldViolation(field, description)))

    for campaign_id, field in rules.code_campaigns(trigger):
        try:
            await app_codes.voucher_campaign(uow, str(uuid.UUID(campaign_id)), field)
        except (DomainError, ValueError):
            missing(field, "no voucher campaign with this id")
    for index, action in enumerate(trigger.actions):
        kind = action.WhichOneof("kind")
        if kind == "send_notification":
            key = action.send_notification.template_key
            answer = await call(
                links.notification.GetTemplate, notification_api.GetTemplateRequest(key=key), missing_ok=True
            )
            if answer is None:
                missing(
                    f"trigger.actions[{index}].send_notification.template_key", "no template with this key"
                )
        elif kind == "add_to_segment":
            answer = await call(
                links.segmentation.GetSegment,
                segmentation_api.GetSegmentRequest(segment_id=action.add_to_segment.segment_id),
                missing_ok=True,
            )
            if answer is None or answer.segment.type != segment_pb2.SEGMENT_TYPE_STATIC:
                missing(
                    f"trigger.actions[{index}].add_to_segment.segment_id", "no static segment with this id"
                )
    return found


# --- when a trigger fires ------------------------------------------------------------------------


@dataclass(frozen=True)
class Occurrence:
    """The event a trigger fires on."""

    event_id: str
    event_type: str
    occurred_at: datetime


async def run_actions(
    uow: UnitOfWork, trigger: trigger_pb2.Trigger, customer_id: str, grant_id: str, occurrence: Occurrence
) -> None:
    """Issue the codes and enqueue the outside actions of a grant (a notification after an issued
    code is given it as the variable `code`)."""
    issued = ""
    for index, action in enumerate(rules.actions_of(trigger)):
        kind = action.WhichOneof("kind")
        code = ""
        if kind == "issue_code":
            code = await issue_code(uow, action.issue_code, customer_id, grant_id)
            issued = issued or code
        elif kind == "call_webhook" and action.call_webhook.HasField("issue_code"):
            code = await issue_code(uow, action.call_webhook.issue_code, customer_id, grant_id)
        if kind in OUTSIDE:
            job = trigger_jobs_pb2.TriggerActionJob(
                grant_id=grant_id,
                trigger_id=trigger.trigger_id,
                customer_id=customer_id,
                event_id=occurrence.event_id,
                event_type=occurrence.event_type,
                occur_time=timestamp(occurrence.occurred_at),
                action_index=index,
                action=action,
                code=code or (issued if kind == "send_notification" else ""),
            )
            await uow.enqueue(ACTION_JOB, job, dedupe_key=action_key(grant_id, index))


def action_key(grant_id: str, index: int) -> str:
    return f"trigger-action:{grant_id}:{index}"


async def issue_code(uow: UnitOfWork, reward, customer_id: str, grant_id: str) -> str:
    """A new unique code of the campaign held by the customer; "" when the campaign can no longer
    issue (archived, or no longer a voucher campaign since the trigger was saved)."""
    try:
        campaign = await app_codes.voucher_campaign(uow, reward.campaign_id, "campaign_id")
    except DomainError:
        log.warning("trigger code not issued: the campaign cannot issue codes")
        return ""
    pattern = codegen.parse(campaign.code_pattern.pattern or CODE_PATTERN, campaign.code_pattern.charset)
    end = uow.now + reward.valid_for.ToTimedelta() if reward.HasField("valid_for") else None
    for _ in range(CODE_DRAWS):
        (code,) = codegen.generate(pattern, 1, secrets.token_bytes)
        requested = voucher_pb2.Voucher(
            code=code,
            type=voucher_pb2.VOUCHER_TYPE_UNIQUE,
            holder_customer_id=customer_id,
            metadata={"grant_id": grant_id},
        )
        if end is not None:
            requested.start_time.CopyFrom(timestamp(uow.now))
            requested.end_time.CopyFrom(timestamp(end))
        voucher = app_codes.new_voucher(requested, reward.campaign_id, uow.now)
        if await repository_codes.insert_voucher(uow.connection, uow.tenant, voucher):
            return voucher.code
    log.warning("trigger code not issued: the campaign's code pattern is crowded")
    return ""


class ActionRunner:
    """Runs one outside action (the job); raises to have the job retried with backoff."""

    def __init__(self, links: TriggerLinks, http: httpx.AsyncClient) -> None:
        self.links = links
        self.http = http

    async def run(self, uow: UnitOfWork, job: trigger_jobs_pb2.TriggerActionJob) -> None:
        kind = job.action.WhichOneof("kind")
        key = action_key(job.grant_id, job.action_index)
        if kind == "send_notification":
            await self._notify(job, key)
        elif kind == "add_to_segment":
            await call(
                self.links.segmentation.AddSegmentMembers,
                segmentation_api.AddSegmentMembersRequest(
                    idempotency_key=key,
                    segment_id=job.action.add_to_segment.segment_id,
                    customer_ids=[job.customer_id],
                ),
            )
        elif kind == "call_webhook":
            await self._post(job, key)

    async def _notify(self, job: trigger_jobs_pb2.TriggerActionJob, key: str) -> None:
        action = job.action.send_notification
        variables = {"code": message_pb2.TemplateValue(string_value=job.code)} if job.code else {}
        await call(
            self.links.notification.SendNotification,
            notification_api.SendNotificationRequest(
                idempotency_key=key,
                recipient=customer_pb2.CustomerRef(customer_id=job.customer_id),
                template_key=action.template_key,
                channels=action.channels,
                variables=variables,
                correlation_id=job.grant_id,
            ),
        )

    async def _post(self, job: trigger_jobs_pb2.TriggerActionJob, key: str) -> None:
        body = webhook_body(job)
        signed_at = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_webhook(job.action.call_webhook.secret, body, signed_at),
            "Idempotency-Key": key,
        }
        try:
            answer = await self.http.post(job.action.call_webhook.url, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise Unavailable(Reason.UNAVAILABLE, f"webhook unreachable: {type(error).__name__}") from None
        if not answer.is_success:
            raise Unavailable(Reason.UNAVAILABLE, f"webhook answered {answer.status_code}")


def webhook_body(job: trigger_jobs_pb2.TriggerActionJob) -> bytes:
    payload = {
        "event_type": job.event_type,
        "event_id": job.event_id,
        "occur_time": job.occur_time.ToJsonString(),
        "trigger_id": job.trigger_id,
        "grant_id": job.grant_id,
        "customer_id": job.customer_id,
    }
    if job.code:
        payload["code"] = job.code
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
