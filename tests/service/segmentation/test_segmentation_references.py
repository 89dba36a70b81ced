"""Rules over membership of other segments through the real server: the incremental path (records,
static list changes) and the bulk path (a referenced segment's new rule) keep the referring segments
current; references to unknown segments and cycles are refused on save; a segment others refer to
cannot be deleted."""

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2

from loyalty.segmentation.v1 import condition_pb2 as c, segment_pb2 as pb, segmentation_service_pb2 as api
from loyalty_runtime.errors import bad_request, error_info
from tests.service.segmentation.conftest import START
from tests.service.segmentation.helpers import all_of, any_of, key, metric, negation
from tests.service.segmentation.test_segmentation_service import details

NOW = START
COUNT, GTE = c.CUSTOMER_METRIC_PURCHASE_COUNT, c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS


def member_of(segment: pb.Segment) -> c.Condition:
    return c.Condition(segment=c.SegmentReferenceCondition(segment_id=segment.segment_id))


async def add(tenant, segment: pb.Segment, *customers: str) -> None:
    await tenant.AddSegmentMembers(
        api.AddSegmentMembersRequest(
            idempotency_key=key(), segment_id=segment.segment_id, customer_ids=customers
        )
    )


async def refused(call) -> tuple[grpc.StatusCode, str, list[str], str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    status = details(raised.value)
    fields = [v.field for v in bad_request(status).field_violations] if bad_request(status) else []
    return raised.value.code(), error_info(status).reason, fields, raised.value.details()


async def test_referring_segments_follow_records_and_static_lists_incrementally(tenant):
    for customer in ("ann", "bob", "cid"):
        await tenant.purchase(customer, NOW, 100)
    listed = await tenant.static_segment()
    twice = await tenant.rule_segment(metric(COUNT, GTE, 2))
    # Listed, or bought twice, but not both; and "not (that)" over it in a third layer.
    either = await tenant.rule_segment(
        all_of(
            any_of(member_of(listed), member_of(twice)), negation(all_of(member_of(listed), member_of(twice)))
        )
    )
    neither = await tenant.rule_segment(negation(member_of(either)))
    assert await tenant.members(either.segment_id) == set()
    assert await tenant.members(neither.segment_id) == {"ann", "bob", "cid"}

    await add(tenant, listed, "ann", "bob")
    await tenant.purchase("bob", NOW, 100)
    await tenant.purchase("cid", NOW, 100)
    assert await tenant.members(either.segment_id) == {"ann", "cid"}
    assert await tenant.members(neither.segment_id) == {"bob"}
    assert await tenant.segments_of("cid") == {twice.segment_id, either.segment_id}

    await tenant.RemoveSegmentMembers(
        api.RemoveSegmentMembersRequest(
            idempotency_key=key(), segment_id=listed.segment_id, customer_ids=["bob"]
        )
    )
    assert await tenant.members(either.segment_id) == {"ann", "bob", "cid"}
    assert await tenant.members(neither.segment_id) == set()
    segment = (await tenant.GetSegment(api.GetSegmentRequest(segment_id=neither.segment_id))).segment
    assert segment.member_count == 0


async def test_a_referenced_segments_new_rule_recomputes_the_referring_ones_in_bulk(tenant):
    for customer, purchases in (("one", 1), ("two", 2), ("three", 3), ("four", 4)):
        for _ in range(purchases):
            await tenant.purchase(customer, NOW, 100)
    base = await tenant.rule_segment(metric(COUNT, GTE, 3))
    referring = await tenant.rule_segment(negation(member_of(base)))
    again = await tenant.rule_segment(all_of(member_of(referring), metric(COUNT, GTE, 2)))
    assert await tenant.members(referring.segment_id) == {"one", "two"}
    assert await tenant.members(again.segment_id) == {"two"}

    await tenant.change_rule(base, metric(COUNT, GTE, 2))
    # The referring segments' recomputes were started when the referenced one finished.
    assert await tenant.members((await tenant.ready(referring.segment_id)).segment_id) == {"one"}
    assert await tenant.members((await tenant.ready(again.segment_id)).segment_id) == set()


async def test_an_unknown_or_foreign_segment_is_refused_with_its_field(tenant, other_tenant):
    foreign = await other_tenant.static_segment()
    rule = all_of(metric(COUNT, GTE, 1), member_of(foreign))
    code, reason, fields, _ = await refused(tenant.rule_segment(rule))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SEGMENT_NOT_FOUND")
    assert fields == ["segment.rule.all_of.conditions[1].segment.segment_id"]
    code, _, fields, _ = await refused(
        tenant.rule_segment(c.Condition(segment=c.SegmentReferenceCondition(segment_id="not-an-id")))
    )
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["segment.rule.segment.segment_id"])
    deleted = await tenant.static_segment()
    await tenant.DeleteSegment(api.DeleteSegmentRequest(idempotency_key=key(), segment_id=deleted.segment_id))
    code, reason, _, _ = await refused(tenant.rule_segment(member_of(deleted)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SEGMENT_NOT_FOUND")
    assert [s.display_name for s in (await tenant.ListSegments(api.ListSegmentsRequest())).segments] == []


def update_rule(tenant, segment: pb.Segment, rule: c.Condition):
    return tenant.UpdateSegment(
        api.UpdateSegmentRequest(
            idempotency_key=key(),
            segment=pb.Segment(segment_id=segment.segment_id, rule=rule),
            update_mask=field_mask_pb2.FieldMask(paths=["rule"]),
        )
    )


async def test_a_cycle_is_refused_on_save_and_nothing_changes(tenant):
    first = await tenant.rule_segment(metric(COUNT, GTE, 1), name="first")
    second = await tenant.rule_segment(member_of(first), name="second")
    third = await tenant.rule_segment(negation(member_of(second)), name="third")
    code, reason, fields, text = await refused(update_rule(tenant, first, any_of(member_of(third))))
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "SEGMENT_REFERENCE_CYCLE",
        ["segment.rule"],
    )
    assert text.endswith(
        f"{first.segment_id} -> {third.segment_id} -> {second.segment_id} -> {first.segment_id}"
    )
    code, reason, _, _ = await refused(update_rule(tenant, first, member_of(first)))
    assert reason == "SEGMENT_REFERENCE_CYCLE"
    stored = (await tenant.GetSegment(api.GetSegmentRequest(segment_id=first.segment_id))).segment
    assert stored.rule == metric(COUNT, GTE, 1) and stored.etag == first.etag


async def test_two_concurrent_changes_cannot_close_a_cycle(tenant):
    left = await tenant.rule_segment(metric(COUNT, GTE, 1))
    right = await tenant.rule_segment(metric(COUNT, GTE, 2))
    results = await asyncio.gather(
        update_rule(tenant, left, member_of(right)),
        update_rule(tenant, right, member_of(left)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(failures) == 1
    assert error_info(details(failures[0])).reason == "SEGMENT_REFERENCE_CYCLE"


async def test_a_segment_others_refer_to_cannot_be_deleted(tenant):
    listed = await tenant.static_segment()
    await tenant.purchase("ann", NOW, 100)
    await add(tenant, listed, "ann")
    referring = await tenant.rule_segment(member_of(listed), name="listed customers")
    code, reason, _, text = await refused(
        tenant.DeleteSegment(api.DeleteSegmentRequest(idempotency_key=key(), segment_id=listed.segment_id))
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SEGMENT_IN_USE")
    assert "listed customers" in text
    assert await tenant.members(listed.segment_id) == {"ann"}

    await update_rule(tenant, referring, metric(COUNT, GTE, 1))
    await tenant.ready(referring.segment_id)
    await tenant.DeleteSegment(api.DeleteSegmentRequest(idempotency_key=key(), segment_id=listed.segment_id))
    assert await tenant.members(listed.segment_id) == set()


async def test_a_delete_racing_a_new_reference_never_leaves_a_rule_over_a_deleted_segment(tenant):
    for _ in range(3):
        target = await tenant.static_segment()
        results = await asyncio.gather(
            tenant.DeleteSegment(
                api.DeleteSegmentRequest(idempotency_key=key(), segment_id=target.segment_id)
            ),
            tenant.CreateSegment(
                api.CreateSegmentRequest(
                    idempotency_key=key(),
                    segment=pb.Segment(display_name=key(), type=pb.SEGMENT_TYPE_RULE, rule=member_of(target)),
                )
            ),
            return_exceptions=True,
        )
        refusals = [error_info(details(r)).reason for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert refusals in (["SEGMENT_IN_USE"], ["SEGMENT_NOT_FOUND"])
