"""Delivery: the `notification.deliver` job, on the runtime's job primitive (jobs.py).

A worker claims the job with FOR UPDATE SKIP LOCKED and runs `deliver` in the claiming transaction:
the message row is locked, the provider called, and the attempt, the message's new state, the next
attempt's job and the event are written before that one COMMIT. So:
- two workers never attempt one message at once (the job's row lock, and the message's);
- a message is recorded sent once: the record commits with the job's "done", or not at all;
- a worker killed after the provider accepted but before COMMIT leaves the job to run again: the
  provider sees that message at most once more (with the same `Idempotency-Key` / message id, so a
  receiver can drop it), and it is still recorded once;
- retries are new jobs due after exponential backoff with jitter, so every attempt is on record;
  after `max_attempts` the message is FAILED (the dead letter);
- over a provider's rate limit the attempt is not made: the job is re-enqueued for a later window
  (throttled, never dropped).
The runtime's own retry (a job that raises) is left for what is nobody's answer: the database or
Redis gone, a bug.
"""

from dataclasses import dataclass, replace
from datetime import timedelta

from loyalty.notification.v1 import jobs_pb2
from loyalty_notification import repository
from loyalty_notification.app import DELIVER_JOB
from loyalty_notification.domain import delivery, signing
from loyalty_notification.domain.model import PENDING, Attempt, Channel, Message, Purpose, Status
from loyalty_notification.encoding import failed_event, sent_event
from loyalty_notification.providers import Delivery, Provider, RateLimiter
from loyalty_runtime.loops import jittered
from loyalty_runtime.uow import UnitOfWork, utcnow


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int
    retry_base_seconds: float
    retry_cap_seconds: float
    rates: dict[str, int]  # provider name -> attempts per second (0: unlimited)
    unsubscribe_url: str  # base of the one-click link; the token goes in its `token` parameter
    unsubscribe_secret: str
    tracking_url: str  # base of the open-tracking pixel's link ("": no pixel)
    tracking_secret: str


class Dispatcher:
    def __init__(
        self, providers: dict[Channel, Provider], limiter: RateLimiter, rules: DeliveryPolicy
    ) -> None:
        self.providers = providers
        self.limiter = limiter
        self.rules = rules

    async def deliver(self, uow: UnitOfWork, job: jobs_pb2.DeliverMessageJob) -> None:
        message = await repository.message_for_delivery(uow, job.message_id)
        if message is None or message.status not in PENDING:
            return  # sent, failed or cancelled meanwhile: nothing to do
        provider = self.providers.get(message.channel)
        if provider is None:
            await self._record(
                uow, message, "none", delivery.permanent("no_provider", "no provider for the channel")
            )
            return
        wait = await self.limiter.wait_seconds(provider.name, self.rules.rates.get(provider.name, 0))
        if wait > 0:
            await uow.enqueue(DELIVER_JOB, job, run_at=utcnow() + timedelta(seconds=wait))
            return
        outcome = await provider.send(self._delivery(uow, message))
        await self._record(uow, message, provider.name, outcome)

    def _delivery(self, uow: UnitOfWork, message: Message) -> Delivery:
        unsubscribe = ""
        if (
            message.purpose is Purpose.MARKETING
            and message.channel is Channel.EMAIL
            and self.rules.unsubscribe_url
        ):
            token = signing.unsubscribe_token(
                self.rules.unsubscribe_secret,
                signing.Unsubscription(uow.tenant, message.customer_id, message.channel.value),
            )
            unsubscribe = f"{self.rules.unsubscribe_url}?token={token}"
        html_body = message.html_body
        if message.channel is Channel.EMAIL and html_body and self.rules.tracking_url:
            token = signing.tracking_token(
                self.rules.tracking_secret, signing.Tracked(uow.tenant, message.message_id)
            )
            html_body = delivery.with_pixel(html_body, f"{self.rules.tracking_url}?token={token}")
        return Delivery(
            message_id=message.message_id,
            customer_id=message.customer_id,
            template_key=message.template_key,
            correlation_id=message.correlation_id,
            recipient=message.recipient,
            subject=message.subject,
            body=message.body,
            html_body=html_body,
            unsubscribe_url=unsubscribe,
        )

    async def _record(
        self, uow: UnitOfWork, message: Message, provider: str, outcome: delivery.Outcome
    ) -> None:
        number = message.attempt_count + 1
        step = delivery.after_attempt(outcome, number, self.rules.max_attempts)
        next_time = None
        if step.retry:
            delay = jittered(self.rules.retry_base_seconds, number, self.rules.retry_cap_seconds)
            next_time = uow.now + timedelta(seconds=delay)
            await uow.enqueue(
                DELIVER_JOB,
                jobs_pb2.DeliverMessageJob(message_id=message.message_id),
                run_at=utcnow() + timedelta(seconds=delay),
            )
        attempt = Attempt(
            number,
            uow.now,
            outcome.status,
            provider,
            outcome.provider_message_id,
            outcome.error_code,
            outcome.error_message,
        )
        await repository.record_attempt(
            uow, message.message_id, attempt, step.status, step.failure_reason, next_time
        )
        if step.status is Status.SENT:
            uow.record(sent_event(message, number), key=message.message_id)
        elif step.status is Status.FAILED:
            failed = replace(message, failure_reason=step.failure_reason, attempt_count=number)
            uow.record(failed_event(failed), key=message.message_id)
