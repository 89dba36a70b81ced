"""Pattern rules through the running service, on the history it keeps: points anomalies, refund abuse
and referral self-dealing, each at its limit and one above; windows sliding with the clock; another
tenant's history never counting; a declined action leaving no history; profile's customer.updated
arriving on its stream."""

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from loyalty.fraud.v1 import assessment_pb2 as apb, fraud_service_pb2 as api, rule_pb2 as rpb
from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.events import Envelope, RedisStreamsBroker
from tests.service.fraud.helpers import (
    checkout,
    earn,
    hashed,
    key,
    pattern,
    referral,
    referred,
    returned,
    returning,
    velocity,
)

ALLOW, REVIEW, DECLINE = apb.DECISION_ALLOW, apb.DECISION_REVIEW, apb.DECISION_DECLINE
P = rpb
DEVICE_A, DEVICE_B = hashed("device-a"), hashed("device-b")


def reasons(assessment) -> list[str]:
    return [r.detail for r in assessment.reasons if r.rule_id]


async def dry_earn(tenant, points: int, **fields) -> apb.Assessment:
    return (await tenant.AssessEarn(earn(points, dry_run=True, **fields))).assessment


# --- points anomalies -----------------------------------------------------------------------------


async def test_an_earn_far_above_the_customers_usual_fires_one_above_the_limit(tenant, other_tenant):
    for client in (tenant, other_tenant):
        await client.rule(pattern(P.PATTERN_KIND_EARN_ABOVE_CUSTOMER_USUAL, max_value=500, min_value=3))
    await tenant.earn(100)
    await tenant.earn(100)
    assert (await dry_earn(tenant, 100_000)).decision == ALLOW  # two earns: no "usual" yet
    await tenant.earn(100)
    assert (await dry_earn(tenant, 500)).decision == ALLOW  # five times the usual, not above it
    above = await dry_earn(tenant, 501)
    assert above.decision == REVIEW
    assert above.reasons[0].reason == 410  # POINTS_ANOMALY
    assert reasons(above) == [
        "earn of 501 points is 501 % of the customer's usual 100 over 3 earns (limit 500 %)"
    ]
    # Another tenant's customer of the same id has no history.
    assert (await dry_earn(other_tenant, 100_000)).decision == ALLOW


async def test_a_declined_earn_leaves_no_history(tenant):
    await tenant.rule(pattern(P.PATTERN_KIND_EARN_ABOVE_CUSTOMER_USUAL, max_value=200, min_value=3))
    blocker = await tenant.rule(velocity(rpb.VELOCITY_KEY_CUSTOMER, max_count=0))  # declines everything
    for _ in range(3):
        assert (await tenant.earn(10, customer="d")).decision == DECLINE
    await tenant.DeleteRule(api.DeleteRuleRequest(idempotency_key=key(), rule_id=blocker.rule_id))
    assert (await dry_earn(tenant, 10_000, customer="d")).decision == ALLOW


async def test_an_earn_far_above_the_stores_usual(tenant):
    await tenant.rule(pattern(P.PATTERN_KIND_EARN_ABOVE_STORE_USUAL, max_value=1000))
    for i in range(5):  # min_value 0: five earns make a usual
        await tenant.checkout(customer=f"regular-{i}", points_to_earn=100)
    at_limit = checkout(customer="newcomer", points_to_earn=1000, dry_run=True)
    assert (await tenant.AssessCheckout(at_limit)).assessment.decision == ALLOW
    above = (
        await tenant.AssessCheckout(checkout(customer="newcomer", points_to_earn=1001, dry_run=True))
    ).assessment
    assert above.decision == REVIEW and "the store's usual 100 over 5 earns" in reasons(above)[0]


async def test_a_burn_right_after_a_large_earn(tenant, fraud):
    await tenant.rule(pattern(P.PATTERN_KIND_BURN_AFTER_LARGE_EARN, max_value=1000, days=1))
    burn = {"customer": "farmer", "points_to_burn": 200, "dry_run": True}
    await tenant.earn(1000, customer="farmer")
    assert (await tenant.checkout(**burn)).decision == ALLOW  # not large
    fraud.clock.advance(minutes=30)
    await tenant.earn(1001, customer="farmer")
    fraud.clock.advance(minutes=5)
    fired = await tenant.checkout(**burn)
    assert fired.decision == REVIEW
    assert reasons(fired) == ["burn of 200 points 5 min after an earn of 1001 points (large: above 1000)"]
    fraud.clock.advance(days=1)
    assert (await tenant.checkout(**burn)).decision == ALLOW  # the window slid past the earn


async def _publish_update(fraud, tenant: str, customer: str, fields: list[str]) -> None:
    event = profile_events.CustomerUpdated(customer_id=customer, fields=fields)
    await RedisStreamsBroker(fraud.server.resources.redis).publish(
        "profile.events",
        [
            Envelope(
                event_id=f"profile.events:test-{key()}",
                event_type="customer.updated",
                tenant_id=tenant,
                key=customer,
                payload=event.SerializeToString(),
                occurred_at=datetime.now(UTC),
                trace_parent=None,
            )
        ],
    )


async def test_a_burn_from_a_new_device_right_after_an_account_change(tenant, fraud):
    await tenant.rule(
        pattern(P.PATTERN_KIND_BURN_NEW_DEVICE_AFTER_ACCOUNT_CHANGE, days=1, max_value=0, action=DECLINE)
    )

    def burn(device: str, dry_run: bool = True):
        signals = apb.RiskSignals(terminal_id="till-1", device_hash=device)
        return tenant.checkout(customer="victim", points_to_burn=300, signals=signals, dry_run=dry_run)

    await tenant.checkout(
        customer="victim", signals=apb.RiskSignals(terminal_id="till-1", device_hash=DEVICE_A)
    )
    assert (await burn(DEVICE_B)).decision == ALLOW  # a new device, but no account change
    await _publish_update(fraud, tenant.tenant, "victim", ["consents"])  # not an account change
    await _publish_update(fraud, tenant.tenant, "victim", ["email"])
    async with asyncio.timeout(15):
        while (taken := await burn(DEVICE_B)).decision != DECLINE:
            await asyncio.sleep(0.05)
    assert reasons(taken) == [
        "burn of 300 points from a device never seen for this customer, 0 min after a change of email"
    ]
    assert (await burn(DEVICE_A)).decision == ALLOW  # the customer's own device
    # A declined attempt does not make its device known.
    assert (await burn(DEVICE_B, dry_run=False)).decision == DECLINE
    assert (await burn(DEVICE_B)).decision == DECLINE
    fraud.clock.advance(days=1, seconds=1)
    assert (await burn(DEVICE_B)).decision == ALLOW


# --- refund abuse ---------------------------------------------------------------------------------


async def test_returns_above_a_share_of_purchases(tenant, fraud):
    await tenant.rule(pattern(P.PATTERN_KIND_RETURN_VALUE_SHARE, max_value=5000, days=30))
    bought = checkout(customer="c1", subtotal=10_000)
    await tenant.AssessCheckout(bought)
    assert (await returned(tenant, bought.checkout_id, 5000, dry_run=True)).decision == ALLOW
    above = await returned(tenant, bought.checkout_id, 5001, dry_run=True)
    assert above.decision == REVIEW and above.reasons[0].reason == 411  # REFUND_ABUSE
    assert reasons(above) == [
        "returns of 5001 against purchases of 10000 EUR in 30 days (50.01 %, limit 50.00 %)"
    ]
    assert (await returned(tenant, bought.checkout_id, 3000)).decision == ALLOW
    assert (await returned(tenant, bought.checkout_id, 2001, dry_run=True)).decision == REVIEW  # 5001 in all
    assert (await returned(tenant, "unknown", 1, customer="never-bought")).decision == REVIEW
    fraud.clock.advance(days=31)
    # The purchase and the first return left the window; a return with no purchase in it fires.
    assert "no purchases" in reasons(await returned(tenant, bought.checkout_id, 1, dry_run=True))[0]


async def test_a_return_after_the_points_it_earned_were_spent(tenant, fraud):
    rule = await tenant.rule(pattern(P.PATTERN_KIND_RETURN_AFTER_POINTS_SPENT, max_value=300, days=30))
    bought = checkout(customer="c1", points_to_earn=500)
    await tenant.AssessCheckout(bought)
    assert (await returned(tenant, bought.checkout_id, 100, dry_run=True)).decision == ALLOW
    fraud.clock.advance(minutes=1)
    await tenant.checkout(customer="c1", points_to_burn=300)
    assert (
        await returned(tenant, bought.checkout_id, 100, dry_run=True)
    ).decision == ALLOW  # 300: at the limit
    rule.pattern.max_value = 299
    await tenant.UpdateRule(
        api.UpdateRuleRequest(idempotency_key=key(), rule=rule, update_mask={"paths": ["pattern"]})
    )
    fired = await returned(tenant, bought.checkout_id, 100, dry_run=True)
    assert fired.decision == REVIEW  # the update applies at once (the cache dropped the old rules)
    assert reasons(fired) == [
        "return of a purchase that earned 500 points, 300 points burned since (limit 299)"
    ]
    # Another customer's return of that checkout id finds no purchase of theirs.
    assert (await returned(tenant, bought.checkout_id, 100, customer="c2", dry_run=True)).decision == ALLOW


# --- referral self-dealing ------------------------------------------------------------------------


async def test_referrer_and_referee_sharing_a_fingerprint(tenant):
    await tenant.rule(pattern(P.PATTERN_KIND_REFERRAL_SHARED_FINGERPRINT, max_value=0, action=DECLINE))
    phone = hashed("+15550000")
    shared = await referred(
        tenant,
        "r1",
        "e1",
        referrer=apb.PartyFingerprints(phone_hash=phone),
        referee=apb.PartyFingerprints(phone_hash=phone),
    )
    assert shared.decision == DECLINE and reasons(shared) == ["referrer and referee share a phone"]
    assert shared.reasons[0].reason == 412  # REFERRAL_SELF_DEALING
    apart = await referred(
        tenant,
        "r1",
        "e2",
        referrer=apb.PartyFingerprints(phone_hash=phone, card_hashes=[hashed("card-1")]),
        referee=apb.PartyFingerprints(phone_hash=hashed("+15551111"), card_hashes=[hashed("card-2")]),
    )
    assert apart.decision == ALLOW
    # Seen by fraud: the referrer paid from this device and card earlier.
    seen = apb.RiskSignals(terminal_id="till-1", device_hash=DEVICE_A, card_hash=hashed("card-9"))
    await tenant.checkout(customer="r2", signals=seen)
    later = await referred(
        tenant, "r2", "e3", signals=apb.RiskSignals(device_hash=DEVICE_A, card_hash=hashed("card-9"))
    )
    assert reasons(later) == ["referrer and referee share a device, payment card"]
    assert reasons(await referred(tenant, "r3", "r3")) == ["referrer and referee are the same customer"]


async def test_many_referees_from_one_device(tenant, fraud):
    await tenant.rule(pattern(P.PATTERN_KIND_REFERRAL_DEVICE_REFEREES, max_value=3, days=1))
    signals = apb.RiskSignals(device_hash=DEVICE_B)
    for i in range(3):
        assert (await referred(tenant, f"r{i}", f"e{i}", signals=signals)).decision == ALLOW
    assert (await referred(tenant, "r9", "e0", signals=signals)).decision == ALLOW  # e0 again: still three
    fourth = await referred(tenant, "r4", "e4", signals=signals)
    assert fourth.decision == REVIEW and reasons(fourth) == ["4 referees from one device in 24 h (limit 3)"]
    fraud.clock.advance(days=1)
    assert (await referred(tenant, "r5", "e5", signals=signals)).decision == ALLOW


# --- concurrency ----------------------------------------------------------------------------------


async def test_64_concurrent_earns_keep_exact_statistics(tenant, fraud_settings):
    await tenant.rule(pattern(P.PATTERN_KIND_EARN_ABOVE_STORE_USUAL, max_value=300))
    requests = [
        checkout(customer=f"c{i % 8}", points_to_earn=10 + i, signals=apb.RiskSignals(terminal_id="t"))
        for i in range(64)
    ]
    await asyncio.gather(*(tenant.AssessCheckout(r) for r in requests))
    connection = await asyncpg.connect(asyncpg_dsn(fraud_settings.database_url))
    try:
        stats = {
            (row["scope"], row["scope_id"]): (row["earns"], row["points"])
            for row in await connection.fetch(
                """SELECT scope, scope_id, sum(earns) AS earns, sum(points) AS points FROM fraud.earn_stats
                   WHERE tenant_id = $1 GROUP BY scope, scope_id""",
                tenant.tenant,
            )
        }
        store_rows = await connection.fetchval(
            "SELECT count(*) FROM fraud.earn_stats WHERE tenant_id = $1 AND scope = 'store'", tenant.tenant
        )
        facts = await connection.fetchval(
            "SELECT count(*) FROM fraud.activity WHERE tenant_id = $1 AND fact = 'earn'", tenant.tenant
        )
    finally:
        await connection.close()
    total = sum(10 + i for i in range(64))
    assert stats[("store", "s1")] == (64, total)
    assert 1 < store_rows <= 8  # the store's total is spread over its shards
    assert sum(stats[("customer", f"c{i}")][0] for i in range(8)) == 64 and facts == 64


async def test_64_concurrent_returns_count_exactly(tenant):
    limit = 10
    await tenant.rule(
        velocity(rpb.VELOCITY_KEY_CUSTOMER, max_count=limit, applies_to=[apb.ASSESSMENT_KIND_RETURN])
    )
    requests = [returning(f"k{i}", 100, customer="returner") for i in range(64)]
    answers = await asyncio.gather(*(tenant.AssessReturn(r) for r in requests))
    decisions = [a.assessment.decision for a in answers]
    assert (decisions.count(ALLOW), decisions.count(DECLINE)) == (limit, 64 - limit)
    # Earns are not returns: the rule does not count them.
    assert (await tenant.earn(5, customer="returner")).decision == ALLOW


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "request_", "field"),
    [
        ("AssessReturn", returning("", 100), "checkout_id"),
        ("AssessReturn", returning("x", 100, customer=""), "customer_id"),
        ("AssessReturn", returning("x", 100, idempotency_key=""), "idempotency_key"),
        (
            "AssessReturn",
            api.AssessReturnRequest(idempotency_key="k", customer_id="c", checkout_id="x"),
            "refund.currency_code",
        ),
        ("AssessReturn", returning("x", 100, points_to_reverse=-1), "points_to_reverse"),
        (
            "AssessReturn",
            returning("x", 100, signals=apb.RiskSignals(ip_address="1.2.3")),
            "signals.ip_address",
        ),
        ("AssessReferral", referral("r", ""), "referee_customer_id"),
        ("AssessReferral", referral("", "e"), "referrer_customer_id"),
        (
            "AssessReferral",
            referral("r", "e", referrer=apb.PartyFingerprints(phone_hash="+1555")),
            "referrer.phone_hash",
        ),
        (
            "AssessReferral",
            referral("r", "e", referee=apb.PartyFingerprints(device_hashes=["x"])),
            "referee.device_hashes",
        ),
        ("AssessReferral", referral("r", "e", points=-5), "points"),
    ],
)
async def test_bad_input_names_the_field_and_records_nothing(tenant, call, request_, field):
    from tests.conftest import rpc_failure

    failure = await rpc_failure(getattr(tenant, call)(request_))
    assert (failure.code.name, failure.fields) == ("INVALID_ARGUMENT", [field])
    assert list((await tenant.ListAssessments(api.ListAssessmentsRequest())).assessments) == []


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (pattern(P.PATTERN_KIND_UNSPECIFIED, max_value=1, days=1), "rule.pattern.kind"),
        (pattern(P.PATTERN_KIND_BURN_AFTER_LARGE_EARN, max_value=1), "rule.pattern.window"),
        (pattern(P.PATTERN_KIND_BURN_AFTER_LARGE_EARN, max_value=1, days=91), "rule.pattern.window"),
        (pattern(P.PATTERN_KIND_RETURN_VALUE_SHARE, max_value=0, days=1), "rule.pattern.max_value"),
        (pattern(P.PATTERN_KIND_EARN_ABOVE_CUSTOMER_USUAL, max_value=-1), "rule.pattern.max_value"),
        (
            pattern(P.PATTERN_KIND_EARN_ABOVE_CUSTOMER_USUAL, max_value=500, min_value=-1),
            "rule.pattern.min_value",
        ),
    ],
)
async def test_an_invalid_pattern_rule_is_refused_naming_the_field(tenant, rule, field):
    from tests.conftest import rpc_failure

    failure = await rpc_failure(tenant.CreateRule(api.CreateRuleRequest(idempotency_key=key(), rule=rule)))
    assert (failure.code.name, failure.fields) == ("INVALID_ARGUMENT", [field])
    assert list((await tenant.ListRules(api.ListRulesRequest())).rules) == []


# --- enrolments -----------------------------------------------------------------------------------


def enrolment(customer: str, **fields) -> api.AssessEnrolmentRequest:
    return api.AssessEnrolmentRequest(
        idempotency_key=fields.pop("idempotency_key", key()), customer_id=customer, **fields
    )


async def test_enrolments_from_one_device_are_counted_and_blocklists_apply(tenant, other_tenant):
    from loyalty.fraud.v1 import blocklist_pb2 as bpb
    from tests.conftest import rpc_failure

    await tenant.rule(
        velocity(rpb.VELOCITY_KEY_DEVICE, max_count=3, applies_to=[apb.ASSESSMENT_KIND_ENROLMENT])
    )
    farm = apb.RiskSignals(device_hash=DEVICE_A)
    answers = [
        (await tenant.AssessEnrolment(enrolment(f"new-{i}", signals=farm))).assessment for i in range(4)
    ]
    assert [a.decision for a in answers] == [ALLOW, ALLOW, ALLOW, DECLINE]
    assert answers[0].kind == apb.ASSESSMENT_KIND_ENROLMENT
    assert (await other_tenant.AssessEnrolment(enrolment("new-9", signals=farm))).assessment.decision == ALLOW
    await tenant.CreateBlocklistEntry(
        api.CreateBlocklistEntryRequest(
            idempotency_key=key(),
            entry=bpb.BlocklistEntry(type=bpb.BLOCKLIST_ENTRY_TYPE_EMAIL_DOMAIN, value="mailinator.com"),
        )
    )
    throwaway = apb.RiskSignals(email_domain="mailinator.com")
    assert (
        await tenant.AssessEnrolment(enrolment("new-5", signals=throwaway))
    ).assessment.decision == DECLINE
    failure = await rpc_failure(tenant.AssessEnrolment(enrolment("")))
    assert failure.fields == ["customer_id"]
    failure = await rpc_failure(
        tenant.AssessEnrolment(enrolment("x", signals=apb.RiskSignals(email_domain="Not A Domain")))
    )
    assert failure.fields == ["signals.email_domain"]
