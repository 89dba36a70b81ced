"""The customer context a checkout needs (who, tier, balance, segments, attributes), from a bounded
in-process cache; on a miss, one parallel fan-out to profile, segmentation and ledger.

Staleness: an entry lives `context_ttl_seconds` at most, and the gateway drops a customer's entry
itself after every change it makes for them (reserve, commit, cancel, return, enrol). A change made
elsewhere (a manual adjustment, a segment recomputed) shows within the TTL. The balance in the
context only bounds what a preview offers to burn; the ledger's hold is what enforces it.

Segmentation is optional: when it does not answer, the context has no segments and says so
(`degraded`), so a till still gets the public promotions. Profile and ledger are not optional: without
them nobody can be identified or credited, and the call answers UNAVAILABLE.
"""

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from loyalty.common.v1 import customer_pb2
from loyalty.gateway.v1 import customer_pb2 as gw
from loyalty.ledger.v1 import ledger_pb2, ledger_service_pb2 as ledger_api
from loyalty.profile.v1 import profile_service_pb2 as profile_api
from loyalty.promotion.v1 import condition_pb2, evaluation_pb2
from loyalty.segmentation.v1 import segmentation_service_pb2 as segmentation_api
from loyalty_gateway.downstream import Downstream, DownstreamError, call
from loyalty_gateway.tokens import CustomerTokens
from loyalty_runtime.errors import InvalidArgument, NotFound, Reason

SEGMENTATION_SECONDS = 0.3


@dataclass(frozen=True)
class CustomerContext:
    customer_id: str
    given_name: str
    locale: str
    account_id: str
    program_id: str
    tier_code: str
    available_points: int
    pending_points: int
    segment_ids: tuple[str, ...]
    purchase_count: int
    attributes: dict = field(default_factory=dict)
    birth_date: object | None = None
    degraded: tuple[str, ...] = ()

    def for_promotion(self, locale: str) -> evaluation_pb2.CustomerContext:
        return evaluation_pb2.CustomerContext(
            customer_id=self.customer_id,
            segment_ids=self.segment_ids,
            tier_id=self.tier_code,
            program_id=self.program_id,
            points_balance=self.available_points,
            lifetime_purchase_count=self.purchase_count,
            locale=locale or self.locale,
            attributes=self.attributes,
            birth_date=self.birth_date,
        )


def _attributes(customer) -> dict:
    """Profile attributes promotion can test (decimals and enums go as their text)."""
    out = {}
    for name, value in customer.attributes.items():
        kind = value.WhichOneof("value")
        if kind in ("string_value", "decimal_value", "enum_value"):
            out[name] = condition_pb2.AttributeValue(string_value=getattr(value, kind))
        elif kind == "int_value":
            out[name] = condition_pb2.AttributeValue(int_value=value.int_value)
        elif kind == "bool_value":
            out[name] = condition_pb2.AttributeValue(bool_value=value.bool_value)
        elif kind == "date_value":
            out[name] = condition_pb2.AttributeValue(date_value=value.date_value)
    return out


class Customers:
    def __init__(self, downstream: Downstream, tokens: CustomerTokens, *, ttl: float, size: int) -> None:
        self.downstream = downstream
        self.tokens = tokens
        self.ttl = ttl
        self.size = size
        self._contexts: OrderedDict[tuple[str, str, str], tuple[float, CustomerContext]] = OrderedDict()
        self._identifiers: OrderedDict[tuple, tuple[float, str]] = OrderedDict()

    def _fresh(self, cache: OrderedDict, key):
        hit = cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return None

    def _keep(self, cache: OrderedDict, key, value) -> None:
        cache[key] = (time.monotonic(), value)
        cache.move_to_end(key)
        while len(cache) > self.size:
            cache.popitem(last=False)

    def forget(self, tenant: str, customer_id: str) -> None:
        for key in [k for k in self._contexts if k[0] == tenant and k[1] == customer_id]:
            del self._contexts[key]

    async def resolve(self, tenant: str, lookup: gw.CustomerLookup) -> str:
        """The customer id of a lookup; NOT_FOUND (CUSTOMER_NOT_FOUND) for an unknown or another
        tenant's customer."""
        kind = lookup.WhichOneof("kind")
        if kind == "customer_id":
            return lookup.customer_id
        if kind == "customer_token":
            return await self.tokens.customer(tenant, lookup.customer_token)
        if kind != "identifier":
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "a customer lookup needs one of its fields", field="customer"
            )
        identifier = lookup.identifier
        key = (tenant, identifier.type, identifier.namespace, identifier.value)
        if (known := self._fresh(self._identifiers, key)) is not None:
            return known
        if identifier.type == customer_pb2.IDENTIFIER_TYPE_UNSPECIFIED or not identifier.value:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "an identifier needs a type and a value", field="customer.identifier"
            )
        found = await call(
            "profile",
            self.downstream.profile.LookupCustomer,
            profile_api.LookupCustomerRequest(identifier=identifier),
        )
        self._keep(self._identifiers, key, found.customer.customer_id)
        return found.customer.customer_id

    async def context(self, tenant: str, customer_id: str, program_id: str) -> CustomerContext:
        key = (tenant, customer_id, program_id)
        if (known := self._fresh(self._contexts, key)) is not None:
            return known
        context = await self._fan_out(customer_id, program_id)
        if not context.degraded:
            self._keep(self._contexts, key, context)
        return context

    async def _fan_out(self, customer_id: str, program_id: str) -> CustomerContext:
        d = self.downstream
        profile, segments, account = await asyncio.gather(
            call("profile", d.profile.GetCustomer, profile_api.GetCustomerRequest(customer_id=customer_id)),
            call(
                "segmentation",
                d.segmentation.ListCustomerSegments,
                segmentation_api.ListCustomerSegmentsRequest(customer_id=customer_id),
                cap_seconds=SEGMENTATION_SECONDS,
            ),
            self.account(customer_id, program_id),
            return_exceptions=True,
        )
        for answer in (profile, account):
            if isinstance(answer, BaseException):
                raise customer_error(answer)
        degraded: tuple[str, ...] = ()
        if isinstance(segments, DownstreamError) and segments.transient:
            segments, degraded = None, ("segmentation",)
        elif isinstance(segments, BaseException):
            raise segments
        customer = profile.customer
        return CustomerContext(
            customer_id=customer_id,
            given_name=customer.given_name,
            locale=customer.locale,
            account_id=account.account_id,
            program_id=program_id,
            tier_code=account.tier_code,
            available_points=account.balance.available,
            pending_points=account.balance.pending,
            segment_ids=tuple(m.segment_id for m in segments.memberships) if segments else (),
            purchase_count=segments.lifetime_purchase_count if segments else 0,
            attributes=_attributes(customer),
            birth_date=customer.birth_date if customer.HasField("birth_date") else None,
            degraded=degraded,
        )

    async def account(self, customer_id: str, program_id: str):
        """The customer's account in the programme; an empty one before the first reserve opens it
        (a preview changes nothing)."""
        try:
            found = await call(
                "ledger",
                self.downstream.ledger.GetAccount,
                ledger_api.GetAccountRequest(program_id=program_id, customer_id=customer_id),
            )
        except DownstreamError as error:
            if error.error.reason is Reason.ACCOUNT_NOT_FOUND:
                return ledger_pb2.Account(program_id=program_id, customer_id=customer_id)
            raise
        return found.account

    async def open_account(self, customer_id: str, program_id: str) -> str:
        opened = await call(
            "ledger",
            self.downstream.ledger.OpenAccount,
            ledger_api.OpenAccountRequest(
                program_id=program_id,
                customer_id=customer_id,
                idempotency_key=f"gateway:open:{program_id}:{customer_id}",
            ),
        )
        return opened.account.account_id


def customer_error(error: BaseException) -> BaseException:
    """Profile's NOT_FOUND for a customer id that is not a UUID, an unknown one or another tenant's:
    all the same CUSTOMER_NOT_FOUND."""
    if isinstance(error, DownstreamError) and error.error.reason in (
        Reason.CUSTOMER_NOT_FOUND,
        Reason.INVALID_ARGUMENT,
    ):
        return NotFound(Reason.CUSTOMER_NOT_FOUND, "no such customer", field="customer")
    return error
