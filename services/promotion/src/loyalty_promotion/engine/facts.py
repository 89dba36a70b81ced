"""What one evaluation knows, computed once per basket and shared by every candidate: line keys
for filter matching, the local time per time zone, the codes presented, the CEL activation."""

from datetime import date, datetime
from functools import cached_property
from zoneinfo import ZoneInfo

import cel

from loyalty.common.v1 import basket_pb2
from loyalty_promotion.engine.expressions import line_map
from loyalty_promotion.engine.model import Basket, CustomerContext

SHIPPING_CATEGORY = "shipping"


class Facts:
    def __init__(
        self,
        basket: Basket,
        customer: CustomerContext,
        accepted_codes: dict[str, str],
        now: datetime,
        tz: str,
    ):
        self.basket = basket
        self.customer = customer
        # code -> campaign id it unlocks (accepted by the service, deduplicated, within the limit)
        self.accepted_codes = accepted_codes
        self.unlocked_campaigns = frozenset(accepted_codes.values())
        self.now = now
        self.tz = tz
        self.lines = basket.lines
        self.shipping = tuple(SHIPPING_CATEGORY in line.categories for line in basket.lines)
        self.category_sets = tuple(frozenset(line.categories) for line in basket.lines)
        self._local: dict[str, datetime] = {}
        self._filter_cache: dict[int, tuple[int, ...]] = {}
        self._cel_contexts: dict[frozenset[str], cel.Context] = {}
        self._cel_variables: dict[str, object] = {}
        # The campaign whose conditions are being tested (for code_present without codes).
        self.current_campaign = ""
        # Set by a payment-method leaf while the tender is unknown (preview).
        self.touched_pending = False

    def local(self, tz: str = "") -> datetime:
        zone = tz or self.tz
        local = self._local.get(zone)
        if local is None:
            local = self._local[zone] = self.now.astimezone(ZoneInfo(zone))
        return local

    def local_date(self) -> date:
        return self.local().date()

    def matching(self, line_filter) -> tuple[int, ...]:
        """Indexes of the lines a compiled LineFilter matches, cached for this basket."""
        key = id(line_filter)
        found = self._filter_cache.get(key)
        if found is None:
            found = self._filter_cache[key] = tuple(
                index
                for index, line in enumerate(self.lines)
                if line_filter.matches(line, self.category_sets[index], self.shipping[index])
            )
        return found

    @cached_property
    def eligible_subtotal(self) -> int:
        return sum(
            line.line_total for i, line in enumerate(self.lines) if not line.excluded and not self.shipping[i]
        )

    def cel_context(self, variables: frozenset[str]):
        """A CEL context with just these variables, built once per evaluation and variable set:
        handing values to CEL is what costs, so `lines` is converted only for expressions reading it."""
        context = self._cel_contexts.get(variables)
        if context is None:
            context = cel.Context({name: self.cel_variable(name) for name in variables})
            self._cel_contexts[variables] = context
        return context

    def cel_variable(self, name: str):
        found = self._cel_variables.get(name)
        if found is None:
            found = self._cel_variables[name] = self._build_variable(name)
        return found

    def _build_variable(self, name: str):
        """One CEL variable (see expressions.py)."""
        if name == "lines":
            return [self.line_activation(index) for index in range(len(self.lines))]
        basket, customer, local = self.basket, self.customer, self.local()
        return {
            "basket": {
                "currency": basket.currency,
                "subtotal": basket.subtotal,
                "units": sum(line.units for line in basket.lines),
                "line_count": len(basket.lines),
                "channel": basket_pb2.Channel.Name(basket.channel).removeprefix("CHANNEL_"),
                "store_id": basket.store_id,
                "payment_method": basket.payment_method,
            },
            "customer": {
                "id": customer.customer_id,
                "anonymous": customer.anonymous,
                "tier": customer.tier_id,
                "segments": sorted(customer.segment_ids),
                "lifetime_purchase_count": customer.lifetime_purchase_count,
                "first_purchase": not customer.anonymous and customer.lifetime_purchase_count == 0,
                "attributes": {k: _cel_value(v) for k, v in customer.attributes.items()},
            },
            "now": {
                "year": local.year,
                "month": local.month,
                "day": local.day,
                "hour": local.hour,
                "minute": local.minute,
                "weekday": local.isoweekday(),
            },
        }[name]

    def line_activation(self, index: int, remaining: int | None = None) -> dict:
        line = self.lines[index]
        return line_map(
            line.line_id,
            line.sku,
            line.categories,
            line.brand,
            line.quantity,
            line.unit_price,
            line.line_total,
            line.attributes,
            remaining=remaining,
        )


def _cel_value(value):
    return value.isoformat() if isinstance(value, date) else value
