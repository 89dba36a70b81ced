"""The admin API over the services, through the gateway: the services' own RPCs under their own names
(their generated clients work unchanged), each behind the roles of domain/admin_api.py's table, the
internal RPCs not served at all, the tenant from the token, changes in the audit log, a streamed
export, the same over JSON/HTTP (streams in Connect's envelopes), and garbage bytes answered as the caller's mistake."""

import asyncio
import base64
import json
import os
import struct
import uuid
from contextlib import AsyncExitStack

import grpc
import httpx
import pytest

from loyalty.gateway.v1 import admin_pb2, admin_service_pb2 as admin_api, admin_service_pb2_grpc
from loyalty.profile.v1 import profile_service_pb2 as profile_api, profile_service_pb2_grpc
from loyalty.segmentation.v1 import (
    segment_pb2,
    segmentation_service_pb2 as seg_api,
    segmentation_service_pb2_grpc,
)
from loyalty_gateway.domain import admin_api as table
from loyalty_gateway.proxy import SERVICES
from loyalty_gateway.service import DEFINITION
from loyalty_notification.service import DEFINITION as NOTIFICATION
from loyalty_runtime.testing import internal_metadata, migrated_settings, running_service
from tests.conftest import rpc_failure
from tests.service.gateway.conftest import bearer, new_tenant

ROLES = {
    "admin": admin_pb2.ADMIN_ROLE_ADMIN,
    "marketer": admin_pb2.ADMIN_ROLE_MARKETER,
    "support": admin_pb2.ADMIN_ROLE_SUPPORT,
    "analyst": admin_pb2.ADMIN_ROLE_ANALYST,
    "auditor": admin_pb2.ADMIN_ROLE_AUDITOR,
}
METHODS = [
    (service.full_name, name, service.methods_by_name[name].server_streaming)
    for service in SERVICES
    for name in table.TABLE[service.full_name]
]
# Answers that show the call reached the service: the gateway let it through.
REFUSED_BY_GATEWAY = {
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.UNAUTHENTICATED,
}


@pytest.fixture(scope="module")
async def gateway(shop_settings, shop_database_url, shop_redis_url):
    """The gateway wired to every service, notification included."""
    async with AsyncExitStack() as stack:
        settings = await migrated_settings(NOTIFICATION, shop_database_url, shop_redis_url)
        notification = await stack.enter_async_context(running_service(NOTIFICATION, settings))
        wired = shop_settings.model_copy(update={"notification_target": notification.address})
        service = await stack.enter_async_context(running_service(DEFINITION, wired))
        service.admin = admin_service_pb2_grpc.AdminServiceStub(service.channel)
        yield service


class Staff:
    """A tenant with one admin user per role and their tokens."""

    def __init__(self, tenant, tokens: dict[str, str]) -> None:
        self.tenant = tenant
        self.tokens = tokens

    def auth(self, role: str):
        return bearer(self.tokens[role])


async def staff_of(gateway) -> Staff:
    tenant = await new_tenant(gateway)
    tokens = {"admin": tenant.token}
    for role, value in ROLES.items():
        if role != "admin":
            tokens[role] = await tenant.create_user(f"{role}-{uuid.uuid4().hex[:6]}", [value])
    return Staff(tenant, tokens)


@pytest.fixture(scope="module")
async def staff(gateway) -> Staff:
    return await staff_of(gateway)


@pytest.fixture(scope="module")
async def other_staff(gateway) -> Staff:
    return await staff_of(gateway)


def segments(gateway):
    return segmentation_service_pb2_grpc.SegmentationServiceStub(gateway.channel)


async def raw_code(gateway, path: str, streaming: bool, body: bytes, metadata) -> grpc.StatusCode:
    """What the gateway answers to `body` as the request of `path`."""
    try:
        if streaming:
            async for _ in gateway.channel.unary_stream(path)(body, metadata=metadata, timeout=5):
                pass
        else:
            await gateway.channel.unary_unary(path)(body, metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def audit_records(gateway, staff: Staff):
    response = await gateway.admin.ListAuditRecords(
        admin_api.ListAuditRecordsRequest(page_size=1000), metadata=staff.auth("auditor")
    )
    return list(response.records)


@pytest.mark.parametrize(("service", "method", "streaming"), METHODS, ids=[f"{m[0]}/{m[1]}" for m in METHODS])
async def test_each_role_is_allowed_or_denied_per_the_table(gateway, staff, service, method, streaming):
    rule = table.TABLE[service][method]
    path = f"/{service}/{method}"
    before = len(await audit_records(gateway, staff))
    for role in ROLES:
        # An empty request: a service refuses it (no idempotency key, no id) or answers a read.
        code = await raw_code(gateway, path, streaming, b"", staff.auth(role))
        if table.permitted(rule, frozenset({f"role.{role}"})):
            assert code not in REFUSED_BY_GATEWAY, (role, code)
            assert code not in {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}, (role, code)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (role, code)
    # Refused changes are not audited.
    assert len(await audit_records(gateway, staff)) == before


@pytest.mark.parametrize(
    "path",
    [
        "/loyalty.promotion.v1.PromotionService/EvaluateBasket",
        "/loyalty.promotion.v1.PromotionService/ReserveRedemptions",
        "/loyalty.promotion.v1.PromotionService/CommitRedemptions",
        "/loyalty.ledger.v1.LedgerService/HoldPoints",
        "/loyalty.ledger.v1.LedgerService/SettleCheckout",
        "/loyalty.ledger.v1.LedgerService/EarnPoints",
        "/loyalty.fraud.v1.FraudService/AssessCheckout",
        "/loyalty.segmentation.v1.SegmentationService/RecordPurchase",
        "/loyalty.profile.v1.ProfileService/EraseCustomer",
        "/loyalty.notification.v1.NotificationService/SendNotification",
    ],
)
async def test_internal_methods_are_not_served_to_anyone(gateway, staff, path):
    for role in ROLES:
        assert await raw_code(gateway, path, False, b"", staff.auth(role)) == grpc.StatusCode.UNIMPLEMENTED


async def test_without_credentials_nothing_is_forwarded(gateway):
    path = "/loyalty.segmentation.v1.SegmentationService/ListSegments"
    assert await raw_code(gateway, path, False, b"", ()) == grpc.StatusCode.UNAUTHENTICATED
    tenant_only = (("x-loyalty-tenant", "demo"),)
    assert await raw_code(gateway, path, False, b"", tenant_only) == grpc.StatusCode.UNAUTHENTICATED


async def create_segment(gateway, staff: Staff, role: str = "marketer", key: str | None = None):
    return await segments(gateway).CreateSegment(
        seg_api.CreateSegmentRequest(
            idempotency_key=key or uuid.uuid4().hex,
            segment=segment_pb2.Segment(
                display_name=f"VIPs {uuid.uuid4().hex[:6]}", type=segment_pb2.SEGMENT_TYPE_STATIC
            ),
        ),
        metadata=staff.auth(role),
    )


async def test_a_generated_client_works_unchanged_and_changes_are_audited(gateway, staff):
    key = uuid.uuid4().hex
    created = await create_segment(gateway, staff, key=key)
    segment_id = created.segment.segment_id
    got = await segments(gateway).GetSegment(
        seg_api.GetSegmentRequest(segment_id=segment_id), metadata=staff.auth("analyst")
    )
    assert got.segment.display_name == created.segment.display_name
    added = await segments(gateway).AddSegmentMembers(
        seg_api.AddSegmentMembersRequest(
            idempotency_key=uuid.uuid4().hex, segment_id=segment_id, customer_ids=["c1", "c2"]
        ),
        metadata=staff.auth("marketer"),
    )
    assert added is not None
    records = await audit_records(gateway, staff)
    mine = [r for r in records if segment_id in r.resource]
    assert [r.action for r in mine] == [
        "loyalty.segmentation.v1.SegmentationService/AddSegmentMembers",
        "loyalty.segmentation.v1.SegmentationService/CreateSegment",
    ]
    marketer = mine[0].principal
    assert marketer.startswith("admin:") and mine[1].principal == marketer
    assert list(mine[1].fields) == ["segment"]
    assert list(mine[0].fields) == ["customer_ids", "segment_id"]
    # Ids only: no name, no member id, in any record.
    for record in mine:
        assert created.segment.display_name not in record.resource
        assert "c1" not in record.resource.split("=")
    # Reads are not audited; the chain stays intact.
    assert all("GetSegment" not in r.action for r in records)
    verified = await gateway.admin.VerifyAuditLog(
        admin_api.VerifyAuditLogRequest(), metadata=staff.auth("auditor")
    )
    assert verified.intact


async def test_the_tenant_comes_from_the_token(gateway, staff, other_staff):
    created = await create_segment(gateway, staff)
    segment_id = created.segment.segment_id
    theirs = segments(gateway)
    # The other tenant's admin names this tenant in metadata too: the token's tenant wins.
    spoofed = (*other_staff.auth("admin"), ("x-loyalty-tenant", staff.tenant.tenant_id))
    failure = await rpc_failure(
        theirs.GetSegment(seg_api.GetSegmentRequest(segment_id=segment_id), metadata=spoofed)
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND
    before = len(await audit_records(gateway, other_staff))
    failure = await rpc_failure(
        theirs.DeleteSegment(
            seg_api.DeleteSegmentRequest(idempotency_key=uuid.uuid4().hex, segment_id=segment_id),
            metadata=other_staff.auth("marketer"),
        )
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert len(await audit_records(gateway, other_staff)) == before
    still = await theirs.GetSegment(
        seg_api.GetSegmentRequest(segment_id=segment_id), metadata=staff.auth("admin")
    )
    assert not still.segment.HasField("delete_time")


async def enrol(services, tenant_id: str, count: int) -> list[str]:
    profile = profile_service_pb2_grpc.ProfileServiceStub(services["profile"].channel)
    metadata = internal_metadata(services["profile"].server.settings, tenant_id)
    ids = []
    for _ in range(count):
        response = await profile.EnrolCustomer(
            profile_api.EnrolCustomerRequest(
                idempotency_key=uuid.uuid4().hex,
                identifiers=[{"type": "IDENTIFIER_TYPE_LOYALTY_CARD", "value": uuid.uuid4().hex[:12]}],
                given_name="Ada",
            ),
            metadata=metadata,
        )
        ids.append(response.customer.customer_id)
    return ids


async def segment_with_members(gateway, services, staff) -> tuple[str, list[str]]:
    created = await create_segment(gateway, staff)
    segment_id = created.segment.segment_id
    members = await enrol(services, staff.tenant.tenant_id, 5)
    # Segmentation learns of customers from profile's events; until then it ignores their ids
    # (seconds on a loaded machine).
    for _ in range(600):
        added = await segments(gateway).AddSegmentMembers(
            seg_api.AddSegmentMembersRequest(
                idempotency_key=uuid.uuid4().hex, segment_id=segment_id, customer_ids=members
            ),
            metadata=staff.auth("marketer"),
        )
        if not added.unknown_customer_ids:
            return segment_id, members
        await asyncio.sleep(0.1)
    raise AssertionError("segmentation never learnt of the enrolled customers")


async def test_an_export_streams_through_the_gateway(gateway, services, staff):
    segment_id, members = await segment_with_members(gateway, services, staff)
    request = seg_api.ExportSegmentMembersRequest(segment_id=segment_id, format=seg_api.EXPORT_FORMAT_CSV)
    chunks = [
        chunk.data
        async for chunk in segments(gateway).ExportSegmentMembers(request, metadata=staff.auth("analyst"))
    ]
    exported = b"".join(chunks).decode()
    assert all(member in exported for member in members)
    denied = segments(gateway).ExportSegmentMembers(request, metadata=staff.auth("marketer"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in denied:
            pass
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def envelope(flags: int, payload: bytes) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def envelopes(body: bytes) -> list[tuple[int, dict]]:
    frames = []
    while body:
        flags, length = struct.unpack_from(">BI", body)
        frames.append((flags, json.loads(body[5 : 5 + length])))
        body = body[5 + length :]
    return frames


async def test_an_export_streams_over_json_http_in_connect_envelopes(gateway, services, staff):
    segment_id, members = await segment_with_members(gateway, services, staff)
    path = "/loyalty.segmentation.v1.SegmentationService/ExportSegmentMembers"
    request = json.dumps({"segmentId": segment_id, "format": "EXPORT_FORMAT_CSV"}).encode()
    stream_type = {"content-type": "application/connect+json"}

    async def post(role: str, body: bytes, headers=stream_type) -> httpx.Response:
        auth = {"authorization": f"Bearer {staff.tokens[role]}"}
        return await http.post(path, content=body, headers={**headers, **auth})

    port = gateway.server.resources.http_port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        exported = await post("analyst", envelope(0, request))
        denied = await post("marketer", envelope(0, request))
        unframed = await post("analyst", request)
        as_unary = await post("analyst", request, {"content-type": "application/json"})
        document = (await http.get("/openapi.json")).json()

    assert exported.status_code == 200 and exported.headers["content-type"] == "application/connect+json"
    *chunks, (end_flags, end) = envelopes(exported.content)
    assert chunks and all(flags == 0 for flags, _ in chunks)
    assert (end_flags, end) == (0x02, {})
    csv = b"".join(base64.b64decode(chunk["data"]) for _, chunk in chunks).decode()
    assert all(member in csv for member in members)
    # A stream's failure travels in its end-of-stream frame, with the same code as over gRPC.
    assert denied.status_code == 200
    [(flags, failure)] = envelopes(denied.content)
    assert flags == 0x02 and failure["error"]["code"] == "permission_denied"
    assert unframed.status_code == 400 and unframed.json()["code"] == "invalid_argument"
    assert as_unary.status_code == 415
    assert "application/connect+json" in document["paths"][path]["post"]["requestBody"]["content"]


async def test_support_looks_customers_up(gateway, services, staff, other_staff):
    [customer_id] = await enrol(services, staff.tenant.tenant_id, 1)
    profile = profile_service_pb2_grpc.ProfileServiceStub(gateway.channel)
    request = profile_api.GetCustomerRequest(customer_id=customer_id)
    found = await profile.GetCustomer(request, metadata=staff.auth("support"))
    assert found.customer.customer_id == customer_id
    failure = await rpc_failure(profile.GetCustomer(request, metadata=other_staff.auth("support")))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    failure = await rpc_failure(profile.GetCustomer(request, metadata=staff.auth("marketer")))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED


async def test_the_deadline_reaches_the_service(gateway, staff):
    stub = segments(gateway)
    failure = await rpc_failure(
        stub.ListSegments(seg_api.ListSegmentsRequest(), metadata=staff.auth("analyst"), timeout=0.000_001)
    )
    assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize(
    ("service", "method", "streaming"),
    [m for m in METHODS if m[1] in {"CreateCampaign", "ListSegments", "ExportSegmentMembers", "GetCustomer"}],
)
async def test_garbage_bytes_are_the_callers_mistake(gateway, staff, service, method, streaming):
    before = len(await audit_records(gateway, staff))
    for body in (os.urandom(64), b"\xff" * 16, b"\x0a\x05abc"):
        code = await raw_code(gateway, f"/{service}/{method}", streaming, body, staff.auth("admin"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (body, code)
    assert len(await audit_records(gateway, staff)) == before


async def test_the_admin_api_over_json_http(gateway, staff):
    port = gateway.server.resources.http_port
    path = "/loyalty.segmentation.v1.SegmentationService/CreateSegment"
    body = {
        "idempotencyKey": uuid.uuid4().hex,
        "segment": {"displayName": f"json {uuid.uuid4().hex[:6]}", "type": "SEGMENT_TYPE_STATIC"},
    }
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        created = await http.post(
            path, json=body, headers={"authorization": f"Bearer {staff.tokens['marketer']}"}
        )
        assert created.status_code == 200, created.text
        segment_id = created.json()["segment"]["segmentId"]
        got = await http.post(
            "/loyalty.segmentation.v1.SegmentationService/GetSegment",
            json={"segmentId": segment_id},
            headers={"authorization": f"Bearer {staff.tokens['analyst']}"},
        )
        assert got.status_code == 200 and got.json()["segment"]["segmentId"] == segment_id
        denied = await http.post(
            path, json=body, headers={"authorization": f"Bearer {staff.tokens['support']}"}
        )
        assert denied.status_code == 403 and denied.json()["code"] == "permission_denied"
        internal = await http.post(
            "/loyalty.promotion.v1.PromotionService/EvaluateBasket",
            json={},
            headers={"authorization": f"Bearer {staff.tokens['admin']}"},
        )
        assert internal.status_code == 501
        document = (await http.get("/openapi.json")).json()
    assert path in document["paths"]
    assert "/loyalty.promotion.v1.PromotionService/EvaluateBasket" not in document["paths"]
    assert any(segment_id in r.resource for r in await audit_records(gateway, staff))
