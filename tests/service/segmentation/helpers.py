"""What the segmentation service tests share: a tenant's client and rule builders."""

import asyncio
import uuid
from datetime import datetime

from google.protobuf import field_mask_pb2

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.segmentation.v1 import condition_pb2 as c, segment_pb2 as pb, segmentation_service_pb2 as api
from loyalty_runtime.protobuf import timestamp


def key() -> str:
    return uuid.uuid4().hex


def metric(name, op, value=None, *, window=c.METRIC_WINDOW_LIFETIME, values=()) -> c.Condition:
    def operand(v):
        return (
            c.Value(money_value=money_pb2.Money(currency_code="EUR", amount_minor=v[1]))
            if isinstance(v, tuple)
            else c.Value(int_value=v)
        )

    condition = c.MetricCondition(
        metric=name, window=window, operator=op, values=[operand(v) for v in values]
    )
    if value is not None:
        condition.value.CopyFrom(operand(value))
    return c.Condition(metric=condition)


def all_of(*conditions) -> c.Condition:
    return c.Condition(all_of=c.ConditionList(conditions=conditions))


def any_of(*conditions) -> c.Condition:
    return c.Condition(any_of=c.ConditionList(conditions=conditions))


def negation(condition) -> c.Condition:
    return c.Condition(negation=c.NotCondition(condition=condition))


class Client:
    """A tenant's view of the segmentation service."""

    def __init__(self, service, tenant: str) -> None:
        self.stub = service.stub
        self.service = service
        self.tenant = tenant
        self.md = service.metadata(tenant)

    def __getattr__(self, name):
        method = getattr(self.stub, name)
        return lambda request: method(request, metadata=self.md)

    async def rule_segment(self, rule: c.Condition, name: str | None = None) -> pb.Segment:
        """A new rule segment, once its background computation has finished."""
        response = await self.CreateSegment(
            api.CreateSegmentRequest(
                idempotency_key=key(),
                segment=pb.Segment(display_name=name or key(), type=pb.SEGMENT_TYPE_RULE, rule=rule),
            )
        )
        return await self.ready(response.segment.segment_id)

    async def change_rule(self, segment: pb.Segment, rule: c.Condition) -> pb.Segment:
        await self.UpdateSegment(
            api.UpdateSegmentRequest(
                idempotency_key=key(),
                segment=pb.Segment(segment_id=segment.segment_id, rule=rule),
                update_mask=field_mask_pb2.FieldMask(paths=["rule"]),
            )
        )
        return await self.ready(segment.segment_id)

    async def ready(self, segment_id: str) -> pb.Segment:
        """The segment once its membership is READY (the job worker polls every 50 ms in tests)."""
        for _ in range(500):
            segment = (await self.GetSegment(api.GetSegmentRequest(segment_id=segment_id))).segment
            if segment.membership_status == pb.MEMBERSHIP_STATUS_READY:
                return segment
            await asyncio.sleep(0.02)
        raise AssertionError("the segment's membership was never computed")

    async def static_segment(self, name: str | None = None) -> pb.Segment:
        response = await self.CreateSegment(
            api.CreateSegmentRequest(
                idempotency_key=key(),
                segment=pb.Segment(display_name=name or key(), type=pb.SEGMENT_TYPE_STATIC),
            )
        )
        return response.segment

    async def purchase(
        self, customer: str, at: datetime, total: int, purchase_key: str | None = None, categories=()
    ) -> bool:
        """A purchase of one line per category (each category a line's only one)."""
        lines = [basket_pb2.LineItem(line_id=str(i), categories=[name]) for i, name in enumerate(categories)]
        response = await self.RecordPurchase(
            api.RecordPurchaseRequest(
                idempotency_key=purchase_key or key(),
                customer_id=customer,
                purchase_time=timestamp(at),
                net_total=money_pb2.Money(currency_code="EUR", amount_minor=total),
                basket=basket_pb2.Basket(currency_code="EUR", lines=lines),
            )
        )
        return response.recorded

    async def refund(self, customer: str, at: datetime, total: int, return_key: str | None = None) -> bool:
        response = await self.RecordReturn(
            api.RecordReturnRequest(
                idempotency_key=return_key or key(),
                customer_id=customer,
                checkout_id=key(),
                return_time=timestamp(at),
                refunded_total=money_pb2.Money(currency_code="EUR", amount_minor=total),
            )
        )
        return response.recorded

    async def members(self, segment_id: str) -> set[str]:
        found, token = set(), ""
        while True:
            page = await self.ListSegmentMembers(
                api.ListSegmentMembersRequest(segment_id=segment_id, page_size=7, page_token=token)
            )
            found |= {m.customer_id for m in page.members}
            token = page.next_page_token
            if not token:
                return found

    async def segments_of(self, customer: str) -> set[str]:
        response = await self.ListCustomerSegments(api.ListCustomerSegmentsRequest(customer_id=customer))
        return {m.segment_id for m in response.memberships}
