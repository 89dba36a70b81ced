"""Use cases of triggers: "on <event> [where <properties>] reward <customer>", configured per tenant,
fed by other services' events.

An event of a type some trigger listens to is handled once (the runtime's consumer); for each enabled
trigger of the tenant whose campaign is active and whose property filters hold, it counts the match
in its period, and when the count is one the trigger rewards and the customer's limits allow it,
records a grant (once per trigger and event, by a unique index) and publishes `reward.granted` in
the same transaction. The ledger posts points rewards from that event, idempotently on the grant id,
so a reward is posted once even if every delivery is doubled.

A trigger's condition (customer and, for purchases, basket conditions) is the promotion engine's
own, tested against Facts built from the event (app_trigger_conditions.py); its actions (points,
codes, notifications, static segments, webhooks) run once per grant (app_trigger_actions.py).
Achievements (progress across events, app_achievements.py) and delayed rewards (app_delays.py)
hook in here."""

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC

from google.protobuf.message import Message

from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.ledger.v1 import events_pb2 as ledger_events
from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty.promotion.v1 import campaign_pb2, events_pb2, reward_pb2, trigger_jobs_pb2, trigger_pb2
from loyalty.segmentation.v1 import events_pb2 as segmentation_events
from loyalty_promotion import (
    app,
    app_achievements,
    app_birthdays,
    app_delays,
    app_trigger_actions as actions,
    app_trigger_conditions as conditions,
    repository_triggers as repository,
)
from loyalty_promotion.commands import DeleteTrigger, ListRewardGrants, ListTriggers, UpdateTrigger
from loyalty_promotion.domain import (
    achievements,
    trigger_actions as action_rules,
    trigger_facts,
    triggers as rules,
)
from loyalty_promotion.repository_triggers import StoredGrant, StoredTrigger
from loyalty_promotion.trigger_links import TriggerLinks
from loyalty_runtime.errors import FieldViolation, InvalidArgument, NotFound, Reason
from loyalty_runtime.events import Subscription, is_activity_type
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork, event_type_of

STATES = {trigger_pb2.TRIGGER_STATE_ENABLED: "enabled", trigger_pb2.TRIGGER_STATE_DISABLED: "disabled"}
# Everything UpdateTrigger may change (trigger_id and campaign_id are immutable).
UPDATABLE = frozenset(trigger_pb2.Trigger.DESCRIPTOR.fields_by_name) - {
    "trigger_id",
    "campaign_id",
    "create_time",
    "update_time",
    "etag",
}


@dataclass(frozen=True)
class Source:
    """An event triggers can listen to: its stream, and the customer and properties it gives;
    `listened_as` names what triggers listen for when it is not the event's own type (an app's
    activity is listened to by its activity type, "review.written")."""

    stream: str
    event: type[Message]
    read: Callable[[Message], tuple[str, Mapping[str, rules.Value]]]
    listened_as: Callable[[Message], str] | None = None

    @property
    def event_type(self) -> str:
        return event_type_of(self.event.DESCRIPTOR)


def _activity_properties(event: gateway_events.ActivityRecorded) -> dict[str, rules.Value]:
    """The activity's properties filters can compare (strings, integers, booleans, money as minor
    units); dates and times are left out."""
    found: dict[str, rules.Value] = {}
    for name, value in event.properties.items():
        kind = value.WhichOneof("kind")
        if kind in ("string_value", "int_value", "bool_value"):
            found[name] = getattr(value, kind)
        elif kind == "money_value":
            found[name] = value.money_value.amount_minor
    return found


SOURCES = (
    Source("profile.events", profile_events.CustomerCreated, lambda e: (e.customer_id, {})),
    Source(
        "ledger.events",
        ledger_events.TierChanged,
        lambda e: (
            e.customer_id,
            {
                "program_id": e.program_id,
                "from_tier": e.from_tier,
                "to_tier": e.to_tier,
                "qualifying_points": e.qualifying_points,
            },
        ),
    ),
    Source(
        "ledger.events",
        ledger_events.PointsExpiring,
        lambda e: (e.customer_id, {"program_id": e.program_id, "amount": e.amount}),
    ),
    Source(
        "segmentation.events",
        segmentation_events.SegmentEntered,
        lambda e: (e.customer_id, {"segment_id": e.segment_id}),
    ),
    Source(
        "segmentation.events",
        segmentation_events.SegmentLeft,
        lambda e: (e.customer_id, {"segment_id": e.segment_id}),
    ),
    Source(
        "gateway.events",
        gateway_events.PurchaseCommitted,
        lambda e: (
            e.customer_id,
            {
                "net_total": e.net_total.amount_minor,
                "currency": e.net_total.currency_code,
                "store_id": e.store_id,
                "program_id": e.program_id,
                "points_earned": e.points_earned,
                "codes": len(e.codes),
                "checkout_id": e.checkout_id,
                "categories": tuple({c for line in e.basket.lines for c in line.categories}),
            },
        ),
    ),
    Source(
        "gateway.events",
        gateway_events.ActivityRecorded,
        lambda e: (e.customer_id, _activity_properties(e)),
        listened_as=lambda e: e.activity_type,
    ),
    Source(
        "promotion.events",
        events_pb2.ReferralConverted,
        lambda e: (
            e.referrer_customer_id,
            {"campaign_id": e.campaign_id, "referee_customer_id": e.referee_customer_id},
        ),
    ),
    Source("promotion.events", events_pb2.CustomerBirthday, lambda e: (e.customer_id, {"year": e.year})),
)
EVENT_TYPES = frozenset(source.event_type for source in SOURCES if source.listened_as is None)


def listenable(event_type: str) -> bool:
    """A platform event triggers listen to, or an app's activity type."""
    return event_type in EVENT_TYPES or is_activity_type(event_type)


def subscriptions() -> list[Subscription]:
    """One subscription per event triggers listen to, for the service's definition."""
    return [
        *(Subscription(source.stream, source.event, _handler(source)) for source in SOURCES),
        *app_achievements.subscriptions(),
        *app_birthdays.subscriptions(),
    ]


def _handler(source: Source):
    async def handle(uow: UnitOfWork, event: Message) -> None:
        if isinstance(event, profile_events.CustomerCreated):
            await app_birthdays.on_created(uow, event)
        customer_id, properties = source.read(event)
        event_type = source.listened_as(event) if source.listened_as else source.event_type
        if customer_id:
            await on_event(uow, event_type, customer_id, properties, event=event)

    return handle


# --- admin ---------------------------------------------------------------------------------------


async def create_trigger(
    uow: UnitOfWork, trigger: trigger_pb2.Trigger, links: TriggerLinks | None = None
) -> trigger_pb2.Trigger:
    trigger = _copy(trigger)
    if trigger.state == trigger_pb2.TRIGGER_STATE_UNSPECIFIED:
        trigger.state = trigger_pb2.TRIGGER_STATE_ENABLED
    await _check(uow, trigger, links)
    stored = await repository.insert_trigger(
        uow.connection,
        uow.tenant,
        str(uuid.uuid4()),
        trigger.campaign_id,
        trigger.event_type,
        STATES[trigger.state],
        _stored_payload(trigger),
        uow.now,
    )
    return _answer_of(stored)


async def get_trigger(uow: UnitOfWork, trigger_id: str) -> trigger_pb2.Trigger:
    return _answer_of(await _stored(uow, trigger_id))


async def list_triggers(
    uow: UnitOfWork, command: ListTriggers
) -> tuple[list[trigger_pb2.Trigger], str | None]:
    rows = await repository.list_triggers(
        uow.connection, uow.tenant, command.campaign_id, command.event_type, command.after, command.limit + 1
    )
    page = rows[: command.limit]
    return [_answer_of(row) for row in page], page[-1].trigger_id if len(rows) > command.limit else None


async def update_trigger(
    uow: UnitOfWork, command: UpdateTrigger, links: TriggerLinks | None = None
) -> trigger_pb2.Trigger:
    stored = await _stored(uow, command.trigger_id, lock=True)
    app.check_etag(command.etag, stored.version)
    paths = list(command.mask.paths) or sorted(UPDATABLE)
    unknown = [path for path in paths if path not in UPDATABLE]
    if unknown:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, f"{unknown[0]} cannot be updated", field="update_mask")
    before = trigger_pb2.Trigger.FromString(stored.payload)
    trigger = _copy(before)
    for path in paths:
        _apply(trigger, command.changes, path)
    action_rules.keep_secrets(trigger, before)
    await _check(uow, trigger, links)
    updated = await repository.update_trigger(
        uow.connection,
        uow.tenant,
        stored.trigger_id,
        trigger.event_type,
        STATES[trigger.state],
        _stored_payload(trigger),
        uow.now,
    )
    return _answer_of(updated)


async def delete_trigger(uow: UnitOfWork, command: DeleteTrigger) -> None:
    stored = await _stored(uow, command.trigger_id, lock=True)
    app.check_etag(command.etag, stored.version)
    await repository.delete_trigger(uow.connection, uow.tenant, stored.trigger_id)


async def list_grants(
    uow: UnitOfWork, command: ListRewardGrants
) -> tuple[list[reward_pb2.RewardGrant], tuple | None]:
    rows = await repository.list_grants(
        uow.connection,
        uow.tenant,
        command.customer_id,
        command.campaign_id,
        command.trigger_id,
        command.after,
        command.limit + 1,
    )
    page = rows[: command.limit]
    last = (page[-1].created_at, page[-1].grant_id) if len(rows) > command.limit else None
    return [_grant_of(row) for row in page], last


def _apply(target: trigger_pb2.Trigger, source: trigger_pb2.Trigger, path: str) -> None:
    """Field `path` of `source` replaces `target`'s (an unset message field clears it)."""
    field = trigger_pb2.Trigger.DESCRIPTOR.fields_by_name[path]
    if field.is_repeated:
        target.ClearField(path)
        getattr(target, path).extend(getattr(source, path))
    elif field.message_type is None:
        setattr(target, path, getattr(source, path))
    elif source.HasField(path):
        getattr(target, path).CopyFrom(getattr(source, path))
    else:
        target.ClearField(path)


async def _check(uow: UnitOfWork, trigger: trigger_pb2.Trigger, links: TriggerLinks | None) -> None:
    """Refuse what a trigger may not say (every violation at once, the reason of the first), or a
    campaign it cannot use, or what its actions name and does not exist."""
    found = rules.violations(trigger, listenable) + achievements.violations(trigger, listenable)
    refusals = [action_rules.Refusal(Reason.INVALID_ARGUMENT, v) for v in found]
    refusals += [
        action_rules.Refusal(Reason.TRIGGER_CONDITION_INVALID, v)
        for v in conditions.condition_violations(trigger)
    ]
    refusals += action_rules.violations(trigger)
    _refuse(refusals)
    campaign = await _campaign(uow, trigger.campaign_id)
    if campaign is None:
        raise NotFound(Reason.CAMPAIGN_NOT_FOUND, "no such campaign", field="trigger.campaign_id")
    points = action_rules.points_action(trigger)
    if points is not None and not (points.award_points.program_id or campaign.program_id):
        field = "trigger.reward.points.program_id" if not trigger.actions else "trigger.actions"
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            "the campaign names no programme: say which programme the points go to",
            violations=[FieldViolation(field, "a programme is required")],
        )
    if links is not None:
        _refuse(await actions.target_refusals(uow, links, trigger))


def _refuse(refusals: list[action_rules.Refusal]) -> None:
    if refusals:
        first = refusals[0]
        raise InvalidArgument(
            first.reason, first.violation.description, violations=[r.violation for r in refusals]
        )


async def _campaign(uow: UnitOfWork, campaign_id: str) -> campaign_pb2.Campaign | None:
    try:
        return await app.get_campaign(uow, str(uuid.UUID(campaign_id)))
    except (NotFound, ValueError):
        return None


async def _stored(uow: UnitOfWork, trigger_id: str, *, lock: bool = False) -> StoredTrigger:
    stored = await repository.get_trigger(uow.connection, uow.tenant, trigger_id, lock=lock)
    if stored is None:
        raise NotFound(Reason.TRIGGER_NOT_FOUND, "no such trigger", field="trigger_id")
    return stored


def _copy(trigger: trigger_pb2.Trigger) -> trigger_pb2.Trigger:
    copy = trigger_pb2.Trigger()
    copy.CopyFrom(trigger)
    return copy


def _stored_payload(trigger: trigger_pb2.Trigger) -> bytes:
    """The message without what the row knows (id, etag, times)."""
    stored = _copy(trigger)
    for field in ("trigger_id", "etag", "create_time", "update_time"):
        stored.ClearField(field)
    return stored.SerializeToString()


def _answer_of(stored: StoredTrigger) -> trigger_pb2.Trigger:
    """The trigger as answers show it: without its webhooks' secrets."""
    trigger = _trigger_of(stored)
    action_rules.without_secrets(trigger)
    return trigger


def _trigger_of(stored: StoredTrigger) -> trigger_pb2.Trigger:
    trigger = trigger_pb2.Trigger.FromString(stored.payload)
    trigger.trigger_id = stored.trigger_id
    trigger.campaign_id = stored.campaign_id
    trigger.etag = str(stored.version)
    trigger.create_time.CopyFrom(timestamp(stored.created_at))
    trigger.update_time.CopyFrom(timestamp(stored.updated_at))
    return trigger


GRANT_STATES = {
    "pending": reward_pb2.REWARD_GRANT_STATE_PENDING,
    "granted": reward_pb2.REWARD_GRANT_STATE_GRANTED,
    "withheld": reward_pb2.REWARD_GRANT_STATE_WITHHELD,
    "reversed": reward_pb2.REWARD_GRANT_STATE_REVERSED,
}


def _grant_of(stored: StoredGrant) -> reward_pb2.RewardGrant:
    return reward_pb2.RewardGrant(
        grant_id=stored.grant_id,
        customer_id=stored.customer_id,
        campaign_id=stored.campaign_id,
        trigger_id=stored.trigger_id,
        source_event_id=stored.source_event_id,
        reward=reward_pb2.Reward.FromString(stored.reward),
        state=GRANT_STATES[stored.state],
        create_time=timestamp(stored.created_at),
    )


# --- events --------------------------------------------------------------------------------------


async def on_event(
    uow: UnitOfWork,
    event_type: str,
    customer_id: str,
    properties: Mapping[str, rules.Value],
    *,
    event: Message | None = None,
) -> None:
    """Count the event for every trigger listening to it whose filters and condition hold, and
    reward where a trigger says so. A condition reading another service's facts (segments, lifetime
    metrics) is tested by a job (`on_condition_job`): the consumer holds no channels."""
    await app_delays.cancel_on(uow, event_type, customer_id)
    stored_triggers = await repository.listening(uow.connection, uow.tenant, event_type)
    if not stored_triggers:
        return
    assert uow.call.event_id, "triggers count events: only the consumer calls this"
    time_zone = (await app.read_settings(uow.connection, uow.tenant)).time_zone
    occurrence = actions.Occurrence(uow.call.event_id, event_type, uow.call.event_time or uow.now)
    told = conditions.told_by(event, customer_id)
    campaigns: dict[str, campaign_pb2.Campaign | None] = {}  # read once per event, not per trigger
    achievements_matched = []
    for stored in stored_triggers:
        trigger = _trigger_of(stored)
        if not rules.filters_hold(trigger, properties):
            continue
        if stored.campaign_id not in campaigns:
            campaigns[stored.campaign_id] = await _campaign(uow, stored.campaign_id)
        campaign = campaigns[stored.campaign_id]
        if campaign is None or campaign.state != campaign_pb2.CAMPAIGN_STATE_ACTIVE:
            continue
        if trigger.HasField("condition"):
            needs = trigger_facts.needs_of(trigger.condition)
            if needs.remote:
                job = conditions.condition_job(stored.trigger_id, told, occurrence)
                await uow.enqueue(
                    conditions.CONDITION_JOB,
                    job,
                    dedupe_key=f"trigger-condition:{stored.trigger_id}:{job.event_id}",
                )
                continue
            if not await conditions.holds(
                uow, None, stored, trigger, told, occurrence.occurred_at, time_zone
            ):
                continue
        if trigger.HasField("achievement"):
            achievements_matched.append((trigger, campaign))
            continue
        await _count_and_reward(uow, trigger, campaign, customer_id, occurrence, time_zone)
    if achievements_matched:
        await app_achievements.on_matches(uow, achievements_matched, customer_id, properties)


async def on_condition_job(
    uow: UnitOfWork, links: TriggerLinks, job: trigger_jobs_pb2.TriggerConditionJob
) -> None:
    """The rest of `on_event` for one trigger whose condition needs lookups: test it with them,
    then count and reward. The trigger and its campaign are read again (either may have changed)."""
    stored = await repository.get_trigger(uow.connection, uow.tenant, job.trigger_id)
    if stored is None:
        return
    trigger = _trigger_of(stored)
    campaign = await _campaign(uow, stored.campaign_id)
    if (
        trigger.state != trigger_pb2.TRIGGER_STATE_ENABLED
        or campaign is None
        or campaign.state != campaign_pb2.CAMPAIGN_STATE_ACTIVE
    ):
        return
    time_zone = (await app.read_settings(uow.connection, uow.tenant)).time_zone
    occurrence = actions.Occurrence(job.event_id, job.event_type, job.occur_time.ToDatetime(tzinfo=UTC))
    told = conditions.told_by_job(job)
    if await conditions.holds(uow, links, stored, trigger, told, occurrence.occurred_at, time_zone):
        await _count_and_reward(uow, trigger, campaign, job.customer_id, occurrence, time_zone)


async def _count_and_reward(
    uow: UnitOfWork,
    trigger: trigger_pb2.Trigger,
    campaign: campaign_pb2.Campaign,
    customer_id: str,
    occurrence: "actions.Occurrence",
    time_zone: str,
) -> None:
    period = rules.counting_period(trigger, occurrence.occurred_at, time_zone)
    count = await repository.count_match(uow.connection, uow.tenant, trigger.trigger_id, customer_id, period)
    if rules.nth_is_rewarded(trigger, count):
        await app_delays.reward_or_delay(uow, trigger, campaign, customer_id, occurrence)


def occurrence_of(uow: UnitOfWork, trigger: trigger_pb2.Trigger) -> "actions.Occurrence":
    """The event being handled (for a delayed reward: the one it was delayed from), as actions see it."""
    return actions.Occurrence(uow.call.event_id, trigger.event_type, uow.call.event_time or uow.now)


async def _reward(
    uow: UnitOfWork,
    trigger: trigger_pb2.Trigger,
    campaign: campaign_pb2.Campaign,
    customer_id: str,
    occurrence: "actions.Occurrence",
) -> None:
    rewards, last = await repository.rewards_so_far(
        uow.connection, uow.tenant, trigger.trigger_id, customer_id
    )
    if not rules.limits_allow(trigger, rewards, last, occurrence.occurred_at):
        return
    grant_id = str(uuid.uuid4())
    reward = _reward_of(trigger)
    granted = await repository.insert_grant(
        uow.connection,
        uow.tenant,
        grant_id,
        trigger.trigger_id,
        trigger.campaign_id,
        customer_id,
        occurrence.event_id,
        reward.SerializeToString(),
        uow.now,
    )
    if not granted:
        return
    await actions.run_actions(uow, trigger, customer_id, grant_id, occurrence)
    if reward.WhichOneof("kind"):
        uow.record(
            events_pb2.RewardGranted(
                grant_id=grant_id,
                customer_id=customer_id,
                campaign_id=trigger.campaign_id,
                trigger_id=trigger.trigger_id,
                source_event_id=occurrence.event_id,
                reward=reward,
                program_id=reward.points.program_id or campaign.program_id
                if reward.HasField("points")
                else "",
            ),
            key=customer_id,
        )


def _reward_of(trigger: trigger_pb2.Trigger) -> reward_pb2.Reward:
    """What the grant records and `reward.granted` announces: the points, else the first code."""
    if not trigger.actions:
        return trigger.reward
    for action in trigger.actions:
        if action.WhichOneof("kind") == "award_points":
            return reward_pb2.Reward(points=action.award_points)
    for action in trigger.actions:
        if action.WhichOneof("kind") == "issue_code":
            return reward_pb2.Reward(voucher=action.issue_code)
    return reward_pb2.Reward()
