"""Promotion's evaluation -> the gateway's CheckoutResult (what the till shows and the receipt prints)."""

from loyalty.gateway.v1 import checkout_pb2 as pb
from loyalty.promotion.v1 import evaluation_pb2 as ev

ADJUSTMENT = {
    ev.DISCOUNT_SOURCE_PROMOTION: pb.ADJUSTMENT_SOURCE_PROMOTION,
    ev.DISCOUNT_SOURCE_CODE: pb.ADJUSTMENT_SOURCE_CODE,
    ev.DISCOUNT_SOURCE_POINTS: pb.ADJUSTMENT_SOURCE_POINTS,
}
EARN = {
    ev.EARNING_SOURCE_BASE: (pb.EARN_SOURCE_BASE, "Base points"),
    ev.EARNING_SOURCE_TIER_MULTIPLIER: (pb.EARN_SOURCE_TIER_BONUS, "Tier bonus"),
    ev.EARNING_SOURCE_PROMOTION: (pb.EARN_SOURCE_PROMOTION, "Bonus points"),
}


def _line(line: ev.LineResult) -> pb.CheckoutLine:
    return pb.CheckoutLine(
        line_id=line.line_id,
        line_total=line.line_total,
        adjustments=[
            pb.LineAdjustment(
                source=ADJUSTMENT.get(d.source, pb.ADJUSTMENT_SOURCE_UNSPECIFIED),
                code=d.code,
                amount=d.amount,
                quantity=d.quantity,
                campaign_id=d.campaign_id,
                promotion_id=d.promotion_id,
            )
            for d in line.discounts
        ],
        discount_total=line.discount_total,
        final_total=line.final_total,
        points_to_earn=line.points_to_earn,
        points_burned=line.points_burned,
    )


def checkout_result(
    result: ev.EvaluationResult, *, customer_id: str, balance_before: int, pending: bool, degraded=()
) -> pb.CheckoutResult:
    earned, burn = result.points_earning, result.points_burn
    after = balance_before - burn.applied_points + (0 if pending else earned.total_points)
    return pb.CheckoutResult(
        customer_id=customer_id,
        subtotal=result.subtotal,
        promotion_discount=result.promotion_discount,
        points_discount=result.points_discount,
        total_discount=result.total_discount,
        total_payable=result.total_payable,
        lines=[_line(line) for line in result.lines],
        free_items=[
            pb.FreeItem(sku=f.sku, quantity=f.quantity, display_name=f.display_name, code=f.code)
            for f in result.free_items
        ],
        applied_offers=[
            pb.AppliedOffer(
                label=a.message,
                code=a.code,
                discount=a.discount,
                points=a.points,
                campaign_id=a.campaign_id,
                promotion_id=a.promotion_id,
            )
            for a in result.applied_promotions
        ],
        points=pb.PointsSummary(
            program_id=earned.program_id or burn.program_id,
            points_to_earn=earned.total_points,
            earn_breakdown=[
                pb.PointsEarnItem(source=EARN[e.source][0], label=EARN[e.source][1], points=e.points)
                for e in earned.entries
                if e.source in EARN
            ],
            points_burned=burn.applied_points,
            burned_value=burn.applied_value,
            max_burnable_points=burn.max_burnable_points,
            max_burnable_value=burn.max_burnable_value,
            burn_reason=burn.reason,
            balance_before=balance_before,
            balance_after=after,
        ),
        codes=[
            pb.CodeResult(code=c.code, accepted=c.accepted, reason=c.reason, message=c.message)
            for c in result.codes
        ],
        messages=[
            pb.DisplayMessage(kind=m.kind, text=m.text, amount_to_qualify=m.amount_to_qualify)
            for m in result.messages
        ],
        degraded=bool(degraded),
        degraded_services=list(degraded),
    )
