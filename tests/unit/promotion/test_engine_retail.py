"""Cross-item rules as real retail writes them, and the earning rules."""

from datetime import UTC, datetime

from loyalty.common.v1 import basket_pb2
from loyalty.promotion.v1 import condition_pb2 as cpb, earning_pb2, effect_pb2 as epb, evaluation_pb2 as evpb
from loyalty_promotion.engine import CustomerContext, compile_catalog, encode_evaluation, evaluate
from tests.unit.promotion.builders import (
    CUSTOMER,
    amount_off,
    basket,
    campaign,
    discounts,
    earning_rule,
    lf,
    line,
    money,
    percent,
    promo,
    run,
)
from tests.unit.promotion.test_engine_conditions import berlin, schedule_campaign

BASE, TIER, PROMO = (
    evpb.EARNING_SOURCE_BASE,
    evpb.EARNING_SOURCE_TIER_MULTIPLIER,
    evpb.EARNING_SOURCE_PROMOTION,
)


def test_buy_a_bed_of_brand_a_get_30_percent_off_mattresses_of_brand_a():
    bed = cpb.Condition(
        line_quantity=cpb.LineQuantityCondition(
            line_filter=lf(categories=["bed"], brands=["A"]), min_quantity=1
        )
    )
    offer = [
        campaign("beds", promo("p", percent(3000, lf(categories=["mattress"], brands=["A"])), condition=bed))
    ]
    mattress_a, mattress_b = (
        line("2", "M1", 40000, categories=["mattress"], brand="A"),
        line("3", "M2", 30000, categories=["mattress"], brand="B"),
    )
    with_bed = run(
        offer, basket(line("1", "BED1", 90000, categories=["bed"], brand="A"), mattress_a, mattress_b)
    )
    assert discounts(with_bed) == {"2": 12000}
    other_bed = run(offer, basket(line("1", "BED2", 90000, categories=["bed"], brand="B"), mattress_a))
    assert other_bed.discount == 0


def test_minus_15_percent_on_all_oils_in_february():
    offer = [
        campaign(
            "oils",
            promo("p", percent(1500, lf(categories=["oil"]))),
            schedule=schedule_campaign(berlin(2026, 2, 1, 0, 0), berlin(2026, 3, 1, 0, 0)),
        )
    ]
    the_basket = basket(
        line("1", "OLIVE", 1000, categories=["food/oil", "oil"]),
        line("2", "BREAD", 300, categories=["bakery"]),
    )
    assert discounts(run(offer, the_basket, now=berlin(2026, 2, 14, 10, 0))) == {"1": 150}
    assert run(offer, the_basket, now=berlin(2026, 3, 2, 10, 0)).discount == 0


def test_spend_5000_get_200_points():
    spend = cpb.Condition(basket_subtotal=cpb.BasketSubtotalCondition(min_subtotal=money(5000)))
    offer = [
        campaign(
            "spend",
            promo("p", epb.Effect(points_bonus=epb.PointsBonusEffect(fixed_points=200)), condition=spend),
        )
    ]
    lines = (line("1", "A", 3000), line("2", "B", 2000))
    evaluation = run(offer, basket(*lines))
    assert [(e.source, e.points, e.campaign_id) for e in evaluation.points] == [(PROMO, 200, "spend")]
    assert [ln.points for ln in evaluation.lines] == [120, 80]
    assert evaluation.applied[0].points == 200
    short = run(offer, basket(line("1", "A", 4999)))
    assert short.points == () and short.candidates[0].amount_to_qualify == 1


def test_arabica_lovers_code_10_off_for_new_customers_5_off_for_the_others():
    arabica = lf(categories=["arabica"])
    new = cpb.Condition(first_purchase=cpb.FirstPurchaseCondition())
    returning = cpb.Condition(negation=cpb.NotCondition(condition=new))
    offer = [
        campaign(
            "arabica",
            promo("new", amount_off(1000, arabica), condition=new),
            promo("others", amount_off(500, arabica), condition=returning),
            code=True,
        )
    ]
    the_basket = basket(
        line("1", "ARA1", 1200, categories=["coffee", "arabica"]),
        line("2", "ROB1", 900, categories=["coffee", "robusta"]),
    )
    code = [("ARABICA-LVRS", "arabica")]
    newcomer = run(offer, the_basket, customer=CustomerContext(customer_id="n"), codes=code)
    assert discounts(newcomer) == {"1": 1000}
    regular = run(offer, the_basket, customer=CUSTOMER, codes=code)
    assert discounts(regular) == {"1": 500}
    assert run(offer, the_basket, customer=CUSTOMER).discount == 0


def evaluate_points(rules, the_basket, customer=CUSTOMER, campaigns=()):
    return run(list(campaigns), the_basket, customer=customer, rules=rules)


def test_base_points_per_currency_unit_on_the_amount_paid_allocated_to_lines():
    rules = [earning_rule(points=1, per=100)]
    evaluation = evaluate_points(
        rules,
        basket(line("1", "A", 1050), line("2", "B", 1050)),
        campaigns=[campaign("c", promo("p", amount_off(100)))],
    )
    # 2100 - 100 = 2000 paid -> 20 points, 10 per line
    assert [(e.source, e.points) for e in evaluation.points] == [(BASE, 20)]
    assert [ln.points for ln in evaluation.lines] == [10, 10]


def test_points_round_once_on_the_rule_total_then_allocate():
    evaluation = evaluate_points(
        [earning_rule(points=1, per=100)],
        basket(line("1", "A", 150), line("2", "B", 150), line("3", "C", 150)),
    )
    assert evaluation.points_total == 4  # floor(4.5), not 1 + 1 + 1
    assert sum(ln.points for ln in evaluation.lines) == 4


def test_category_and_channel_rules_the_highest_priority_wins_per_line():
    rules = [
        earning_rule("base", points=1, per=100),
        earning_rule("coffee", points=3, per=100, priority=5, line_filter=lf(categories=["coffee"])),
        earning_rule(
            "web",
            points=10,
            per=100,
            priority=9,
            condition=cpb.Condition(channel=cpb.ChannelCondition(channels=[basket_pb2.CHANNEL_WEB])),
        ),
    ]
    evaluation = evaluate_points(
        rules, basket(line("1", "ARA", 1000, categories=["coffee"]), line("2", "MILK", 1000))
    )
    assert sorted((e.earning_rule_id, e.points) for e in evaluation.points) == [("base", 10), ("coffee", 30)]
    web = evaluate_points(
        rules, basket(line("1", "ARA", 1000, categories=["coffee"]), channel=basket_pb2.CHANNEL_WEB)
    )
    assert [(e.earning_rule_id, e.points) for e in web.points] == [("web", 100)]


def test_exclusions_gift_cards_and_tobacco_earn_nothing():
    rules = [earning_rule(line_filter=cpb.LineFilter(excluded_categories=["giftcard"]))]
    evaluation = evaluate_points(
        rules,
        basket(
            line("1", "GC50", 5000, categories=["giftcard"]),
            line("2", "CIG", 800, excluded=True),
            line("3", "A", 1000),
        ),
    )
    assert evaluation.points_total == 10
    assert [ln.points for ln in evaluation.lines] == [0, 0, 10]


def test_the_tier_multiplier_lives_in_the_earning_rule():
    rules = [
        earning_rule(tier_multipliers=[earning_pb2.TierMultiplier(tier_id="gold", multiplier_bps=15000)])
    ]
    evaluation = evaluate_points(rules, basket(line("1", "A", 1000), line("2", "B", 1000)))
    assert sorted((e.source, e.points, e.tier_id) for e in evaluation.points) == [
        (BASE, 20, ""),
        (TIER, 10, "gold"),
    ]
    assert [ln.points for ln in evaluation.lines] == [15, 15]


def test_bonus_points_multiplier_rate_per_unit_and_cap():
    rules = [earning_rule()]
    the_basket = basket(line("1", "A", 1000, 2), line("2", "B", 500))
    double = campaign(
        "x2",
        promo(
            "p",
            epb.Effect(points_bonus=epb.PointsBonusEffect(multiplier_bps=20000, line_filter=lf(skus=["A"]))),
        ),
    )
    assert [(e.source, e.points) for e in evaluate_points(rules, the_basket, campaigns=[double]).points] == [
        (BASE, 25),
        (PROMO, 20),
    ]
    rate = campaign(
        "rate",
        promo(
            "p",
            epb.Effect(
                points_bonus=epb.PointsBonusEffect(
                    rate=earning_pb2.PointsRate(points=5, per_amount=money(100)), max_points=60
                )
            ),
        ),
    )
    assert [e.points for e in evaluate_points(rules, the_basket, campaigns=[rate]).points] == [25, 60]
    unit = campaign("unit", promo("p", epb.Effect(points_bonus=epb.PointsBonusEffect(points_per_unit=7))))
    evaluation = evaluate_points(rules, the_basket, campaigns=[unit])
    assert [e.points for e in evaluation.points] == [25, 21]
    assert [ln.points for ln in evaluation.lines] == [20 + 14, 5 + 7]


def test_anonymous_baskets_earn_no_points():
    assert (
        evaluate_points([earning_rule()], basket(line("1", "A", 1000)), customer=CustomerContext()).points
        == ()
    )


def test_encoding_keeps_the_contract_invariants():
    rules = [earning_rule()]
    catalog = compile_catalog(
        [
            campaign("c", promo("p", percent(1000), message="10 % off")),
            campaign("v", promo("q", amount_off(100)), code=True),
        ],
        settings_for_encoding(),
        earning_rules=rules,
    )
    from loyalty_promotion.engine import PresentedCode

    evaluation = evaluate(
        catalog,
        basket(line("1", "A", 1000), line("2", "B", 333)),
        CUSTOMER,
        [PresentedCode("SAVE1", campaign_id="v"), PresentedCode("NOPE", rejection=300)],
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    result = encode_evaluation(evaluation)
    assert result.subtotal.amount_minor == 1333
    assert (
        sum(ln.discount_total.amount_minor for ln in result.lines)
        == result.total_discount.amount_minor
        == evaluation.discount
    )
    assert result.total_payable.amount_minor == 1333 - evaluation.discount
    assert sum(ln.points_to_earn for ln in result.lines) == result.points_earning.total_points
    assert [(c.code, c.accepted, c.reason) for c in result.codes] == [
        ("SAVE1", True, 0),
        ("NOPE", False, 300),
    ]
    sources = {d.promotion_id: d.source for ln in result.lines for d in ln.discounts}
    assert sources == {"p": evpb.DISCOUNT_SOURCE_PROMOTION, "q": evpb.DISCOUNT_SOURCE_CODE}
    assert any(m.kind == evpb.DISPLAY_MESSAGE_KIND_APPLIED and m.text == "10 % off" for m in result.messages)


def settings_for_encoding():
    from tests.unit.promotion.builders import settings

    return settings()
