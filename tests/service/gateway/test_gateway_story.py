"""The shopping story, for two tenants at once, through the gateway with every service a real server
(profile, segmentation, promotion, ledger, fraud, notification with its delivery workers and a real
SMTP receiver): enrol, a first purchase that reaches a tier, preview, reserve and commit with a unique
code, a generic code and a points burn, the receipt to the minor unit, balance and tier, the receipts
mailed, a partial return that reverses exactly the returned line's share, and the other tenant seeing
nothing of it. The same story over gRPC and over JSON/HTTP (Connect) with a plain HTTP client.

Referral codes: EnrolCustomer takes one, but promotion's referral programme is not built, so nothing
here asserts that a referral is accepted or rewarded (the gateway reports `referral_accepted=false`)."""

import asyncio
import uuid

import grpc
import httpx
import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import Default

from loyalty.common.v1 import customer_pb2
from loyalty.gateway.v1 import (
    checkout_pb2 as pb,
    checkout_service_pb2 as api,
    customer_service_pb2 as customer_api,
)
from loyalty.ledger.v1 import ledger_pb2
from loyalty.notification.v1 import (
    notification_service_pb2 as notification_api,
    notification_service_pb2_grpc,
)
from loyalty.promotion.v1 import promotion_service_pb2_grpc, voucher_pb2
from loyalty_notification.service import DEFINITION as NOTIFICATION
from loyalty_runtime.testing import internal_metadata, migrated_settings, running_service
from tests.conftest import RpcFailure
from tests.service.gateway.test_gateway_checkout import basket
from tests.service.gateway.test_gateway_points import earning_tenant
from tests.service.notification.helpers import EMAIL, TRANSACTIONAL, variant
from tests.service.notification.receivers import SmtpReceiver
from tests.service.promotion.helpers import Client, Codes, percent_off

SUCCEEDED = pb.SAGA_STEP_STATE_SUCCEEDED
TIERS = [
    ledger_pb2.Tier(code="SILVER", display_name="Silber", qualifying_points=50),
    ledger_pb2.Tier(code="GOLD", display_name="Gold", qualifying_points=1000),
]
RECEIPT = "{{ net_total | money }}: +{{ points_earned | number }} / -{{ points_burned | number }} Punkte"


@pytest.fixture(scope="module")
def smtp():
    receiver = SmtpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
async def notification(shop_database_url, shop_redis_url, services, smtp):
    """Notification on the gateway tests' database and Redis, so it consumes the gateway's
    purchase.committed events, delivering to the local SMTP receiver."""
    settings = await migrated_settings(
        NOTIFICATION,
        shop_database_url,
        shop_redis_url,
        profile_target=services["profile"].address,
        delivery_workers=1,
        poll_seconds=0.05,
        rate_limits={"webhook": 0, "smtp": 0, "sms": 0, "push": 0},
        smtp_port=smtp.port,
        http_enabled=False,
    )
    async with running_service(NOTIFICATION, settings) as service:
        service.stub = notification_service_pb2_grpc.NotificationServiceStub(service.channel)
        yield service


class Refused(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code, self.reason = code, reason


class GrpcTill:
    """The till speaking gRPC to the gateway."""

    def __init__(self, shop, key: str) -> None:
        self.stubs = {"CheckoutService": shop.checkout, "CustomerService": shop.customers}
        self.metadata = (("authorization", f"Bearer {key}"),)

    async def __call__(self, service: str, method: str, request):
        try:
            return await getattr(self.stubs[service], method)(request, metadata=self.metadata)
        except grpc.aio.AioRpcError as error:
            failure = RpcFailure(error)
            raise Refused(failure.code.name, failure.reason) from None


class HttpTill:
    """The till speaking Connect's unary JSON with a plain HTTP client; the messages are only built
    and read with protobuf's canonical JSON mapping."""

    def __init__(self, client: httpx.AsyncClient, key: str) -> None:
        self.client = client
        self.headers = {"authorization": f"Bearer {key}"}

    async def __call__(self, service: str, method: str, request):
        answer = await self.client.post(
            f"/loyalty.gateway.v1.{service}/{method}",
            json=json_format.MessageToDict(request),
            headers=self.headers,
        )
        body = answer.json()
        if answer.status_code != 200:
            info = next(d for d in body.get("details", []) if d["type"] == "google.rpc.ErrorInfo")
            raise Refused(body["code"].upper(), info["debug"]["reason"])
        output = Default().FindMethodByName(f"loyalty.gateway.v1.{service}.{method}").output_type
        return json_format.ParseDict(body, message_factory.GetMessageClass(output)())


async def shop_for(shop, services, notification) -> object:
    """A tenant earning 1 point per euro and burning 100 points for a euro (at most half a basket),
    tiers SILVER (50) and GOLD (1000), a 10% unique-code campaign and a 5% generic-code one, and an
    e-mail receipt template. The generic code's campaign goes first (priority), the unique code's
    discount is taken from what is left."""
    tenant = await earning_tenant(shop, services, tiers=TIERS)
    stub = promotion_service_pb2_grpc.PromotionServiceStub(services["promotion"].channel)
    codes = Codes(Client(services["promotion"], tenant.tenant_id, stub))
    unique = await codes.voucher_campaign(percent_off(1000), priority=10)
    await codes.voucher(unique.campaign_id, "UNIQ-7K2M", type=voucher_pb2.VOUCHER_TYPE_UNIQUE)
    generic = await codes.voucher_campaign(percent_off(500), priority=20)
    await codes.voucher(generic.campaign_id, "SUMMER5", max_redemptions=100)
    await notification.stub.CreateTemplate(
        notification_api.CreateTemplateRequest(
            idempotency_key=uuid.uuid4().hex,
            template={
                "key": "receipt",
                "display_name": "receipt",
                "purpose": TRANSACTIONAL,
                "default_locale": "de",
                "variants": [variant(EMAIL, "de", subject="Beleg {{ receipt_number }}", body=RECEIPT)],
            },
        ),
        metadata=internal_metadata(notification.server.settings, tenant.tenant_id),
    )
    return tenant


def lookup(customer_id: str) -> dict:
    return {"customer_id": customer_id}


async def mails_to(smtp, address: str, count: int) -> list:
    # Generous: under a loaded CI machine the receipt's event chain takes seconds, not milliseconds.
    for _ in range(1200):
        found = [mail for recipients, mail in smtp.messages if recipients == [address]]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    return found


async def story(till, tenant, smtp) -> dict:
    """One customer's visits; answers what the other tenant then must not see."""
    referrer = await till(
        "CustomerService",
        "EnrolCustomer",
        customer_api.EnrolCustomerRequest(
            idempotency_key=uuid.uuid4().hex,
            identifiers=[{"type": customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, "value": uuid.uuid4().hex[:16]}],
            given_name="Grace",
        ),
    )
    wallet = await till(
        "CustomerService",
        "GetWallet",
        customer_api.GetWalletRequest(customer=lookup(referrer.customer.customer_id)),
    )
    address = f"story.{uuid.uuid4().hex[:10]}@example.com"
    enrolled = await till(
        "CustomerService",
        "EnrolCustomer",
        customer_api.EnrolCustomerRequest(
            idempotency_key=uuid.uuid4().hex,
            identifiers=[
                {"type": customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, "value": uuid.uuid4().hex[:16]},
                {"type": customer_pb2.IDENTIFIER_TYPE_EMAIL, "value": address},
            ],
            given_name="Ada",
            locale="de-AT",
            referral_code=wallet.wallet.referral_code or "FRIEND-NONE",
        ),
    )
    customer_id = enrolled.customer.customer_id
    assert enrolled.customer.balance.available_points == 0 and not enrolled.customer.tier.tier_id

    # A first visit: 100.00 EUR earns 100 points and reaches SILVER.
    first = await till(
        "CheckoutService",
        "CommitCheckout",
        api.CommitCheckoutRequest(
            checkout_id=uuid.uuid4().hex,
            customer=lookup(customer_id),
            basket=basket(("tv", 1, 10_000)),
            receipt_number="R-1",
        ),
    )
    assert first.checkout.result.points.points_to_earn == 100
    assert first.checkout.result.points.balance_after == 100
    sale = basket(("coffee", 2, 1_250), ("cake", 1, 999))
    preview = await till(
        "CheckoutService",
        "PreviewCheckout",
        api.PreviewCheckoutRequest(
            customer=lookup(customer_id), basket=sale, codes=["UNIQ-7K2M", "SUMMER5"], points_to_burn=100
        ),
    )
    checkout_id = uuid.uuid4().hex
    reserved = await till(
        "CheckoutService",
        "ReserveCheckout",
        api.ReserveCheckoutRequest(
            checkout_id=checkout_id,
            customer=lookup(customer_id),
            basket=sale,
            codes=["UNIQ-7K2M", "SUMMER5"],
            points_to_burn=100,
        ),
    )
    committed = await till(
        "CheckoutService",
        "CommitCheckout",
        api.CommitCheckoutRequest(
            checkout_id=checkout_id,
            customer=lookup(customer_id),
            basket=sale,
            codes=["UNIQ-7K2M", "SUMMER5"],
            points_to_burn=100,
            receipt_number="R-2",
            expected_total_payable=preview.result.total_payable,
        ),
    )
    # The receipt, to the minor unit. Subtotal 2 x 12.50 + 9.99 = 34.99. SUMMER5 first: 5% of 34.99
    # = 1.75 (1.25 + 0.50 by line); then UNIQ-7K2M: 10% of the remaining 33.24 = 3.32 (2.37 + 0.95);
    # 100 points burn 1.00 EUR, spread over the lines' remaining 21.38 and 8.54 as 0.71 and 0.29;
    # 1 point per euro of what each line costs in the end: 20.67 -> 20, 8.25 -> 8.
    for answer in (preview.result, reserved.checkout.result, committed.checkout.result):
        assert (answer.subtotal.amount_minor, answer.promotion_discount.amount_minor) == (3499, 507)
        assert (answer.points_discount.amount_minor, answer.total_payable.amount_minor) == (100, 2892)
        assert [(c.code, c.accepted) for c in answer.codes] == [("UNIQ-7K2M", True), ("SUMMER5", True)]
        assert {o.code: o.discount.amount_minor for o in answer.applied_offers} == {
            "SUMMER5": 175,
            "UNIQ-7K2M": 332,
        }
        assert [
            (line.line_id, line.discount_total.amount_minor, line.final_total.amount_minor)
            for line in answer.lines
        ] == [("l0", 433, 2067), ("l1", 174, 825)]
        assert [(line.points_burned, line.points_to_earn) for line in answer.lines] == [(71, 20), (29, 8)]
        assert (answer.points.points_burned, answer.points.points_to_earn) == (100, 28)
    receipt = committed.checkout.result
    assert committed.checkout.state == pb.CHECKOUT_STATE_COMMITTED
    assert (receipt.points.balance_before, receipt.points.balance_after) == (100, 100 - 100 + 28)
    steps = {s.name: s.state for s in committed.checkout.steps}
    assert steps[pb.SAGA_STEP_NAME_HOLD_POINTS] == steps[pb.SAGA_STEP_NAME_CAPTURE_POINTS] == SUCCEEDED

    # Balance and tier as the customer's app sees them: 128 qualifying points hold SILVER.
    known = await till(
        "CustomerService",
        "IdentifyCustomer",
        customer_api.IdentifyCustomerRequest(
            customer={"identifier": {"type": customer_pb2.IDENTIFIER_TYPE_EMAIL, "value": address}}
        ),
    )
    assert (known.customer.customer_id, known.customer.balance.available_points) == (customer_id, 28)
    assert known.customer.tier.tier_id == "SILVER"

    # The unique code is used up; the generic one is not.
    again = await till(
        "CheckoutService",
        "PreviewCheckout",
        api.PreviewCheckoutRequest(customer=lookup(customer_id), basket=sale, codes=["UNIQ-7K2M", "SUMMER5"]),
    )
    assert [(c.code, c.accepted) for c in again.result.codes] == [("UNIQ-7K2M", False), ("SUMMER5", True)]

    # A receipt for each purchase, mailed in the customer's language.
    mails = await mails_to(smtp, address, 2)
    assert sorted((mail["Subject"], text(mail)) for mail in mails) == [
        ("Beleg R-1", "100,00 EUR: +100 / -0 Punkte"),
        ("Beleg R-2", "28,92 EUR: +28 / -100 Punkte"),
    ]

    # One of the two coffees back: half of what that line paid, earned and burned.
    returned = await till(
        "CheckoutService",
        "ReturnItems",
        api.ReturnItemsRequest(
            checkout_id=checkout_id, return_id="back-1", lines=[{"line_id": "l0", "quantity": 1}]
        ),
    )
    back = returned.checkout_return
    assert (back.refund_amount.amount_minor, back.points_reversed, back.points_refunded) == (1033, 10, 35)
    known = await till(
        "CustomerService",
        "IdentifyCustomer",
        customer_api.IdentifyCustomerRequest(customer=lookup(customer_id)),
    )
    assert known.customer.balance.available_points == 28 - 10 + 35
    return {"customer_id": customer_id, "address": address, "checkout_id": checkout_id}


def text(mail) -> str:
    part = next(p for p in mail.walk() if p.get_content_type() == "text/plain")
    return part.get_payload(decode=True).decode().strip()


@pytest.fixture
async def http(shop):
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{shop.server.resources.http_port}", timeout=10
    ) as client:
        yield client


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_the_shopping_story_for_two_tenants_at_once(
    shop, services, notification, smtp, http, transport
):
    tenants = await asyncio.gather(*(shop_for(shop, services, notification) for _ in range(2)))
    tills = [GrpcTill(shop, t.key) if transport == "grpc" else HttpTill(http, t.key) for t in tenants]
    seen = await asyncio.gather(*(story(till, t, smtp) for till, t in zip(tills, tenants, strict=True)))

    # Neither tenant sees anything of the other's: its checkout and customer ids are unknown.
    for till, other in zip(tills, reversed(seen), strict=True):
        for service, method, request, reason in (
            (
                "CheckoutService",
                "GetCheckout",
                api.GetCheckoutRequest(checkout_id=other["checkout_id"]),
                "CHECKOUT_NOT_FOUND",
            ),
            (
                "CheckoutService",
                "ReturnItems",
                api.ReturnItemsRequest(checkout_id=other["checkout_id"], return_id="x", full_return=True),
                "CHECKOUT_NOT_FOUND",
            ),
            (
                "CustomerService",
                "IdentifyCustomer",
                customer_api.IdentifyCustomerRequest(customer=lookup(other["customer_id"])),
                "CUSTOMER_NOT_FOUND",
            ),
            (
                "CustomerService",
                "IdentifyCustomer",
                customer_api.IdentifyCustomerRequest(
                    customer={
                        "identifier": {"type": customer_pb2.IDENTIFIER_TYPE_EMAIL, "value": other["address"]}
                    }
                ),
                "CUSTOMER_NOT_FOUND",
            ),
            (
                "CheckoutService",
                "PreviewCheckout",
                api.PreviewCheckoutRequest(customer=lookup(other["customer_id"]), basket=basket()),
                "CUSTOMER_NOT_FOUND",
            ),
        ):
            with pytest.raises(Refused) as refused:
                await till(service, method, request)
            assert (refused.value.code, refused.value.reason) == ("NOT_FOUND", reason)
