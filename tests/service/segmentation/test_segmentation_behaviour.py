"""Activities, RFM scores, exports and uploads through the real server and database: each with bad
input and another tenant's ids."""

import asyncio
import csv
import io
from datetime import timedelta

import grpc
import pyarrow.parquet as pq
import pytest

from loyalty.notification.v1 import events_pb2 as notification_events
from loyalty.segmentation.v1 import condition_pb2 as c, segment_pb2 as pb, segmentation_service_pb2 as api
from loyalty_runtime.errors import error_info
from loyalty_runtime.protobuf import timestamp
from loyalty_segmentation import app
from tests.service.segmentation.conftest import START
from tests.service.segmentation.helpers import all_of, key, metric
from tests.service.segmentation.test_segmentation_edges import in_tenant
from tests.service.segmentation.test_segmentation_service import details

NOW = START
GTE, EQ = c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS, c.COMPARISON_OPERATOR_EQUALS
ACTIVITY = c.CUSTOMER_METRIC_ACTIVITY_COUNT
CSV, PARQUET = api.EXPORT_FORMAT_CSV, api.EXPORT_FORMAT_PARQUET


def activity_count(op, value, activity_type="", window=c.METRIC_WINDOW_LAST_30_DAYS) -> c.Condition:
    rule = metric(ACTIVITY, op, value, window=window)
    rule.metric.activity_type = activity_type
    return rule


async def act(tenant, customer, activity_type, at, activity_key=None) -> bool:
    response = await tenant.RecordActivity(
        api.RecordActivityRequest(
            idempotency_key=activity_key or key(),
            customer_id=customer,
            activity_type=activity_type,
            occur_time=timestamp(at),
        )
    )
    return response.recorded


async def test_activities_count_by_type_in_their_window_once_each(tenant, other_tenant):
    reviewers = await tenant.rule_segment(activity_count(GTE, 2, "review.written"))
    active = await tenant.rule_segment(activity_count(GTE, 3))
    assert await act(tenant, "rita", "review.written", NOW - timedelta(days=1), "r1")
    assert not await act(tenant, "rita", "review.written", NOW - timedelta(days=1), "r1")  # twice: once
    assert await act(tenant, "rita", "review.written", NOW - timedelta(days=30))  # the edge: outside
    assert await tenant.members(reviewers.segment_id) == set()
    assert await act(tenant, "rita", "review.written", NOW - timedelta(days=29))
    assert await act(tenant, "rita", "social.shared", NOW)
    assert await act(other_tenant, "rita", "review.written", NOW)  # another tenant's rita
    assert await tenant.members(reviewers.segment_id) == {"rita"}
    assert await tenant.members(active.segment_id) == {"rita"}
    assert await other_tenant.segments_of("rita") == set()
    metrics = (await tenant.GetCustomerMetrics(api.GetCustomerMetricsRequest(customer_id="rita"))).metrics
    by_window = {w.window: dict(w.activity_counts) for w in metrics.windows}
    assert by_window[c.METRIC_WINDOW_LAST_30_DAYS] == {"review.written": 2, "social.shared": 1}
    assert by_window[c.METRIC_WINDOW_LIFETIME] == {"review.written": 3, "social.shared": 1}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"activity_type": ""}, "activity_type"),
        ({"activity_type": "x" * 101}, "activity_type"),
        ({"customer_id": ""}, "customer_id"),
        ({"idempotency_key": ""}, "idempotency_key"),
    ],
)
async def test_a_bad_activity_is_refused(tenant, change, field):
    request = api.RecordActivityRequest(
        idempotency_key=key(), customer_id="x", activity_type="review.written", occur_time=timestamp(NOW)
    )
    for name, value in change.items():
        setattr(request, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await tenant.RecordActivity(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_rule_with_an_activity_type_on_another_metric_is_refused(tenant):
    rule = metric(c.CUSTOMER_METRIC_PURCHASE_COUNT, GTE, 1)
    rule.metric.activity_type = "review.written"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await tenant.rule_segment(rule)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def rfm(tenant) -> api.RecomputeRfmScoresResponse:
    return await tenant.RecomputeRfmScores(api.RecomputeRfmScoresRequest(idempotency_key=key()))


async def test_rfm_scores_are_quintiles_over_the_tenant_and_drive_segments(tenant, other_tenant):
    # Ten buyers: buyer i bought i+1 times, i days ago last, spending 100 each time.
    for i in range(10):
        for k in range(i + 1):
            await tenant.purchase(f"b{i}", NOW - timedelta(days=i + k * 40), 100)
    await tenant.purchase("b0", NOW, 5000)  # the biggest spender, most recent, but few purchases
    await other_tenant.purchase("b9", NOW, 1_000_000)
    best = await tenant.rule_segment(metric(c.CUSTOMER_METRIC_RFM_MONETARY_SCORE, EQ, 5))
    assert await tenant.members(best.segment_id) == set()  # not scored yet: zero
    assert (await rfm(tenant)).scored_count == 10
    await tenant.ready(best.segment_id)  # new scores recompute the RFM segments
    assert await tenant.members(best.segment_id) == {"b0", "b9"}
    scores = {}
    for i in range(10):
        metrics = (
            await tenant.GetCustomerMetrics(api.GetCustomerMetricsRequest(customer_id=f"b{i}"))
        ).metrics
        scores[f"b{i}"] = (metrics.rfm.recency_score, metrics.rfm.frequency_score, metrics.rfm.monetary_score)
    assert scores["b0"] == (5, 1, 5)  # b0: two purchases, b1: two as well: equal ranks, equal scores
    assert scores["b1"][1] == scores["b0"][1]
    assert scores["b9"] == (1, 5, 5)
    assert sorted(s[1] for s in scores.values()) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert (await rfm(other_tenant)).scored_count == 1
    assert (
        await tenant.GetCustomerMetrics(api.GetCustomerMetricsRequest(customer_id="b9"))
    ).metrics.rfm.monetary_score == 5
    frequent = await tenant.rule_segment(all_of(metric(c.CUSTOMER_METRIC_RFM_FREQUENCY_SCORE, GTE, 4)))
    assert await tenant.members(frequent.segment_id) == {"b6", "b7", "b8", "b9"}


async def exported(call) -> bytes:
    return b"".join([chunk.data async for chunk in call])


async def test_members_export_as_csv_and_parquet(tenant, other_tenant):
    buyers = await tenant.rule_segment(metric(c.CUSTOMER_METRIC_PURCHASE_COUNT, GTE, 1))
    for i in range(5):
        await tenant.purchase(f"m{i}", NOW, 100)
    request = api.ExportSegmentMembersRequest(segment_id=buyers.segment_id, format=CSV)
    rows = list(csv.DictReader(io.StringIO((await exported(tenant.ExportSegmentMembers(request))).decode())))
    assert [r["customer_id"] for r in rows] == [f"m{i}" for i in range(5)]
    assert rows[0]["joined_at"] == NOW.isoformat()
    request.format = PARQUET
    table = pq.read_table(io.BytesIO(await exported(tenant.ExportSegmentMembers(request))))
    assert table.column("customer_id").to_pylist() == [f"m{i}" for i in range(5)]
    assert table.column("joined_at").to_pylist()[0] == NOW
    empty = await tenant.static_segment()
    request = api.ExportSegmentMembersRequest(segment_id=empty.segment_id, format=PARQUET)
    assert pq.read_table(io.BytesIO(await exported(tenant.ExportSegmentMembers(request)))).num_rows == 0
    # Another tenant's segment looks exactly like an unknown one; a bad format is refused.
    for client, segment_id, fmt, code in (
        (other_tenant, buyers.segment_id, CSV, grpc.StatusCode.NOT_FOUND),
        (tenant, "00000000-0000-0000-0000-000000000000", CSV, grpc.StatusCode.NOT_FOUND),
        (tenant, "not-an-id", CSV, grpc.StatusCode.INVALID_ARGUMENT),
        (tenant, buyers.segment_id, api.EXPORT_FORMAT_UNSPECIFIED, grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await exported(
                client.ExportSegmentMembers(
                    api.ExportSegmentMembersRequest(segment_id=segment_id, format=fmt)
                )
            )
        assert raised.value.code() == code


async def test_the_rfm_table_exports_for_the_tenant_only(tenant, other_tenant):
    await tenant.purchase("r1", NOW, 100)
    await other_tenant.purchase("r2", NOW, 100)
    await rfm(tenant)
    await rfm(other_tenant)
    data = await exported(tenant.ExportRfmScores(api.ExportRfmScoresRequest(format=PARQUET)))
    table = pq.read_table(io.BytesIO(data))
    assert table.to_pylist() == [
        {
            "customer_id": "r1",
            "recency_score": 1,
            "frequency_score": 1,
            "monetary_score": 1,
            "computed_at": NOW,
        }
    ]
    text = (await exported(tenant.ExportRfmScores(api.ExportRfmScoresRequest(format=CSV)))).decode()
    assert text.splitlines()[0] == "customer_id,recency_score,frequency_score,monetary_score,computed_at"
    assert len(text.splitlines()) == 2


async def upload(tenant, segment_id: str, content: bytes, upload_key: str | None = None):
    return await tenant.UploadSegmentMembers(
        api.UploadSegmentMembersRequest(
            idempotency_key=upload_key or key(), segment_id=segment_id, csv_content=content
        )
    )


async def test_an_upload_adds_known_customers_and_reports_every_bad_row(tenant, other_tenant):
    for customer in ("u1", "u2", "u3"):
        await tenant.purchase(customer, NOW, 100)
    await other_tenant.purchase("theirs", NOW, 100)
    segment = await tenant.static_segment()
    await tenant.AddSegmentMembers(
        api.AddSegmentMembersRequest(
            idempotency_key=key(), segment_id=segment.segment_id, customer_ids=["u3"]
        )
    )
    content = "\ufeffName,Customer_ID\nA,u1\nB,u2\nC,u1\nD,\nE,theirs\nF,u3\nG," + "x" * 65 + "\n\n"
    upload_key = key()
    response = await upload(tenant, segment.segment_id, content.encode(), upload_key)
    assert (response.added_count, response.already_member_count) == (2, 1)
    assert [(p.row_number, p.customer_id, p.reason) for p in response.problems] == [
        (4, "u1", "duplicate row"),
        (5, "", "empty customer id"),
        (6, "theirs", "unknown customer"),  # another tenant's id is unknown here
        (8, "x" * 64, "customer id too long"),
    ]
    assert await tenant.members(segment.segment_id) == {"u1", "u2", "u3"}
    assert (await upload(tenant, segment.segment_id, content.encode(), upload_key)) == response  # a retry
    assert (
        await tenant.GetSegment(api.GetSegmentRequest(segment_id=segment.segment_id))
    ).segment.member_count == 3


@pytest.mark.parametrize(
    "content",
    [b"", b"   \n", b"customer\nu1\n", b"customer_id\n", b"\xff\xfe\x00binary", b'customer_id\n"u1\n'],
)
async def test_an_unusable_upload_is_refused_whole(tenant, content):
    await tenant.purchase("u1", NOW, 100)
    segment = await tenant.static_segment()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(tenant, segment.segment_id, content)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(details(raised.value)).reason == "SEGMENT_UPLOAD_INVALID"
    assert await tenant.members(segment.segment_id) == set()


async def test_an_upload_needs_a_static_segment_of_the_tenant(tenant, other_tenant):
    rule = await tenant.rule_segment(metric(c.CUSTOMER_METRIC_PURCHASE_COUNT, GTE, 1))
    static = await tenant.static_segment()
    for client, segment_id, code in (
        (tenant, rule.segment_id, grpc.StatusCode.FAILED_PRECONDITION),
        (other_tenant, static.segment_id, grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await upload(client, segment_id, b"customer_id\nu1\n")
        assert raised.value.code() == code
    assert (await tenant.GetSegment(api.GetSegmentRequest(segment_id=static.segment_id))).segment.type == (
        pb.SEGMENT_TYPE_STATIC
    )


async def test_notifications_sent_and_opened_count_as_activities_once_each(segmentation, tenant, redis_url):
    opened = await tenant.rule_segment(activity_count(GTE, 1, "notification.opened"))
    received = await tenant.rule_segment(activity_count(GTE, 2, "notification.sent"))
    assert await tenant.segments_of("nina") == set()  # cached: the event's change must drop it
    for event in (
        notification_events.NotificationSent(message_id="m1", customer_id="nina"),
        notification_events.NotificationSent(message_id="m1", customer_id="nina"),  # delivered twice
        notification_events.NotificationOpened(message_id="m1", customer_id="nina"),
        notification_events.NotificationSent(message_id="m2", customer_id=""),  # no customer: ignored
    ):
        await in_tenant(segmentation, tenant.tenant, app.notification_activity, event)
    assert await tenant.members(opened.segment_id) == {"nina"}
    assert await tenant.members(received.segment_id) == set()

    async def cache_dropped():
        return await tenant.segments_of("nina") == {opened.segment_id}

    for _ in range(100):
        if await cache_dropped():
            break
        await asyncio.sleep(0.05)
    assert await cache_dropped()


async def test_the_nightly_schedule_scores_every_tenant(segmentation, tenant, other_tenant):
    await tenant.purchase("n1", NOW, 100)
    await other_tenant.purchase("n2", NOW, 100)
    await app.scheduled_rfm(segmentation.server.resources)
    for client, customer in ((tenant, "n1"), (other_tenant, "n2")):
        metrics = (
            await client.GetCustomerMetrics(api.GetCustomerMetricsRequest(customer_id=customer))
        ).metrics
        assert (metrics.rfm.recency_score, metrics.rfm.compute_time) == (1, timestamp(NOW))
