"""What the gateway does with fraud's answer. A degraded answer (fraud could not reach its counters)
reflects only the rules that need none; the tenant's policy for the operation (FraudSettings
degraded_*_decision, carried as `degraded_policy`) then says what to do, and the stricter of the two
applies. The policy's default is ALLOW, so a Redis blip never floods the review queue."""

from loyalty.fraud.v1 import assessment_pb2

SEVERITY = {
    assessment_pb2.DECISION_UNSPECIFIED: 0,
    assessment_pb2.DECISION_ALLOW: 0,
    assessment_pb2.DECISION_REVIEW: 1,
    assessment_pb2.DECISION_DECLINE: 2,
}


def effective_decision(assessment: assessment_pb2.Assessment) -> int:
    """ALLOW, REVIEW or DECLINE (an unspecified decision counts as ALLOW)."""
    decision = assessment.decision or assessment_pb2.DECISION_ALLOW
    if assessment.degraded and SEVERITY[assessment.degraded_policy] > SEVERITY[decision]:
        return assessment.degraded_policy
    return decision
