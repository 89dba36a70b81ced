"""`customer.birthday` against a real promotion server on a controllable clock: birthdays copied
from profile's events (month and day only), emitted once a year on the day that is the birthday in
the customer's time zone (else the tenant's), forgotten when profile drops the birth date or erases
the customer, and listened to by triggers."""

import asyncio
from datetime import UTC, datetime

from redis.asyncio import Redis

from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty.promotion.v1 import events_pb2
from loyalty_promotion import app_birthdays
from loyalty_promotion.service import DEFINITION
from loyalty_runtime.testing import StoppedClock, running_service
from tests.service.promotion.test_promotion_triggers import create, event_campaign, grants, publish, welcome


async def birthdays_emitted(redis_url: str, tenant: str, count: int) -> list[events_pb2.CustomerBirthday]:
    """The tenant's `customer.birthday` events once `count` are published (the relay runs behind)."""
    redis = Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(15):
            while True:
                found = [
                    events_pb2.CustomerBirthday.FromString(fields[b"payload"])
                    for _, fields in await redis.xrange("promotion.events")
                    if fields[b"type"] == b"customer.birthday" and fields[b"tenant"].decode() == tenant
                ]
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


def born(customer_id: str, month: int, day: int, time_zone: str = ""):
    birthday = profile_events.Birthday(month=month, day=day, time_zone=time_zone)
    return profile_events.CustomerCreated(customer_id=customer_id, birthday=birthday)


async def test_birthdays_are_emitted_once_on_the_customers_own_day_and_reward_through_a_trigger(
    tenant, redis_url, promotion_settings
):
    campaign = await event_campaign(tenant)
    await create(
        tenant, welcome(campaign.campaign_id, display_name="Birthday", event_type="customer.birthday")
    )
    await create(tenant, welcome(campaign.campaign_id))  # on customer.created, to know they are handled
    for created in (
        born("c-auckland", 6, 15, "Pacific/Auckland"),  # already the 15th there
        born("c-utc", 6, 14),  # the tenant's zone: UTC
        born("c-los-angeles", 6, 15, "America/Los_Angeles"),  # still the 14th there
        born("c-dropped", 6, 14),
        born("c-erased", 6, 14),
        profile_events.CustomerCreated(customer_id="c-unknown"),
    ):
        await publish(redis_url, "profile.events", tenant.tenant_id, created)
    dropped = profile_events.CustomerUpdated(customer_id="c-dropped", fields=["birth_date"])
    await publish(redis_url, "profile.events", tenant.tenant_id, dropped)
    await publish(
        redis_url, "profile.events", tenant.tenant_id, profile_events.CustomerErased(customer_id="c-erased")
    )
    await publish(
        redis_url, "profile.events", tenant.tenant_id, profile_events.CustomerCreated(customer_id="c-last")
    )
    await grants(tenant, 7)  # six welcomes and the marker's: all profile events before it are handled

    clock = StoppedClock(datetime(2031, 6, 14, 20, tzinfo=UTC))
    no_schedule = promotion_settings.model_copy(update={"birthday_check_seconds": 0.0})
    async with running_service(DEFINITION, no_schedule, clock=clock) as replica:
        units = replica.server.resources.units
        assert await app_birthdays.emit_due(units) == 2
        assert await app_birthdays.emit_due(units) == 0  # once a year
        clock.advance(hours=12)  # the 15th in Los Angeles too
        assert await app_birthdays.emit_due(units) == 1

    emitted = await birthdays_emitted(redis_url, tenant.tenant_id, 3)
    assert sorted((e.customer_id, e.year) for e in emitted) == [
        ("c-auckland", 2031),
        ("c-los-angeles", 2031),
        ("c-utc", 2031),
    ]
    async with asyncio.timeout(15):
        while len(rewarded := await grants(tenant, 10)) < 10:
            await asyncio.sleep(0.05)
    celebrated = sorted(g.customer_id for g in rewarded if g.source_event_id.startswith("promotion"))
    assert celebrated == ["c-auckland", "c-los-angeles", "c-utc"]


async def test_a_29_february_birthday_is_celebrated_on_the_28th_in_other_years(
    tenant, redis_url, promotion_settings
):
    campaign = await event_campaign(tenant)
    await create(tenant, welcome(campaign.campaign_id))
    await publish(redis_url, "profile.events", tenant.tenant_id, born("c-leap", 2, 29))
    await grants(tenant, 1)
    clock = StoppedClock(datetime(2031, 2, 28, 9, tzinfo=UTC))
    no_schedule = promotion_settings.model_copy(update={"birthday_check_seconds": 0.0})
    async with running_service(DEFINITION, no_schedule, clock=clock) as replica:
        assert await app_birthdays.emit_due(replica.server.resources.units) == 1
    [emitted] = await birthdays_emitted(redis_url, tenant.tenant_id, 1)
    assert (emitted.customer_id, emitted.year) == ("c-leap", 2031)
