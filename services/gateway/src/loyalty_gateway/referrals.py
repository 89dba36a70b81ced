"""A referral code given at enrolment: promotion checks the code (whose it is, the programme's cap per
referrer and period), fraud judges the referral (the referrer's own account, a shared phone, e-mail,
device or card, many referees from one device), and only then does promotion accept it, granting the
referee reward; the referee's first qualifying purchase later converts it for the referrer's reward.

Three calls, in this order, because fraud needs the referrer that only promotion knows, and an
acceptance must not happen before fraud's answer. Enrolment is not a till's hot path. Fraud's reasons
stay internal: a refused referral is FRAUD_DECLINED to the caller. A REVIEW refuses too, for now: no
one would release a referral reward when the case is approved (noted in issue 11)."""

from dataclasses import dataclass

from loyalty.common.v1 import customer_pb2, errors_pb2
from loyalty.fraud.v1 import assessment_pb2, fraud_service_pb2 as fraud_api
from loyalty.profile.v1 import profile_service_pb2 as profile_api
from loyalty.promotion.v1 import promotion_service_pb2 as promotion_api
from loyalty_gateway.downstream import Downstream, call
from loyalty_gateway.fraud_policy import effective_decision
from loyalty_gateway.signals import enrolment_signals, keyed_hash


@dataclass(frozen=True)
class Referred:
    accepted: bool
    reason: int = 0


class Referrals:
    def __init__(self, downstream: Downstream, secret: bytes) -> None:
        self.downstream = downstream
        self.secret = secret

    async def accept(self, tenant: str, key: str, code: str, referee, caller, signals) -> Referred:
        """`referee`: the enrolled customer as profile answered (its identifiers normalised)."""
        promotion = self.downstream.promotion
        checked = await call(
            "promotion",
            promotion.AcceptReferral,
            promotion_api.AcceptReferralRequest(
                idempotency_key=key, code=code, referee_customer_id=referee.customer_id, validate_only=True
            ),
        )
        if not checked.accepted:
            return Referred(False, checked.reason)
        referrer = await call(
            "profile",
            self.downstream.profile.GetCustomer,
            profile_api.GetCustomerRequest(customer_id=checked.referrer_customer_id),
        )
        assessed = await call(
            "fraud",
            self.downstream.fraud.AssessReferral,
            fraud_api.AssessReferralRequest(
                idempotency_key=key,
                referrer_customer_id=checked.referrer_customer_id,
                referee_customer_id=referee.customer_id,
                referrer=self._fingerprints(tenant, referrer.customer.identifiers),
                referee=self._fingerprints(tenant, referee.identifiers, signals),
                signals=enrolment_signals(self.secret, tenant, caller, signals, referee.identifiers),
            ),
        )
        if effective_decision(assessed.assessment) != assessment_pb2.DECISION_ALLOW:
            return Referred(False, errors_pb2.ERROR_REASON_FRAUD_DECLINED)
        accepted = await call(
            "promotion",
            promotion.AcceptReferral,
            promotion_api.AcceptReferralRequest(
                idempotency_key=key, code=code, referee_customer_id=referee.customer_id
            ),
        )
        return Referred(accepted.accepted, accepted.reason)

    def _hash(self, tenant: str, value: str) -> str:
        return keyed_hash(self.secret, tenant, value)

    def _fingerprints(self, tenant: str, identifiers, signals=None) -> assessment_pb2.PartyFingerprints:
        found = assessment_pb2.PartyFingerprints()
        for identifier in identifiers:
            if identifier.type == customer_pb2.IDENTIFIER_TYPE_PHONE:
                found.phone_hash = self._hash(tenant, identifier.value)
            elif identifier.type == customer_pb2.IDENTIFIER_TYPE_EMAIL:
                found.email_hash = self._hash(tenant, identifier.value.lower())
        if signals is not None and signals.device_id:
            found.device_hashes.append(self._hash(tenant, signals.device_id))
        if signals is not None and signals.card_fingerprint:
            found.card_hashes.append(self._hash(tenant, signals.card_fingerprint))
        return found
