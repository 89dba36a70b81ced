"""Protobuf <-> engine model: the servicer calls only these."""

from collections.abc import Iterable
from datetime import date

from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.promotion.v1 import evaluation_pb2 as evpb
from loyalty_promotion.engine.conditions import attribute_value
from loyalty_promotion.engine.model import Basket, BasketInvalid, CustomerContext, Evaluation, Line
from loyalty_promotion.engine.validation import validate_basket


def decode_basket(message: basket_pb2.Basket) -> Basket:
    """A validated Basket; raises BasketInvalid(violations) naming the offending lines."""
    violations = validate_basket(message)
    if violations:
        raise BasketInvalid(violations)
    return Basket(
        currency=message.currency_code,
        lines=tuple(
            Line(
                line.line_id,
                line.sku,
                line.quantity,
                line.unit_price.amount_minor,
                line.line_total.amount_minor,
                tuple(line.categories),
                line.brand,
                line.quantity_milli,
                line.excluded_from_promotions,
                dict(line.attributes),
            )
            for line in message.lines
        ),
        channel=message.channel,
        store_id=message.store_id,
        payment_method=message.payment_method,
    )


def decode_customer(message: evpb.CustomerContext) -> CustomerContext:
    birth = message.birth_date
    return CustomerContext(
        customer_id=message.customer_id,
        segment_ids=frozenset(message.segment_ids),
        tier_id=message.tier_id,
        program_id=message.program_id,
        lifetime_purchase_count=message.lifetime_purchase_count,
        birth_date=date(birth.year, birth.month, birth.day)
        if message.HasField("birth_date") and birth.year
        else None,
        attributes={name: attribute_value(value) for name, value in message.attributes.items()},
        locale=message.locale,
        points_balance=message.points_balance,
    )


def encode_evaluation(evaluation: Evaluation) -> evpb.EvaluationResult:
    currency = evaluation.currency

    def money(amount: int) -> money_pb2.Money:
        return money_pb2.Money(currency_code=currency, amount_minor=amount)

    codes_used = {a.campaign_id for a in evaluation.applied if a.code}
    now = Timestamp()
    now.FromDatetime(evaluation.now)
    result = evpb.EvaluationResult(
        subtotal=money(evaluation.subtotal),
        promotion_discount=money(evaluation.discount),
        points_discount=money(0),
        total_discount=money(evaluation.discount),
        total_payable=money(evaluation.payable),
        evaluation_time=now,
        points_earning=evpb.PointsEarning(
            program_id=evaluation.program_id,
            total_points=evaluation.points_total,
            entries=[
                evpb.PointsEarningEntry(
                    source=e.source,
                    earning_rule_id=e.earning_rule_id,
                    tier_id=e.tier_id,
                    campaign_id=e.campaign_id,
                    promotion_id=e.promotion_id,
                    points=e.points,
                )
                for e in evaluation.points
            ],
        ),
    )
    for line in evaluation.lines:
        result.lines.append(
            evpb.LineResult(
                line_id=line.line_id,
                line_total=money(line.line_total),
                discount_total=money(line.discount_total),
                final_total=money(line.final_total),
                points_to_earn=line.points,
                discounts=[
                    evpb.LineDiscount(
                        source=evpb.DISCOUNT_SOURCE_CODE
                        if d.code or d.campaign_id in codes_used
                        else evpb.DISCOUNT_SOURCE_PROMOTION,
                        campaign_id=d.campaign_id,
                        promotion_id=d.promotion_id,
                        code=d.code,
                        amount=money(d.amount),
                        quantity=d.quantity,
                    )
                    for d in line.discounts
                ],
            )
        )
    result.free_items.extend(
        evpb.FreeItem(
            sku=f.sku,
            quantity=f.quantity,
            display_name=f.display_name,
            campaign_id=f.campaign_id,
            promotion_id=f.promotion_id,
            code=f.code,
        )
        for f in evaluation.free_items
    )
    result.applied_promotions.extend(
        evpb.AppliedPromotion(
            campaign_id=a.campaign_id,
            promotion_id=a.promotion_id,
            code=a.code,
            discount=money(a.discount),
            points=a.points,
            message=a.message,
        )
        for a in evaluation.applied
    )
    result.codes.extend(
        evpb.CodeResult(
            code=c.code, accepted=c.accepted, reason=c.reason, campaign_id=c.campaign_id, message=c.message
        )
        for c in evaluation.codes
    )
    result.candidates.extend(
        evpb.CandidateResult(
            campaign_id=c.campaign_id,
            promotion_id=c.promotion_id,
            reason=c.reason,
            hint=c.hint,
            amount_to_qualify=money(c.amount_to_qualify) if c.amount_to_qualify else None,
            units_to_qualify=c.units_to_qualify,
            pending=c.pending,
        )
        for c in evaluation.candidates
    )
    result.messages.extend(_messages(evaluation))
    if evaluation.burn is not None:
        _encode_burn(result, evaluation.burn, money)
    return result


def _encode_burn(result: evpb.EvaluationResult, burn, money) -> None:
    """Points paid are a discount of source POINTS on the lines they pay for, so the contract's
    sums hold: lines' discount_total add up to total_discount = promotion + points discount."""
    result.points_burn.CopyFrom(
        evpb.PointsBurn(
            program_id=burn.program_id,
            requested_points=burn.requested,
            applied_points=burn.points,
            applied_value=money(burn.value),
            max_burnable_points=burn.max_points,
            max_burnable_value=money(burn.max_value),
            reason=burn.reason,
        )
    )
    if not burn.value:
        return
    result.points_discount.amount_minor = burn.value
    result.total_discount.amount_minor += burn.value
    result.total_payable.amount_minor -= burn.value
    for line in result.lines:
        points, value = burn.by_line.get(line.line_id, (0, 0))
        if not (points or value):
            continue
        line.points_burned = points
        line.discounts.append(evpb.LineDiscount(source=evpb.DISCOUNT_SOURCE_POINTS, amount=money(value)))
        line.discount_total.amount_minor += value
        line.final_total.amount_minor -= value


def _messages(evaluation: Evaluation) -> Iterable[evpb.DisplayMessage]:
    for applied in evaluation.applied:
        if applied.message:
            yield evpb.DisplayMessage(
                kind=evpb.DISPLAY_MESSAGE_KIND_APPLIED,
                text=applied.message,
                campaign_id=applied.campaign_id,
                promotion_id=applied.promotion_id,
            )
    for candidate in evaluation.candidates:
        if candidate.hint:
            yield evpb.DisplayMessage(
                kind=evpb.DISPLAY_MESSAGE_KIND_HINT,
                text=candidate.hint,
                campaign_id=candidate.campaign_id,
                promotion_id=candidate.promotion_id,
                amount_to_qualify=money_pb2.Money(
                    currency_code=evaluation.currency, amount_minor=candidate.amount_to_qualify
                )
                if candidate.amount_to_qualify
                else None,
            )
    for code in evaluation.codes:
        if not code.accepted:
            yield evpb.DisplayMessage(
                kind=evpb.DISPLAY_MESSAGE_KIND_WARNING,
                text=code.message or f"Code {code.code} not applied",
                campaign_id=code.campaign_id,
            )
