"""Incremental and bulk membership agree exactly: random customers with random purchase (with
categories), return, code redemption, activity and static list histories are recorded one by one
into segments that exist beforehand (incremental path), then the same rules are created afresh (bulk
path, one statement each) and both memberships compared. Rules may test membership of the static
list and of the segments created before them (each path's own), under AND/OR/NOT."""

from datetime import timedelta

from hypothesis import HealthCheck, given, settings, strategies as st

from loyalty.promotion.v1 import events_pb2 as promotion_events
from loyalty.segmentation.v1 import condition_pb2 as c, segmentation_service_pb2 as api
from loyalty_runtime.protobuf import timestamp
from loyalty_segmentation import app
from tests.service.segmentation.conftest import START
from tests.service.segmentation.helpers import Client, all_of, any_of, key, metric, negation
from tests.service.segmentation.test_segmentation_edges import in_tenant

NOW = START
WINDOWS = [
    c.METRIC_WINDOW_LAST_7_DAYS,
    c.METRIC_WINDOW_LAST_30_DAYS,
    c.METRIC_WINDOW_LAST_90_DAYS,
    c.METRIC_WINDOW_LAST_365_DAYS,
    c.METRIC_WINDOW_LIFETIME,
]
OPERATORS = [
    c.COMPARISON_OPERATOR_EQUALS,
    c.COMPARISON_OPERATOR_NOT_EQUALS,
    c.COMPARISON_OPERATOR_LESS_THAN,
    c.COMPARISON_OPERATOR_LESS_THAN_OR_EQUALS,
    c.COMPARISON_OPERATOR_GREATER_THAN,
    c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS,
]
COUNTED = [
    c.CUSTOMER_METRIC_PURCHASE_COUNT,
    c.CUSTOMER_METRIC_RETURN_COUNT,
    c.CUSTOMER_METRIC_CATEGORY_COUNT,
    c.CUSTOMER_METRIC_CODES_REDEEMED_COUNT,
]
MONEY = [c.CUSTOMER_METRIC_PURCHASE_SPEND, c.CUSTOMER_METRIC_AVERAGE_ORDER_VALUE]
DAYS = [c.CUSTOMER_METRIC_DAYS_SINCE_LAST_PURCHASE, c.CUSTOMER_METRIC_DAYS_SINCE_FIRST_PURCHASE]

TYPES = ["", "review.written", "social.shared"]
CATEGORIES = ["dairy", "bakery", "produce"]


def activity(op, value, window, activity_type):
    condition = metric(c.CUSTOMER_METRIC_ACTIVITY_COUNT, op, value, window=window)
    condition.metric.activity_type = activity_type
    return condition


def reference(index: int) -> c.Condition:
    """Membership of the `index`th earlier segment (0: the static list), resolved per path."""
    return c.Condition(segment=c.SegmentReferenceCondition(segment_id=f"@{index}"))


def resolve(rule: c.Condition, targets: list[str]) -> c.Condition:
    """The rule with each reference to an earlier segment replaced by its id among `targets` (one
    not created yet: the static list)."""
    resolved = c.Condition()
    resolved.CopyFrom(rule)
    pending = [resolved]
    while pending:
        node = pending.pop()
        kind = node.WhichOneof("kind")
        if kind in ("all_of", "any_of"):
            pending.extend(getattr(node, kind).conditions)
        elif kind == "negation":
            pending.append(node.negation.condition)
        elif kind == "segment":
            index = int(node.segment.segment_id.removeprefix("@"))
            node.segment.segment_id = targets[index] if index < len(targets) else targets[0]
    return resolved


leaves = st.one_of(
    st.builds(reference, st.integers(0, 2)),
    st.builds(
        lambda m, op, v, w: metric(m, op, v, window=w),
        st.sampled_from(COUNTED),
        st.sampled_from(OPERATORS),
        st.integers(0, 4),
        st.sampled_from(WINDOWS),
    ),
    st.builds(
        lambda m, op, v, w: metric(m, op, ("EUR", v), window=w),
        st.sampled_from(MONEY),
        st.sampled_from(OPERATORS),
        st.integers(-500, 3000),
        st.sampled_from(WINDOWS),
    ),
    st.builds(
        lambda m, v: metric(m, c.COMPARISON_OPERATOR_BETWEEN, values=(v, v + 60)),
        st.sampled_from(DAYS),
        st.integers(0, 400),
    ),
    st.builds(
        activity,
        st.sampled_from(OPERATORS),
        st.integers(0, 3),
        st.sampled_from(WINDOWS),
        st.sampled_from(TYPES),
    ),
)
rules = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda xs: all_of(*xs)),
        st.lists(children, max_size=3).map(lambda xs: any_of(*xs)),
        children.map(negation),
    ),
    max_leaves=6,
)
# (customer, purchase / return / an activity, days before now, amount)
histories = st.lists(
    st.tuples(
        st.sampled_from("abc"),
        st.sampled_from(["purchase", "return", "code", "review.written", "social.shared", "list", "unlist"]),
        st.integers(-2, 500),
        st.integers(0, 1500),
    ),
    max_size=25,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rule_set=st.lists(rules, min_size=1, max_size=3), history=histories)
async def test_incremental_and_bulk_memberships_agree(segmentation, rule_set, history):
    segmentation.clock.now = NOW
    tenant = Client(segmentation, f"h-{key()[:10]}")
    listed = (await tenant.static_segment()).segment_id
    incremental = await created(tenant, listed, rule_set)
    for customer, kind, days, amount in history:
        at = NOW - timedelta(days=days, hours=amount % 24)
        if kind in ("list", "unlist"):
            change = tenant.AddSegmentMembers if kind == "list" else tenant.RemoveSegmentMembers
            request = api.AddSegmentMembersRequest if kind == "list" else api.RemoveSegmentMembersRequest
            await change(request(idempotency_key=key(), segment_id=listed, customer_ids=[customer]))
        elif kind == "return":
            await tenant.refund(customer, at, amount)
        elif kind == "purchase":
            await tenant.purchase(customer, at, amount, categories=CATEGORIES[: amount % 4])
        elif kind == "code":
            redeemed = promotion_events.RedemptionSummary(redemption_id=key(), voucher_id=key())
            event = promotion_events.RedemptionsCommitted(checkout_id=key(), customer_id=customer)
            event.redemptions.append(redeemed)
            await in_tenant(segmentation, tenant.tenant, app.redemptions_committed, event, at=at)
        else:
            await tenant.RecordActivity(
                api.RecordActivityRequest(
                    idempotency_key=key(), customer_id=customer, activity_type=kind, occur_time=timestamp(at)
                )
            )
    bulk = await created(tenant, listed, rule_set)
    for live, fresh in zip(incremental, bulk, strict=True):
        assert await tenant.members(live.segment_id) == await tenant.members(fresh.segment_id)


async def created(tenant: Client, listed: str, rule_set) -> list:
    """The rule segments, each referring to the static list and to those created before it."""
    segments = []
    for rule in rule_set:
        targets = [listed, *(s.segment_id for s in segments)]
        segments.append(await tenant.rule_segment(resolve(rule, targets)))
    return segments
