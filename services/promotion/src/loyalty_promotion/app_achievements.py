"""Use cases of achievements: progress of a customer across events towards a target ("spend 500 in
30 days", "buy from 3 categories", "write 2 reviews"), completed and rewarded once, undone by
returns, and read by the app ("2 of 3 purchases").

A matching event adds its contributions (once per event) under the customer's achievement row locks
(all the achievements it matches in three statements), so concurrent events of one customer decide
completion one after another and exactly one of them completes it. A return (`checkout.returned`) adds its refund to the contributions of its purchase;
if the progress then falls below the target of an achievement it completed, the reward still
waiting (a delay) is cancelled, and one already given is taken back when the trigger's clawback
policy says so (`reward.reversed`, which the ledger reverses once), and the achievement is open
again."""

from collections.abc import Mapping, Sequence

from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.promotion.v1 import campaign_pb2, events_pb2, reward_pb2, trigger_pb2
from loyalty_promotion import (
    app_delays,
    app_triggers,
    repository_achievements as repository,
    repository_triggers,
)
from loyalty_promotion.commands import ListAchievementProgress
from loyalty_promotion.domain import achievements as rules
from loyalty_runtime.events import Subscription
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork

TRIGGER_BATCH = 500


async def on_matches(
    uow: UnitOfWork,
    matches: Sequence[tuple[trigger_pb2.Trigger, campaign_pb2.Campaign]],
    customer_id: str,
    properties: Mapping[str, object],
) -> None:
    """Count a matching event towards the customer's achievements; complete and reward each once.
    Three statements for all of them: lock, add, read."""
    added = {t.trigger_id: rules.contributions(t.achievement, properties) for t, _ in matches}
    added = {trigger_id: found for trigger_id, found in added.items() if found}
    if not added:
        return
    locked = await repository.lock_achievements(uow.connection, uow.tenant, list(added), customer_id)
    occurred = uow.call.event_time or uow.now
    subject = str(properties.get("checkout_id", ""))
    refundable = properties.get("net_total", 0) if subject else 0
    await repository.add_contributions(
        uow.connection,
        uow.tenant,
        customer_id,
        uow.call.event_id,
        added,
        subject,
        occurred,
        refundable if isinstance(refundable, int) else 0,
    )
    open_ids = [trigger_id for trigger_id in added if locked[trigger_id][0] is None]
    if not open_ids:
        return
    counted = await repository.counted(uow.connection, uow.tenant, open_ids, customer_id)
    for trigger, campaign in matches:
        if trigger.trigger_id not in counted:
            continue
        if (
            rules.progress(trigger.achievement, counted[trigger.trigger_id], occurred)
            >= trigger.achievement.target
        ):
            await repository.set_completed(
                uow.connection, uow.tenant, trigger.trigger_id, customer_id, uow.call.event_id, occurred
            )
            occurrence = app_triggers.occurrence_of(uow, trigger)
            await app_delays.reward_or_delay(uow, trigger, campaign, customer_id, occurrence)


async def on_return(uow: UnitOfWork, event: gateway_events.CheckoutReturned) -> None:
    """A return undoes what its refund takes back of the achievements its purchase counted for."""
    if not event.customer_id:
        return
    trigger_ids = await repository.refund(
        uow.connection, uow.tenant, event.customer_id, event.checkout_id, event.refunded_total.amount_minor
    )
    for trigger_id in sorted(trigger_ids):  # one order of locks for every return
        await _undo_if_short(uow, trigger_id, event.customer_id)


async def _undo_if_short(uow: UnitOfWork, trigger_id: str, customer_id: str) -> None:
    locked = await repository.lock_achievements(uow.connection, uow.tenant, [trigger_id], customer_id)
    completed_by, completed_at = locked[trigger_id]
    stored = await repository_triggers.get_trigger(uow.connection, uow.tenant, trigger_id)
    if completed_by is None or stored is None:
        return  # not rewarded: the lower progress is all there is to undo
    trigger = app_triggers._trigger_of(stored)
    counted = await repository.counted(uow.connection, uow.tenant, [trigger_id], customer_id)
    if rules.progress(trigger.achievement, counted[trigger_id], completed_at) >= trigger.achievement.target:
        return
    if await repository.cancel_delayed(uow.connection, uow.tenant, trigger_id, completed_by):
        pass  # the reward was still waiting: it is never given
    elif trigger.clawback == trigger_pb2.CLAWBACK_POLICY_POINTS:
        await _claw_back(uow, trigger, customer_id, completed_by)
    else:
        return  # the reward was given and stays
    await repository.set_completed(uow.connection, uow.tenant, trigger_id, customer_id, None, None)


async def _claw_back(
    uow: UnitOfWork, trigger: trigger_pb2.Trigger, customer_id: str, completed_by: str
) -> None:
    reversed_grant = await repository.reverse_grant(
        uow.connection, uow.tenant, trigger.trigger_id, completed_by
    )
    if reversed_grant is None:
        return
    grant_id, reward = reversed_grant
    campaign = await app_triggers._campaign(uow, trigger.campaign_id)
    program_id = reward_pb2.Reward.FromString(reward).points.program_id or (
        campaign.program_id if campaign else ""
    )
    uow.record(
        events_pb2.RewardReversed(
            grant_id=grant_id,
            customer_id=customer_id,
            trigger_id=trigger.trigger_id,
            source_event_id=uow.call.event_id or "",
            program_id=program_id,
        ),
        key=customer_id,
    )


def subscriptions() -> list[Subscription]:
    return [Subscription("gateway.events", gateway_events.CheckoutReturned, on_return)]


# --- reads ---------------------------------------------------------------------------------------


async def list_progress(
    uow: UnitOfWork, command: ListAchievementProgress
) -> tuple[list[trigger_pb2.AchievementProgress], str | None]:
    """The customer's progress on the tenant's enabled achievements, a page by trigger id."""
    found = await _achievements(uow, command)
    page = found[: command.limit]
    ids = [trigger.trigger_id for trigger in page]
    counted = await repository.counted(uow.connection, uow.tenant, ids, command.customer_id)
    completed = await repository.completions(uow.connection, uow.tenant, ids, command.customer_id)
    progress = [_progress(t, counted[t.trigger_id], completed.get(t.trigger_id), uow) for t in page]
    return progress, page[-1].trigger_id if len(found) > command.limit else None


async def _achievements(uow: UnitOfWork, command: ListAchievementProgress) -> list[trigger_pb2.Trigger]:
    """Up to limit + 1 enabled achievements after the page's last, scanning triggers in batches."""
    found: list[trigger_pb2.Trigger] = []
    after = command.after
    while len(found) <= command.limit:
        rows = await repository_triggers.list_triggers(
            uow.connection, uow.tenant, command.campaign_id, None, after, TRIGGER_BATCH
        )
        for row in rows:
            trigger = app_triggers._trigger_of(row)
            if trigger.HasField("achievement") and trigger.state == trigger_pb2.TRIGGER_STATE_ENABLED:
                found.append(trigger)
        if len(rows) < TRIGGER_BATCH:
            break
        after = rows[-1].trigger_id
    return found[: command.limit + 1]


def _progress(
    trigger: trigger_pb2.Trigger, counted, completed_at, uow: UnitOfWork
) -> trigger_pb2.AchievementProgress:
    rule = trigger.achievement
    answer = trigger_pb2.AchievementProgress(
        trigger_id=trigger.trigger_id,
        campaign_id=trigger.campaign_id,
        display_name=trigger.display_name,
        measure=rule.measure,
        current=rules.progress(rule, counted, uow.now),
        target=rule.target,
        completed=completed_at is not None,
    )
    if completed_at is not None:
        answer.complete_time.CopyFrom(timestamp(completed_at))
    return answer
