"""Redis stopped (a TCP proxy in front of it cut, as the runtime's tests do): assessments answer with
the rules needing no counters, name the ones skipped, carry the tenant's policy; when Redis returns,
counting resumes without a restart."""

from datetime import UTC, datetime

import pytest

from loyalty.fraud.v1 import (
    assessment_pb2 as apb,
    fraud_service_pb2 as api,
    fraud_service_pb2_grpc,
    rule_pb2 as rpb,
)
from loyalty_fraud.service import DEFINITION
from loyalty_runtime.testing import StoppedClock, running_service
from tests.proxy import TcpProxy
from tests.service.fraud.helpers import Client, key, velocity

ALLOW, REVIEW, DECLINE = apb.DECISION_ALLOW, apb.DECISION_REVIEW, apb.DECISION_DECLINE


@pytest.fixture
async def proxied(fraud_settings):
    proxy = await TcpProxy.to(fraud_settings.redis_url).start()
    settings = fraud_settings.model_copy(update={"redis_url": proxy.url_for(fraud_settings.redis_url)})
    async with running_service(
        DEFINITION, settings, clock=StoppedClock(datetime(2030, 1, 31, 12, tzinfo=UTC))
    ) as service:
        service.stub = fraud_service_pb2_grpc.FraudServiceStub(service.channel)
        service.proxy = proxy
        yield service
    await proxy.close()


async def test_without_redis_the_answer_is_degraded_and_recovers(proxied):
    tenant = Client(proxied, f"t-{key()[:8]}")
    counted = await tenant.rule(velocity(rpb.VELOCITY_KEY_CUSTOMER, max_count=2))
    await tenant.rule(
        rpb.Rule(
            display_name="huge earn",
            threshold=rpb.ThresholdRule(metric=rpb.THRESHOLD_METRIC_POINTS_EARNED, max_value=1000),
            action=REVIEW,
        )
    )
    await tenant.UpdateFraudSettings(
        api.UpdateFraudSettingsRequest(
            idempotency_key=key(),
            settings=rpb.FraudSettings(degraded_earn_decision=REVIEW),
            update_mask={"paths": ["degraded_earn_decision"]},
        )
    )
    assert (await tenant.earn(10, customer="x")).degraded is False

    await proxied.proxy.cut()
    small = await tenant.earn(10, customer="x")
    assert (small.degraded, small.decision, list(small.skipped_rule_ids)) == (True, ALLOW, [counted.rule_id])
    assert small.degraded_policy == REVIEW
    large = await tenant.earn(5000, customer="x")  # the threshold needs no counter: still applies
    assert (large.degraded, large.decision) == (True, REVIEW)
    checkout = await tenant.checkout(customer="x")
    assert checkout.degraded and checkout.degraded_policy == ALLOW  # no policy set: ALLOW

    await proxied.proxy.restore()
    back = await tenant.earn(10, customer="x")
    assert (back.degraded, back.decision, list(back.skipped_rule_ids)) == (False, ALLOW, [])
    # What was assessed while Redis was away was not counted: one before the cut, `back`, then this third.
    assert (await tenant.earn(10, customer="x")).decision == DECLINE
