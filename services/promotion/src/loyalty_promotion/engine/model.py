"""The engine's own input and output: plain frozen dataclasses over integers (minor units, points,
basis points), decoded from and encoded to protobuf by `encoding.py` only."""

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from loyalty.common.v1 import basket_pb2

# The most lines one basket may have (documented in RULES.md).
MAX_LINES = 500


@dataclass(frozen=True, slots=True)
class Violation:
    """One reason a campaign or basket cannot be used: the offending field path (as BadRequest
    names it, e.g. `promotions[0].effects[1].percent_off.percent_bps` or `basket.lines[3].quantity`),
    a stable ErrorReason number and a sentence for the caller."""

    field: str
    reason: int
    description: str


class BasketInvalid(ValueError):
    """Raised by `validate_basket` (and `evaluate`) for a basket that cannot be evaluated."""

    def __init__(self, violations: list[Violation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations


@dataclass(frozen=True, slots=True)
class Line:
    """One basket line. `quantity` counts units; a weighed line (quantity_milli > 0) counts as one
    unit whose price is the line total. Amounts are minor units of the basket's currency."""

    line_id: str
    sku: str
    quantity: int
    unit_price: int
    line_total: int
    categories: tuple[str, ...] = ()
    brand: str = ""
    quantity_milli: int = 0
    excluded: bool = False
    attributes: dict[str, int] = field(default_factory=dict)

    @property
    def units(self) -> int:
        """Units the engine counts and discounts one by one."""
        return 1 if self.quantity_milli > 0 else self.quantity


@dataclass(frozen=True, slots=True)
class Basket:
    currency: str
    lines: tuple[Line, ...]
    channel: int = basket_pb2.CHANNEL_UNSPECIFIED
    store_id: str = ""
    # Tender type once known (reserve, commit); empty while previewing.
    payment_method: str = ""

    @property
    def subtotal(self) -> int:
        return sum(line.line_total for line in self.lines)


@dataclass(frozen=True, slots=True)
class CustomerContext:
    """What rules may read about the customer. Empty customer_id = anonymous."""

    customer_id: str = ""
    segment_ids: frozenset[str] = frozenset()
    tier_id: str = ""
    program_id: str = ""
    lifetime_purchase_count: int = 0
    birth_date: date | None = None
    # Typed profile attributes: str, int, float, bool or date.
    attributes: dict[str, Any] = field(default_factory=dict)
    locale: str = ""
    # Points the customer holds (what burning may spend).
    points_balance: int = 0

    @property
    def anonymous(self) -> bool:
        return not self.customer_id


@dataclass(frozen=True, slots=True)
class PresentedCode:
    """A code as the service resolved it (voucher lookup, limits and validity are the service's
    job). campaign_id = the campaign it unlocks; rejection = an ErrorReason when the service
    already refused it (the engine reports it and unlocks nothing)."""

    code: str
    campaign_id: str = ""
    rejection: int = 0


# ---- output ----


@dataclass(frozen=True, slots=True)
class LineDiscount:
    campaign_id: str
    promotion_id: str
    amount: int
    code: str = ""
    # Units of the line this discount is for; 0 = the line as a whole.
    quantity: int = 0


@dataclass(frozen=True, slots=True)
class LineOutcome:
    line_id: str
    line_total: int
    discounts: tuple[LineDiscount, ...]
    points: int

    @property
    def discount_total(self) -> int:
        return sum(d.amount for d in self.discounts)

    @property
    def final_total(self) -> int:
        return self.line_total - self.discount_total


@dataclass(frozen=True, slots=True)
class FreeItem:
    sku: str
    quantity: int
    display_name: str
    campaign_id: str
    promotion_id: str
    code: str = ""


@dataclass(frozen=True, slots=True)
class PointsEntry:
    """Points from one source: source is an EarningSource number (BASE, TIER_MULTIPLIER,
    PROMOTION)."""

    source: int
    points: int
    earning_rule_id: str = ""
    tier_id: str = ""
    campaign_id: str = ""
    promotion_id: str = ""
    # Per line id: this entry's points on the line (they sum to `points`).
    by_line: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Applied:
    campaign_id: str
    promotion_id: str
    discount: int
    points: int
    code: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A promotion the index selected that did not apply: reason is an ErrorReason number; hint a
    text a till can print; amount/units_to_qualify for near misses; pending when it depends on the
    payment method, unknown while previewing."""

    campaign_id: str
    promotion_id: str
    reason: int
    hint: str = ""
    amount_to_qualify: int = 0
    units_to_qualify: int = 0
    pending: bool = False


@dataclass(frozen=True, slots=True)
class CodeOutcome:
    code: str
    accepted: bool
    reason: int = 0
    campaign_id: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of one evaluation. Invariants (tested): sum of line discounts == discount;
    0 <= line discount <= line total; line points sum to points_total; payable == subtotal -
    discount."""

    currency: str
    subtotal: int
    discount: int
    lines: tuple[LineOutcome, ...]
    free_items: tuple[FreeItem, ...]
    applied: tuple[Applied, ...]
    points: tuple[PointsEntry, ...]
    program_id: str
    candidates: tuple[Candidate, ...]
    codes: tuple[CodeOutcome, ...]
    now: datetime
    # Points used as payment (burn.Burn), None when none were asked for or possible.
    burn: Any = None

    @property
    def payable(self) -> int:
        return self.subtotal - self.discount

    @property
    def points_total(self) -> int:
        return sum(e.points for e in self.points)
