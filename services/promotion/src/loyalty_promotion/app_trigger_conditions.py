"""Triggers' conditions at event time: compiled once per trigger version with the promotion
engine's compiler, and tested against the engine's Facts built from the event (domain/
trigger_facts.py), with the lookups the listening triggers' conditions need made once per event."""

from collections import OrderedDict
from dataclasses import replace
from datetime import datetime

from google.protobuf.message import Message

from loyalty.common.v1 import basket_pb2
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.ledger.v1 import events_pb2 as ledger_events
from loyalty.promotion.v1 import condition_pb2, trigger_jobs_pb2, trigger_pb2
from loyalty.segmentation.v1 import (
    condition_pb2 as segmentation_conditions,
    events_pb2 as segmentation_events,
    segmentation_service_pb2 as segmentation_api,
)
from loyalty_promotion import repository_trigger_actions as repository
from loyalty_promotion.domain import trigger_facts as adapter
from loyalty_promotion.domain.vouchers import normalize
from loyalty_promotion.engine.conditions import CompiledCondition, compile_condition
from loyalty_promotion.engine.encoding import decode_basket
from loyalty_promotion.engine.model import BasketInvalid
from loyalty_promotion.engine.validation import _condition_tree
from loyalty_promotion.trigger_links import TriggerLinks, call
from loyalty_runtime.errors import FieldViolation
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork

CONDITION_JOB = "promotion.trigger-condition"
MAX_COMPILED = 2_000
SEGMENTS_PAGE = 1_000
_compiled: OrderedDict[tuple[str, int], CompiledCondition] = OrderedDict()


def condition_violations(trigger: trigger_pb2.Trigger, prefix: str = "trigger.") -> list[FieldViolation]:
    """The engine's own checks of the tree (with field paths), then what the event cannot tell."""
    if not trigger.HasField("condition"):
        return []
    found = []
    _condition_tree(trigger.condition, f"{prefix}condition", found)
    violations = [FieldViolation(v.field, v.description) for v in found]
    for kind, why in adapter.event_violations(trigger.condition, trigger.event_type):
        violations.append(FieldViolation(f"{prefix}condition", f"{kind}: {why}"))
    if trigger.HasField("achievement") and adapter.needs_of(trigger.condition).remote:
        # Achievements count the event's own properties, which the lookup job does not carry.
        violations.append(
            FieldViolation(f"{prefix}condition", "an achievement's condition cannot read segments or metrics")
        )
    return violations


def compiled(trigger_id: str, version: int, condition: condition_pb2.Condition) -> CompiledCondition:
    """The trigger's compiled condition, kept for the trigger's version (bounded, least recently used out)."""
    key = (trigger_id, version)
    found = _compiled.get(key)
    if found is None:
        found = _compiled[key] = compile_condition(condition)
        while len(_compiled) > MAX_COMPILED:
            _compiled.popitem(last=False)
    else:
        _compiled.move_to_end(key)
    return found


def told_by(event: Message | None, customer_id: str) -> adapter.EventFacts:
    """What the event itself says about the customer."""
    if isinstance(event, gateway_events.PurchaseCommitted):
        return _with_basket(adapter.EventFacts(customer_id), event.basket)
    if isinstance(event, ledger_events.TierChanged):
        return adapter.EventFacts(customer_id, tier_id=event.to_tier)
    if isinstance(event, segmentation_events.SegmentEntered):
        return adapter.EventFacts(customer_id, segment_ids=frozenset({event.segment_id}))
    return adapter.EventFacts(customer_id)


def condition_job(
    trigger_id: str, told: adapter.EventFacts, occurrence
) -> trigger_jobs_pb2.TriggerConditionJob:
    job = trigger_jobs_pb2.TriggerConditionJob(
        trigger_id=trigger_id,
        customer_id=told.customer_id,
        event_id=occurrence.event_id,
        event_type=occurrence.event_type,
        occur_time=timestamp(occurrence.occurred_at),
        tier_id=told.tier_id,
        segment_ids=sorted(told.segment_ids),
    )
    if told.event_basket is not None:
        job.basket.CopyFrom(told.event_basket)
    return job


def told_by_job(job: trigger_jobs_pb2.TriggerConditionJob) -> adapter.EventFacts:
    told = adapter.EventFacts(job.customer_id, tier_id=job.tier_id, segment_ids=frozenset(job.segment_ids))
    if job.HasField("basket"):
        return _with_basket(told, job.basket)
    return told


def _with_basket(told: adapter.EventFacts, basket: basket_pb2.Basket) -> adapter.EventFacts:
    try:
        return replace(told, basket=decode_basket(basket), event_basket=basket)
    except BasketInvalid:
        return told


async def holds(
    uow: UnitOfWork,
    links: TriggerLinks | None,
    stored,
    trigger: trigger_pb2.Trigger,
    told: adapter.EventFacts,
    occurred_at: datetime,
    time_zone: str,
) -> bool:
    """Whether the trigger's condition holds for the customer at the event, with its lookups."""
    told = await looked_up(uow, links, told, adapter.needs_of(trigger.condition))
    facts = adapter.facts_of(told, occurred_at, time_zone)
    return compiled(stored.trigger_id, stored.version, trigger.condition).test(facts)


async def looked_up(
    uow: UnitOfWork, links: TriggerLinks | None, told: adapter.EventFacts, needs: adapter.Needs
) -> adapter.EventFacts:
    """`told` completed with what the condition needs and the event did not say (links are needed
    only for `needs.remote`)."""
    segments, spend, orders, redeemed = (
        told.segment_ids,
        told.lifetime_spend,
        told.lifetime_orders,
        frozenset(),
    )
    if needs.segments:
        answer = await call(
            links.segmentation.ListCustomerSegments,
            segmentation_api.ListCustomerSegmentsRequest(
                customer_id=told.customer_id, page_size=SEGMENTS_PAGE
            ),
        )
        segments = segments | {m.segment_id for m in answer.memberships}
    if needs.metrics:
        answer = await call(
            links.segmentation.GetCustomerMetrics,
            segmentation_api.GetCustomerMetricsRequest(customer_id=told.customer_id),
            missing_ok=True,
        )
        spend, orders = _lifetime(answer.metrics.windows if answer else ())
    if needs.codes:
        redeemed = await _redeemed(uow, told.customer_id, needs.codes)
    return replace(
        told,
        segment_ids=frozenset(segments),
        lifetime_spend=spend,
        lifetime_orders=orders,
        redeemed_codes=redeemed,
    )


def _lifetime(windows) -> tuple[int, int]:
    for window in windows:
        if window.window == segmentation_conditions.METRIC_WINDOW_LIFETIME:
            return window.spend.amount_minor, window.purchase_count
    return 0, 0


async def _redeemed(uow: UnitOfWork, customer_id: str, codes: frozenset[str]) -> frozenset[str]:
    """Which of the codes (as the condition names them) the customer has redeemed."""
    normalized = {code: normalize(code) for code in codes}
    found = await repository.redeemed_codes(
        uow.connection, uow.tenant, customer_id, sorted(set(normalized.values()))
    )
    return frozenset(code for code, value in normalized.items() if value in found)
