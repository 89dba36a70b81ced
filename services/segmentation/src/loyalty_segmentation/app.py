"""The use cases: one async function per RPC over a unit of work, plus the event handlers, the
schedule and the customer-data hooks.

Membership is kept two ways over the same compiled predicate (domain/rules.py): `refresh_customers`
re-evaluates every live rule segment for the customers a record or event is about, and
`recompute_segment` re-evaluates one segment for every customer in one statement. Each change of
membership writes segment.entered / segment.left to the outbox in the same transaction.
"""

import logging
import uuid
from dataclasses import dataclass, field, replace

from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty.segmentation.v1 import condition_pb2, events_pb2, metrics_pb2, segment_pb2
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
from loyalty_runtime.uow import UnitOfWork, UnitsOfWork
from loyalty_segmentation import repository
from loyalty_segmentation.commands import (
    ChangeMembers,
    CreateSegment,
    DeleteSegment,
    Estimate,
    Estimated,
    MembersChanged,
    RecordPurchase,
    RecordReturn,
    UpdateSegment,
)
from loyalty_segmentation.domain import rules
from loyalty_segmentation.repository import SegmentRow

log = logging.getLogger(__name__)

FIRST_RULE_PARAMETER = 4  # $1 tenant, $2 now, $3 segment id or customer ids


@dataclass
class Changed:
    """The customers whose cached answer a committed change makes stale."""

    customers: set[str] = field(default_factory=set)


def _rule(segment: SegmentRow) -> condition_pb2.Condition:
    return condition_pb2.Condition.FromString(segment.rule)


# --- membership -----------------------------------------------------------------------------------


async def refresh_customers(uow: UnitOfWork, customer_ids: list[str], changed: Changed) -> None:
    """Re-evaluate every live rule segment for these customers and apply the difference."""
    segments = await repository.live_rule_segments(uow)
    predicates, values = [], []
    for segment in segments:
        predicate, bound = rules.compile_rule(_rule(segment), FIRST_RULE_PARAMETER + len(values))
        predicates.append(predicate)
        values.extend(bound)
    rows = await repository.evaluate(uow, predicates, values, customer_ids) if segments else []
    matching = {
        (segment.segment_id, row["customer_id"])
        for row in rows
        for segment, match in zip(segments, row["matches"], strict=True)
        if match
    }
    current = await repository.rule_memberships(uow, customer_ids)
    await _apply(uow, entered=matching - current, left=current - matching, changed=changed)


async def _apply(uow: UnitOfWork, *, entered: set, left: set, changed: Changed) -> None:
    deltas: dict[uuid.UUID, int] = {}
    for segment_id, customer_id in sorted(entered):
        await repository.add_members(uow, segment_id, [customer_id])
        _publish(uow, events_pb2.SegmentEntered, segment_id, customer_id)
        deltas[segment_id] = deltas.get(segment_id, 0) + 1
    for segment_id, customer_id in sorted(left):
        await repository.remove_members(uow, segment_id, [customer_id])
        _publish(uow, events_pb2.SegmentLeft, segment_id, customer_id)
        deltas[segment_id] = deltas.get(segment_id, 0) - 1
    if deltas:
        await repository.adjust_counts(uow, deltas)
    changed.customers.update(customer_id for _, customer_id in entered | left)


def _publish(uow: UnitOfWork, event, segment_id: uuid.UUID, customer_id: str) -> None:
    uow.record(event(segment_id=str(segment_id), customer_id=customer_id), key=customer_id)


async def recompute_segment(uow: UnitOfWork, segment_id: uuid.UUID, changed: Changed) -> None:
    """Bulk: one statement matches every customer, changes membership and writes the events."""
    segment = await repository.segment(uow, segment_id, lock=True)
    if segment is None or segment.deleted_at is not None or segment.rule is None:
        return
    predicate, values = rules.compile_rule(_rule(segment), FIRST_RULE_PARAMETER)
    changed.customers.update(await repository.recompute(uow, segment_id, predicate, values))


async def scheduled_refresh(resources, cache) -> None:
    """Time-based rules ("no purchase in 90 days") change with no event: recompute every live rule
    segment of every tenant, each in its own transaction."""
    async with resources.units.database.connection() as connection:
        tenants = await repository.tenants(connection)
    for tenant in tenants:
        token = bind_call(CallContext(tenant_id=tenant, principal="segmentation-scheduler"))
        try:
            await refresh_tenant(resources.units, cache)
        except Exception:
            log.exception("scheduled recompute failed for a tenant", extra={"fields": {"tenant": tenant}})
        finally:
            unbind_call(token)


async def refresh_tenant(units: UnitsOfWork, cache) -> None:
    async with units.read() as uow:
        segment_ids = [s.segment_id for s in await repository.live_rule_segments(uow)]
    for segment_id in segment_ids:
        changed = Changed()
        async with units.change() as uow:
            await recompute_segment(uow, segment_id, changed)
        await cache.forget(uow.tenant, changed.customers)


# --- definitions ----------------------------------------------------------------------------------


async def create_segment(uow: UnitOfWork, command: CreateSegment, changed: Changed) -> SegmentRow:
    if command.rule is not None:
        rules.validate(command.rule)
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
    await recompute_segment(uow, segment_id, changed)
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


async def update_segment(uow: UnitOfWork, command: UpdateSegment, changed: Changed) -> SegmentRow:
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
        rules.validate(command.rule)
        values["rule"] = command.rule.SerializeToString(deterministic=True)
    await repository.update_segment(uow, replace(segment, **values))
    if "rule" in command.fields:
        await recompute_segment(uow, segment.segment_id, changed)
    return await repository.segment(uow, segment.segment_id)


async def delete_segment(uow: UnitOfWork, command: DeleteSegment, changed: Changed) -> SegmentRow:
    """Soft delete: every member leaves (with their events); the definition stays."""
    segment = await _live_segment(uow, command.segment_id, command.etag, "segment_id")
    members = await repository.remove_members(
        uow, segment.segment_id, await repository.all_members(uow, segment.segment_id)
    )
    for customer_id in members:
        _publish(uow, events_pb2.SegmentLeft, segment.segment_id, customer_id)
    changed.customers.update(members)
    await repository.update_segment(uow, replace(segment, deleted_at=uow.now, member_count=0))
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
    unknown = [c for c in dict.fromkeys(command.customer_ids) if c not in known]
    return MembersChanged(len(added), unknown)


async def remove_members(uow: UnitOfWork, command: ChangeMembers, changed: Changed) -> MembersChanged:
    segment = await _static_segment(uow, command.segment_id)
    removed = await repository.remove_members(uow, segment.segment_id, command.customer_ids)
    for customer_id in removed:
        _publish(uow, events_pb2.SegmentLeft, segment.segment_id, customer_id)
    await repository.set_member_count(uow, segment.segment_id)
    changed.customers.update(removed)
    return MembersChanged(len(removed))


async def estimate(uow: UnitOfWork, command: Estimate) -> Estimated:
    rules.validate(command.rule, "rule")
    predicate, values = rules.compile_rule(command.rule, FIRST_RULE_PARAMETER)
    return Estimated(*await repository.count_matching(uow, predicate, values, command.sample_size))


# --- behaviour ------------------------------------------------------------------------------------


async def record_purchase(uow: UnitOfWork, command: RecordPurchase, changed: Changed) -> bool:
    await repository.touch_customer(uow, command.customer_id)
    recorded = await repository.insert_purchase(
        uow, command.key, command.customer_id, command.purchased_at, command.net_total, command.currency_code
    )
    if recorded:
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


async def _after_record(uow: UnitOfWork, customer_id: str, changed: Changed) -> None:
    # The cached answer carries the purchase facts, so it is stale even if membership is not.
    changed.customers.add(customer_id)
    await refresh_customers(uow, [customer_id], changed)


async def customer_created(uow: UnitOfWork, event: profile_events.CustomerCreated) -> None:
    """A new customer joins the population: rules such as "never purchased" may match them."""
    await repository.touch_customer(uow, event.customer_id)
    await refresh_customers(uow, [event.customer_id], Changed())


# --- reads ----------------------------------------------------------------------------------------


async def customer_segments(uow: UnitOfWork, customer_id: str):
    return await repository.memberships(uow, customer_id), await repository.purchase_facts(uow, customer_id)


async def segment_members(uow: UnitOfWork, segment_id: uuid.UUID, after: str, limit: int):
    segment = await get_segment(uow, segment_id)
    return segment, await repository.members_page(uow, segment_id, after, limit)


def encode_metrics(customer_id: str, row) -> metrics_pb2.CustomerMetrics:
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
    if row["first_at"] is not None:
        metrics.first_purchase_time.CopyFrom(timestamp(row["first_at"]))
        metrics.last_purchase_time.CopyFrom(timestamp(row["last_at"]))
    return metrics


async def customer_metrics(uow: UnitOfWork, customer_id: str) -> metrics_pb2.CustomerMetrics:
    return encode_metrics(customer_id, await repository.customer_metrics(uow, customer_id))


# --- customer data --------------------------------------------------------------------------------


async def export_customer_data(uow: UnitOfWork, customer_id: str) -> list:
    row = await repository.customer_metrics(uow, customer_id)
    if row is None:
        return []
    records: list = [encode_metrics(customer_id, row)]
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
