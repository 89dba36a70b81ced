"""The use cases: one async function per RPC over a unit of work, plus the event handlers, the
schedule and the customer-data hooks.

Membership is kept two ways over the same compiled predicate (domain/rules.py): `refresh_customers`
re-evaluates every live rule segment for the customers a record or event is about, and
`recompute_slice` re-evaluates one segment for a slice of the customers in one statement, as a chain
of background jobs (a new or changed rule, the hourly refresh, a finished backfill, new RFM scores).
Each change of membership writes segment.entered / segment.left to the outbox in the same
transaction.

A rule may test membership of other segments. The incremental path evaluates the segments layer by
layer in dependency order (a layer sees the changes of the ones before it); the bulk path recomputes
the segments that refer to a segment once that segment's recompute has finished, and a change of a
static list re-evaluates the listed customers for the segments that refer to it.
"""

import json
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from loyalty.common.v1 import date_pb2
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty.promotion.v1 import events_pb2 as promotion_events
from loyalty.segmentation.v1 import (
    condition_pb2,
    events_pb2,
    jobs_pb2,
    metrics_pb2,
    segment_pb2,
    settings_pb2,
)
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Reason,
)
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork, event_type_of
from loyalty_segmentation import repository
from loyalty_segmentation.commands import (
    ChangeMembers,
    CreateSegment,
    DeleteSegment,
    Estimate,
    Estimated,
    MembersChanged,
    RecordActivity,
    RecordPurchase,
    RecordReturn,
    UpdateSegment,
    UpdateSettings,
    Upload,
    Uploaded,
)
from loyalty_segmentation.directory import ProfileDirectory
from loyalty_segmentation.domain import profiles, rules, uploads
from loyalty_segmentation.domain.rules import MAX_ACTIVITY_TYPE
from loyalty_segmentation.repository import SegmentRow

log = logging.getLogger(__name__)

# Incremental and estimate: $1 tenant, $2 now, $3 customer ids or sample size. Bulk: $3 segment id,
# $4/$5 the slice of customers.
FIRST_RULE_PARAMETER, FIRST_BULK_PARAMETER = 4, 6
RECOMPUTE_JOB, SYNC_CUSTOMER_JOB, BACKFILL_JOB, FORGET_JOB = (
    "segmentation.recompute-segment",
    "segmentation.sync-customer",
    "segmentation.backfill-profiles",
    "segmentation.forget-cached",
)


@dataclass
class Changed:
    """The customers whose cached answer a committed change makes stale."""

    customers: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Tuning:
    """How big a background step is: customers per recompute slice (one job, one statement), and
    how much of profile's export one backfill job copies."""

    recompute_slice: int = 250_000
    # Profiles per page of profile's export, and per backfill job.
    backfill_page: int = 500
    backfill_step: int = 5000


def _rule(segment: SegmentRow) -> condition_pb2.Condition:
    return condition_pb2.Condition.FromString(segment.rule)


def _graph(segments: list[SegmentRow]) -> dict[str, set[str]]:
    """Which segments each rule segment refers to."""
    return {str(s.segment_id): rules.references(_rule(s)) for s in segments}


# --- membership -----------------------------------------------------------------------------------


async def refresh_customers(uow: UnitOfWork, customer_ids: list[str], changed: Changed) -> None:
    """Re-evaluate every live rule segment for these customers and apply the difference: one
    statement for all segments, or one per layer when rules refer to other rule segments."""
    segments = await repository.live_rule_segments(uow)
    if not segments:
        return
    attributes, zone = await repository.rule_context(uow)
    by_id = {str(s.segment_id): s for s in segments}
    current = await repository.rule_memberships(uow, customer_ids)
    for layer in rules.layers(_graph(segments)):
        await _refresh_layer(
            uow, [by_id[i] for i in layer], customer_ids, current, (attributes, zone), changed
        )


async def _refresh_layer(uow: UnitOfWork, segments, customer_ids, current, context, changed: Changed) -> None:
    predicates, values, needs = [], [], set()
    for segment in segments:
        compiled = rules.compile_rule(_rule(segment), FIRST_RULE_PARAMETER + len(values), *context)
        predicates.append(compiled.sql)
        values.extend(compiled.values)
        needs |= compiled.needs
    rows = await repository.evaluate(uow, predicates, needs, values, customer_ids)
    matching = {
        (segment.segment_id, row["customer_id"])
        for row in rows
        for segment, match in zip(segments, row["matches"], strict=True)
        if match
    }
    ids = {segment.segment_id for segment in segments}
    mine = {membership for membership in current if membership[0] in ids}
    await _apply(uow, entered=matching - mine, left=mine - matching, changed=changed)


async def _refresh_dependents(uow: UnitOfWork, segment_id: uuid.UUID, customer_ids, changed: Changed) -> None:
    """A static list changed for these customers: re-evaluate them where a rule refers to it."""
    if customer_ids and rules.dependents({str(segment_id)}, _graph(await repository.live_rule_segments(uow))):
        await refresh_customers(uow, sorted(customer_ids), changed)


async def _apply(uow: UnitOfWork, *, entered: set, left: set, changed: Changed) -> None:
    """Membership and member counts move in one statement; an event per change."""
    if not entered and not left:
        return
    await repository.change_memberships(uow, sorted(entered), sorted(left))
    for segment_id, customer_id in sorted(entered):
        _publish(uow, events_pb2.SegmentEntered, segment_id, customer_id)
    for segment_id, customer_id in sorted(left):
        _publish(uow, events_pb2.SegmentLeft, segment_id, customer_id)
    changed.customers.update(customer_id for _, customer_id in entered | left)


def _publish(uow: UnitOfWork, event, segment_id: uuid.UUID, customer_id: str) -> None:
    uow.record(event(segment_id=str(segment_id), customer_id=customer_id), key=customer_id)


async def schedule_recompute(uow: UnitOfWork, segment_ids: list[uuid.UUID]) -> None:
    """Recompute these segments in the background from the first customer: a chain of jobs, one
    slice each (progress on the segment), enqueued with this change's commit; it supersedes any
    chain still running for them."""
    versions = await repository.start_recompute(uow, segment_ids)
    for segment_id, version in versions.items():
        job = jobs_pb2.RecomputeSegmentJob(segment_id=str(segment_id), rule_version=version)
        await uow.enqueue(RECOMPUTE_JOB, job)


async def recompute_slice(
    uow: UnitOfWork, job: jobs_pb2.RecomputeSegmentJob, changed: Changed, tuning: Tuning
) -> None:
    """Bulk: one statement matches one slice of the customers, changes membership and writes the
    events; the next slice is the next job. A chain superseded by a newer one (a new rule, a
    restart) stops."""
    segment = await repository.segment(uow, uuid.UUID(job.segment_id), lock=True)
    if segment is None or segment.deleted_at is not None or segment.rule_version != job.rule_version:
        return
    compiled = rules.compile_rule(_rule(segment), FIRST_BULK_PARAMETER, *await repository.rule_context(uow))
    upto = await repository.slice_end(uow, job.after_customer_id, tuning.recompute_slice)
    changed.customers.update(
        await repository.recompute(
            uow,
            segment.segment_id,
            compiled.sql,
            compiled.needs,
            compiled.values,
            job.after_customer_id,
            upto,
        )
    )
    if upto is not None:
        following = jobs_pb2.RecomputeSegmentJob()
        following.CopyFrom(job)
        following.after_customer_id = upto
        await uow.enqueue(RECOMPUTE_JOB, following)
    else:
        # Finished: the segments that refer to this one follow its new membership.
        referring = rules.dependents({job.segment_id}, _graph(await repository.live_rule_segments(uow)))
        if referring:
            await schedule_recompute(uow, sorted(uuid.UUID(i) for i in referring))


async def recompute_all(uow: UnitOfWork, *, only_rfm: bool = False) -> None:
    """Recompute every live rule segment (or those reading RFM scores) in the background; one that
    refers to another being recomputed follows when that one finishes."""
    attributes = await repository.attribute_types(uow)
    segments = await repository.live_rule_segments(uow)
    chosen = {
        str(s.segment_id)
        for s in segments
        if not only_rfm or "rfm" in rules.compile_rule(_rule(s), FIRST_BULK_PARAMETER, attributes).needs
    }
    graph = _graph(segments)
    first = sorted(uuid.UUID(i) for i in chosen if not graph[i] & chosen)
    if first:
        await schedule_recompute(uow, first)


async def scheduled_refresh(resources) -> None:
    """Time-based rules ("no purchase in 90 days") change with no event: recompute every live rule
    segment of every tenant in the background."""
    async with resources.units.database.connection() as connection:
        tenants = await repository.tenants(connection)
    await _each_tenant(resources, tenants, recompute_all)


async def scheduled_rfm(resources) -> None:
    """The nightly RFM scores of every tenant with purchases, each tenant in its own transaction."""
    async with resources.units.database.connection() as connection:
        tenants = await repository.customer_tenants(connection)
    # One statement scores a whole tenant: a million customers take longer than a job's 30 s.
    await _each_tenant(resources, tenants, compute_rfm, budget=resources.settings.rfm_budget_seconds)


async def _each_tenant(resources, tenants: list[str], use_case, budget: float | None = None) -> None:
    for tenant in tenants:
        deadline = None if budget is None else time.monotonic() + budget
        token = bind_call(
            CallContext(tenant_id=tenant, principal="segmentation-scheduler", deadline=deadline)
        )
        try:
            async with resources.units.change() as uow:
                await use_case(uow)
        except Exception:
            log.exception("scheduled work failed for a tenant", extra={"fields": {"tenant": tenant}})
        finally:
            unbind_call(token)


# --- definitions ----------------------------------------------------------------------------------


async def create_segment(uow: UnitOfWork, command: CreateSegment, changed: Changed) -> SegmentRow:
    """Saved at once; a rule segment's membership follows in the background (COMPUTING, then READY)."""
    if command.rule is not None:
        await _validate(uow, command.rule, None)
    segment_id = uuid.uuid4()
    rule = command.rule.SerializeToString(deterministic=True) if command.rule is not None else None
    inserted = await repository.insert_segment(
        uow,
        segment_id,
        command.display_name,
        command.description,
        "static" if command.static else "rule",
        rule,
        command.labels,
    )
    if not inserted:
        raise AlreadyExists(
            Reason.SEGMENT_NAME_TAKEN, "another segment has this name", field="segment.display_name"
        )
    if command.rule is not None:
        await schedule_recompute(uow, [segment_id])
    return await repository.segment(uow, segment_id)


async def get_segment(uow: UnitOfWork, segment_id: uuid.UUID) -> SegmentRow:
    segment = await repository.segment(uow, segment_id)
    if segment is None:
        raise NotFound(Reason.SEGMENT_NOT_FOUND, "no such segment", field="segment_id")
    return segment


async def list_segments(
    uow: UnitOfWork, after: str, limit: int, type_: str | None, show_deleted: bool, labels: dict[str, str]
) -> list[SegmentRow]:
    return await repository.list_segments(uow, after, limit, type_, show_deleted, labels)


async def _live_segment(uow: UnitOfWork, segment_id: uuid.UUID, etag: str, field_name: str) -> SegmentRow:
    segment = await repository.segment(uow, segment_id, lock=True)
    if segment is None:
        raise NotFound(Reason.SEGMENT_NOT_FOUND, "no such segment", field=field_name)
    if segment.deleted_at is not None:
        raise FailedPrecondition(Reason.SEGMENT_DELETED, "the segment is deleted", field=field_name)
    if etag and etag != str(segment.version):
        raise Aborted(Reason.CONCURRENT_MODIFICATION, "the segment changed since it was read", field="etag")
    return segment


async def _validate(uow: UnitOfWork, rule: condition_pb2.Condition, segment_id: uuid.UUID | None) -> None:
    """Validate a rule to save: the segments it refers to are live (and stay so until this commits:
    they are locked against a delete) and, for an existing segment, lead back to it nowhere."""
    referred = rules.references(rule)
    live = await repository.live_segment_ids(uow, sorted(referred), lock=True) if referred else set()
    rules.validate(rule, attributes=await repository.attribute_types(uow), segments=live)
    if segment_id is None or not referred:
        return
    graph = _graph(await repository.live_rule_segments(uow))
    cycle = rules.find_cycle(str(segment_id), referred, graph)
    if cycle:
        raise InvalidArgument(
            Reason.SEGMENT_REFERENCE_CYCLE,
            "the rule's segment references lead back to this segment: " + " -> ".join(cycle),
            field="segment.rule",
        )


async def update_segment(uow: UnitOfWork, command: UpdateSegment, changed: Changed) -> SegmentRow:
    if "rule" in command.fields:
        # Rule changes of one tenant take turns, so two cannot close a cycle between them.
        await repository.lock_rules(uow)
    segment = await _live_segment(uow, command.segment_id, command.etag, "segment.segment_id")
    values = {}
    if "display_name" in command.fields:
        if await repository.name_taken(uow, command.display_name, segment.segment_id):
            raise AlreadyExists(
                Reason.SEGMENT_NAME_TAKEN, "another segment has this name", field="segment.display_name"
            )
        values["display_name"] = command.display_name
    if "description" in command.fields:
        values["description"] = command.description
    if "labels" in command.fields:
        values["labels"] = command.labels
    if "rule" in command.fields:
        if segment.type != "rule" or command.rule is None:
            raise InvalidArgument(
                Reason.SEGMENT_RULE_INVALID,
                "only a rule segment has a rule, and it needs one",
                field="segment.rule",
            )
        await _validate(uow, command.rule, segment.segment_id)
        values["rule"] = command.rule.SerializeToString(deterministic=True)
    await repository.update_segment(uow, replace(segment, **values))
    if "rule" in command.fields:
        await schedule_recompute(uow, [segment.segment_id])
    return await repository.segment(uow, segment.segment_id)


async def delete_segment(uow: UnitOfWork, command: DeleteSegment, changed: Changed) -> SegmentRow:
    """Soft delete: every member leaves (with their events); the definition stays. Refused while
    other live segments' rules refer to it."""
    # In turn with rule changes: one that locked its rule's segments cannot wait on this delete.
    await repository.lock_rules(uow)
    segment = await _live_segment(uow, command.segment_id, command.etag, "segment_id")
    segments = await repository.live_rule_segments(uow)
    referring = rules.dependents({str(segment.segment_id)}, _graph(segments))
    if referring:
        names = sorted(s.display_name for s in segments if str(s.segment_id) in referring)
        raise FailedPrecondition(
            Reason.SEGMENT_IN_USE,
            f"the rules of {len(names)} segment(s) refer to this one: {', '.join(names)}",
            field="segment_id",
        )
    members = await repository.remove_members(
        uow, segment.segment_id, await repository.all_members(uow, segment.segment_id)
    )
    for customer_id in members:
        _publish(uow, events_pb2.SegmentLeft, segment.segment_id, customer_id)
    changed.customers.update(members)
    # A recompute still running stops at its next slice (recompute_slice skips a deleted segment).
    await repository.update_segment(
        uow, replace(segment, deleted_at=uow.now, member_count=0, computing=False)
    )
    return await repository.segment(uow, segment.segment_id)


async def _static_segment(uow: UnitOfWork, segment_id: uuid.UUID) -> SegmentRow:
    segment = await _live_segment(uow, segment_id, "", "segment_id")
    if segment.type != "static":
        raise FailedPrecondition(
            Reason.SEGMENT_NOT_STATIC, "members of a rule segment follow its rule", field="segment_id"
        )
    return segment


async def add_members(uow: UnitOfWork, command: ChangeMembers, changed: Changed) -> MembersChanged:
    segment = await _static_segment(uow, command.segment_id)
    known = await repository.known_customers(uow, command.customer_ids)
    added = await repository.add_members(uow, segment.segment_id, sorted(known))
    for customer_id in added:
        _publish(uow, events_pb2.SegmentEntered, segment.segment_id, customer_id)
    await repository.set_member_count(uow, segment.segment_id)
    changed.customers.update(added)
    await _refresh_dependents(uow, segment.segment_id, added, changed)
    unknown = [c for c in dict.fromkeys(command.customer_ids) if c not in known]
    return MembersChanged(len(added), unknown)


async def remove_members(uow: UnitOfWork, command: ChangeMembers, changed: Changed) -> MembersChanged:
    segment = await _static_segment(uow, command.segment_id)
    removed = await repository.remove_members(uow, segment.segment_id, command.customer_ids)
    for customer_id in removed:
        _publish(uow, events_pb2.SegmentLeft, segment.segment_id, customer_id)
    await repository.set_member_count(uow, segment.segment_id)
    changed.customers.update(removed)
    await _refresh_dependents(uow, segment.segment_id, removed, changed)
    return MembersChanged(len(removed))


async def upload_members(uow: UnitOfWork, command: Upload, changed: Changed) -> Uploaded:
    """Add a CSV file's customers to a static segment in one transaction: rows naming no customer
    of this tenant (another tenant's included) are reported, the others added."""
    segment = await _static_segment(uow, command.segment_id)
    parsed = uploads.parse(command.content)
    known = await repository.known_customers(uow, list(parsed.customers))
    added = await repository.add_members(uow, segment.segment_id, [c for c in parsed.customers if c in known])
    for customer_id in added:
        _publish(uow, events_pb2.SegmentEntered, segment.segment_id, customer_id)
    await repository.set_member_count(uow, segment.segment_id)
    changed.customers.update(added)
    await _refresh_dependents(uow, segment.segment_id, added, changed)
    unknown = [(row, c, "unknown customer") for c, row in parsed.customers.items() if c not in known]
    problems = sorted(parsed.problems + unknown)
    return Uploaded(len(added), len(known) - len(added), problems)


async def estimate(uow: UnitOfWork, command: Estimate) -> Estimated:
    referred = rules.references(command.rule)
    live = await repository.live_segment_ids(uow, sorted(referred)) if referred else set()
    attributes, zone = await repository.rule_context(uow)
    rules.validate(command.rule, "rule", attributes, live)
    compiled = rules.compile_rule(command.rule, FIRST_RULE_PARAMETER, attributes, zone)
    return Estimated(
        *await repository.count_matching(
            uow, compiled.sql, compiled.needs, compiled.values, command.sample_size
        )
    )


# --- behaviour ------------------------------------------------------------------------------------


MAX_CATEGORY = 200


def basket_categories(basket) -> tuple[str, ...]:
    """Each line's most general category (the last listed: "dairy/cheese", "dairy" counts as
    dairy), so a hierarchy is not counted as several categories."""
    return tuple(sorted({line.categories[-1][:MAX_CATEGORY] for line in basket.lines if line.categories}))


async def record_purchase(uow: UnitOfWork, command: RecordPurchase, changed: Changed) -> bool:
    """Keyed by the checkout id, whether from the RPC or from purchase.committed: a checkout told
    both ways (or either twice) counts once."""
    await repository.touch_customer(uow, command.customer_id)
    recorded = await repository.insert_purchase(
        uow, command.key, command.customer_id, command.purchased_at, command.net_total, command.currency_code
    )
    if recorded:
        if command.categories:
            await repository.insert_categories(
                uow, command.key, command.customer_id, command.purchased_at, list(command.categories)
            )
        await _after_record(uow, command.customer_id, changed)
    return recorded


async def record_return(uow: UnitOfWork, command: RecordReturn, changed: Changed) -> bool:
    await repository.touch_customer(uow, command.customer_id)
    recorded = await repository.insert_return(
        uow,
        command.key,
        command.customer_id,
        command.checkout_id,
        command.returned_at,
        command.refunded_total,
    )
    if recorded:
        await _after_record(uow, command.customer_id, changed)
    return recorded


async def record_activity(uow: UnitOfWork, command: RecordActivity, changed: Changed) -> bool:
    await repository.touch_customer(uow, command.customer_id)
    recorded = await repository.insert_activity(
        uow, command.key, command.customer_id, command.activity_type, command.occurred_at
    )
    if recorded:
        await _after_record(uow, command.customer_id, changed)
    return recorded


async def notification_activity(uow: UnitOfWork, event) -> None:
    """notification.sent / notification.opened count as activities of their type ("offers received
    / opened"), once per message; the event carries no time, so its handling time is used."""
    if not event.customer_id:
        return
    kind = event_type_of(event.DESCRIPTOR)
    command = RecordActivity(f"{kind}:{event.message_id}", event.customer_id, kind, uow.now)
    changed = Changed()
    await record_activity(uow, command, changed)
    await forget_after_commit(uow, changed)


def _moment(uow: UnitOfWork, event, field: str) -> datetime:
    """The time of the fact as the event states it; the envelope's when the producer left it unset."""
    if event.HasField(field):
        return getattr(event, field).ToDatetime(tzinfo=UTC)
    return uow.call.event_time or uow.now


def _key(uow: UnitOfWork, fact_id: str) -> str:
    """The fact's own id (what the Record* RPCs are keyed by); the event's id for a producer that
    left it empty, so such events are not all taken for one."""
    return fact_id or f"event:{uow.call.event_id}"


async def _from_event(uow: UnitOfWork, use_case, command) -> None:
    changed = Changed()
    await use_case(uow, command, changed)
    await forget_after_commit(uow, changed)


async def purchase_committed(uow: UnitOfWork, event: gateway_events.PurchaseCommitted) -> None:
    """A committed checkout of a known customer is a purchase at its purchase time (not the time
    the event is handled); an anonymous one has nobody to segment."""
    if not event.customer_id:
        return
    command = RecordPurchase(
        _key(uow, event.checkout_id),
        event.customer_id,
        _moment(uow, event, "purchase_time"),
        event.net_total.amount_minor,
        event.net_total.currency_code,
        basket_categories(event.basket),
    )
    await _from_event(uow, record_purchase, command)


async def checkout_returned(uow: UnitOfWork, event: gateway_events.CheckoutReturned) -> None:
    """A return reduces spend, keyed by the return id as RecordReturn is."""
    if not event.customer_id:
        return
    command = RecordReturn(
        _key(uow, event.return_id),
        event.customer_id,
        event.checkout_id,
        _moment(uow, event, "return_time"),
        event.refunded_total.amount_minor,
    )
    await _from_event(uow, record_return, command)


async def activity_recorded(uow: UnitOfWork, event: gateway_events.ActivityRecorded) -> None:
    """An app's activity, keyed by its event id as RecordActivity is. A type the column cannot hold
    is dropped (redelivering it would fail the same way forever)."""
    if (
        not event.customer_id
        or not event.activity_type.strip()
        or len(event.activity_type) > MAX_ACTIVITY_TYPE
    ):
        return
    command = RecordActivity(
        _key(uow, event.event_id), event.customer_id, event.activity_type, _moment(uow, event, "occur_time")
    )
    await _from_event(uow, record_activity, command)


async def redemptions_committed(uow: UnitOfWork, event: promotion_events.RedemptionsCommitted) -> None:
    """Codes redeemed: the checkout's redemptions of a voucher (automatic promotions are not codes),
    each once by its redemption id, at the time the commit happened."""
    await _code_redemptions(uow, event, released=False)


async def redemptions_released(uow: UnitOfWork, event: promotion_events.RedemptionsReleased) -> None:
    """Released codes were not redeemed after all, in whichever order commit and release arrive."""
    await _code_redemptions(uow, event, released=True)


async def _code_redemptions(uow: UnitOfWork, event, *, released: bool) -> None:
    codes = [(r.redemption_id, r.voucher_id) for r in event.redemptions if r.voucher_id]
    if not event.customer_id or not codes:
        return
    await repository.touch_customer(uow, event.customer_id)
    at = uow.call.event_time or uow.now
    if await repository.insert_code_redemptions(
        uow, event.customer_id, event.checkout_id, at, codes, released=released
    ):
        changed = Changed()
        await _after_record(uow, event.customer_id, changed)
        await forget_after_commit(uow, changed)


async def forget_after_commit(uow: UnitOfWork, changed: Changed) -> None:
    """An event handler has no moment after its commit: a job (run after it) drops the cached
    answers its change made stale."""
    if changed.customers:
        await uow.enqueue(FORGET_JOB, jobs_pb2.ForgetCachedJob(customer_ids=sorted(changed.customers)))


async def _after_record(uow: UnitOfWork, customer_id: str, changed: Changed) -> None:
    # The cached answer carries the purchase facts, so it is stale even if membership is not.
    changed.customers.add(customer_id)
    await refresh_customers(uow, [customer_id], changed)


async def customer_created(uow: UnitOfWork, event: profile_events.CustomerCreated) -> None:
    """A new customer joins the population at once (rules such as "never purchased" may match
    them); their attributes follow from profile in a job."""
    await repository.touch_customer(uow, event.customer_id)
    changed = Changed()
    await refresh_customers(uow, [event.customer_id], changed)
    await forget_after_commit(uow, changed)
    await uow.enqueue(SYNC_CUSTOMER_JOB, jobs_pb2.SyncCustomerJob(customer_id=event.customer_id))


async def customer_updated(uow: UnitOfWork, event: profile_events.CustomerUpdated) -> None:
    """Events carry ids only: the changed attributes are read from profile in a job."""
    await uow.enqueue(SYNC_CUSTOMER_JOB, jobs_pb2.SyncCustomerJob(customer_id=event.customer_id))


async def sync_customer(
    uow: UnitOfWork, job: jobs_pb2.SyncCustomerJob, changed: Changed, directory: ProfileDirectory
) -> None:
    """Copy one customer's profile attributes and re-evaluate their segments; a profile gone
    (erased, merged) is left to the erasure and merge hooks."""
    customer = await directory.customer(job.customer_id)
    if customer is None:
        return
    profile = profiles.profile_of(customer)
    await repository.learn_attribute_types(uow, profile.kinds, authoritative=False)
    await repository.save_profiles(uow, [profile])
    await refresh_customers(uow, [profile.customer_id], changed)


async def start_backfill(uow: UnitOfWork) -> bool:
    """Copy every profile of the tenant in the background; False when a copy is running already."""
    started = await repository.start_backfill(uow)
    if started:
        await uow.enqueue(BACKFILL_JOB, jobs_pb2.BackfillProfilesJob())
    return started


async def backfill_page(
    uow: UnitOfWork, job: jobs_pb2.BackfillProfilesJob, directory: ProfileDirectory, tuning: Tuning
) -> None:
    """One step of a backfill: profile's schema (first step), then up to `backfill_step` profiles
    from the streamed export, saved in one statement each page; the next step resumes after the
    last id. After the last step every rule segment is recomputed over the copy."""
    if not job.after_customer_id:
        await repository.learn_attribute_types(uow, await directory.attribute_kinds(), authoritative=True)
    after, copied, finished = job.after_customer_id, 0, True
    async for page in directory.export(after, tuning.backfill_page):
        copied_page = [profiles.profile_of(customer) for customer in page.customers]
        kinds = {name: kind for profile in copied_page for name, kind in profile.kinds.items()}
        await repository.learn_attribute_types(uow, kinds, authoritative=False)
        await repository.save_profiles(uow, copied_page)
        copied += len(copied_page)
        after = page.last_customer_id
        if copied >= tuning.backfill_step:
            finished = False
            break
    await repository.backfill_progress(uow, copied, finished=finished)
    if finished:
        await recompute_all(uow)
    else:
        await uow.enqueue(BACKFILL_JOB, jobs_pb2.BackfillProfilesJob(after_customer_id=after))


async def compute_rfm(uow: UnitOfWork) -> int:
    """Score the tenant's purchasing customers in one statement; segments over RFM follow."""
    scored = await repository.compute_rfm(uow)
    await recompute_all(uow, only_rfm=True)
    return scored


# --- settings -------------------------------------------------------------------------------------


def _settings(row) -> settings_pb2.SegmentationSettings:
    if row is None:
        return settings_pb2.SegmentationSettings(etag="0")
    return settings_pb2.SegmentationSettings(
        time_zone=row["time_zone"], update_time=timestamp(row["updated_at"]), etag=str(row["version"])
    )


async def get_settings(uow: UnitOfWork) -> settings_pb2.SegmentationSettings:
    return _settings(await repository.settings(uow))


async def update_settings(
    uow: UnitOfWork, command: UpdateSettings, changed: Changed
) -> settings_pb2.SegmentationSettings:
    """A new time zone moves every calendar rule's edges: the rule segments are recomputed. Once the
    gateway has provisioned the tenant, its time zone is the gateway's (tenant.settings_changed):
    changing it here as well would leave two sources, whichever wrote last winning."""
    rules.check_time_zone(command.time_zone)
    row = await repository.settings(uow, lock=True)
    if row is not None and row["gateway_version"]:
        raise FailedPrecondition(
            Reason.TENANT_SETTING_FROM_GATEWAY,
            "the time zone follows the tenant's settings in the gateway (UpdateTenantSettings)",
            field="settings.time_zone",
        )
    current = _settings(row)
    if command.etag and command.etag != current.etag:
        raise Aborted(
            Reason.CONCURRENT_MODIFICATION, "the settings changed since they were read", field="etag"
        )
    saved = _settings(await repository.save_settings(uow, command.time_zone))
    if command.time_zone != current.time_zone:
        await recompute_all(uow)
    return saved


async def tenant_settings_changed(uow: UnitOfWork, event: gateway_events.TenantSettingsChanged) -> None:
    """The gateway's time zone becomes the tenant's calendar here, unless a newer version of it was
    copied already (events of one tenant can arrive late after a redelivery). A zone this process
    cannot load raises, so the event is retried and then dead-lettered, never silently dropped."""
    zone = event.settings.time_zone
    rules.check_time_zone(zone)
    followed = await repository.follow_gateway_settings(uow, zone, event.version)
    if followed is not None and (followed["previous"] or "") != zone:
        await recompute_all(uow)


# --- reads ----------------------------------------------------------------------------------------


async def customer_segments(uow: UnitOfWork, customer_id: str):
    return await repository.memberships(uow, customer_id), await repository.purchase_facts(uow, customer_id)


async def segment_members(uow: UnitOfWork, segment_id: uuid.UUID, after: str, limit: int):
    segment = await get_segment(uow, segment_id)
    return segment, await repository.members_page(uow, segment_id, after, limit)


async def members_page(uow: UnitOfWork, segment_id: uuid.UUID, after: str, limit: int) -> list:
    return await repository.members_page(uow, segment_id, after, limit)


async def rfm_page(uow: UnitOfWork, after: str, limit: int) -> list:
    return await repository.rfm_page(uow, after, limit)


def encode_metrics(
    customer_id: str, row, activities=(), rfm=None, counts=None
) -> metrics_pb2.CustomerMetrics:
    metrics = metrics_pb2.CustomerMetrics(customer_id=customer_id)
    if row is None:
        return metrics
    for window, suffix in rules.WINDOW_SUFFIX.items():
        count, spend = row[f"purchases_{suffix}"], row[f"spend_{suffix}"]
        entry = metrics.windows.add(
            window=window, purchase_count=count, return_count=row[f"returns_{suffix}"]
        )
        entry.spend.amount_minor = spend
        entry.average_order_value.amount_minor = spend // count if count else 0
        entry.activity_counts.update(
            {a["activity_type"]: a[f"n_{suffix}"] for a in activities if a[f"n_{suffix}"]}
        )
        if counts is not None:
            entry.category_count, entry.codes_redeemed_count = counts[suffix]
    if row["first_at"] is not None:
        metrics.first_purchase_time.CopyFrom(timestamp(row["first_at"]))
        metrics.last_purchase_time.CopyFrom(timestamp(row["last_at"]))
    if rfm is not None:
        metrics.rfm.recency_score = rfm["recency_score"]
        metrics.rfm.frequency_score = rfm["frequency_score"]
        metrics.rfm.monetary_score = rfm["monetary_score"]
        metrics.rfm.compute_time.CopyFrom(timestamp(rfm["computed_at"]))
    return metrics


async def customer_metrics(uow: UnitOfWork, customer_id: str) -> metrics_pb2.CustomerMetrics:
    return encode_metrics(
        customer_id,
        await repository.customer_metrics(uow, customer_id),
        await repository.activity_counts(uow, customer_id),
        await repository.rfm_of(uow, customer_id),
        await repository.window_counts(uow, customer_id),
    )


# --- customer data --------------------------------------------------------------------------------


async def export_customer_data(uow: UnitOfWork, customer_id: str) -> list:
    row = await repository.customer_metrics(uow, customer_id)
    if row is None:
        return []
    copy = metrics_pb2.CustomerAttributes(
        customer_id=customer_id,
        locale=row["locale"] or "",
        enrol_time=timestamp(row["enrolled_at"]),
        attributes={name: json.dumps(value) for name, value in row["attributes"].items()},
        consents=row["consents"],
    )
    if row["birth_date"] is not None:
        born = row["birth_date"]
        copy.birth_date.CopyFrom(date_pb2.Date(year=born.year, month=born.month, day=born.day))
    counts = await repository.window_counts(uow, customer_id)
    records: list = [encode_metrics(customer_id, row, counts=counts), copy]
    for membership in await repository.memberships(uow, customer_id):
        records.append(
            segment_pb2.SegmentMembership(
                segment_id=str(membership["segment_id"]), join_time=timestamp(membership["joined_at"])
            )
        )
    return records


async def erase_customer(uow: UnitOfWork, customer_id: str) -> None:
    left = await repository.erase_customer(uow, customer_id)
    for segment_id in left:
        _publish(uow, events_pb2.SegmentLeft, segment_id, customer_id)
    if left:
        await repository.adjust_counts(uow, dict.fromkeys(left, -1))


async def merge_customers(uow: UnitOfWork, survivor_id: str, merged_id: str) -> None:
    """The duplicate's purchases and returns become the survivor's; the duplicate leaves every
    segment, and the survivor's memberships follow their combined history."""
    await repository.touch_customer(uow, survivor_id)
    await repository.move_history(uow, survivor_id, merged_id)
    await erase_customer(uow, merged_id)
    await refresh_customers(uow, [survivor_id], Changed())
