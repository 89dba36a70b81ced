"""The admin API's table (domain/admin_api.py) against the roles' policy, and what an audit record
takes from a forwarded change: ids, never values."""

from loyalty.segmentation.v1 import segment_pb2, segmentation_service_pb2 as seg_api
from loyalty_gateway.domain import admin_api
from loyalty_gateway.domain.credentials import ADMIN, role_scope
from loyalty_gateway.proxy import SERVICES

READS = ("Get", "List", "Export", "Estimate", "Simulate", "Render", "Search", "Lookup")
MARKETING = {admin_api.PROMOTION, admin_api.SEGMENTATION, admin_api.NOTIFICATION}


def allowed(rule: admin_api.Rule, role: str) -> bool:
    return admin_api.permitted(rule, frozenset({role_scope(role)}))


def rules():
    for service, methods in admin_api.TABLE.items():
        for method, rule in methods.items():
            yield service, method, rule


def test_every_method_in_the_table_exists_and_streams_only_reads():
    by_name = {s.full_name: s for s in SERVICES}
    assert set(by_name) == set(admin_api.TABLE)
    for service, method, rule in rules():
        descriptor = by_name[service].methods_by_name[method]
        assert not (descriptor.server_streaming and rule.mutates), method


def test_changes_are_exactly_the_methods_that_are_not_reads():
    for _, method, rule in rules():
        assert rule.mutates is not method.startswith(READS), method


def test_the_roles_policy():
    for service, method, rule in rules():
        assert allowed(rule, "admin") and ADMIN in rule.roles
        assert not allowed(rule, "auditor")
        if allowed(rule, "analyst"):
            assert not rule.mutates, method
        if allowed(rule, "marketer") and rule.mutates:
            assert service in MARKETING, method
        if allowed(rule, "support"):
            assert not rule.mutates and service in {
                admin_api.PROFILE,
                admin_api.LEDGER,
                admin_api.SEGMENTATION,
                admin_api.NOTIFICATION,
            }, method


def test_internal_methods_are_left_out():
    listed = {m for _, m, _ in rules()}
    for internal in (
        "EvaluateBasket",
        "ReserveRedemptions",
        "CommitRedemptions",
        "RollbackRedemptions",
        "HoldPoints",
        "CaptureHold",
        "SettleCheckout",
        "EarnPoints",
        "AssessCheckout",
        "RecordPurchase",
        "RecordActivity",
        "SendNotification",
        "EnrolCustomer",
    ):
        assert internal not in listed


def test_an_audit_record_names_ids_and_field_names_only():
    request = seg_api.AddSegmentMembersRequest(
        idempotency_key="k1", segment_id="s-1", customer_ids=["c-1", "c-2"]
    )
    assert admin_api.audit_resource(request, seg_api.AddSegmentMembersResponse(), 300) == "segment_id=s-1"
    assert admin_api.audit_fields(request) == ["customer_ids", "segment_id"]
    created = seg_api.CreateSegmentRequest(
        idempotency_key="k2", segment=segment_pb2.Segment(display_name="Ada's friends")
    )
    answer = seg_api.CreateSegmentResponse(
        segment=segment_pb2.Segment(segment_id="s-2", display_name="Ada's friends")
    )
    assert admin_api.audit_resource(created, answer, 300) == "segment.segment_id=s-2"
    assert admin_api.audit_fields(created) == ["segment"]


def test_ids_that_do_not_fit_are_left_out_whole():
    request = seg_api.DeleteSegmentRequest(segment_id="x" * 20)
    assert admin_api.audit_resource(request, seg_api.DeleteSegmentResponse(), 10) == ""
    assert admin_api.audit_resource(request, seg_api.DeleteSegmentResponse(), 31) == "segment_id=" + "x" * 20
