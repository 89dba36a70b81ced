"""Campaign and promotion administration through the real server: create, read, list, update with a
mask, the lifecycle, idempotency, tenant scoping and refusals of bad input."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc

from loyalty.common.v1 import basket_pb2
from loyalty.promotion.v1 import (
    campaign_pb2 as pb,
    condition_pb2,
    effect_pb2,
    promotion_pb2,
    promotion_service_pb2 as api,
    schedule_pb2,
)
from loyalty_runtime.protobuf import timestamp
from tests.conftest import rpc_failure
from tests.service.promotion.helpers import key, percent_off


async def test_a_campaign_is_created_as_a_draft_and_read_back(tenant):
    created = await tenant.create_campaign(
        display_name="Oils in February",
        priority=5,
        channels=[basket_pb2.CHANNEL_STORE, basket_pb2.CHANNEL_WEB],
        store_ids=["s-1"],
        audience=pb.Audience(segments=condition_pb2.SegmentCondition(segment_ids=["vip"])),
        stacking=pb.StackingPolicy(mode=pb.STACKING_MODE_EXCLUSIVE, exclusivity_group="oils"),
        labels={"team": "food"},
    )
    assert created.state == pb.CAMPAIGN_STATE_DRAFT
    assert created.type == pb.CAMPAIGN_TYPE_PROMOTION
    assert uuid.UUID(created.campaign_id) and created.etag == "1"
    read = await tenant.get(created.campaign_id)
    assert read == created
    assert list(read.channels) == [basket_pb2.CHANNEL_STORE, basket_pb2.CHANNEL_WEB]
    assert read.stacking.exclusivity_group == "oils"


async def test_the_same_idempotency_key_returns_the_first_campaign(tenant):
    request = api.CreateCampaignRequest(idempotency_key=key(), campaign=pb.Campaign(display_name="Once"))
    first = await tenant.stub.CreateCampaign(request, metadata=tenant.metadata)
    again = await tenant.stub.CreateCampaign(request, metadata=tenant.metadata)
    assert again.campaign.campaign_id == first.campaign.campaign_id
    listed = await tenant.stub.ListCampaigns(api.ListCampaignsRequest(), metadata=tenant.metadata)
    assert [c.campaign_id for c in listed.campaigns] == [first.campaign.campaign_id]
    request.campaign.display_name = "Other"
    failure = await rpc_failure(tenant.stub.CreateCampaign(request, metadata=tenant.metadata))
    assert failure.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_lifecycle_through_the_api(tenant):
    campaign = await tenant.create_campaign()
    failure = await rpc_failure(tenant.activate(campaign.campaign_id))
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CAMPAIGN_TRANSITION_NOT_ALLOWED",
    )  # no promotion yet
    await tenant.add_promotion(campaign.campaign_id, percent_off(1000))
    assert (await tenant.activate(campaign.campaign_id)).state == pb.CAMPAIGN_STATE_ACTIVE
    assert (await tenant.pause(campaign.campaign_id)).state == pb.CAMPAIGN_STATE_PAUSED
    archived = await tenant.stub.ArchiveCampaign(
        api.ArchiveCampaignRequest(idempotency_key=key(), campaign_id=campaign.campaign_id),
        metadata=tenant.metadata,
    )
    assert archived.campaign.state == pb.CAMPAIGN_STATE_ARCHIVED
    failure = await rpc_failure(tenant.activate(campaign.campaign_id))
    assert failure.reason == "CAMPAIGN_TRANSITION_NOT_ALLOWED"
    failure = await rpc_failure(
        tenant.stub.DeleteCampaign(
            api.DeleteCampaignRequest(idempotency_key=key(), campaign_id=campaign.campaign_id),
            metadata=tenant.metadata,
        )
    )
    assert failure.reason == "CAMPAIGN_TRANSITION_NOT_ALLOWED"
    # Archived campaigns are hidden from the default listing, shown when asked for.
    listed = await tenant.stub.ListCampaigns(api.ListCampaignsRequest(), metadata=tenant.metadata)
    assert listed.campaigns == []
    listed = await tenant.stub.ListCampaigns(
        api.ListCampaignsRequest(states=[pb.CAMPAIGN_STATE_ARCHIVED]), metadata=tenant.metadata
    )
    assert [c.campaign_id for c in listed.campaigns] == [campaign.campaign_id]


async def test_a_campaign_activated_before_its_start_is_scheduled(tenant):
    start = datetime.now(UTC) + timedelta(days=1)
    campaign = await tenant.create_campaign(schedule=schedule_pb2.Schedule(start_time=timestamp(start)))
    await tenant.add_promotion(campaign.campaign_id, percent_off(500))
    assert (await tenant.activate(campaign.campaign_id)).state == pb.CAMPAIGN_STATE_SCHEDULED


async def test_only_a_draft_is_deleted_with_its_promotions(tenant):
    campaign = await tenant.create_campaign()
    promotion = await tenant.add_promotion(campaign.campaign_id, percent_off(500))
    await tenant.stub.DeleteCampaign(
        api.DeleteCampaignRequest(idempotency_key=key(), campaign_id=campaign.campaign_id),
        metadata=tenant.metadata,
    )
    failure = await rpc_failure(tenant.get(campaign.campaign_id))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "CAMPAIGN_NOT_FOUND")
    failure = await rpc_failure(
        tenant.stub.GetPromotion(
            api.GetPromotionRequest(promotion_id=promotion.promotion_id), metadata=tenant.metadata
        )
    )
    assert failure.reason == "PROMOTION_NOT_FOUND"


async def test_update_changes_only_the_masked_fields(tenant):
    campaign = await tenant.create_campaign(display_name="Before", description="kept", priority=1)
    changes = pb.Campaign(
        campaign_id=campaign.campaign_id, display_name="After", description="ignored", priority=9
    )
    updated = (await tenant.update(changes, "display_name", "priority")).campaign
    assert (updated.display_name, updated.description, updated.priority) == ("After", "kept", 9)
    assert updated.etag == "2"
    assert await tenant.get(campaign.campaign_id) == updated


async def test_update_refuses_fields_it_cannot_change(tenant):
    campaign = await tenant.create_campaign()
    changes = pb.Campaign(campaign_id=campaign.campaign_id, type=pb.CAMPAIGN_TYPE_VOUCHER)
    failure = await rpc_failure(tenant.update(changes, "type"))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["update_mask.type"])
    assert (await tenant.get(campaign.campaign_id)).type == pb.CAMPAIGN_TYPE_PROMOTION


async def test_a_stale_etag_is_refused(tenant):
    campaign = await tenant.create_campaign()
    await tenant.update(pb.Campaign(campaign_id=campaign.campaign_id, priority=2, etag="1"), "priority")
    failure = await rpc_failure(
        tenant.update(pb.Campaign(campaign_id=campaign.campaign_id, priority=3, etag="1"), "priority")
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.ABORTED, "CONCURRENT_MODIFICATION")
    assert (await tenant.get(campaign.campaign_id)).priority == 2


async def test_list_pages_by_priority(tenant):
    ids = []
    for priority in (1, 3, 2, 3):
        ids.append(((-priority), (await tenant.create_campaign(priority=priority)).campaign_id))
    expected = [campaign_id for _, campaign_id in sorted(ids)]
    seen, token = [], ""
    while True:
        page = await tenant.stub.ListCampaigns(
            api.ListCampaignsRequest(page_size=3, page_token=token), metadata=tenant.metadata
        )
        seen += [c.campaign_id for c in page.campaigns]
        token = page.next_page_token
        if not token:
            break
    assert seen == expected
    failure = await rpc_failure(
        tenant.stub.ListCampaigns(api.ListCampaignsRequest(page_token="!!"), metadata=tenant.metadata)
    )
    assert failure.fields == ["page_token"]


async def test_list_filters_by_type_and_labels(tenant):
    await tenant.create_campaign(labels={"team": "food"})
    wanted = await tenant.create_campaign(type=pb.CAMPAIGN_TYPE_VOUCHER, labels={"team": "food"})
    await tenant.create_campaign(type=pb.CAMPAIGN_TYPE_VOUCHER, labels={"team": "toys"})
    page = await tenant.stub.ListCampaigns(
        api.ListCampaignsRequest(type=pb.CAMPAIGN_TYPE_VOUCHER, labels={"team": "food"}, page_size=1),
        metadata=tenant.metadata,
    )
    assert [c.campaign_id for c in page.campaigns] == [wanted.campaign_id]


async def test_another_tenants_campaign_looks_unknown(tenant, other_tenant):
    campaign = await tenant.create_campaign()
    promotion = await tenant.add_promotion(campaign.campaign_id, percent_off(500))
    unknown = str(uuid.uuid4())
    for campaign_id in (campaign.campaign_id, unknown, "not-a-uuid"):
        failure = await rpc_failure(other_tenant.get(campaign_id))
        assert (failure.code, failure.reason, failure.fields) == (
            grpc.StatusCode.NOT_FOUND,
            "CAMPAIGN_NOT_FOUND",
            ["campaign_id"],
        )
    for call in (
        other_tenant.activate(campaign.campaign_id),
        other_tenant.update(pb.Campaign(campaign_id=campaign.campaign_id, priority=7), "priority"),
        other_tenant.add_promotion(campaign.campaign_id, percent_off(100)),
        other_tenant.stub.GetCampaignStatistics(
            api.GetCampaignStatisticsRequest(campaign_id=campaign.campaign_id), metadata=other_tenant.metadata
        ),
    ):
        assert (await rpc_failure(call)).code == grpc.StatusCode.NOT_FOUND
    failure = await rpc_failure(
        other_tenant.stub.GetPromotion(
            api.GetPromotionRequest(promotion_id=promotion.promotion_id), metadata=other_tenant.metadata
        )
    )
    assert failure.reason == "PROMOTION_NOT_FOUND"
    listed = await other_tenant.stub.ListCampaigns(api.ListCampaignsRequest(), metadata=other_tenant.metadata)
    assert listed.campaigns == []
    assert (await tenant.get(campaign.campaign_id)).state == pb.CAMPAIGN_STATE_DRAFT


async def test_a_campaign_that_cannot_work_is_refused_with_field_violations(tenant):
    now = datetime.now(UTC)
    backwards = schedule_pb2.Schedule(start_time=timestamp(now), end_time=timestamp(now - timedelta(days=1)))
    failure = await rpc_failure(tenant.create_campaign(display_name="", schedule=backwards))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "campaign.display_name" in failure.fields
    assert any(f.startswith("campaign.schedule") for f in failure.fields), failure.fields
    listed = await tenant.stub.ListCampaigns(api.ListCampaignsRequest(), metadata=tenant.metadata)
    assert listed.campaigns == []


async def test_a_promotion_that_cannot_work_is_refused_naming_its_field(tenant):
    campaign = await tenant.create_campaign()
    failure = await rpc_failure(tenant.add_promotion(campaign.campaign_id, percent_off(10_001)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.reason == "PERCENT_OUT_OF_RANGE"
    assert failure.fields == ["promotion.effects[0].percent_off.percent_bps"]
    bad_cel = promotion_pb2.Promotion(
        display_name="cel",
        condition=condition_pb2.Condition(
            expression=condition_pb2.ExpressionCondition(cel="basket.subtotal >")
        ),
        effects=[effect_pb2.Effect(percent_off=effect_pb2.PercentOffEffect(percent_bps=100))],
    )
    failure = await rpc_failure(tenant.add_promotion(campaign.campaign_id, bad_cel))
    assert failure.reason == "EXPRESSION_INVALID"
    assert failure.fields == ["promotion.condition.expression.cel"]
    no_effect = promotion_pb2.Promotion(display_name="nothing", effects=[effect_pb2.Effect()])
    failure = await rpc_failure(tenant.add_promotion(campaign.campaign_id, no_effect))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    listed = await tenant.stub.ListPromotions(
        api.ListPromotionsRequest(campaign_id=campaign.campaign_id), metadata=tenant.metadata
    )
    assert listed.promotions == []


async def test_garbage_in_requests_is_invalid_argument_not_internal(tenant):
    campaign = await tenant.create_campaign()
    for request in (
        api.CreateCampaignRequest(idempotency_key="", campaign=pb.Campaign(display_name="x")),
        api.CreateCampaignRequest(idempotency_key=key(), campaign=pb.Campaign(display_name="x\x00y")),
        api.CreateCampaignRequest(idempotency_key=key(), campaign=pb.Campaign(display_name="x" * 1000)),
    ):
        failure = await rpc_failure(tenant.stub.CreateCampaign(request, metadata=tenant.metadata))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure.message
        assert failure.fields
    failure = await rpc_failure(tenant.update(pb.Campaign(campaign_id=campaign.campaign_id), "no_such_field"))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_promotions_are_listed_and_updated(tenant):
    campaign = await tenant.create_campaign()
    low = await tenant.add_promotion(campaign.campaign_id, percent_off(100))
    high_pb = percent_off(200)
    high_pb.priority = 5
    high = await tenant.add_promotion(campaign.campaign_id, high_pb)
    listed = await tenant.stub.ListPromotions(
        api.ListPromotionsRequest(campaign_id=campaign.campaign_id, page_size=1), metadata=tenant.metadata
    )
    assert [p.promotion_id for p in listed.promotions] == [high.promotion_id]
    rest = await tenant.stub.ListPromotions(
        api.ListPromotionsRequest(campaign_id=campaign.campaign_id, page_token=listed.next_page_token),
        metadata=tenant.metadata,
    )
    assert [p.promotion_id for p in rest.promotions] == [low.promotion_id]
    changes = promotion_pb2.Promotion(promotion_id=low.promotion_id, display_name="renamed", etag=low.etag)
    updated = await tenant.stub.UpdatePromotion(
        api.UpdatePromotionRequest(
            idempotency_key=key(), promotion=changes, update_mask={"paths": ["display_name"]}
        ),
        metadata=tenant.metadata,
    )
    assert updated.promotion.display_name == "renamed"
    assert list(updated.promotion.effects) == list(low.effects)


async def test_only_a_drafts_promotions_are_deleted(tenant):
    campaign = await tenant.create_campaign()
    doomed = await tenant.add_promotion(campaign.campaign_id, percent_off(100))
    kept = await tenant.add_promotion(campaign.campaign_id, percent_off(200))
    await tenant.stub.DeletePromotion(
        api.DeletePromotionRequest(idempotency_key=key(), promotion_id=doomed.promotion_id),
        metadata=tenant.metadata,
    )
    listed = await tenant.stub.ListPromotions(
        api.ListPromotionsRequest(campaign_id=campaign.campaign_id), metadata=tenant.metadata
    )
    assert [p.promotion_id for p in listed.promotions] == [kept.promotion_id]
    await tenant.activate(campaign.campaign_id)
    failure = await rpc_failure(
        tenant.stub.DeletePromotion(
            api.DeletePromotionRequest(idempotency_key=key(), promotion_id=kept.promotion_id),
            metadata=tenant.metadata,
        )
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CAMPAIGN_TRANSITION_NOT_ALLOWED",
    )


async def test_list_by_state_sees_the_state_time_gave(tenant):
    now = datetime.now(UTC)
    ending = schedule_pb2.Schedule(end_time=timestamp(now + timedelta(seconds=1)))
    campaign = await tenant.live_campaign(percent_off(100), schedule=ending)
    draft = await tenant.create_campaign()

    async def listed(*states) -> list[str]:
        page = await tenant.stub.ListCampaigns(
            api.ListCampaignsRequest(states=states), metadata=tenant.metadata
        )
        return [c.campaign_id for c in page.campaigns]

    assert await listed(pb.CAMPAIGN_STATE_ACTIVE) == [campaign.campaign_id]
    await asyncio.sleep(max(0.0, (now + timedelta(seconds=1.05) - datetime.now(UTC)).total_seconds()))
    assert await listed(pb.CAMPAIGN_STATE_ACTIVE) == []
    assert await listed(pb.CAMPAIGN_STATE_ENDED) == [campaign.campaign_id]
    assert sorted(await listed(pb.CAMPAIGN_STATE_ENDED, pb.CAMPAIGN_STATE_DRAFT)) == sorted(
        [campaign.campaign_id, draft.campaign_id]
    )
    failure = await rpc_failure(
        tenant.stub.ListCampaigns(
            api.ListCampaignsRequest(states=[pb.CAMPAIGN_STATE_UNSPECIFIED]), metadata=tenant.metadata
        )
    )
    assert failure.fields == ["states"]
