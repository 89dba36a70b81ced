"""Short builders for campaigns, promotions, baskets and evaluations in the engine's tests."""

from datetime import UTC, datetime

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.promotion.v1 import (
    campaign_pb2,
    condition_pb2 as cpb,
    earning_pb2,
    effect_pb2 as epb,
    promotion_pb2,
    settings_pb2,
)
from loyalty_promotion.engine import (
    CampaignInput,
    CustomerContext,
    PresentedCode,
    compile_catalog,
    decode_basket,
    evaluate,
)

NOW = datetime(2026, 2, 10, 12, 0, tzinfo=UTC)
CUSTOMER = CustomerContext(
    customer_id="c1", segment_ids=frozenset({"vip"}), tier_id="gold", lifetime_purchase_count=3
)


def money(amount: int, currency: str = "EUR") -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, amount_minor=amount)


def line(
    line_id,
    sku,
    price,
    qty=1,
    *,
    categories=(),
    brand="",
    currency="EUR",
    excluded=False,
    milli=0,
    total=None,
    **attributes,
):
    return basket_pb2.LineItem(
        line_id=line_id,
        sku=sku,
        categories=list(categories),
        brand=brand,
        quantity=qty if not milli else 0,
        quantity_milli=milli,
        unit_price=money(price, currency),
        line_total=money(total if total is not None else price * (qty if not milli else 1), currency),
        excluded_from_promotions=excluded,
        attributes=attributes,
    )


def basket(*lines, currency="EUR", channel=basket_pb2.CHANNEL_STORE, store="s1", payment=""):
    return decode_basket(
        basket_pb2.Basket(
            currency_code=currency, lines=list(lines), channel=channel, store_id=store, payment_method=payment
        )
    )


def lf(skus=(), categories=(), brands=(), excluded_skus=()) -> cpb.LineFilter:
    return cpb.LineFilter(
        skus=list(skus), categories=list(categories), brands=list(brands), excluded_skus=list(excluded_skus)
    )


def promo(pid, *effects, condition=None, priority=0, hint="", message="") -> promotion_pb2.Promotion:
    return promotion_pb2.Promotion(
        promotion_id=pid,
        display_name=pid,
        condition=condition,
        effects=list(effects),
        priority=priority,
        hint_message=promotion_pb2.LocalizedText(text=hint),
        customer_message=promotion_pb2.LocalizedText(text=message),
    )


def campaign(
    cid,
    *promotions,
    priority=0,
    mode=campaign_pb2.STACKING_MODE_STACKABLE,
    group="",
    audience=None,
    schedule=None,
    code=False,
) -> CampaignInput:
    message = campaign_pb2.Campaign(
        campaign_id=cid,
        priority=priority,
        stacking=campaign_pb2.StackingPolicy(mode=mode, exclusivity_group=group),
        type=campaign_pb2.CAMPAIGN_TYPE_VOUCHER if code else campaign_pb2.CAMPAIGN_TYPE_PROMOTION,
        schedule=schedule,
    )
    return CampaignInput(message, list(promotions), audience=audience)


def percent(bps, line_filter=None, **kwargs) -> epb.Effect:
    cap = kwargs.pop("cap", None)
    return epb.Effect(
        percent_off=epb.PercentOffEffect(percent_bps=bps, line_filter=line_filter, **kwargs),
        max_discount=money(cap) if cap is not None else None,
    )


def amount_off(amount, line_filter=None, **kwargs) -> epb.Effect:
    return epb.Effect(amount_off=epb.AmountOffEffect(amount=money(amount), line_filter=line_filter, **kwargs))


def settings(**kwargs) -> settings_pb2.PromotionSettings:
    return settings_pb2.PromotionSettings(**kwargs)


def run(campaigns, the_basket, *, customer=CUSTOMER, codes=(), now=NOW, config=None, rules=(), tz="UTC"):
    catalog = compile_catalog(list(campaigns), config or settings(), earning_rules=list(rules), tz=tz)
    assert not catalog.rejected, catalog.rejected
    return evaluate(
        catalog, the_basket, customer, [PresentedCode(c, campaign_id=cid) for c, cid in codes], now
    )


def discounts(evaluation) -> dict[str, int]:
    """Line id -> discount total, for lines with a discount."""
    return {line.line_id: line.discount_total for line in evaluation.lines if line.discount_total}


def earning_rule(rule_id="base", points=1, per=100, currency="EUR", **kwargs) -> earning_pb2.EarningRule:
    return earning_pb2.EarningRule(
        earning_rule_id=rule_id,
        program_id="p",
        rate=earning_pb2.PointsRate(points=points, per_amount=money(per, currency)),
        state=earning_pb2.EARNING_RULE_STATE_ENABLED,
        **kwargs,
    )
