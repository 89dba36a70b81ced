"""The abandoned cart, as data: on `cart.abandoned` (an app's activity recorded through the gateway's
RecordEvent) one trigger sends a reminder at once, and a second, two days later, issues a unique
code into the wallet as a last resort, unless a purchase came meanwhile. Real services and event
delivery; the delay's time runs on a promotion replica with a stopped clock, whose sweep is called
here (the suite's replica runs on the real clock, on which nothing falls due during a test)."""

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration

from loyalty.common.v1 import customer_pb2
from loyalty.gateway.v1 import customer_service_pb2 as customer_api
from loyalty.notification.v1 import notification_service_pb2 as notification_api
from loyalty.promotion.v1 import campaign_pb2, reward_pb2, trigger_pb2 as tpb
from loyalty_promotion import app_delays
from loyalty_promotion.service import DEFINITION as PROMOTION
from loyalty_runtime.testing import StoppedClock, running_service
from tests.service.gateway.conftest import provision
from tests.service.promotion.helpers import Client, Codes, key
from tests.service.promotion.test_promotion_triggers import publish
from tests.service.triggers.test_trigger_actions import create, email_template, eventually, purchase

LAST_RESORT_DELAY = timedelta(days=2)


async def abandoned_cart_campaign(suite):
    """A tenant with the two triggers, and its last resort's code campaign."""
    shop = await provision(suite["gateway"], suite)
    tenant = Client(suite["promotion"], shop.tenant_id)
    await email_template(
        suite["notification"], shop.tenant_id, "cart-reminder", "Still yours", "Your cart waits"
    )
    last_resort_codes = await Codes(tenant).voucher_campaign()
    campaign = await tenant.create_campaign(type=campaign_pb2.CAMPAIGN_TYPE_EVENT, program_id=shop.program_id)
    await tenant.activate(campaign.campaign_id)
    await create(
        tenant,
        tpb.Trigger(
            campaign_id=campaign.campaign_id,
            display_name="Cart reminder",
            event_type="cart.abandoned",
            actions=[
                tpb.TriggerAction(send_notification=tpb.NotificationAction(template_key="cart-reminder"))
            ],
        ),
    )
    await create(
        tenant,
        tpb.Trigger(
            campaign_id=campaign.campaign_id,
            display_name="Cart code, last resort",
            event_type="cart.abandoned",
            actions=[
                tpb.TriggerAction(
                    issue_code=reward_pb2.VoucherReward(campaign_id=last_resort_codes.campaign_id)
                )
            ],
            delay=Duration(seconds=int(LAST_RESORT_DELAY.total_seconds())),
            cancel_on_event_type="purchase.committed",
        ),
    )
    return shop


async def abandon_a_cart(suite, shop) -> str:
    """A customer enrolled through the gateway whose app records `cart.abandoned`; once the reminder
    is sent (both triggers have handled the event)."""
    gateway = suite["gateway"]
    enrolled = await gateway.customers.EnrolCustomer(
        customer_api.EnrolCustomerRequest(
            idempotency_key=key(),
            identifiers=[{"type": customer_pb2.IDENTIFIER_TYPE_EMAIL, "value": f"{key()}@example.com"}],
            given_name="Ada",
        ),
        metadata=shop.till_auth,
    )
    customer_id = enrolled.customer.customer_id
    await gateway.customers.RecordEvent(
        customer_api.RecordEventRequest(
            idempotency_key=key(), customer={"customer_id": customer_id}, event_type="cart.abandoned"
        ),
        metadata=shop.till_auth,
    )
    notification = suite["notification"]

    async def reminders():
        answer = await notification.stub.ListMessages(
            notification_api.ListMessagesRequest(customer_id=customer_id, template_key="cart-reminder"),
            metadata=notification.metadata(shop.tenant_id),
        )
        return list(answer.messages)

    assert len(await eventually(reminders)) == 1
    assert await eventually(lambda: waiting(suite, shop.tenant_id, "pending"))
    return customer_id


async def waiting(suite, tenant: str, state: str) -> int:
    """How many of the tenant's delayed rewards are in `state`."""
    async with suite["promotion"].server.resources.database.connection() as connection:
        return await connection.fetchval(
            "SELECT count(*) FROM promotion.delayed_rewards WHERE tenant_id = $1 AND state = $2",
            tenant,
            state,
        )


async def wallet_codes(suite, shop, customer_id: str) -> list[str]:
    wallet = await suite["gateway"].customers.GetWallet(
        customer_api.GetWalletRequest(customer={"customer_id": customer_id}), metadata=shop.till_auth
    )
    return [v.code for v in wallet.wallet.vouchers]


def stopped_replica(suite, clock: StoppedClock):
    """A promotion replica on `clock` whose sweep runs only when called."""
    sweepless = suite["promotion"].server.settings.model_copy(update={"delay_sweep_seconds": 0.0})
    return running_service(PROMOTION, sweepless, clock=clock)


async def test_no_purchase_two_days_after_the_reminder_issues_one_code_into_the_wallet(suite):
    shop = await abandoned_cart_campaign(suite)
    clock = StoppedClock(datetime.now(UTC))
    customer_id = await abandon_a_cart(suite, shop)
    async with stopped_replica(suite, clock) as replica:
        units = replica.server.resources.units
        clock.advance(days=1)
        assert await app_delays.give_due(units) == 0
        assert not await wallet_codes(suite, shop, customer_id)
        clock.advance(days=1, minutes=1)
        assert await app_delays.give_due(units) == 1
        [code] = await eventually(lambda: wallet_codes(suite, shop, customer_id))
        clock.advance(days=5)
        assert await app_delays.give_due(units) == 0
    assert await wallet_codes(suite, shop, customer_id) == [code]


async def test_a_purchase_within_the_two_days_means_no_code(suite, trigger_redis_url):
    shop = await abandoned_cart_campaign(suite)
    clock = StoppedClock(datetime.now(UTC))
    customer_id = await abandon_a_cart(suite, shop)
    # As the gateway's CommitCheckout publishes it, a day after the cart was left.
    bought = purchase(customer_id)
    await publish(
        trigger_redis_url, "gateway.events", shop.tenant_id, bought, at=clock.now + timedelta(days=1)
    )
    assert await eventually(lambda: waiting(suite, shop.tenant_id, "cancelled"))
    async with stopped_replica(suite, clock) as replica:
        clock.advance(days=3)
        assert await app_delays.give_due(replica.server.resources.units) == 0
    assert await waiting(suite, shop.tenant_id, "pending") == 0
    assert not await wallet_codes(suite, shop, customer_id)
