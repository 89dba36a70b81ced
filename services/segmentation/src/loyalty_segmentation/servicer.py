"""SegmentationService: each method decodes its request into a command, runs one use case in a
unit of work (`units.idempotent` for changes requested by key), and encodes the result; after a
commit it drops the cached answers of exactly the customers the change concerned. No SQL, no rule.
Exports stream their file page by page (exports.py).
"""

import uuid

import pyarrow as pa

from loyalty.segmentation.v1 import (
    condition_pb2,
    segment_pb2 as pb,
    segmentation_service_pb2 as api,
)
from loyalty_runtime import paging
from loyalty_runtime.context import current_call
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.protobuf import moment, timestamp
from loyalty_runtime.uow import UnitsOfWork, require_key
from loyalty_segmentation import app, exports
from loyalty_segmentation.cache import MembershipCache
from loyalty_segmentation.commands import (
    ChangeMembers,
    CreateSegment,
    DeleteSegment,
    Estimate,
    RecordActivity,
    RecordPurchase,
    RecordReturn,
    UpdateSegment,
    UpdateSettings,
    Upload,
)
from loyalty_segmentation.repository import SegmentRow

MAX_MEMBERS_PER_CALL, MAX_SAMPLE = 1000, 20
MAX_ID = 64
UPDATABLE = frozenset({"display_name", "description", "rule", "labels"})
MAX_ACTIVITY_TYPE = 100
MEMBER_COLUMNS = (
    exports.Column("customer_id", pa.string()),
    exports.Column("joined_at", pa.timestamp("us", tz="UTC")),
)
RFM_COLUMNS = (
    exports.Column("customer_id", pa.string()),
    exports.Column("recency_score", pa.int16()),
    exports.Column("frequency_score", pa.int16()),
    exports.Column("monetary_score", pa.int16()),
    exports.Column("computed_at", pa.timestamp("us", tz="UTC")),
)
FILES = {api.EXPORT_FORMAT_CSV: exports.csv_file, api.EXPORT_FORMAT_PARQUET: exports.parquet_file}


def _id(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "not an id this service issued", field=field) from None


def _customer(value: str, field: str = "customer_id") -> str:
    if not value.strip() or len(value) > MAX_ID:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, f"a customer id of 1 to {MAX_ID} characters", field=field
        )
    return value


def _customers(values, field: str = "customer_ids") -> list[str]:
    if not values or len(values) > MAX_MEMBERS_PER_CALL:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, f"1 to {MAX_MEMBERS_PER_CALL} customer ids", field=field
        )
    return [_customer(value, f"{field}[{i}]") for i, value in enumerate(values)]


def _name(value: str) -> str:
    if not value.strip() or len(value) > 200:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "a name of 1 to 200 characters is required", field="segment.display_name"
        )
    return value


def _time(message, field: str):
    value = moment(message, field)
    if value is None:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, f"{field} is required", field=field)
    return value


def _amount(message, field: str) -> int:
    if not message.HasField(field) or getattr(message, field).amount_minor < 0:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, f"{field} is required and not negative", field=field)
    return getattr(message, field).amount_minor


def _file(format_: int):
    if format_ not in FILES:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "format is CSV or PARQUET", field="format")
    return FILES[format_]


def encode_segment(row: SegmentRow) -> pb.Segment:
    segment = pb.Segment(
        segment_id=str(row.segment_id),
        display_name=row.display_name,
        description=row.description,
        type=pb.SEGMENT_TYPE_RULE if row.type == "rule" else pb.SEGMENT_TYPE_STATIC,
        state=pb.SEGMENT_STATE_DELETED if row.deleted_at else pb.SEGMENT_STATE_ACTIVE,
        membership_status=pb.MEMBERSHIP_STATUS_COMPUTING if row.computing else pb.MEMBERSHIP_STATUS_READY,
        member_count=row.member_count,
        recompute_progress=pb.RecomputeProgress(
            processed_customers=row.recompute_done, total_customers=row.recompute_total
        ),
        labels=row.labels,
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        etag=str(row.version),
    )
    if row.rule is not None:
        segment.rule.CopyFrom(condition_pb2.Condition.FromString(row.rule))
    if row.refreshed_at is not None:
        segment.membership_refresh_time.CopyFrom(timestamp(row.refreshed_at))
    if row.deleted_at is not None:
        segment.delete_time.CopyFrom(timestamp(row.deleted_at))
    return segment


def decode_create(segment: pb.Segment) -> CreateSegment:
    if segment.type == pb.SEGMENT_TYPE_UNSPECIFIED:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "a segment type is required", field="segment.type")
    static = segment.type == pb.SEGMENT_TYPE_STATIC
    if static == segment.HasField("rule"):
        raise InvalidArgument(
            Reason.SEGMENT_RULE_INVALID,
            "a rule segment needs a rule; a static one has none",
            field="segment.rule",
        )
    return CreateSegment(
        _name(segment.display_name),
        segment.description,
        static,
        None if static else segment.rule,
        dict(segment.labels),
    )


class SegmentationServicer:
    def __init__(self, units: UnitsOfWork, cache: MembershipCache) -> None:
        self.units = units
        self.cache = cache

    async def _changed(self, request, use_case, command, encode):
        """An idempotent change; then the cached answers of the customers it changed are dropped."""
        changed = app.Changed()
        response = await self.units.idempotent(
            request, lambda uow, c: use_case(uow, c, changed), command, encode
        )
        await self.cache.forget(current_call().tenant_id, changed.customers)
        return response

    async def CreateSegment(self, request: api.CreateSegmentRequest, context) -> api.CreateSegmentResponse:
        require_key(request.idempotency_key)
        return await self._changed(
            request,
            app.create_segment,
            decode_create(request.segment),
            lambda row: api.CreateSegmentResponse(segment=encode_segment(row)),
        )

    async def GetSegment(self, request: api.GetSegmentRequest, context) -> api.GetSegmentResponse:
        segment_id = _id(request.segment_id, "segment_id")
        async with self.units.read() as uow:
            row = await app.get_segment(uow, segment_id)
        return api.GetSegmentResponse(segment=encode_segment(row))

    async def ListSegments(self, request: api.ListSegmentsRequest, context) -> api.ListSegmentsResponse:
        size = paging.page_size(request.page_size, default=50, maximum=500)
        after = paging.decode_token(request.page_token)
        type_ = {pb.SEGMENT_TYPE_RULE: "rule", pb.SEGMENT_TYPE_STATIC: "static"}.get(request.type)
        async with self.units.read() as uow:
            rows = await app.list_segments(
                uow, after, size + 1, type_, request.show_deleted, dict(request.labels)
            )
        response = api.ListSegmentsResponse(segments=[encode_segment(row) for row in rows[:size]])
        if len(rows) > size:
            last = rows[size - 1]
            response.next_page_token = paging.encode_token(f"{last.display_name}\x00{last.segment_id}")
        return response

    async def UpdateSegment(self, request: api.UpdateSegmentRequest, context) -> api.UpdateSegmentResponse:
        require_key(request.idempotency_key)
        fields = frozenset(request.update_mask.paths)
        if not fields or not fields <= UPDATABLE:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, f"update_mask names some of {sorted(UPDATABLE)}", field="update_mask"
            )
        segment = request.segment
        command = UpdateSegment(
            _id(segment.segment_id, "segment.segment_id"),
            fields,
            _name(segment.display_name) if "display_name" in fields else "",
            segment.description,
            segment.rule if segment.HasField("rule") else None,
            dict(segment.labels),
            segment.etag,
        )
        return await self._changed(
            request,
            app.update_segment,
            command,
            lambda row: api.UpdateSegmentResponse(segment=encode_segment(row)),
        )

    async def DeleteSegment(self, request: api.DeleteSegmentRequest, context) -> api.DeleteSegmentResponse:
        require_key(request.idempotency_key)
        command = DeleteSegment(_id(request.segment_id, "segment_id"), request.etag)
        return await self._changed(
            request,
            app.delete_segment,
            command,
            lambda row: api.DeleteSegmentResponse(segment=encode_segment(row)),
        )

    async def AddSegmentMembers(self, request: api.AddSegmentMembersRequest, context):
        require_key(request.idempotency_key)
        command = ChangeMembers(_id(request.segment_id, "segment_id"), _customers(request.customer_ids))
        return await self._changed(
            request,
            app.add_members,
            command,
            lambda r: api.AddSegmentMembersResponse(
                added_count=r.count, unknown_customer_ids=r.unknown_customer_ids
            ),
        )

    async def RemoveSegmentMembers(self, request: api.RemoveSegmentMembersRequest, context):
        require_key(request.idempotency_key)
        command = ChangeMembers(_id(request.segment_id, "segment_id"), _customers(request.customer_ids))
        return await self._changed(
            request,
            app.remove_members,
            command,
            lambda r: api.RemoveSegmentMembersResponse(removed_count=r.count),
        )

    async def ListCustomerSegments(self, request: api.ListCustomerSegmentsRequest, context):
        customer_id = _customer(request.customer_id)
        paging.page_size(request.page_size, default=1000, maximum=1000)
        if request.page_token:
            # One page holds every membership (at most 1000 segments per tenant are answered).
            raise InvalidArgument(Reason.INVALID_ARGUMENT, "there is only one page", field="page_token")
        tenant = current_call().tenant_id
        cached = await self.cache.get(tenant, customer_id)
        if cached is not None:
            return api.ListCustomerSegmentsResponse.FromString(cached)
        async with self.units.read() as uow:
            memberships, facts = await app.customer_segments(uow, customer_id)
        response = api.ListCustomerSegmentsResponse(
            memberships=[
                pb.SegmentMembership(segment_id=str(m["segment_id"]), join_time=timestamp(m["joined_at"]))
                for m in memberships
            ],
            lifetime_purchase_count=facts["lifetime"],
        )
        if facts["last_at"] is not None:
            response.last_purchase_time.CopyFrom(timestamp(facts["last_at"]))
        await self.cache.put(tenant, customer_id, response.SerializeToString())
        return response

    async def ListSegmentMembers(self, request: api.ListSegmentMembersRequest, context):
        segment_id = _id(request.segment_id, "segment_id")
        size = paging.page_size(request.page_size, default=100, maximum=1000)
        after = paging.decode_token(request.page_token)
        async with self.units.read() as uow:
            segment, rows = await app.segment_members(uow, segment_id, after, size + 1)
        response = api.ListSegmentMembersResponse(
            members=[
                pb.SegmentMember(customer_id=r["customer_id"], join_time=timestamp(r["joined_at"]))
                for r in rows[:size]
            ],
            total_size=segment.member_count,
        )
        if len(rows) > size:
            response.next_page_token = paging.encode_token(rows[size - 1]["customer_id"])
        return response

    async def EstimateSegmentSize(self, request: api.EstimateSegmentSizeRequest, context):
        if not request.HasField("rule"):
            raise InvalidArgument(Reason.SEGMENT_RULE_INVALID, "a rule is required", field="rule")
        if not 0 <= request.sample_size <= MAX_SAMPLE:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, f"sample_size is 0 to {MAX_SAMPLE}", field="sample_size"
            )
        async with self.units.read() as uow:
            result = await app.estimate(uow, Estimate(request.rule, request.sample_size))
        return api.EstimateSegmentSizeResponse(
            matching_count=result.matching,
            total_customer_count=result.total,
            exact=True,
            sample_customer_ids=result.sample,
        )

    async def GetCustomerMetrics(self, request: api.GetCustomerMetricsRequest, context):
        customer_id = _customer(request.customer_id)
        async with self.units.read() as uow:
            metrics = await app.customer_metrics(uow, customer_id)
        return api.GetCustomerMetricsResponse(metrics=metrics)

    async def _record(self, use_case, command) -> bool:
        changed = app.Changed()
        async with self.units.change() as uow:
            recorded = await use_case(uow, command, changed)
        await self.cache.forget(uow.tenant, changed.customers)
        return recorded

    async def RecordPurchase(self, request: api.RecordPurchaseRequest, context):
        command = RecordPurchase(
            require_key(request.idempotency_key),
            _customer(request.customer_id),
            _time(request, "purchase_time"),
            _amount(request, "net_total"),
            request.net_total.currency_code,
            app.basket_categories(request.basket),
        )
        return api.RecordPurchaseResponse(recorded=await self._record(app.record_purchase, command))

    async def RecordReturn(self, request: api.RecordReturnRequest, context):
        command = RecordReturn(
            require_key(request.idempotency_key),
            _customer(request.customer_id),
            request.checkout_id,
            _time(request, "return_time"),
            _amount(request, "refunded_total"),
        )
        return api.RecordReturnResponse(recorded=await self._record(app.record_return, command))

    async def RecordActivity(self, request: api.RecordActivityRequest, context):
        if not request.activity_type.strip() or len(request.activity_type) > MAX_ACTIVITY_TYPE:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT,
                f"an activity type of 1 to {MAX_ACTIVITY_TYPE} characters",
                field="activity_type",
            )
        command = RecordActivity(
            require_key(request.idempotency_key),
            _customer(request.customer_id),
            request.activity_type,
            _time(request, "occur_time"),
        )
        return api.RecordActivityResponse(recorded=await self._record(app.record_activity, command))

    async def RecomputeRfmScores(self, request: api.RecomputeRfmScoresRequest, context):
        require_key(request.idempotency_key)

        async def compute(uow, _command):
            return await app.compute_rfm(uow), uow.now

        return await self.units.idempotent(
            request,
            compute,
            None,
            lambda result: api.RecomputeRfmScoresResponse(
                scored_count=result[0], compute_time=timestamp(result[1])
            ),
        )

    async def ExportSegmentMembers(self, request: api.ExportSegmentMembersRequest, context):
        write = _file(request.format)
        segment_id = _id(request.segment_id, "segment_id")
        async with self.units.read() as uow:
            await app.get_segment(uow, segment_id)
        async for data in write(
            MEMBER_COLUMNS, exports.keyset_pages(self._reader(app.members_page, segment_id), "customer_id")
        ):
            yield api.ExportSegmentMembersResponse(data=data)

    async def ExportRfmScores(self, request: api.ExportRfmScoresRequest, context):
        write = _file(request.format)
        async for data in write(RFM_COLUMNS, exports.keyset_pages(self._reader(app.rfm_page), "customer_id")):
            yield api.ExportRfmScoresResponse(data=data)

    def _reader(self, use_case, *arguments):
        """Each page in a read transaction of its own: a long export holds none open."""

        async def read(after: str, limit: int) -> list:
            async with self.units.read() as uow:
                return [dict(row) for row in await use_case(uow, *arguments, after, limit)]

        return read

    async def UploadSegmentMembers(self, request: api.UploadSegmentMembersRequest, context):
        require_key(request.idempotency_key)
        command = Upload(_id(request.segment_id, "segment_id"), request.csv_content)
        return await self._changed(
            request,
            app.upload_members,
            command,
            lambda r: api.UploadSegmentMembersResponse(
                added_count=r.added,
                already_member_count=r.already_members,
                problems=[
                    api.UploadRowProblem(row_number=n, customer_id=c, reason=why) for n, c, why in r.problems
                ],
            ),
        )

    async def GetSegmentationSettings(self, request: api.GetSegmentationSettingsRequest, context):
        async with self.units.read() as uow:
            return api.GetSegmentationSettingsResponse(settings=await app.get_settings(uow))

    async def UpdateSegmentationSettings(self, request: api.UpdateSegmentationSettingsRequest, context):
        require_key(request.idempotency_key)
        if not set(request.update_mask.paths) <= {"time_zone"}:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, "update_mask names time_zone", field="update_mask")
        command = UpdateSettings(request.settings.time_zone, request.settings.etag)
        return await self._changed(
            request,
            app.update_settings,
            command,
            lambda settings: api.UpdateSegmentationSettingsResponse(settings=settings),
        )

    async def BackfillProfiles(self, request: api.BackfillProfilesRequest, context):
        require_key(request.idempotency_key)
        return await self.units.idempotent(
            request,
            lambda uow, _command: app.start_backfill(uow),
            None,
            lambda started: api.BackfillProfilesResponse(started=started),
        )
