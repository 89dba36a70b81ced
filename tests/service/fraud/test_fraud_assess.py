"""Assessments end to end: velocity at its limit and one above, windows sliding with the server's
clock, thresholds, idempotent retries, dry runs, recording and listing, and 64 concurrent calls."""

import asyncio

from loyalty.fraud.v1 import assessment_pb2 as apb, fraud_service_pb2 as api, rule_pb2 as rpb
from tests.conftest import rpc_failure
from tests.service.fraud.helpers import checkout, earn, eur, key, redemption, velocity

ALLOW, REVIEW, DECLINE = apb.DECISION_ALLOW, apb.DECISION_REVIEW, apb.DECISION_DECLINE


async def test_a_clean_checkout_is_allowed_with_no_reasons(tenant):
    assessment = await tenant.checkout()
    assert assessment.decision == ALLOW
    assert assessment.risk_score == 0
    assert list(assessment.reasons) == []
    assert assessment.assessment_id


async def test_velocity_fires_one_above_its_limit_and_not_at_it(tenant):
    rule = await tenant.rule(velocity(rpb.VELOCITY_KEY_TERMINAL, max_count=3))
    decisions = [(await tenant.checkout(terminal="till-9")).decision for _ in range(4)]
    assert decisions == [ALLOW, ALLOW, ALLOW, DECLINE]
    declined = await tenant.checkout(terminal="till-9")
    (reason,) = declined.reasons
    assert reason.rule_id == rule.rule_id
    assert reason.reason == 401  # VELOCITY_LIMIT
    assert "limit 3" in reason.detail
    # Another terminal has its own window.
    assert (await tenant.checkout(terminal="till-8")).decision == ALLOW


async def test_the_window_slides_with_the_clock(tenant, fraud):
    await tenant.rule(velocity(rpb.VELOCITY_KEY_CUSTOMER, seconds=60, max_count=2))
    assert (await tenant.checkout(customer="w")).decision == ALLOW
    fraud.clock.advance(seconds=30)
    assert (await tenant.checkout(customer="w")).decision == ALLOW
    assert (await tenant.checkout(customer="w")).decision == DECLINE  # three within 60 s
    fraud.clock.advance(seconds=30)  # the first is exactly 60 s old: out of the window
    assert (await tenant.checkout(customer="w")).decision == DECLINE  # 30 s-old two + declined one + this
    fraud.clock.advance(seconds=61)
    assert (await tenant.checkout(customer="w")).decision == ALLOW


async def test_points_velocity_counts_points_not_calls(tenant):
    await tenant.rule(
        rpb.Rule(
            display_name="points per customer",
            velocity=rpb.VelocityRule(
                key=rpb.VELOCITY_KEY_CUSTOMER, window={"seconds": 3600}, max_points=1000
            ),
            action=REVIEW,
        )
    )
    assert (await tenant.earn(600, customer="p")).decision == ALLOW
    assert (await tenant.earn(400, customer="p")).decision == ALLOW  # exactly 1000
    assert (await tenant.earn(1, customer="p")).decision == REVIEW


async def test_thresholds_fire_above_their_limit(tenant):
    await tenant.rule(
        rpb.Rule(
            display_name="big discount share",
            threshold=rpb.ThresholdRule(metric=rpb.THRESHOLD_METRIC_DISCOUNT_SHARE_BPS, max_value=8000),
            score=300,
        )
    )
    await tenant.rule(
        rpb.Rule(
            display_name="huge earn",
            threshold=rpb.ThresholdRule(metric=rpb.THRESHOLD_METRIC_POINTS_EARNED, max_value=10_000),
            action=REVIEW,
            applies_to=[apb.ASSESSMENT_KIND_EARN],
        )
    )
    at_share = await tenant.checkout(subtotal=10_000, discount_total=eur(8000))
    assert (at_share.decision, at_share.risk_score) == (ALLOW, 0)
    above_share = await tenant.checkout(subtotal=10_000, discount_total=eur(8001))
    assert (above_share.decision, above_share.risk_score) == (ALLOW, 300)
    assert (await tenant.earn(10_000)).decision == ALLOW
    assert (await tenant.earn(10_001)).decision == REVIEW


async def test_the_score_reaches_the_tenants_thresholds(tenant):
    await tenant.UpdateFraudSettings(
        api.UpdateFraudSettingsRequest(
            idempotency_key=key(),
            settings=rpb.FraudSettings(review_threshold=200, decline_threshold=400),
            update_mask={"paths": ["review_threshold", "decline_threshold"]},
        )
    )
    for _ in range(2):
        await tenant.rule(
            rpb.Rule(
                display_name="many codes",
                threshold=rpb.ThresholdRule(metric=rpb.THRESHOLD_METRIC_CODE_COUNT, max_value=1),
                score=200,
            )
        )
    assert (await tenant.checkout(codes=["A"])).decision == ALLOW
    declined = await tenant.checkout(codes=["A", "B"])
    assert (declined.decision, declined.risk_score) == (DECLINE, 400)
    assert declined.reasons[0].reason == 404  # RISK_SCORE


async def test_shadow_rules_report_and_change_nothing(tenant):
    await tenant.rule(velocity(rpb.VELOCITY_KEY_CUSTOMER, max_count=0, state=rpb.RULE_STATE_SHADOW))
    assessment = await tenant.checkout()
    assert assessment.decision == ALLOW
    assert assessment.reasons[0].detail.startswith("shadow:")


async def test_a_retry_returns_the_first_decision_and_counts_once(tenant):
    await tenant.rule(velocity(rpb.VELOCITY_KEY_CUSTOMER, max_count=1))
    request = checkout(customer="r")
    first = await tenant.checkout(request)
    again = await tenant.checkout(request)
    assert again == first
    assert (await tenant.checkout(customer="r")).decision == DECLINE  # the retry was not counted
    changed = checkout(customer="r", checkout_id=request.checkout_id, points_to_earn=5)
    failure = await rpc_failure(tenant.AssessCheckout(changed))
    assert failure.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_a_dry_run_counts_and_records_nothing(tenant):
    await tenant.rule(velocity(rpb.VELOCITY_KEY_CUSTOMER, max_count=1))
    for _ in range(3):
        dry = await tenant.checkout(customer="d", dry_run=True)
        assert dry.dry_run and dry.decision == ALLOW and not dry.assessment_id
    assert (await tenant.checkout(customer="d")).decision == ALLOW
    listed = await tenant.ListAssessments(api.ListAssessmentsRequest(customer_id="d"))
    assert len(listed.assessments) == 1


async def test_assessments_are_listed_newest_first_in_pages_per_tenant(tenant, other_tenant, fraud):
    ids = []
    for _ in range(5):
        fraud.clock.advance(seconds=1)
        ids.append((await tenant.earn(10, customer="l")).assessment_id)
    await other_tenant.earn(10, customer="l")
    seen, token = [], ""
    while True:
        page = await tenant.ListAssessments(
            api.ListAssessmentsRequest(customer_id="l", page_size=2, page_token=token)
        )
        seen += [a.assessment_id for a in page.assessments]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    got = await tenant.GetAssessment(api.GetAssessmentRequest(assessment_id=ids[0]))
    assert got.assessment.assessment_id == ids[0]
    failure = await rpc_failure(other_tenant.GetAssessment(api.GetAssessmentRequest(assessment_id=ids[0])))
    assert failure.reason == "ASSESSMENT_NOT_FOUND"


async def test_64_concurrent_assessments_count_exactly(tenant, fraud_settings):
    limit = 40
    await tenant.rule(velocity(rpb.VELOCITY_KEY_CARD, max_count=limit))
    card = "ab" * 32
    requests = [redemption(f"CODE{i}", signals=apb.RiskSignals(card_hash=card)) for i in range(64)]
    answers = await asyncio.gather(*(tenant.AssessRedemption(r) for r in requests))
    decisions = [a.assessment.decision for a in answers]
    assert decisions.count(ALLOW) == limit
    assert decisions.count(DECLINE) == 64 - limit
    # Retries of all 64 at once change nothing.
    again = await asyncio.gather(*(tenant.AssessRedemption(r) for r in requests))
    assert [a.assessment.decision for a in again] == decisions


async def test_concurrent_calls_with_one_key_record_one_decision(tenant):
    request = earn(50, customer="same")
    answers = await asyncio.gather(*(tenant.AssessEarn(request) for _ in range(8)))
    assert len({a.assessment.assessment_id for a in answers}) == 1
    listed = await tenant.ListAssessments(api.ListAssessmentsRequest(customer_id="same"))
    assert len(listed.assessments) == 1


async def test_a_scripted_code_attack_from_one_terminal_is_locked_out(tenant, fraud):
    """1,000 random codes from one terminal within a minute: after the threshold every one is declined."""
    threshold = 20
    await tenant.rule(velocity(rpb.VELOCITY_KEY_TERMINAL, seconds=600, max_count=threshold))
    decisions = []
    for batch in range(20):  # 50 at a time: the server refuses more calls in flight than its limit
        fraud.clock.advance(milliseconds=2_500)
        codes = [f"GUESS-{batch}-{i}-{key()[:6]}" for i in range(50)]
        answers = await asyncio.gather(*(tenant.redeem(code, terminal="evil") for code in codes))
        decisions += [a.decision for a in answers]
    assert decisions.count(ALLOW) == threshold
    assert decisions[-900:] == [DECLINE] * 900
    # The cool-down: the lock lasts as long as the window; a legitimate terminal is unaffected.
    assert (await tenant.redeem("GOOD", terminal="honest")).decision == ALLOW
