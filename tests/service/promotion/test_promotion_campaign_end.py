"""campaign.ended: published once through the outbox when a live campaign's schedule reaches its
end (by the service's sweep), with that end; not for a campaign paused or still a draft at its end;
the campaign reads as ENDED."""

import asyncio
from datetime import UTC, datetime, timedelta

from loyalty.promotion.v1 import campaign_pb2, events_pb2, schedule_pb2
from loyalty_runtime.protobuf import timestamp
from tests.service.promotion.helpers import percent_off
from tests.service.promotion.test_promotion_earning import published

EVENT_WAIT_SECONDS = 1.0


def ending_in(seconds: float) -> schedule_pb2.Schedule:
    end = (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)
    return schedule_pb2.Schedule(end_time=timestamp(end))


async def test_a_live_campaign_that_reaches_its_end_publishes_campaign_ended_once(tenant, redis_url):
    schedule = ending_in(2)
    live = await tenant.live_campaign(percent_off(1000), schedule=schedule)
    paused = await tenant.live_campaign(percent_off(500), schedule=schedule)
    await tenant.pause(paused.campaign_id)
    await tenant.create_campaign(schedule=schedule)  # a draft
    events = await published(redis_url, tenant.tenant_id, 4)  # activated twice, paused, ended
    await asyncio.sleep(EVENT_WAIT_SECONDS)  # several sweeps later
    events = await published(redis_url, tenant.tenant_id, 4)
    ended = [(key, payload) for kind, key, payload in events if kind == "campaign.ended"]
    assert [key for key, _ in ended] == [live.campaign_id]
    announced = events_pb2.CampaignEnded.FromString(ended[0][1])
    assert announced.campaign_id == live.campaign_id and announced.end_time == schedule.end_time
    assert (await tenant.get(live.campaign_id)).state == campaign_pb2.CAMPAIGN_STATE_ENDED
