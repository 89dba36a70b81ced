"""The same checkout over JSON/HTTP (Connect unary JSON) with a plain HTTP client: canonical protobuf
JSON in and out, the same error codes and reasons, and an OpenAPI document generated from the protos."""

import base64
import uuid

import httpx
import pytest
from google.rpc import error_details_pb2

from tests.service.gateway.conftest import provision


@pytest.fixture
async def tenant(shop, services):
    return await provision(shop, services)


@pytest.fixture
async def http(shop):
    port = shop.server.resources.http_port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client


BASKET = {
    "currencyCode": "EUR",
    "lines": [
        {
            "lineId": "l0",
            "sku": "milk",
            "quantity": "2",
            "unitPrice": {"currencyCode": "EUR", "amountMinor": "150"},
            "lineTotal": {"currencyCode": "EUR", "amountMinor": "300"},
        },
    ],
}


async def test_preview_and_commit_over_http(http, tenant):
    headers = {"authorization": f"Bearer {tenant.key}"}
    enrolled = await http.post(
        "/loyalty.gateway.v1.CustomerService/EnrolCustomer",
        json={
            "idempotencyKey": uuid.uuid4().hex,
            "identifiers": [{"type": "IDENTIFIER_TYPE_LOYALTY_CARD", "value": uuid.uuid4().hex[:12]}],
            "givenName": "Ada",
        },
        headers=headers,
    )
    assert enrolled.status_code == 200, enrolled.text
    customer_id = enrolled.json()["customer"]["customerId"]
    preview = await http.post(
        "/loyalty.gateway.v1.CheckoutService/PreviewCheckout",
        json={"customer": {"customerId": customer_id}, "basket": BASKET},
        headers=headers,
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["result"]["totalPayable"] == {"currencyCode": "EUR", "amountMinor": "300"}
    checkout_id = uuid.uuid4().hex
    commit = {"checkoutId": checkout_id, "customer": {"customerId": customer_id}, "basket": BASKET}
    first = await http.post(
        "/loyalty.gateway.v1.CheckoutService/CommitCheckout", json=commit, headers=headers
    )
    again = await http.post(
        "/loyalty.gateway.v1.CheckoutService/CommitCheckout", json=commit, headers=headers
    )
    assert first.status_code == again.status_code == 200
    assert first.json()["checkout"]["state"] == "CHECKOUT_STATE_COMMITTED"
    assert first.json() == again.json()


async def test_errors_carry_the_same_codes_and_reasons(http, tenant):
    headers = {"authorization": f"Bearer {tenant.key}"}
    empty = await http.post(
        "/loyalty.gateway.v1.CheckoutService/CommitCheckout",
        json={"checkoutId": "x1", "basket": {"currencyCode": "EUR"}},
        headers=headers,
    )
    assert empty.status_code == 400
    body = empty.json()
    assert body["code"] == "invalid_argument"
    info = next(d for d in body["details"] if d["type"] == "google.rpc.ErrorInfo")
    assert info["debug"]["reason"] == "INVALID_LINE"
    raw = base64.b64decode(info["value"] + "=" * (-len(info["value"]) % 4))
    assert error_details_pb2.ErrorInfo.FromString(raw).reason == "INVALID_LINE"

    nobody = await http.post("/loyalty.gateway.v1.CheckoutService/PreviewCheckout", json={"basket": BASKET})
    assert (nobody.status_code, nobody.json()["code"]) == (401, "unauthenticated")
    wrong = await http.post(
        "/loyalty.gateway.v1.CheckoutService/PreviewCheckout", json={"basket": "no"}, headers=headers
    )
    assert (wrong.status_code, wrong.json()["code"]) == (400, "invalid_argument")
    unknown = await http.post("/loyalty.gateway.v1.CheckoutService/Nothing", json={}, headers=headers)
    assert unknown.status_code == 501
    huge = await http.post(
        "/loyalty.gateway.v1.CheckoutService/CommitCheckout",
        content=b'{"receiptNumber": "' + b"x" * (5 * 1024 * 1024) + b'"}',
        headers=headers | {"content-type": "application/json"},
    )
    assert huge.status_code == 413


async def test_the_openapi_document_covers_every_rpc(http):
    document = (await http.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert "/loyalty.gateway.v1.CheckoutService/CommitCheckout" in document["paths"]
    assert "/loyalty.gateway.v1.AdminService/CreateApiKey" in document["paths"]
    money = document["components"]["schemas"]["loyalty.common.v1.Money"]
    assert money["properties"]["amountMinor"] == {"type": "string", "format": "int64"}
