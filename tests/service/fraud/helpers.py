"""What the fraud service tests share: a tenant's client with builders for rules and requests."""

import hashlib
import uuid

from google.protobuf.duration_pb2 import Duration

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.fraud.v1 import assessment_pb2 as apb, fraud_service_pb2 as api, rule_pb2 as rpb


def key() -> str:
    return uuid.uuid4().hex


def hashed(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def eur(amount: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", amount_minor=amount)


def velocity(key_: int, *, seconds: int = 60, max_count: int | None = None, **fields) -> rpb.Rule:
    limit = {"max_count": max_count} if max_count is not None else {}
    return rpb.Rule(
        display_name="velocity",
        velocity=rpb.VelocityRule(key=key_, window=Duration(seconds=seconds), **limit),
        **fields,
    )


def checkout(customer: str = "c1", *, terminal: str = "till-1", subtotal: int = 10_000, **fields):
    signals = fields.pop("signals", apb.RiskSignals(terminal_id=terminal))
    return api.AssessCheckoutRequest(
        checkout_id=fields.pop("checkout_id", key()),
        customer_id=customer,
        basket=basket_pb2.Basket(
            currency_code="EUR", subtotal=eur(subtotal), store_id="s1", channel=basket_pb2.CHANNEL_STORE
        ),
        signals=signals,
        **fields,
    )


def redemption(code: str, *, terminal: str = "till-1", customer: str = "c1", **fields):
    return api.AssessRedemptionRequest(
        idempotency_key=fields.pop("idempotency_key", key()),
        customer_id=customer,
        code=code,
        discount=eur(fields.pop("discount", 500)),
        basket_total=eur(fields.pop("basket_total", 10_000)),
        signals=fields.pop(
            "signals", apb.RiskSignals(terminal_id=terminal, channel=basket_pb2.CHANNEL_STORE)
        ),
        **fields,
    )


def earn(points: int, *, customer: str = "c1", **fields):
    return api.AssessEarnRequest(
        idempotency_key=fields.pop("idempotency_key", key()),
        customer_id=customer,
        points=points,
        source=fields.pop("source", api.EARN_SOURCE_PURCHASE),
        **fields,
    )


class Client:
    """A tenant's view of the fraud service."""

    def __init__(self, fraud, tenant: str) -> None:
        self.stub = fraud.stub
        self.tenant = tenant
        self.md = fraud.metadata(tenant, principal="reviewer-1")

    def __getattr__(self, name):
        method = getattr(self.stub, name)
        return lambda request: method(request, metadata=self.md)

    async def rule(self, rule: rpb.Rule) -> rpb.Rule:
        if not rule.action and not rule.score:
            rule.action = apb.DECISION_DECLINE
        response = await self.CreateRule(api.CreateRuleRequest(idempotency_key=key(), rule=rule))
        return response.rule

    async def checkout(self, request=None, **fields) -> apb.Assessment:
        return (await self.AssessCheckout(request or checkout(**fields))).assessment

    async def redeem(self, code: str, **fields) -> apb.Assessment:
        return (await self.AssessRedemption(redemption(code, **fields))).assessment

    async def earn(self, points: int, **fields) -> apb.Assessment:
        return (await self.AssessEarn(earn(points, **fields))).assessment


def pattern(kind: int, *, max_value: int, days: float = 0, min_value: int = 0, **fields) -> rpb.Rule:
    fields.setdefault("action", apb.DECISION_REVIEW)
    return rpb.Rule(
        display_name="pattern",
        pattern=rpb.PatternRule(
            kind=kind, window=Duration(seconds=int(days * 86_400)), max_value=max_value, min_value=min_value
        ),
        **fields,
    )


def returning(checkout_id: str, refund: int, *, customer: str = "c1", **fields):
    return api.AssessReturnRequest(
        idempotency_key=fields.pop("idempotency_key", key()),
        customer_id=customer,
        checkout_id=checkout_id,
        refund=eur(refund),
        **fields,
    )


def referral(referrer_id: str, referee_id: str, **fields):
    return api.AssessReferralRequest(
        idempotency_key=fields.pop("idempotency_key", key()),
        referrer_customer_id=referrer_id,
        referee_customer_id=referee_id,
        points=fields.pop("points", 500),
        **fields,
    )


async def returned(client: Client, checkout_id: str, refund: int, **fields) -> apb.Assessment:
    return (await client.AssessReturn(returning(checkout_id, refund, **fields))).assessment


async def referred(client: Client, referrer_id: str, referee_id: str, **fields) -> apb.Assessment:
    return (await client.AssessReferral(referral(referrer_id, referee_id, **fields))).assessment
