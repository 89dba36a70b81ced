"""Returns as pure arithmetic: the share of a committed line's discounts, earned points and price
that belongs to the units returned. Shares are cumulative (the k-th returned unit of q gets
`total * k // q - total * (k - 1) // q`), so however a line is returned, in one go or unit by
unit, the reversals add up exactly to the line's figures once everything is back."""

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CommittedLine:
    """A line as it was committed. `units` = quantity, or quantity_milli for weighed goods."""

    line_id: str
    units: int
    weighed: bool
    final_total: int
    points: int
    # (promotion_id, amount) of each discount on the line.
    discounts: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class LineReturn:
    line_id: str
    units: int
    discount: int
    points: int
    refund: int
    by_promotion: dict[str, int] = field(default_factory=dict)


class ReturnRefused(ValueError):
    def __init__(self, field: str, description: str) -> None:
        super().__init__(description)
        self.field = field
        self.description = description


def share(total: int, before: int, now: int, units: int) -> int:
    """The part of `total` belonging to units (before, before + now] of `units`."""
    return total * (before + now) // units - total * before // units


def plan_return(
    lines: Sequence[CommittedLine],
    returned: dict[str, int],
    requested: Sequence[tuple[str, int, int]],
    full: bool,
) -> list[LineReturn]:
    """What returning `requested` (line id, quantity, quantity_milli) takes back, given the units
    of each line `returned` before; `full` = everything not yet returned."""
    by_id = {line.line_id: line for line in lines}
    if full and requested:
        raise ReturnRefused("lines", "a full return names no lines")
    wanted: dict[str, int] = {}
    if full:
        wanted = {line.line_id: line.units - returned.get(line.line_id, 0) for line in lines}
    for index, (line_id, quantity, milli) in enumerate(requested):
        line = by_id.get(line_id)
        if line is None:
            raise ReturnRefused(f"lines[{index}].line_id", "no such line in the checkout")
        units = milli if line.weighed else quantity
        if units <= 0:
            raise ReturnRefused(f"lines[{index}].quantity", "a returned quantity is positive")
        wanted[line_id] = wanted.get(line_id, 0) + units
    plan = []
    for line_id, units in wanted.items():
        line = by_id[line_id]
        before = returned.get(line_id, 0)
        if before + units > line.units:
            raise ReturnRefused("lines", f"line {line_id} has only {line.units - before} left to return")
        if units == 0:
            continue
        by_promotion: dict[str, int] = {}
        for promotion_id, amount in line.discounts:
            by_promotion[promotion_id] = by_promotion.get(promotion_id, 0) + share(
                amount, before, units, line.units
            )
        plan.append(
            LineReturn(
                line_id,
                units,
                sum(by_promotion.values()),
                share(line.points, before, units, line.units),
                share(line.final_total, before, units, line.units),
                by_promotion,
            )
        )
    if not plan:
        raise ReturnRefused("lines", "nothing is left to return")
    return plan


def fully_returned(lines: Sequence[CommittedLine], returned: dict[str, int]) -> set[str]:
    return {line.line_id for line in lines if returned.get(line.line_id, 0) >= line.units}
