"""The compiled catalog: the index selects only promotions that could match, invalid campaigns are
left out (never breaking the tenant), SimulateCampaign's conflicts, decoding the customer."""

from loyalty.common.v1 import date_pb2
from loyalty.promotion.v1 import condition_pb2 as cpb, evaluation_pb2 as evpb
from loyalty_promotion.engine import (
    CustomerContext,
    compile_catalog,
    conflicting_campaigns,
    decode_customer,
    evaluate,
)
from tests.unit.promotion.builders import (
    CUSTOMER,
    NOW,
    amount_off,
    basket,
    campaign,
    lf,
    line,
    money,
    percent,
    promo,
    settings,
)


def seen(catalog, the_basket, customer=CUSTOMER):
    evaluation = evaluate(catalog, the_basket, customer, [], NOW)
    return sorted(
        {a.campaign_id for a in evaluation.applied} | {c.campaign_id for c in evaluation.candidates}
    )


def test_the_index_selects_promotions_by_sku_category_brand_segment_store_and_always():
    store = cpb.Condition(
        all_of=cpb.ConditionList(conditions=[cpb.Condition(store=cpb.StoreCondition(store_ids=["s2"]))])
    )
    segment = cpb.Condition(customer_segment=cpb.SegmentCondition(segment_ids=["students"]))
    needs_x = cpb.Condition(
        line_quantity=cpb.LineQuantityCondition(line_filter=lf(skus=["X"]), min_quantity=2)
    )
    catalog = compile_catalog(
        [
            campaign("sku", promo("p", percent(1000, lf(skus=["A"])))),
            campaign("cat", promo("p", percent(1000, lf(categories=["cheese"])))),
            campaign("brand", promo("p", percent(1000, lf(brands=["acme"])))),
            campaign("cond", promo("p", percent(1000), condition=needs_x)),
            campaign("store", promo("p", percent(500)), audience=store),
            campaign("segment", promo("p", percent(500), condition=segment)),
            campaign("everyone", promo("p", amount_off(1))),
            campaign("voucher", promo("p", percent(1000)), code=True),
        ],
        settings(),
    )
    assert seen(catalog, basket(line("1", "B", 100))) == ["everyone"]
    assert seen(
        catalog, basket(line("1", "A", 100), line("2", "C", 100, categories=["dairy", "cheese"]))
    ) == ["cat", "everyone", "sku"]
    assert seen(catalog, basket(line("1", "B", 100, brand="acme"), line("2", "X", 100), store="s2")) == [
        "brand",
        "cond",
        "everyone",
        "store",
    ]
    students = CustomerContext(customer_id="s", segment_ids=frozenset({"students"}))
    assert seen(catalog, basket(line("1", "B", 100)), customer=students) == ["everyone", "segment"]


def test_an_invalid_stored_campaign_is_left_out_and_listed():
    catalog = compile_catalog(
        [campaign("bad", promo("p", percent(20000))), campaign("good", promo("p", percent(1000)))], settings()
    )
    assert list(catalog.rejected) == ["bad"] and list(catalog.campaigns) == ["good"]
    assert evaluate(catalog, basket(line("1", "A", 1000)), CUSTOMER, [], NOW).discount == 100


def test_conflicting_campaigns_for_simulate():
    catalog = compile_catalog(
        [
            campaign("draft", promo("p", percent(1000, lf(skus=["A"])))),
            campaign("same-line", promo("p", amount_off(100, lf(skus=["A"])))),
            campaign("other-line", promo("p", amount_off(100, lf(skus=["B"])))),
            campaign("exclusive", promo("p", amount_off(5, lf(skus=["B"]))), mode=2),
            campaign("never", promo("p", percent(1000, lf(skus=["Z"])))),
        ],
        settings(),
    )
    baskets = [basket(line("1", "A", 1000), line("2", "B", 500))]
    assert conflicting_campaigns(catalog, "draft", baskets, CUSTOMER, NOW) == ["exclusive", "same-line"]
    assert conflicting_campaigns(catalog, "unknown", baskets, CUSTOMER, NOW) == []


def test_decode_customer():
    message = evpb.CustomerContext(
        customer_id="c",
        segment_ids=["a"],
        tier_id="gold",
        lifetime_purchase_count=0,
        birth_date=date_pb2.Date(year=1990, month=5, day=17),
        attributes={"age": cpb.AttributeValue(int_value=36), "city": cpb.AttributeValue(string_value="Oslo")},
    )
    customer = decode_customer(message)
    assert (customer.customer_id, customer.tier_id, customer.segment_ids) == ("c", "gold", frozenset({"a"}))
    assert (
        customer.attributes == {"age": 36, "city": "Oslo"} and customer.birth_date.isoformat() == "1990-05-17"
    )
    assert decode_customer(evpb.CustomerContext()).anonymous


def test_a_spend_condition_in_another_currency_basket_is_not_met():
    condition = cpb.Condition(line_spend=cpb.LineSpendCondition(min_spend=money(100, "EUR")))
    catalog = compile_catalog([campaign("c", promo("p", percent(1000), condition=condition))], settings())
    assert (
        evaluate(
            catalog, basket(line("1", "A", 1000, currency="JPY"), currency="JPY"), CUSTOMER, [], NOW
        ).discount
        == 0
    )
