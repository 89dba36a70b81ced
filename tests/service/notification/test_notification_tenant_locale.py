"""The tenant's default locale is the gateway's (tenant.settings_changed): a customer without a locale
of their own gets the texts of the tenant's locale before the template's default, and an older
version of the event, delivered late, changes nothing."""

import asyncio

from loyalty.gateway.v1 import admin_pb2, events_pb2 as gateway_events
from tests.service.notification.helpers import publish, variant

# Nothing delivers here (this server only answers calls): the message is stored with its locale.
HOOK = "http://127.0.0.1:9/hook"


async def settings_changed(redis_url: str, tenant_id: str, locale: str, version: int) -> str:
    event = gateway_events.TenantSettingsChanged(
        settings=admin_pb2.TenantSettings(default_locale=locale), version=version
    )
    return await publish(redis_url, "gateway.events", tenant_id, event)


async def handled(db, event_id: str) -> None:
    query = "SELECT 1 FROM notification.processed_events WHERE event_id = $1"
    async with asyncio.timeout(15):
        while not await db.fetchval(query, event_id):
            await asyncio.sleep(0.05)


async def test_a_customer_without_a_locale_gets_the_tenants_and_an_older_event_changes_nothing(
    tenant, redis_url, db
):
    await tenant.template(variants=[variant(locale="en"), variant(locale="de"), variant(locale="fr")])
    customer = await tenant.enrol(locale="")
    assert (await tenant.send(customer, url=HOOK)).locale == "en"  # the template's default

    await handled(db, await settings_changed(redis_url, tenant.tenant_id, "de-AT", 2))
    assert (await tenant.send(customer, url=HOOK)).locale == "de"
    await handled(db, await settings_changed(redis_url, tenant.tenant_id, "fr", 1))
    assert (await tenant.send(customer, url=HOOK)).locale == "de"

    speaking_french = await tenant.enrol(locale="fr")
    assert (await tenant.send(speaking_french, url=HOOK)).locale == "fr"  # the customer's own comes first
