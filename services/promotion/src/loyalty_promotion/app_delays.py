"""Delayed trigger rewards: "30 days after a purchase, if no purchase since, send a code".

A trigger with a `delay` does not reward when its event matches: it stores the reward as due at the
event's time plus the delay (once per trigger and event, in the consumer's transaction, so it exists
if and only if the event was handled). An event of the trigger's `cancel_on_event_type` for the
customer, later than the rewarded one, cancels it while it waits. The sweep, one of the service's
schedules (the runtime's jobs module: once per period across replicas), gives each due reward in its
own transaction: a guarded claim (`pending` -> `done`) and the grant commit together, so a reward
survives restarts, and is given once even if two sweeps race or one dies half way.

Due times are the service's clock, not the database's: the job primitive's `run_at` is compared with
PostgreSQL's `now()`, which nobody can move, while trigger periods, windows and tests count time on
the service's clock."""

import logging

from loyalty.promotion.v1 import campaign_pb2, trigger_pb2
from loyalty_promotion import app_triggers, repository_achievements as repository, repository_triggers
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.uow import UnitOfWork, UnitsOfWork

log = logging.getLogger("loyalty.promotion.delays")

SWEEP_BATCH = 500


async def reward_or_delay(
    uow: UnitOfWork,
    trigger: trigger_pb2.Trigger,
    campaign: campaign_pb2.Campaign,
    customer_id: str,
    occurrence: "app_triggers.actions.Occurrence",
) -> None:
    """Reward the event now, or store the reward as due after the trigger's delay."""
    if not trigger.HasField("delay"):
        await app_triggers._reward(uow, trigger, campaign, customer_id, occurrence)
        return
    occurred = occurrence.occurred_at
    await repository.insert_delayed(
        uow.connection,
        uow.tenant,
        trigger.trigger_id,
        occurrence.event_id,
        customer_id,
        occurred,
        occurred + trigger.delay.ToTimedelta(),
        trigger.cancel_on_event_type,
    )


async def cancel_on(uow: UnitOfWork, event_type: str, customer_id: str) -> None:
    """The event cancels the customer's waiting rewards that an event of its type cancels."""
    await repository.cancel_on_event(
        uow.connection, uow.tenant, customer_id, event_type, uow.call.event_time or uow.now
    )


async def give_due(units: UnitsOfWork) -> int:
    """The schedule's run: every tenant's due rewards given, each in its own transaction bound to
    its tenant and its event (the grant is keyed by the event, as if given when it was handled)."""
    async with units.database.connection() as connection:
        due = await repository.due_rewards(connection, units.clock(), SWEEP_BATCH)
    given = 0
    for tenant, trigger_id, event_id, occurred in due:
        call = CallContext(tenant, "promotion-delays", event_id=event_id, event_time=occurred)
        token = bind_call(call)
        try:
            async with units.change() as uow:
                given += await _give(uow, trigger_id, event_id)
        except Exception:
            log.exception("giving a delayed reward failed", extra={"fields": {"tenant": tenant}})
        finally:
            unbind_call(token)
    return given


async def _give(uow: UnitOfWork, trigger_id: str, event_id: str) -> int:
    claimed = await repository.claim_due(uow.connection, uow.tenant, trigger_id, event_id, uow.now)
    if claimed is None:
        return 0  # given or cancelled meanwhile
    stored = await repository_triggers.get_trigger(uow.connection, uow.tenant, trigger_id)
    trigger = app_triggers._trigger_of(stored) if stored else None
    if trigger is None or trigger.state != trigger_pb2.TRIGGER_STATE_ENABLED:
        return 0
    campaign = await app_triggers._campaign(uow, stored.campaign_id)
    if campaign is None or campaign.state != campaign_pb2.CAMPAIGN_STATE_ACTIVE:
        return 0
    await app_triggers._reward(uow, trigger, campaign, claimed, app_triggers.occurrence_of(uow, trigger))
    return 1
