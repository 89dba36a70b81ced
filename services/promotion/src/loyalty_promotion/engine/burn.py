"""Points as payment: how many of the points a customer asks to burn a basket accepts under the
programme's BurnPolicy, what they are worth, and which lines they pay for. Pure.

Order (RULES.md): promotions first; burning pays for what is left of the eligible lines (the
policy's line filter, never an excluded line), at most max_basket_share_bps of it; the points are
clamped to the customer's balance and the policy's maximum, rounded down to a multiple of
step_points, and refused below min_points. Their value is rounded down (points * value // points
of the rate), so burning never pays more than the points are worth, and is allocated to the lines
by largest remainder, so the lines' shares add up to it exactly."""

from dataclasses import dataclass, field

from loyalty.common.v1 import errors_pb2 as err
from loyalty.promotion.v1 import earning_pb2
from loyalty_promotion.engine.conditions import LineFilter, compile_filter
from loyalty_promotion.engine.facts import Facts
from loyalty_promotion.engine.money import BPS, allocate


@dataclass(frozen=True)
class CompiledBurn:
    program_id: str
    # currency -> (points, value in minor units): `points` points are worth `value`.
    rates: dict[str, tuple[int, int]]
    min_points: int
    step: int
    share_bps: int
    line_filter: LineFilter | None


def compile_burn(policy: earning_pb2.BurnPolicy) -> CompiledBurn | None:
    """None for a disabled policy (burning is off)."""
    if not policy.enabled:
        return None
    return CompiledBurn(
        policy.program_id,
        {v.value.currency_code: (v.points, v.value.amount_minor) for v in policy.values if v.points > 0},
        policy.min_points,
        max(1, policy.step_points),
        policy.max_basket_share_bps,
        compile_filter(policy.line_filter) if policy.HasField("line_filter") else None,
    )


@dataclass(frozen=True)
class Burn:
    program_id: str
    requested: int
    points: int
    value: int
    max_points: int
    max_value: int
    reason: int = 0
    # line id -> (points, value) paid on the line.
    by_line: dict[str, tuple[int, int]] = field(default_factory=dict)


def plan_burn(
    policy: CompiledBurn | None, facts: Facts, remaining: list[int], requested: int, balance: int
) -> Burn | None:
    """None when nothing was asked and nothing could be burned."""
    currency = facts.basket.currency
    rate = policy.rates.get(currency) if policy else None
    if policy is None or rate is None or facts.customer.anonymous:
        return (
            Burn(
                "" if policy is None else policy.program_id,
                requested,
                0,
                0,
                0,
                0,
                err.ERROR_REASON_INVALID_AMOUNT,
            )
            if requested
            else None
        )
    points_per, value_per = rate
    matched = facts.matching(policy.line_filter) if policy.line_filter else range(len(facts.lines))
    eligible = [i for i in matched if not facts.lines[i].excluded and remaining[i] > 0]
    payable = sum(remaining[i] for i in eligible)
    cap = payable * policy.share_bps // BPS if policy.share_bps else payable
    most = min(cap * points_per // value_per, max(0, balance))
    most -= most % policy.step
    if most < policy.min_points:
        most = 0
    points = min(requested, most)
    points -= points % policy.step
    reason = 0
    if points < requested:
        reason = (
            err.ERROR_REASON_INSUFFICIENT_BALANCE if requested > balance else err.ERROR_REASON_INVALID_AMOUNT
        )
    if points and points < policy.min_points:
        points, reason = 0, err.ERROR_REASON_INVALID_AMOUNT
    value = points * value_per // points_per
    weights = [remaining[i] for i in eligible]
    values = allocate(value, weights) if eligible else []
    shares = allocate(points, weights) if eligible else []
    by_line = {
        facts.lines[i].line_id: (p, v) for i, p, v in zip(eligible, shares, values, strict=True) if p or v
    }
    return Burn(
        policy.program_id, requested, points, value, most, most * value_per // points_per, reason, by_line
    )
