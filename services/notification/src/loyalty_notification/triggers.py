"""Messages other services' events start: a welcome on `customer.created`, a tier message on
`tier.changed`, a warning on `points.expiring`, a reward message on `reward.granted`, a receipt on
`purchase.committed`, and the outcome of a fraud review of the customer's checkout on
`fraud.case_resolved` (its points released or voided). The consumer (in the event's unit of work, at most once per event) only
enqueues a job; the job, on a delivery replica, looks the customer up in profile and decides exactly
as SendNotification does, under a key derived from the event, so a redelivered event or a rerun job
stores one message. A tenant without the template (`welcome`, `tier_changed`, `points_expiring`,
`reward_granted`, `receipt`, `review_resolved`) sends nothing.

Each sends as its template's purpose says; all are meant to be transactional: they tell the
customer about their own account (joined, moved tier, value about to be lost, rewarded, bought),
which needs no marketing consent, and a customer who withdrew it must still hear that points will
expire. A tenant
that dresses one up as an offer should give it the marketing purpose, and it is then held to consent,
caps and quiet hours like any marketing message."""

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from loyalty.common.v1 import customer_pb2
from loyalty.fraud.v1 import assessment_pb2, events_pb2 as fraud_events, review_pb2
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.ledger.v1 import events_pb2 as ledger_events
from loyalty.notification.v1 import jobs_pb2, message_pb2
from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty.promotion.v1 import events_pb2 as promotion_events
from loyalty_notification import app, repository
from loyalty_notification.commands import SendNotification
from loyalty_notification.directory import Directory
from loyalty_notification.domain import policy
from loyalty_notification.encoding import decode_value
from loyalty_runtime.errors import Aborted, NotFound
from loyalty_runtime.events import Subscription
from loyalty_runtime.uow import UnitOfWork

SEND_FOR_EVENT_JOB = "notification.send-for-event"
WELCOME, TIER_CHANGED, POINTS_EXPIRING = "welcome", "tier_changed", "points_expiring"
REWARD_GRANTED, RECEIPT, REVIEW_RESOLVED = "reward_granted", "receipt", "review_resolved"


async def _enqueue(uow: UnitOfWork, job: jobs_pb2.SendForEventJob) -> None:
    await uow.enqueue(SEND_FOR_EVENT_JOB, job, dedupe_key=job.idempotency_key)


async def on_customer_created(uow: UnitOfWork, event: profile_events.CustomerCreated) -> None:
    await _enqueue(
        uow,
        jobs_pb2.SendForEventJob(
            customer_id=event.customer_id,
            template_key=WELCOME,
            idempotency_key=f"customer.created:{event.customer_id}",
        ),
    )


async def on_tier_changed(uow: UnitOfWork, event: ledger_events.TierChanged) -> None:
    if not event.to_tier:
        return  # below every tier: nothing to congratulate on
    await _enqueue(
        uow,
        jobs_pb2.SendForEventJob(
            customer_id=event.customer_id,
            template_key=TIER_CHANGED,
            idempotency_key=f"tier.changed:{event.account_id}:{event.to_tier}:{event.qualifying_points}",
            variables={"from_tier": event.from_tier, "to_tier": event.to_tier},
        ),
    )


async def on_points_expiring(uow: UnitOfWork, event: ledger_events.PointsExpiring) -> None:
    if not event.customer_id or event.amount <= 0:
        return  # nobody to tell, or nothing left to lose
    await _enqueue(
        uow,
        jobs_pb2.SendForEventJob(
            customer_id=event.customer_id,
            template_key=POINTS_EXPIRING,
            # The event stands for its lots (the ledger warns of each lot once), so its id keys
            # the message: a redelivery sends nothing more, a later lot's warning is its own.
            idempotency_key=f"points.expiring:{uow.call.event_id}",
            values={
                "points": message_pb2.TemplateValue(int_value=event.amount),
                "expiry_date": message_pb2.TemplateValue(timestamp_value=event.expire_time),
            },
        ),
    )


async def on_reward_granted(uow: UnitOfWork, event: promotion_events.RewardGranted) -> None:
    if not event.customer_id:
        return
    kind = event.reward.WhichOneof("kind") or ""
    await _enqueue(
        uow,
        jobs_pb2.SendForEventJob(
            customer_id=event.customer_id,
            template_key=REWARD_GRANTED,
            # The grant, not the event, is the unit: one message per grant whatever publishes it.
            idempotency_key=f"reward.granted:{event.grant_id}",
            # A voucher reward gives 0 points; `reward_kind` lets one template word both.
            variables={"campaign_id": event.campaign_id, "reward_kind": kind},
            values={"points": message_pb2.TemplateValue(int_value=event.reward.points.points)},
        ),
    )


async def on_purchase_committed(uow: UnitOfWork, event: gateway_events.PurchaseCommitted) -> None:
    if not event.customer_id:
        return  # an anonymous checkout has nobody to send a receipt to
    await _enqueue(
        uow,
        jobs_pb2.SendForEventJob(
            customer_id=event.customer_id,
            template_key=RECEIPT,
            idempotency_key=f"purchase.committed:{event.checkout_id}",
            variables={"receipt_number": event.receipt_number, "checkout_id": event.checkout_id},
            values={
                "net_total": message_pb2.TemplateValue(money_value=event.net_total),
                "points_earned": message_pb2.TemplateValue(int_value=event.points_earned),
                "points_burned": message_pb2.TemplateValue(int_value=event.points_burned),
                # Earned points under fraud review are not the customer's yet: a receipt can say so.
                "rewards_withheld": message_pb2.TemplateValue(bool_value=event.rewards_withheld),
                "purchase_time": message_pb2.TemplateValue(timestamp_value=event.purchase_time),
            },
        ),
    )


async def on_case_resolved(uow: UnitOfWork, event: fraud_events.CaseResolved) -> None:
    """The customer whose purchase was under review hears whether its points are now theirs."""
    if event.kind != assessment_pb2.ASSESSMENT_KIND_CHECKOUT or not event.customer_id:
        return
    approved = event.resolution == review_pb2.REVIEW_CASE_STATE_APPROVED
    await _enqueue(
        uow,
        jobs_pb2.SendForEventJob(
            customer_id=event.customer_id,
            template_key=REVIEW_RESOLVED,
            idempotency_key=f"fraud.case_resolved:{event.review_case_id}",
            variables={"checkout_id": event.subject_id, "outcome": "approved" if approved else "rejected"},
            values={"approved": message_pb2.TemplateValue(bool_value=approved)},
        ),
    )


SUBSCRIPTIONS = [
    Subscription("profile.events", profile_events.CustomerCreated, on_customer_created),
    Subscription("ledger.events", ledger_events.TierChanged, on_tier_changed),
    Subscription("ledger.events", ledger_events.PointsExpiring, on_points_expiring),
    Subscription("promotion.events", promotion_events.RewardGranted, on_reward_granted),
    Subscription("gateway.events", gateway_events.PurchaseCommitted, on_purchase_committed),
    Subscription("gateway.events", gateway_events.TenantSettingsChanged, app.tenant_settings_changed),
    Subscription("fraud.events", fraud_events.CaseResolved, on_case_resolved),
]


class EventSender:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    async def send(self, uow: UnitOfWork, job: jobs_pb2.SendForEventJob) -> None:
        ref = customer_pb2.CustomerRef(customer_id=job.customer_id)
        command = SendNotification(
            request=job,
            idempotency_key=job.idempotency_key,
            recipient=ref,
            template_key=job.template_key,
            channels=(),
            locale="",
            variables=dict(job.variables),
        )
        customer = await self.directory.customer(ref)
        if customer is None:
            return  # erased or merged away before the job ran
        if job.values:
            tz = policy.local_zone(customer.time_zone, (await repository.cap_policy(uow)).quiet_hours)
            values = {name: _local(decode_value(value), tz) for name, value in job.values.items()}
            command = replace(command, variables={**command.variables, **values})
        try:
            await app.decide(uow, command, customer)
        except NotFound:
            return  # the tenant has no such template
        except Aborted:
            return  # stored already (a rerun of this job)


def _local(value, tz: ZoneInfo):
    return value.astimezone(tz) if isinstance(value, datetime) else value
