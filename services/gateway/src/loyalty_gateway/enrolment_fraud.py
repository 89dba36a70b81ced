"""Fraud judges an enrolment before profile creates the customer: sign-up farms (many enrolments from
one device, IP or card within a window) and blocklisted devices, IP ranges or e-mail domains.

Profile assigns the customer id only as it creates the customer, so fraud is told the enrolment's own
id (from the caller's idempotency key) in its place: the same on every retry, so a retried enrolment
is one assessment and is counted once.

A DECLINE refuses the enrolment (PERMISSION_DENIED, FRAUD_DECLINED; fraud's own reasons stay
internal) and nothing is created. A REVIEW lets it through: no review queue for sign-ups is built, so
nobody would ever release an enrolment held for one. A degraded answer follows the tenant's policy for
enrolments, as a checkout's does (fraud_policy). Fraud not answering is UNAVAILABLE to the caller, as
for a checkout: nothing is created and the enrolment can be retried with the same key."""

from loyalty.fraud.v1 import assessment_pb2, fraud_service_pb2 as fraud_api
from loyalty_gateway.downstream import Downstream, call
from loyalty_gateway.fraud_policy import effective_decision
from loyalty_gateway.signals import enrolment_signals
from loyalty_runtime.errors import PermissionDenied, Reason


async def assess_enrolment(
    downstream: Downstream, secret: bytes, tenant: str, key: str, caller, request
) -> None:
    """`key`: the enrolment's id, the same for every retry of it."""
    assessed = await call(
        "fraud",
        downstream.fraud.AssessEnrolment,
        fraud_api.AssessEnrolmentRequest(
            idempotency_key=key,
            customer_id=f"enrolment:{key}",
            signals=enrolment_signals(secret, tenant, caller, request.signals, request.identifiers),
        ),
    )
    if effective_decision(assessed.assessment) == assessment_pb2.DECISION_DECLINE:
        raise PermissionDenied(Reason.FRAUD_DECLINED, "the enrolment was declined")
