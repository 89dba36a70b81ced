"""EvaluateBasket and SimulateCampaign through the real server: the engine's answer for the tenant's
live campaigns, nothing written, statistics counted in memory and flushed in the background, bad
baskets refused naming the line."""

import asyncio

import grpc

from loyalty.common.v1 import date_pb2
from loyalty.promotion.v1 import (
    campaign_pb2 as pb,
    condition_pb2,
    evaluation_pb2,
    promotion_service_pb2 as api,
    statistics_pb2,
)
from tests.conftest import rpc_failure
from tests.service.promotion.helpers import Codes, basket, percent_off


async def _table_counts(service) -> dict[str, int]:
    async with service.server.resources.database.connection() as connection:
        return {
            table: await connection.fetchval(f"SELECT count(*) FROM promotion.{table}")
            for table in ("campaigns", "promotions", "idempotency_keys", "catalog_versions")
        }


async def test_a_live_campaign_discounts_the_basket(tenant):
    campaign = await tenant.live_campaign(percent_off(1000, skus=["oil"]))
    result = await tenant.evaluate(basket(("oil", 2, 500), ("bread", 1, 300)))
    assert result.subtotal.amount_minor == 1300
    assert result.promotion_discount.amount_minor == 100
    assert result.total_payable.amount_minor == 1200
    (applied,) = result.applied_promotions
    assert applied.campaign_id == campaign.campaign_id
    by_line = {line.line_id: line.discount_total.amount_minor for line in result.lines}
    assert by_line == {"l0": 100, "l1": 0}


async def test_drafts_paused_and_other_tenants_campaigns_do_not_apply(tenant, other_tenant):
    draft = await tenant.create_campaign()
    await tenant.add_promotion(draft.campaign_id, percent_off(1000))
    paused = await tenant.live_campaign(percent_off(2000))
    await tenant.pause(paused.campaign_id)
    await other_tenant.live_campaign(percent_off(3000))
    result = await tenant.evaluate(basket(("oil", 1, 1000)))
    assert result.promotion_discount.amount_minor == 0
    assert list(result.applied_promotions) == []


async def test_evaluation_writes_nothing_and_is_deterministic(tenant, promotion):
    await tenant.live_campaign(percent_off(1500))
    sample = basket(("oil", 3, 333), ("salt", 1, 99))
    first = await tenant.evaluate(sample)
    before = await _table_counts(promotion)
    answers = await asyncio.gather(*(tenant.evaluate(sample) for _ in range(20)))
    assert await _table_counts(promotion) == before
    for answer in answers:
        answer.ClearField("evaluation_time")
    first.ClearField("evaluation_time")
    assert all(answer == first for answer in answers)


async def test_a_change_applies_to_the_next_evaluation_on_the_same_replica(tenant):
    campaign = await tenant.live_campaign(percent_off(1000))
    assert (await tenant.evaluate(basket(("oil", 1, 1000)))).promotion_discount.amount_minor == 100
    await tenant.pause(campaign.campaign_id)
    assert (await tenant.evaluate(basket(("oil", 1, 1000)))).promotion_discount.amount_minor == 0
    await tenant.activate(campaign.campaign_id)
    assert (await tenant.evaluate(basket(("oil", 1, 1000)))).promotion_discount.amount_minor == 100


async def test_bad_baskets_are_refused_naming_the_line(tenant):
    await tenant.live_campaign(percent_off(1000))
    negative = basket(("oil", 1, 100), ("salt", -2, 50))
    failure = await rpc_failure(tenant.evaluate(negative))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert any(f.startswith("basket.lines[1].") for f in failure.fields), failure.fields
    mixed = basket(("oil", 1, 100))
    mixed.lines[0].unit_price.currency_code = "USD"
    failure = await rpc_failure(tenant.evaluate(mixed))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields and failure.fields[0].startswith("basket.lines[0].")
    unknown = basket(("oil", 1, 100), currency="XXZ")
    failure = await rpc_failure(tenant.evaluate(unknown))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_unknown_codes_are_reported_not_failed(tenant):
    await tenant.live_campaign(percent_off(1000))
    result = await tenant.evaluate(basket(("oil", 1, 1000)), "NOPE", "NOPE")
    assert [(c.code, c.accepted) for c in result.codes] == [("NOPE", False)]
    assert result.promotion_discount.amount_minor == 100


async def _statistics(tenant, campaign_id: str) -> statistics_pb2.CampaignStatistics:
    response = await tenant.stub.GetCampaignStatistics(
        api.GetCampaignStatisticsRequest(campaign_id=campaign_id), metadata=tenant.metadata
    )
    return response.statistics


async def test_statistics_count_evaluations_where_the_campaign_applied(tenant):
    campaign = await tenant.live_campaign(percent_off(1000, skus=["oil"]))
    await asyncio.gather(*(tenant.evaluate(basket(("oil", 1, 1000))) for _ in range(5)))
    await tenant.evaluate(basket(("bread", 1, 1000)))  # does not apply: not counted
    for _ in range(100):
        statistics = await _statistics(tenant, campaign.campaign_id)
        if statistics.evaluation_count == 5:
            break
        await asyncio.sleep(0.05)
    assert statistics.evaluation_count == 5
    assert [(m.currency_code, m.amount_minor) for m in statistics.discount_offered] == [("EUR", 500)]
    (per_promotion,) = statistics.promotions
    assert per_promotion.evaluation_count == 5
    assert per_promotion.discount_offered[0].amount_minor == 500


async def test_simulation_evaluates_a_draft_and_lists_conflicting_live_campaigns(tenant):
    rival = await tenant.live_campaign(
        percent_off(1000, skus=["oil"]),
        stacking=pb.StackingPolicy(mode=pb.STACKING_MODE_STACKABLE, exclusivity_group="oils"),
    )
    await tenant.live_campaign(percent_off(500, skus=["bread"]))
    draft = await tenant.create_campaign(
        stacking=pb.StackingPolicy(mode=pb.STACKING_MODE_STACKABLE, exclusivity_group="oils")
    )
    await tenant.add_promotion(draft.campaign_id, percent_off(2000, skus=["oil"]))
    response = await tenant.stub.SimulateCampaign(
        api.SimulateCampaignRequest(
            campaign_id=draft.campaign_id, baskets=[basket(("oil", 1, 1000)), basket(("bread", 1, 1000))]
        ),
        metadata=tenant.metadata,
    )
    assert len(response.results) == 2
    assert list(response.conflicting_campaign_ids) == [rival.campaign_id]
    # The draft took part (it is worth more to the customer or first by priority, and it stays a draft).
    applied = {a.campaign_id for a in response.results[0].applied_promotions}
    assert applied & {draft.campaign_id, rival.campaign_id}
    assert (await tenant.get(draft.campaign_id)).state == pb.CAMPAIGN_STATE_DRAFT
    live = await tenant.evaluate(basket(("oil", 1, 1000)))
    assert draft.campaign_id not in {a.campaign_id for a in live.applied_promotions}


async def test_simulation_refuses_bad_baskets_naming_them(tenant):
    draft = await tenant.create_campaign()
    await tenant.add_promotion(draft.campaign_id, percent_off(2000))
    failure = await rpc_failure(
        tenant.stub.SimulateCampaign(
            api.SimulateCampaignRequest(
                campaign_id=draft.campaign_id, baskets=[basket(("a", 1, 1)), basket(("b", -1, 1))]
            ),
            metadata=tenant.metadata,
        )
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields[0].startswith("baskets[1].lines[0]"), failure.fields
    failure = await rpc_failure(
        tenant.stub.SimulateCampaign(
            api.SimulateCampaignRequest(campaign_id=draft.campaign_id), metadata=tenant.metadata
        )
    )
    assert failure.fields == ["baskets"]


async def test_impossible_dates_of_the_customer_are_invalid_argument(tenant):
    await tenant.live_campaign(percent_off(1000))
    customer = evaluation_pb2.CustomerContext(
        customer_id="c1", birth_date=date_pb2.Date(year=1990, month=2, day=30)
    )
    failure = await rpc_failure(
        tenant.stub.EvaluateBasket(
            api.EvaluateBasketRequest(basket=basket(("oil", 1, 100)), customer=customer),
            metadata=tenant.metadata,
        )
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["customer.birth_date"])
    customer = evaluation_pb2.CustomerContext(
        customer_id="c1",
        attributes={
            "joined": condition_pb2.AttributeValue(date_value=date_pb2.Date(year=2020, month=13, day=1))
        },
    )
    failure = await rpc_failure(
        tenant.stub.EvaluateBasket(
            api.EvaluateBasketRequest(basket=basket(("oil", 1, 100)), customer=customer),
            metadata=tenant.metadata,
        )
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["customer.attributes"])


async def test_a_promotion_that_would_not_compile_is_refused_on_save(tenant):
    """An impossible date in a condition passes the engine's validation but not its compiler: the
    save is refused, so the tenant's catalog keeps compiling."""
    campaign = await tenant.create_campaign()
    promotion = percent_off(1000)
    promotion.condition.CopyFrom(
        condition_pb2.Condition(
            customer_attribute=condition_pb2.CustomerAttributeCondition(
                attribute="joined",
                operator=condition_pb2.ATTRIBUTE_OPERATOR_EQUALS,
                value=condition_pb2.AttributeValue(date_value=date_pb2.Date(year=2020, month=13, day=1)),
            )
        )
    )
    failure = await rpc_failure(tenant.add_promotion(campaign.campaign_id, promotion))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["promotion"])
    await tenant.live_campaign(percent_off(1000))
    assert (await tenant.evaluate(basket(("oil", 1, 1000)))).promotion_discount.amount_minor == 100


async def test_a_stored_campaign_that_no_longer_compiles_is_left_out_not_fatal(tenant, promotion):
    """As if saved before a stricter engine: the other campaigns of the tenant still apply."""
    broken = await tenant.live_campaign(percent_off(500))
    await tenant.live_campaign(percent_off(1000))
    promotion_pb = percent_off(500)
    promotion_pb.condition.customer_attribute.attribute = "joined"
    promotion_pb.condition.customer_attribute.operator = condition_pb2.ATTRIBUTE_OPERATOR_EQUALS
    promotion_pb.condition.customer_attribute.value.date_value.CopyFrom(
        date_pb2.Date(year=2020, month=13, day=1)
    )
    async with promotion.server.resources.database.connection() as connection:
        await connection.execute(
            "UPDATE promotion.promotions SET payload = $3 WHERE tenant_id = $1 AND campaign_id = $2",
            tenant.tenant_id,
            broken.campaign_id,
            promotion_pb.SerializeToString(),
        )
        await connection.execute(
            "UPDATE promotion.catalog_versions SET version = version + 1 WHERE tenant_id = $1",
            tenant.tenant_id,
        )
    await promotion.server.resources.redis.incr(f"promotion:catalog-version:{tenant.tenant_id}")
    # No evaluation ran since the activation dropped this replica's entry: this one compiles.
    result = await tenant.evaluate(basket(("oil", 1, 1000)))
    assert broken.campaign_id not in {a.campaign_id for a in result.applied_promotions}
    assert result.promotion_discount.amount_minor == 100


async def test_a_basket_of_300_lines_is_evaluated(tenant):
    """The contract allows up to 500 lines (the engine's limit), not the validator's default 100."""
    campaign = await tenant.live_campaign(percent_off(1000))
    result = await tenant.evaluate(basket(*[(f"S{n}", 1, 100) for n in range(300)]))
    assert len(result.lines) == 300 and result.promotion_discount.amount_minor == 3000
    assert [a.campaign_id for a in result.applied_promotions] == [campaign.campaign_id]


async def test_without_baskets_a_simulation_samples_the_recent_committed_checkouts(tenant):
    await tenant.live_campaign(percent_off(500, skus=["bread"]))
    checkouts = Codes(tenant)
    for number, sku in enumerate(["oil", "bread", "oil"]):
        await checkouts.reserve(f"sim-{number}", basket((sku, 1, 1000)))
        if number < 2:  # the third stays reserved: not a sample
            await checkouts.commit(f"sim-{number}")
    draft = await tenant.create_campaign()
    await tenant.add_promotion(draft.campaign_id, percent_off(2000, skus=["oil"]))
    response = await tenant.stub.SimulateCampaign(
        api.SimulateCampaignRequest(campaign_id=draft.campaign_id), metadata=tenant.metadata
    )
    assert list(response.sampled_checkout_ids) == ["sim-1", "sim-0"]  # newest first
    draft_discounts = [
        sum(a.discount.amount_minor for a in result.applied_promotions if a.campaign_id == draft.campaign_id)
        for result in response.results
    ]
    assert draft_discounts == [0, 200]  # the bread basket, then the oil basket at 20% off
