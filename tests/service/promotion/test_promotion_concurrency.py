"""Concurrent changes of one campaign against the real database: the row lock orders them, so no
update is lost, and an etag lets exactly one of several racing writers win."""

import asyncio

import grpc

from loyalty.promotion.v1 import campaign_pb2 as pb, promotion_service_pb2 as api
from tests.service.promotion.helpers import key, percent_off

WRITERS = 12


async def test_concurrent_updates_lose_nothing(tenant):
    campaign = await tenant.create_campaign()
    changes = [pb.Campaign(campaign_id=campaign.campaign_id, labels={f"k{i}": "v"}) for i in range(WRITERS)]
    # Each adds its own label key: a lost update would drop another writer's label.
    await asyncio.gather(*(tenant.update(change, f"labels.k{i}") for i, change in enumerate(changes)))
    final = await tenant.get(campaign.campaign_id)
    assert dict(final.labels) == {f"k{i}": "v" for i in range(WRITERS)}
    assert final.etag == str(1 + WRITERS)


async def test_with_one_etag_exactly_one_writer_wins(tenant):
    campaign = await tenant.create_campaign()
    calls = [
        tenant.update(pb.Campaign(campaign_id=campaign.campaign_id, priority=i + 1, etag="1"), "priority")
        for i in range(WRITERS)
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    losers = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(winners) == 1 and len(losers) == WRITERS - 1
    assert {error.code() for error in losers} == {grpc.StatusCode.ABORTED}
    final = await tenant.get(campaign.campaign_id)
    assert (final.priority, final.etag) == (winners[0].campaign.priority, "2")


async def test_racing_retries_of_one_activation_activate_once(tenant):
    campaign = await tenant.create_campaign()
    await tenant.add_promotion(campaign.campaign_id, percent_off(1000))
    request = api.ActivateCampaignRequest(idempotency_key=key(), campaign_id=campaign.campaign_id)
    answers = await asyncio.gather(
        *(tenant.stub.ActivateCampaign(request, metadata=tenant.metadata) for _ in range(WRITERS))
    )
    # Version 1 at creation (a promotion has a version of its own); the activation wrote once.
    assert {a.campaign.etag for a in answers} == {"2"}
    assert (await tenant.get(campaign.campaign_id)).etag == "2"
