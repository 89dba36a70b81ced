"""Rules, settings, blocklists and review cases through the admin RPCs, and bad input refused with
the offending field while nothing is recorded."""

import grpc
import pytest

from loyalty.common.v1 import basket_pb2
from loyalty.fraud.v1 import (
    assessment_pb2 as apb,
    blocklist_pb2 as bpb,
    fraud_service_pb2 as api,
    review_pb2,
    rule_pb2 as rpb,
)
from tests.conftest import rpc_failure
from tests.service.fraud.helpers import checkout, earn, hashed, key, redemption, velocity

ALLOW, REVIEW, DECLINE = apb.DECISION_ALLOW, apb.DECISION_REVIEW, apb.DECISION_DECLINE


async def block(tenant, type_, value, **fields) -> bpb.BlocklistEntry:
    request = api.CreateBlocklistEntryRequest(
        idempotency_key=key(), entry=bpb.BlocklistEntry(type=type_, value=value, **fields)
    )
    return (await tenant.CreateBlocklistEntry(request)).entry


# --- rules ---


async def test_a_rule_is_created_read_listed_updated_and_deleted(tenant, other_tenant):
    rule = await tenant.rule(velocity(rpb.VELOCITY_KEY_DEVICE, max_count=5))
    assert rule.rule_id and rule.etag and rule.state == rpb.RULE_STATE_ENABLED
    assert (await tenant.GetRule(api.GetRuleRequest(rule_id=rule.rule_id))).rule == rule
    failure = await rpc_failure(other_tenant.GetRule(api.GetRuleRequest(rule_id=rule.rule_id)))
    assert failure.reason == "RULE_NOT_FOUND"

    update = rpb.Rule(rule_id=rule.rule_id, state=rpb.RULE_STATE_DISABLED, etag=rule.etag)
    updated = (
        await tenant.UpdateRule(
            api.UpdateRuleRequest(idempotency_key=key(), rule=update, update_mask={"paths": ["state"]})
        )
    ).rule
    assert updated.state == rpb.RULE_STATE_DISABLED and updated.velocity == rule.velocity
    stale = await rpc_failure(
        tenant.UpdateRule(
            api.UpdateRuleRequest(idempotency_key=key(), rule=update, update_mask={"paths": ["state"]})
        )
    )
    assert stale.code == grpc.StatusCode.ABORTED
    listed = await tenant.ListRules(api.ListRulesRequest(state=rpb.RULE_STATE_DISABLED))
    assert [r.rule_id for r in listed.rules] == [rule.rule_id]
    await tenant.DeleteRule(api.DeleteRuleRequest(idempotency_key=key(), rule_id=rule.rule_id))
    assert list((await tenant.ListRules(api.ListRulesRequest())).rules) == []


async def test_a_disabled_rule_takes_no_part(tenant):
    rule = await tenant.rule(velocity(rpb.VELOCITY_KEY_CUSTOMER, max_count=0))
    assert (await tenant.checkout()).decision == DECLINE
    await tenant.UpdateRule(
        api.UpdateRuleRequest(
            idempotency_key=key(),
            rule=rpb.Rule(rule_id=rule.rule_id, state=rpb.RULE_STATE_DISABLED),
            update_mask={"paths": ["state"]},
        )
    )
    assert (await tenant.checkout()).decision == ALLOW


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (rpb.Rule(display_name="no kind", score=10), "rule.velocity"),
        (velocity(rpb.VELOCITY_KEY_CARD, max_count=1, score=1001), "rule.score"),
        (velocity(rpb.VELOCITY_KEY_CARD, seconds=0, max_count=1, score=1), "rule.velocity.window"),
        (velocity(rpb.VELOCITY_KEY_CARD, score=1), "rule.velocity.max_count"),
        (velocity(rpb.VELOCITY_KEY_UNSPECIFIED, max_count=1, score=1), "rule.velocity.key"),
        (velocity(rpb.VELOCITY_KEY_CARD, max_count=1, action=apb.DECISION_ALLOW), "rule.action"),
        (
            rpb.Rule(
                threshold=rpb.ThresholdRule(metric=rpb.THRESHOLD_METRIC_BASKET_TOTAL, max_value=5), score=5
            ),
            "rule.threshold.max_amount",
        ),
    ],
)
async def test_an_invalid_rule_is_refused_naming_the_field(tenant, rule, field):
    failure = await rpc_failure(tenant.CreateRule(api.CreateRuleRequest(idempotency_key=key(), rule=rule)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == [field]
    assert list((await tenant.ListRules(api.ListRulesRequest())).rules) == []


async def test_settings_are_validated(tenant):
    failure = await rpc_failure(
        tenant.UpdateFraudSettings(
            api.UpdateFraudSettingsRequest(
                idempotency_key=key(),
                settings=rpb.FraudSettings(review_threshold=900, decline_threshold=800),
                update_mask={"paths": ["review_threshold"]},
            )
        )
    )
    assert failure.fields == ["settings.decline_threshold"]
    settings = (await tenant.GetFraudSettings(api.GetFraudSettingsRequest())).settings
    assert (settings.review_threshold, settings.decline_threshold) == (500, 800)


# --- blocklists ---


@pytest.mark.parametrize(
    ("type_", "value", "signals"),
    [
        (bpb.BLOCKLIST_ENTRY_TYPE_CARD, hashed("card"), apb.RiskSignals(card_hash=hashed("card"))),
        (bpb.BLOCKLIST_ENTRY_TYPE_DEVICE, hashed("dev"), apb.RiskSignals(device_hash=hashed("dev"))),
        (bpb.BLOCKLIST_ENTRY_TYPE_IP, hashed("ip"), apb.RiskSignals(ip_hash=hashed("ip"))),
        (bpb.BLOCKLIST_ENTRY_TYPE_EMAIL_DOMAIN, "spam.example", apb.RiskSignals(email_domain="spam.example")),
        (bpb.BLOCKLIST_ENTRY_TYPE_IP_RANGE, "203.0.113.0/24", apb.RiskSignals(ip_address="203.0.113.255")),
        (bpb.BLOCKLIST_ENTRY_TYPE_IP_RANGE, "2001:db8::/32", apb.RiskSignals(ip_address="2001:db8:ffff::1")),
    ],
)
async def test_a_blocklisted_value_declines(tenant, type_, value, signals):
    entry = await block(tenant, type_, value)
    assessment = await tenant.earn(10, signals=signals)
    assert assessment.decision == DECLINE
    assert assessment.reasons[0].blocklist_entry_id == entry.entry_id
    assert assessment.reasons[0].reason == 402  # BLOCKLISTED
    assert (await tenant.earn(10)).decision == ALLOW


async def test_cidr_edges(tenant):
    await block(tenant, bpb.BLOCKLIST_ENTRY_TYPE_IP_RANGE, "198.51.100.0/25")
    decisions = {}
    for ip in ("198.51.100.0", "198.51.100.127", "198.51.100.128", "198.51.99.255", "::ffff:198.51.100.1"):
        decisions[ip] = (await tenant.earn(1, signals=apb.RiskSignals(ip_address=ip))).decision
    assert decisions == {
        "198.51.100.0": DECLINE,
        "198.51.100.127": DECLINE,
        "198.51.100.128": ALLOW,
        "198.51.99.255": ALLOW,
        "::ffff:198.51.100.1": ALLOW,  # an IPv6 address never matches an IPv4 range
    }


async def test_blocking_twice_returns_the_entry_and_deleting_unblocks(tenant, fraud):
    first = await block(tenant, bpb.BLOCKLIST_ENTRY_TYPE_CUSTOMER, "cust-9")
    second = await block(tenant, bpb.BLOCKLIST_ENTRY_TYPE_CUSTOMER, "cust-9")
    assert second.entry_id == first.entry_id
    assert (await tenant.earn(1, customer="cust-9")).decision == DECLINE
    await tenant.DeleteBlocklistEntry(
        api.DeleteBlocklistEntryRequest(idempotency_key=key(), entry_id=first.entry_id)
    )
    assert (await tenant.earn(1, customer="cust-9")).decision == ALLOW
    expiring = await block(
        tenant,
        bpb.BLOCKLIST_ENTRY_TYPE_CUSTOMER,
        "cust-8",
        expire_time={"seconds": int(fraud.clock.now.timestamp()) + 60},
    )
    assert (await tenant.earn(1, customer="cust-8")).decision == DECLINE
    fraud.clock.advance(seconds=60)
    assert (await tenant.earn(1, customer="cust-8")).decision == ALLOW
    listed = await tenant.ListBlocklistEntries(api.ListBlocklistEntriesRequest(show_expired=True))
    assert [e.entry_id for e in listed.entries] == [expiring.entry_id]


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (bpb.BLOCKLIST_ENTRY_TYPE_IP_RANGE, "10.0.0.1/8"),
        (bpb.BLOCKLIST_ENTRY_TYPE_IP_RANGE, "10.0.0.0/33"),
        (bpb.BLOCKLIST_ENTRY_TYPE_IP_RANGE, "not-an-ip"),
        (bpb.BLOCKLIST_ENTRY_TYPE_CARD, "4111111111111111"),
        (bpb.BLOCKLIST_ENTRY_TYPE_EMAIL_DOMAIN, "Spam.Example"),
        (bpb.BLOCKLIST_ENTRY_TYPE_DEVICE, ""),
    ],
)
async def test_a_malformed_blocklist_value_is_refused(tenant, type_, value):
    failure = await rpc_failure(
        tenant.CreateBlocklistEntry(
            api.CreateBlocklistEntryRequest(
                idempotency_key=key(), entry=bpb.BlocklistEntry(type=type_, value=value)
            )
        )
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["entry.value"])
    assert list((await tenant.ListBlocklistEntries(api.ListBlocklistEntriesRequest())).entries) == []


# --- review cases ---


async def test_a_review_opens_a_case_resolved_once_and_audited(tenant, fraud_settings):
    await tenant.rule(velocity(rpb.VELOCITY_KEY_CUSTOMER, max_count=0, action=REVIEW))
    assessment = await tenant.checkout(customer="suspect")
    assert assessment.decision == REVIEW and assessment.review_case_id
    open_cases = await tenant.ListReviewCases(
        api.ListReviewCasesRequest(state=review_pb2.REVIEW_CASE_STATE_OPEN)
    )
    assert [c.review_case_id for c in open_cases.review_cases] == [assessment.review_case_id]
    assert open_cases.review_cases[0].assessment == assessment
    assign = api.AssignReviewCaseRequest(
        idempotency_key=key(), review_case_id=assessment.review_case_id, assignee="ana"
    )
    assigned = await tenant.AssignReviewCase(assign)
    assert assigned.review_case.assignee == "ana" and await tenant.AssignReviewCase(assign) == assigned
    mine = await tenant.ListReviewCases(api.ListReviewCasesRequest(assignee="ana"))
    others = await tenant.ListReviewCases(api.ListReviewCasesRequest(assignee="bo"))
    assert [c.review_case_id for c in mine.review_cases] == [assessment.review_case_id]
    assert not others.review_cases

    resolve = api.ResolveReviewCaseRequest(
        idempotency_key=key(),
        review_case_id=assessment.review_case_id,
        resolution=review_pb2.REVIEW_CASE_STATE_REJECTED,
        note="stolen card",
        blocklist_customer=True,
    )
    resolved = await tenant.ResolveReviewCase(resolve)
    assert resolved.review_case.state == review_pb2.REVIEW_CASE_STATE_REJECTED
    assert resolved.review_case.resolved_by == "reviewer-1"
    assert resolved.blocklist_entry.value == "suspect"
    assert await tenant.ResolveReviewCase(resolve) == resolved  # a retry replays
    other_way = await rpc_failure(
        tenant.ResolveReviewCase(
            api.ResolveReviewCaseRequest(
                idempotency_key=key(),
                review_case_id=assessment.review_case_id,
                resolution=review_pb2.REVIEW_CASE_STATE_APPROVED,
            )
        )
    )
    assert other_way.reason == "REVIEW_CASE_RESOLVED"
    reassigned = await rpc_failure(
        tenant.AssignReviewCase(
            api.AssignReviewCaseRequest(
                idempotency_key=key(), review_case_id=assessment.review_case_id, assignee="bo"
            )
        )
    )
    assert (reassigned.code, reassigned.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REVIEW_CASE_RESOLVED",
    )
    assert (await tenant.earn(1, customer="suspect")).decision == DECLINE  # blocklisted now

    import asyncpg

    from loyalty_runtime.db import asyncpg_dsn

    connection = await asyncpg.connect(asyncpg_dsn(fraud_settings.database_url))
    try:
        audit = await connection.fetch(
            "SELECT action, principal, note FROM fraud.review_case_audit WHERE tenant_id = $1 AND review_case_id = $2"
            " ORDER BY seq",
            tenant.tenant,
            assessment.review_case_id,
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("DELETE FROM fraud.review_case_audit")
    finally:
        await connection.close()
    assert [tuple(row) for row in audit] == [
        ("open", "reviewer-1", ""),
        ("assign", "reviewer-1", "ana"),
        ("rejected", "reviewer-1", "stolen card"),
    ]


async def test_another_tenants_case_looks_unknown(tenant, other_tenant):
    await tenant.rule(velocity(rpb.VELOCITY_KEY_CUSTOMER, max_count=0, action=REVIEW))
    assessment = await tenant.checkout()
    failure = await rpc_failure(
        other_tenant.GetReviewCase(api.GetReviewCaseRequest(review_case_id=assessment.review_case_id))
    )
    assert failure.reason == "REVIEW_CASE_NOT_FOUND"


# --- bad input ---


@pytest.mark.parametrize(
    ("call", "request_", "field"),
    [
        ("AssessCheckout", checkout(terminal=""), "signals.terminal_id"),
        ("AssessCheckout", checkout(checkout_id=""), "checkout_id"),
        (
            "AssessCheckout",
            checkout(signals=apb.RiskSignals(terminal_id="t", ip_address="999.1.1.1")),
            "signals.ip_address",
        ),
        (
            "AssessCheckout",
            checkout(signals=apb.RiskSignals(terminal_id="t", device_hash="DEVICE-1")),
            "signals.device_hash",
        ),
        ("AssessCheckout", checkout(points_to_burn=-1), "points_to_burn"),
        ("AssessRedemption", redemption("C", terminal=""), "signals.terminal_id"),
        ("AssessRedemption", redemption(""), "code"),
        ("AssessEarn", earn(5, source=api.EARN_SOURCE_UNSPECIFIED), "source"),
        ("AssessEarn", earn(5, signals=apb.RiskSignals(card_hash="ab")), "signals.card_hash"),
        (
            "AssessEarn",
            earn(5, signals=apb.RiskSignals(channel=basket_pb2.CHANNEL_STORE)),
            "signals.terminal_id",
        ),
        ("AssessEarn", earn(5, source=77), "source"),
    ],
)
async def test_bad_input_names_the_field_and_records_nothing(tenant, call, request_, field):
    failure = await rpc_failure(getattr(tenant, call)(request_))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    assert list((await tenant.ListAssessments(api.ListAssessmentsRequest())).assessments) == []
