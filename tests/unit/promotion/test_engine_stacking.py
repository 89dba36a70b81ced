"""Stacking: priority and order, exclusive, exclusivity groups, universal, one discount per line,
maximum promotions per basket, best for the customer (exact and greedy), caps with stacking."""

from loyalty.promotion.v1 import campaign_pb2, effect_pb2 as epb, settings_pb2 as spb
from tests.unit.promotion.builders import (
    amount_off,
    basket,
    campaign,
    discounts,
    lf,
    line,
    percent,
    promo,
    run,
    settings,
)

EXCLUSIVE, UNIVERSAL = campaign_pb2.STACKING_MODE_EXCLUSIVE, campaign_pb2.STACKING_MODE_UNIVERSAL
BEST = settings(campaign_selection=spb.CAMPAIGN_SELECTION_BEST_FOR_CUSTOMER)
TWO = basket(line("1", "A", 1000), line("2", "B", 1000))


def applied(evaluation):
    return [a.campaign_id for a in evaluation.applied]


def test_item_level_applies_before_basket_level_whatever_the_priority():
    campaigns = [
        campaign("basket", promo("b", percent(1000)), priority=9),
        campaign("item", promo("i", amount_off(500, lf(skus=["A"]))), priority=1),
    ]
    evaluation = run(campaigns, TWO)
    assert applied(evaluation) == ["item", "basket"]
    assert discounts(evaluation) == {"1": 550, "2": 100}  # 10 % of what is left: 500 + 1000


def test_higher_priority_first_within_a_level():
    campaigns = [
        campaign("low", promo("l", amount_off(100)), priority=1),
        campaign("high", promo("h", percent(5000)), priority=5),
    ]
    assert applied(run(campaigns, TWO)) == ["high", "low"]


def test_an_exclusive_campaign_shuts_out_stackables_but_not_universals():
    campaigns = [
        campaign("stack", promo("s", percent(1000))),
        campaign("excl", promo("e", percent(500)), mode=EXCLUSIVE),
        campaign("staff", promo("u", amount_off(100)), mode=UNIVERSAL),
    ]
    evaluation = run(campaigns, TWO)
    assert sorted(applied(evaluation)) == ["excl", "staff"]
    assert [(c.campaign_id, c.reason) for c in evaluation.candidates] == [("stack", 307)]


def test_the_higher_priority_exclusive_wins_by_default():
    campaigns = [
        campaign("e1", promo("a", percent(1000)), mode=EXCLUSIVE, priority=1),
        campaign("e2", promo("b", percent(500)), mode=EXCLUSIVE, priority=2),
    ]
    assert applied(run(campaigns, TWO)) == ["e2"]


def test_best_for_the_customer_picks_the_exclusive_worth_most():
    campaigns = [
        campaign("e1", promo("a", percent(1000)), mode=EXCLUSIVE, priority=1),
        campaign("e2", promo("b", percent(500)), mode=EXCLUSIVE, priority=2),
    ]
    assert applied(run(campaigns, TWO, config=BEST)) == ["e1"]


def test_best_for_the_customer_may_prefer_the_stackables_together():
    campaigns = [
        campaign("excl", promo("e", percent(1500)), mode=EXCLUSIVE),
        campaign("s1", promo("a", percent(1000))),
        campaign("s2", promo("b", amount_off(300))),
    ]
    assert sorted(applied(run(campaigns, TWO, config=BEST))) == ["s1", "s2"]
    assert applied(run(campaigns, TWO)) == ["excl"]


def test_one_campaign_per_exclusivity_group():
    campaigns = [
        campaign("g1", promo("a", percent(1000)), group="newsletter", priority=2),
        campaign("g2", promo("b", percent(2000)), group="newsletter", priority=1),
        campaign("other", promo("c", amount_off(10))),
    ]
    assert sorted(applied(run(campaigns, TWO))) == ["g1", "other"]
    assert sorted(applied(run(campaigns, TWO, config=BEST))) == ["g2", "other"]


def test_best_for_the_customer_falls_back_to_greedy_beyond_the_bound():
    campaigns = [
        campaign(f"g{i}", promo(f"p{i}", percent(100 * (i + 1))), group=f"group{i % 3}") for i in range(9)
    ]
    exact = run(campaigns, TWO, config=BEST)
    greedy = run(
        campaigns,
        TWO,
        config=settings(
            campaign_selection=spb.CAMPAIGN_SELECTION_BEST_FOR_CUSTOMER, best_combination_exact_limit=2
        ),
    )
    # Independent groups: greedy per group is optimal here, and the same as exhaustive.
    assert sorted(applied(exact)) == sorted(applied(greedy)) == ["g6", "g7", "g8"]


def test_one_discount_per_line():
    campaigns = [
        campaign("a", promo("a", percent(1000, lf(skus=["A"]))), priority=2),
        campaign("b", promo("b", percent(1000)), priority=1),
    ]
    several = run(campaigns, TWO)
    assert discounts(several) == {"1": 190, "2": 100}
    single = run(campaigns, TWO, config=settings(line_discounts=spb.LINE_DISCOUNT_POLICY_ONE_PER_LINE))
    assert discounts(single) == {"1": 100, "2": 100}


def test_maximum_promotions_per_basket():
    campaigns = [campaign(f"c{i}", promo(f"p{i}", amount_off(10)), priority=i) for i in range(4)]
    evaluation = run(campaigns, TWO, config=settings(max_promotions_per_basket=2))
    assert applied(evaluation) == ["c3", "c2"]
    assert sorted((c.campaign_id, c.reason) for c in evaluation.candidates) == [("c0", 333), ("c1", 333)]


def test_caps_with_stacking_the_basket_ceiling_cuts_the_later_promotion():
    campaigns = [
        campaign("a", promo("a", percent(3000)), priority=2),
        campaign("b", promo("b", percent(3000)), priority=1),
    ]
    evaluation = run(campaigns, TWO, config=settings(max_basket_discount_bps=4000))
    assert evaluation.discount == 800
    assert [(a.campaign_id, a.discount) for a in evaluation.applied] == [("a", 600), ("b", 200)]


def test_an_effect_cap_counts_only_its_own_effect():
    campaigns = [
        campaign("a", promo("a", percent(5000, cap=100)), priority=2),
        campaign("b", promo("b", amount_off(100)), priority=1),
    ]
    evaluation = run(campaigns, TWO)
    assert [(a.campaign_id, a.discount) for a in evaluation.applied] == [("a", 100), ("b", 100)]


def test_a_voucher_campaign_needs_its_code():
    campaigns = [campaign("v", promo("p", percent(1000)), code=True)]
    without = run(campaigns, TWO)
    assert without.discount == 0
    with_code = run(campaigns, TWO, codes=[("SPRING10", "v")])
    assert with_code.discount == 200
    assert with_code.lines[0].discounts[0].code == "SPRING10"
    assert [(c.code, c.accepted) for c in with_code.codes] == [("SPRING10", True)]


def test_a_code_whose_promotion_does_not_apply_is_rejected_with_the_reason():
    from loyalty.promotion.v1 import condition_pb2 as cpb

    condition = cpb.Condition(tier=cpb.TierCondition(tier_ids=["platinum"]))
    evaluation = run(
        [campaign("v", promo("p", percent(1000), condition=condition), code=True)],
        TWO,
        codes=[("X", "v"), ("X", "v")],
    )
    assert [(c.code, c.accepted, c.reason) for c in evaluation.codes] == [("X", False, 306)]


def test_too_many_codes_are_rejected():
    campaigns = [campaign(f"v{i}", promo(f"p{i}", amount_off(1)), code=True) for i in range(3)]
    evaluation = run(
        campaigns, TWO, codes=[(f"C{i}", f"v{i}") for i in range(3)], config=settings(max_codes_per_basket=2)
    )
    assert [(c.code, c.accepted, c.reason) for c in evaluation.codes] == [
        ("C0", True, 0),
        ("C1", True, 0),
        ("C2", False, 307),
    ]


def test_bogo_takes_the_cheapest_units_and_ties_go_to_the_earlier_line():
    bogo = epb.Effect(buy_x_get_y=epb.BuyXGetYEffect(buy_quantity=1, get_quantity=1, get_discount_bps=10000))
    evaluation = run(
        [campaign("c", promo("p", bogo))],
        basket(line("1", "A", 500), line("2", "B", 200), line("3", "C", 200)),
    )
    assert discounts(evaluation) == {"2": 200}
