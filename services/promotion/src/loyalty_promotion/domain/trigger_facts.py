"""What a trigger's condition is evaluated against: the promotion engine's own `Facts`, built from
the event and from the few lookups the condition needs, so triggers and checkout promotions share
one condition language and one compiler.

An event is not a checkout, so the adapter fills the engine's inputs from what the event gives:
- the basket: a purchase event's purchased basket; other events have an empty one, and a condition
  on the basket (subtotal, lines, channel, store, payment) is refused on save for them;
- the customer: the event's customer id; segments from segmentation (or the segment the event
  entered); the tier of a `tier.changed` event (no other event tells the tier, so the tier leaf is
  refused on save elsewhere);
- no profile attributes and no birth date (profile is not asked): conditions on them are refused
  on save rather than left always false;
- behaviour, as customer attributes under reserved names the condition compares like any attribute:
  `metrics.lifetime_spend` (minor units) and `metrics.lifetime_orders` from segmentation's lifetime
  metrics, and `redeemed.<CODE>` (true) for each code the condition names that the customer redeemed.
Segmentation keeps the metrics and promotion cannot read its tables, so they cost one call per
event and customer, made only for triggers whose condition reads them (`needs_of`)."""

from dataclasses import dataclass, field
from datetime import datetime

from loyalty.common.v1 import basket_pb2
from loyalty.promotion.v1 import condition_pb2 as cpb
from loyalty_promotion.engine.facts import Facts
from loyalty_promotion.engine.model import Basket, CustomerContext

METRICS_PREFIX = "metrics."
LIFETIME_SPEND = "metrics.lifetime_spend"
LIFETIME_ORDERS = "metrics.lifetime_orders"
METRICS = frozenset({LIFETIME_SPEND, LIFETIME_ORDERS})
REDEEMED_PREFIX = "redeemed."
BASKET_KINDS = frozenset(
    {"basket_subtotal", "line_quantity", "line_spend", "channel", "store", "payment_method"}
)
PURCHASE_EVENT = "purchase.committed"
TIER_EVENT = "tier.changed"
NO_BASKET = Basket(currency="", lines=())


@dataclass(frozen=True)
class Needs:
    """The lookups a condition's facts take."""

    segments: bool = False
    metrics: bool = False
    codes: frozenset[str] = frozenset()

    @property
    def remote(self) -> bool:
        """Whether another service must be asked (segmentation, for segments or metrics)."""
        return self.segments or self.metrics

    def __or__(self, other: "Needs") -> "Needs":
        return Needs(self.segments or other.segments, self.metrics or other.metrics, self.codes | other.codes)


def _leaves(node: cpb.Condition):
    kind = node.WhichOneof("kind")
    if kind in ("all_of", "any_of"):
        for child in getattr(node, kind).conditions:
            yield from _leaves(child)
    elif kind == "negation":
        yield from _leaves(node.negation.condition)
    elif kind is not None:
        yield kind, getattr(node, kind)


def needs_of(condition: cpb.Condition) -> Needs:
    """What the facts must be looked up for: a CEL expression reading `customer` is given both."""
    found = Needs()
    for kind, leaf in _leaves(condition):
        if kind == "customer_segment":
            found |= Needs(segments=True)
        elif kind == "first_purchase" or (
            kind == "customer_attribute" and leaf.attribute.startswith(METRICS_PREFIX)
        ):
            found |= Needs(metrics=True)
        elif kind == "customer_attribute" and leaf.attribute.startswith(REDEEMED_PREFIX):
            found |= Needs(codes=frozenset({leaf.attribute.removeprefix(REDEEMED_PREFIX)}))
        elif kind == "expression" and "customer" in leaf.cel:
            found |= Needs(segments=True, metrics=True)
    return found


def event_violations(condition: cpb.Condition, event_type: str) -> list[tuple[str, str]]:
    """(leaf kind, why) for each leaf the event cannot give facts for."""
    found = []
    for kind, leaf in _leaves(condition):
        if kind in BASKET_KINDS and event_type != PURCHASE_EVENT:
            found.append((kind, f"only {PURCHASE_EVENT} has a basket"))
        elif kind == "tier" and event_type != TIER_EVENT:
            found.append((kind, f"only {TIER_EVENT} tells the tier"))
        elif kind == "code_present":
            found.append((kind, f"an event presents no codes; compare the attribute {REDEEMED_PREFIX}<CODE>"))
        elif kind == "customer_attribute" and leaf.attribute.startswith(METRICS_PREFIX):
            if leaf.attribute not in METRICS:
                found.append((kind, f"the metrics are {', '.join(sorted(METRICS))}"))
        elif kind == "customer_attribute" and not leaf.attribute.startswith(REDEEMED_PREFIX):
            found.append(
                (kind, f"triggers read {METRICS_PREFIX}* and {REDEEMED_PREFIX}<CODE>, not profile attributes")
            )
        elif kind == "birthday":
            found.append((kind, "no trigger event tells the birth date; listen to customer.birthday"))
    return found


@dataclass(frozen=True)
class EventFacts:
    """What the event and the lookups told about the customer."""

    customer_id: str
    basket: Basket = NO_BASKET
    segment_ids: frozenset[str] = frozenset()
    tier_id: str = ""
    lifetime_spend: int | None = None
    lifetime_orders: int | None = None
    redeemed_codes: frozenset[str] = frozenset()
    attributes: dict = field(default_factory=dict)
    # The purchase's basket as the event carried it (for a job that tests the condition later).
    event_basket: basket_pb2.Basket | None = None


def facts_of(told: EventFacts, now: datetime, time_zone: str) -> Facts:
    attributes = dict(told.attributes)
    if told.lifetime_spend is not None:
        attributes[LIFETIME_SPEND] = told.lifetime_spend
    if told.lifetime_orders is not None:
        attributes[LIFETIME_ORDERS] = told.lifetime_orders
    attributes.update({REDEEMED_PREFIX + code: True for code in told.redeemed_codes})
    customer = CustomerContext(
        customer_id=told.customer_id,
        segment_ids=told.segment_ids,
        tier_id=told.tier_id,
        lifetime_purchase_count=told.lifetime_orders or 0,
        attributes=attributes,
    )
    return Facts(told.basket, customer, {}, now, time_zone or "UTC")
