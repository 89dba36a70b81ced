"""Triggers' conditions and actions end to end, with real services and real event delivery
(Redis Streams, the runtime's consumers and job workers): the loyal-customer webhook with a unique
code, signed and retried; a birthday code into the wallet, valid 7 days; the welcome bonus on
enrolment through the gateway to the ledger; notifications and static segments; and what a
trigger may not name, refused on save."""

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from loyalty.common.v1 import customer_pb2
from loyalty.gateway.v1 import customer_service_pb2 as customer_api, events_pb2 as gateway_events
from loyalty.ledger.v1 import ledger_service_pb2 as ledger_api, ledger_service_pb2_grpc
from loyalty.notification.v1 import notification_service_pb2 as notification_api
from loyalty.profile.v1 import profile_service_pb2 as profile_api, profile_service_pb2_grpc
from loyalty.promotion.v1 import (
    campaign_pb2,
    condition_pb2 as cpb,
    effect_pb2,
    promotion_pb2,
    promotion_service_pb2 as api,
    reward_pb2,
    trigger_pb2 as tpb,
)
from loyalty.segmentation.v1 import segmentation_service_pb2 as segmentation_api
from loyalty_promotion.service import DEFINITION as PROMOTION
from loyalty_runtime.testing import running_service
from loyalty_runtime.webhooks import SIGNATURE_HEADER, SignatureRefused, verify_webhook
from tests.conftest import rpc_failure
from tests.service.gateway.conftest import provision
from tests.service.notification.helpers import EMAIL, TRANSACTIONAL, variant
from tests.service.notification.receivers import HttpReceiver
from tests.service.promotion.helpers import Client, Codes, basket, eur, key
from tests.service.promotion.test_promotion_triggers import grants, publish
from tests.service.segmentation.helpers import Client as Segments
from tests.unit.promotion.test_trigger_actions import LOYAL_WITHOUT_BLACK_FRIDAY

SECRET = "whsec-" + "k" * 26


@pytest.fixture
def tenant(suite) -> Client:
    return Client(suite["promotion"], f"t-{uuid.uuid4().hex[:8]}")


async def event_campaign(tenant: Client) -> campaign_pb2.Campaign:
    campaign = await tenant.create_campaign(type=campaign_pb2.CAMPAIGN_TYPE_EVENT, program_id="club")
    return await tenant.activate(campaign.campaign_id)


async def create(tenant: Client, trigger: tpb.Trigger) -> tpb.Trigger:
    response = await tenant.stub.CreateTrigger(
        api.CreateTriggerRequest(idempotency_key=key(), trigger=trigger), metadata=tenant.metadata
    )
    return response.trigger


def purchase(customer_id: str, total: int = 5000) -> gateway_events.PurchaseCommitted:
    return gateway_events.PurchaseCommitted(
        checkout_id=uuid.uuid4().hex,
        customer_id=customer_id,
        net_total=eur(total),
        basket=basket(("sku", 1, total)),
    )


async def email_template(notification, tenant_id: str, template_key: str, subject: str, body: str) -> None:
    """A transactional e-mail template in English."""
    await notification.stub.CreateTemplate(
        notification_api.CreateTemplateRequest(
            idempotency_key=key(),
            template={
                "key": template_key,
                "display_name": template_key,
                "purpose": TRANSACTIONAL,
                "default_locale": "en",
                "variants": [variant(EMAIL, "en", subject=subject, body=body)],
            },
        ),
        metadata=notification.metadata(tenant_id),
    )


async def eventually(probe, seconds: float = 20):
    async with asyncio.timeout(seconds):
        while True:
            found = await probe()
            if found:
                return found
            await asyncio.sleep(0.05)


async def test_loyal_customers_without_black_friday_get_one_signed_webhook_with_a_unique_code(
    suite, tenant, trigger_redis_url
):
    segments = Segments(suite["segmentation"], tenant.tenant_id)
    codes = Codes(tenant)
    now = datetime.now(UTC)
    # Lifetime metrics as segmentation keeps them: "big" spent over 1000, "frequent" has 11 orders,
    # "redeemer" spent as much but redeemed BLACKFRIDAY, "new" has neither.
    await segments.purchase("big", now - timedelta(days=40), 120_000)
    await segments.purchase("redeemer", now - timedelta(days=40), 120_000)
    for day in range(11):
        await segments.purchase("frequent", now - timedelta(days=day + 1), 1_000)
    await segments.purchase("new", now - timedelta(days=1), 1_000)
    black_friday = await codes.voucher_campaign()
    await codes.voucher(black_friday.campaign_id, "BLACKFRIDAY")
    await codes.reserve("bf-1", basket(("sku", 1, 5000)), "blackfriday", customer_id="redeemer")
    await codes.commit("bf-1")

    crm_codes = await codes.voucher_campaign(code_pattern={"pattern": "CRM-######"})
    answers = iter([503])  # the first delivery fails: the job retries with backoff

    def respond(request) -> int:
        try:
            verify_webhook(SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body, int(time.time()))
        except (SignatureRefused, KeyError):
            return 401
        return next(answers, 200)

    receiver = await HttpReceiver(respond).start()
    try:
        campaign = await event_campaign(tenant)
        trigger = await create(
            tenant,
            tpb.Trigger(
                campaign_id=campaign.campaign_id,
                display_name="Loyal, no Black Friday: to the CRM",
                event_type="purchase.committed",
                condition=LOYAL_WITHOUT_BLACK_FRIDAY,
                actions=[
                    tpb.TriggerAction(
                        call_webhook=tpb.WebhookAction(
                            url=receiver.url,
                            secret=SECRET,
                            issue_code=reward_pb2.VoucherReward(campaign_id=crm_codes.campaign_id),
                        )
                    )
                ],
                max_rewards_per_customer=1,
            ),
        )
        assert trigger.actions[0].call_webhook.secret == ""  # never in an answer
        for customer in ("big", "frequent", "redeemer", "new"):
            event = purchase(customer)
            event_id = await publish(trigger_redis_url, "gateway.events", tenant.tenant_id, event)
            if customer == "big":  # delivered twice: one grant, one webhook
                await publish(trigger_redis_url, "gateway.events", tenant.tenant_id, event, event_id=event_id)

        granted = await grants(tenant, 2)
        assert sorted(g.customer_id for g in granted) == ["big", "frequent"]

        async def delivered():
            bodies = [json.loads(r.body) for r in receiver.requests]
            by_customer = {}
            for body in bodies:
                by_customer.setdefault(body["customer_id"], []).append(body)
            return by_customer if sorted(by_customer) == ["big", "frequent"] and len(bodies) == 3 else None

        by_customer = await eventually(delivered)
    finally:
        await receiver.stop()
    await asyncio.sleep(0.5)  # nothing more arrives: no third customer, no duplicate
    assert len(receiver.requests) == 3
    retried = next(bodies for bodies in by_customer.values() if len(bodies) == 2)
    assert retried[0] == retried[1]  # the retry is the same request (same code, same key)
    keys = {r.headers["idempotency-key"] for r in receiver.requests}
    assert len(keys) == 2
    for customer, bodies in by_customer.items():
        body = bodies[0]
        assert body["event_type"] == "purchase.committed" and body["trigger_id"] == trigger.trigger_id
        assert body["code"].startswith("CRM-")
        voucher = await codes.get_voucher(code=body["code"])
        assert voucher.holder_customer_id == customer and voucher.campaign_id == crm_codes.campaign_id


def birthday_campaign_promotion() -> promotion_pb2.Promotion:
    """50% off, at most 50.00 off."""
    return promotion_pb2.Promotion(
        display_name="Happy birthday",
        effects=[
            effect_pb2.Effect(
                percent_off=effect_pb2.PercentOffEffect(percent_bps=5000, max_discount=eur(5000))
            )
        ],
    )


async def test_a_birthday_code_for_half_off_up_to_50_lands_in_the_wallet_valid_7_days(
    suite, tenant, trigger_redis_url
):
    codes = Codes(tenant)
    birthday_codes = await codes.voucher_campaign(birthday_campaign_promotion())
    campaign = await event_campaign(tenant)
    # Stands in for customer.birthday (emitted by the birthday scheduler, built beside this): an
    # app's activity the gateway records, as a trigger sees it.
    await create(
        tenant,
        tpb.Trigger(
            campaign_id=campaign.campaign_id,
            display_name="Birthday code",
            event_type="birthday.celebrated",
            actions=[
                tpb.TriggerAction(
                    issue_code=reward_pb2.VoucherReward(
                        campaign_id=birthday_codes.campaign_id, valid_for=Duration(seconds=7 * 86_400)
                    )
                )
            ],
            max_rewards_per_customer=1,
        ),
    )
    celebrated = gateway_events.ActivityRecorded(customer_id="ada", activity_type="birthday.celebrated")
    event_id = await publish(trigger_redis_url, "gateway.events", tenant.tenant_id, celebrated)
    await publish(trigger_redis_url, "gateway.events", tenant.tenant_id, celebrated, event_id=event_id)
    [grant] = await grants(tenant, 1)
    assert grant.reward.voucher.campaign_id == birthday_codes.campaign_id

    listed = await tenant.stub.ListVouchers(
        api.ListVouchersRequest(campaign_id=birthday_codes.campaign_id), metadata=tenant.metadata
    )
    [voucher] = listed.vouchers
    assert voucher.holder_customer_id == "ada" and voucher.max_redemptions == 1
    validity = voucher.end_time.ToDatetime(UTC) - voucher.start_time.ToDatetime(UTC)
    assert validity == timedelta(days=7)
    # Half off, capped at 50.00: 30.00 off a 60.00 item, 50.00 off a 200.00 one; only for ada.
    small = await codes.evaluate(basket(("sku", 1, 6000)), voucher.code, customer_id="ada")
    large = await codes.evaluate(basket(("sku", 1, 20000)), voucher.code, customer_id="ada")
    assert (small.total_discount.amount_minor, large.total_discount.amount_minor) == (3000, 5000)
    someone_else = await codes.evaluate(basket(("sku", 1, 6000)), voucher.code, customer_id="bob")
    assert someone_else.total_discount.amount_minor == 0


async def test_the_welcome_bonus_on_enrolment_is_a_trigger_posted_by_the_ledger(suite):
    shop = await provision(suite["gateway"], suite)
    tenant = Client(suite["promotion"], shop.tenant_id)
    campaign = await tenant.create_campaign(type=campaign_pb2.CAMPAIGN_TYPE_EVENT, program_id=shop.program_id)
    await tenant.activate(campaign.campaign_id)
    await create(
        tenant,
        tpb.Trigger(
            campaign_id=campaign.campaign_id,
            display_name="Welcome bonus",
            event_type="customer.created",
            actions=[tpb.TriggerAction(award_points=reward_pb2.PointsReward(points=250))],
            max_rewards_per_customer=1,
        ),
    )
    enrolled = await suite["gateway"].customers.EnrolCustomer(
        customer_api.EnrolCustomerRequest(
            idempotency_key=key(),
            identifiers=[{"type": customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, "value": uuid.uuid4().hex[:16]}],
            given_name="Grace",
        ),
        metadata=shop.till_auth,
    )
    customer_id = enrolled.customer.customer_id
    [grant] = await grants(tenant, 1, customer_id=customer_id)
    ledger = ledger_service_pb2_grpc.LedgerServiceStub(suite["ledger"].channel)

    async def balance():
        try:
            answer = await ledger.GetAccount(
                ledger_api.GetAccountRequest(program_id=shop.program_id, customer_id=customer_id),
                metadata=suite["ledger"].metadata(shop.tenant_id),
            )
        except grpc.aio.AioRpcError:
            return None  # no account until the reward opens it
        return answer.account.balance.available == 250

    assert await eventually(balance)
    assert grant.reward.points.points == 250


async def test_a_notification_and_a_static_segment_once_per_occurrence(suite, tenant, trigger_redis_url):
    notification = suite["notification"]
    await email_template(notification, tenant.tenant_id, "vip-welcome", "Welcome", "Your code {{ code }}")
    profile = profile_service_pb2_grpc.ProfileServiceStub(suite["profile"].channel)
    enrolled = await profile.EnrolCustomer(
        profile_api.EnrolCustomerRequest(
            idempotency_key=key(),
            identifiers=[{"type": customer_pb2.IDENTIFIER_TYPE_EMAIL, "value": f"{key()}@example.com"}],
        ),
        metadata=suite["profile"].metadata(tenant.tenant_id),
    )
    vip = enrolled.customer.customer_id
    segments = Segments(suite["segmentation"], tenant.tenant_id)
    await segments.purchase(vip, datetime.now(UTC) - timedelta(days=1), 1_000)  # known to segmentation
    vips = await segments.static_segment("VIPs")
    codes = Codes(tenant)
    vip_codes = await codes.voucher_campaign()
    campaign = await event_campaign(tenant)
    await create(
        tenant,
        tpb.Trigger(
            campaign_id=campaign.campaign_id,
            display_name="Big spender",
            event_type="purchase.committed",
            condition=cpb.Condition(basket_subtotal=cpb.BasketSubtotalCondition(min_subtotal=eur(50_000))),
            actions=[
                tpb.TriggerAction(issue_code=reward_pb2.VoucherReward(campaign_id=vip_codes.campaign_id)),
                tpb.TriggerAction(send_notification=tpb.NotificationAction(template_key="vip-welcome")),
                tpb.TriggerAction(add_to_segment=tpb.SegmentAction(segment_id=vips.segment_id)),
            ],
        ),
    )
    small = purchase(vip, 1_000)
    big = purchase(vip, 60_000)
    await publish(trigger_redis_url, "gateway.events", tenant.tenant_id, small)
    event_id = await publish(trigger_redis_url, "gateway.events", tenant.tenant_id, big)
    await publish(trigger_redis_url, "gateway.events", tenant.tenant_id, big, event_id=event_id)
    [grant] = await grants(tenant, 1)

    async def member():
        answer = await segments.ListCustomerSegments(
            segmentation_api.ListCustomerSegmentsRequest(customer_id=vip)
        )
        return vips.segment_id in {m.segment_id for m in answer.memberships}

    async def messages():
        answer = await notification.stub.ListMessages(
            notification_api.ListMessagesRequest(customer_id=vip, template_key="vip-welcome"),
            metadata=notification.metadata(tenant.tenant_id),
        )
        return list(answer.messages)

    assert await eventually(member)
    [message] = await eventually(messages)
    assert message.correlation_id == grant.grant_id


@pytest.mark.parametrize(
    ("action", "field", "reason"),
    [
        (
            tpb.TriggerAction(send_notification=tpb.NotificationAction(template_key="no-such-template")),
            "trigger.actions[0].send_notification.template_key",
            "TRIGGER_ACTION_TARGET_NOT_FOUND",
        ),
        (
            tpb.TriggerAction(add_to_segment=tpb.SegmentAction(segment_id=str(uuid.uuid4()))),
            "trigger.actions[0].add_to_segment.segment_id",
            "TRIGGER_ACTION_TARGET_NOT_FOUND",
        ),
        (
            tpb.TriggerAction(issue_code=reward_pb2.VoucherReward(campaign_id=str(uuid.uuid4()))),
            "trigger.actions[0].issue_code.campaign_id",
            "TRIGGER_ACTION_TARGET_NOT_FOUND",
        ),
        (
            tpb.TriggerAction(
                call_webhook=tpb.WebhookAction(url="http://crm.example.com/hook", secret=SECRET)
            ),
            "trigger.actions[0].call_webhook.url",
            "TRIGGER_WEBHOOK_URL_REFUSED",
        ),
        (
            tpb.TriggerAction(
                call_webhook=tpb.WebhookAction(url="http://crm.example.com/" + "a" * 500, secret=SECRET)
            ),
            "trigger.actions[0].call_webhook.url",
            "TRIGGER_WEBHOOK_URL_REFUSED",
        ),
        (  # over the contract's 2048 characters: the runtime's request check refuses it first
            tpb.TriggerAction(
                call_webhook=tpb.WebhookAction(url="https://x.example/" + "a" * 2048, secret=SECRET)
            ),
            "trigger.actions[0].call_webhook.url",
            "INVALID_ARGUMENT",
        ),
    ],
)
async def test_what_a_trigger_names_must_exist_and_its_webhook_be_https(suite, tenant, action, field, reason):
    campaign = await event_campaign(tenant)
    failure = await rpc_failure(
        create(
            tenant,
            tpb.Trigger(
                campaign_id=campaign.campaign_id,
                display_name="t",
                event_type="purchase.committed",
                actions=[action],
            ),
        )
    )
    assert (failure.code, failure.reason, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        reason,
        [field],
    )


async def test_unknown_events_and_conditions_that_do_not_compile_are_refused(suite, tenant):
    campaign = await event_campaign(tenant)
    points = [tpb.TriggerAction(award_points=reward_pb2.PointsReward(points=10))]
    unknown = await rpc_failure(
        create(
            tenant,
            tpb.Trigger(
                campaign_id=campaign.campaign_id,
                display_name="t",
                event_type="purchase.teleported",
                actions=points,
            ),
        )
    )
    assert (unknown.code, unknown.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["trigger.event_type"])
    broken = await rpc_failure(
        create(
            tenant,
            tpb.Trigger(
                campaign_id=campaign.campaign_id,
                display_name="t",
                event_type="customer.created",
                condition=cpb.Condition(
                    expression=cpb.ExpressionCondition(cel="customer.lifetime_purchase_count >")
                ),
                actions=points,
            ),
        )
    )
    assert (broken.code, broken.reason, broken.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "TRIGGER_CONDITION_INVALID",
        ["trigger.condition.expression.cel"],
    )
    listed = await tenant.stub.ListTriggers(api.ListTriggersRequest(), metadata=tenant.metadata)
    assert not listed.triggers


async def test_an_audience_of_segments_rewards_only_their_members(suite, tenant, trigger_redis_url):
    segments = Segments(suite["segmentation"], tenant.tenant_id)
    for customer in ("member", "outsider"):
        await segments.purchase(customer, datetime.now(UTC) - timedelta(days=1), 1_000)
    reviewers = await segments.static_segment("Reviewers club")
    await segments.AddSegmentMembers(
        segmentation_api.AddSegmentMembersRequest(
            idempotency_key=key(), segment_id=reviewers.segment_id, customer_ids=["member"]
        )
    )
    campaign = await event_campaign(tenant)
    await create(
        tenant,
        tpb.Trigger(
            campaign_id=campaign.campaign_id,
            display_name="Reviews by the club",
            event_type="review.written",
            condition=cpb.Condition(
                customer_segment=cpb.SegmentCondition(
                    segment_ids=[reviewers.segment_id], match=cpb.SEGMENT_MATCH_ANY
                )
            ),
            actions=[tpb.TriggerAction(award_points=reward_pb2.PointsReward(points=50))],
        ),
    )
    for customer in ("outsider", "member"):
        review = gateway_events.ActivityRecorded(customer_id=customer, activity_type="review.written")
        await publish(trigger_redis_url, "gateway.events", tenant.tenant_id, review)
    [grant] = await grants(tenant, 1)
    await asyncio.sleep(0.5)  # time for the outsider's job too: it grants nothing
    assert grant.customer_id == "member"
    assert len(await grants(tenant, 1)) == 1


async def test_two_replicas_handling_copies_of_one_event_at_once_fire_its_actions_once(
    suite, tenant, trigger_redis_url
):
    """Copies of one event published at once, with two replicas consuming: one grant, one code, one
    webhook, whichever replica takes which copy (the consumers remember handled events, the grant
    has a unique index per trigger and event, its jobs a dedupe key)."""
    receiver = await HttpReceiver().start()
    codes = Codes(tenant)
    crm_codes = await codes.voucher_campaign()
    campaign = await event_campaign(tenant)
    await create(
        tenant,
        tpb.Trigger(
            campaign_id=campaign.campaign_id,
            display_name="Every review",
            event_type="review.written",
            actions=[
                tpb.TriggerAction(award_points=reward_pb2.PointsReward(points=5)),
                tpb.TriggerAction(
                    call_webhook=tpb.WebhookAction(
                        url=receiver.url,
                        secret=SECRET,
                        issue_code=reward_pb2.VoucherReward(campaign_id=crm_codes.campaign_id),
                    )
                ),
            ],
        ),
    )
    try:
        async with running_service(PROMOTION, suite["promotion"].server.settings):
            review = gateway_events.ActivityRecorded(customer_id="twice", activity_type="review.written")
            event_id = f"test:{uuid.uuid4()}"
            await asyncio.gather(
                *(
                    publish(trigger_redis_url, "gateway.events", tenant.tenant_id, review, event_id=event_id)
                    for _ in range(6)
                )
            )
            [grant] = await grants(tenant, 1)

            async def called():
                return receiver.requests

            await eventually(called)
            await asyncio.sleep(1.0)  # time for any copy to do it again
    finally:
        await receiver.stop()
    assert len(await grants(tenant, 1)) == 1 and grant.reward.points.points == 5
    assert len(receiver.requests) == 1
    listed = await tenant.stub.ListVouchers(
        api.ListVouchersRequest(campaign_id=crm_codes.campaign_id), metadata=tenant.metadata
    )
    assert [v.code for v in listed.vouchers] == [json.loads(receiver.requests[0].body)["code"]]
