"""The gateway's reading of fraud's answer: the decision, or the tenant's degraded policy when stricter."""

import pytest

from loyalty.fraud.v1 import assessment_pb2 as apb
from loyalty_gateway.fraud_policy import effective_decision

UNSET, ALLOW, REVIEW, DECLINE = (
    apb.DECISION_UNSPECIFIED,
    apb.DECISION_ALLOW,
    apb.DECISION_REVIEW,
    apb.DECISION_DECLINE,
)


@pytest.mark.parametrize(
    ("decision", "degraded", "policy", "expected"),
    [
        (ALLOW, False, DECLINE, ALLOW),  # a policy applies only to a degraded answer
        (UNSET, False, UNSET, ALLOW),
        (ALLOW, True, UNSET, ALLOW),  # the default policy: go ahead
        (ALLOW, True, REVIEW, REVIEW),
        (ALLOW, True, DECLINE, DECLINE),
        (REVIEW, True, ALLOW, REVIEW),  # the rules evaluated still count
        (DECLINE, True, REVIEW, DECLINE),
    ],
)
def test_the_stricter_of_the_decision_and_the_degraded_policy(decision, degraded, policy, expected):
    assessment = apb.Assessment(decision=decision, degraded=degraded, degraded_policy=policy)
    assert effective_decision(assessment) == expected
