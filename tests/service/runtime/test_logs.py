"""Logs carry identifiers and outcomes, never personal data, whatever happens to the call."""

import asyncio
import json
import logging
import uuid

from loyalty.common.v1 import customer_pb2
from loyalty.profile.v1 import profile_service_pb2 as api
from loyalty_runtime.logs import JsonFormatter
from tests.conftest import rpc_failure

PHONE = "+4915177777777"
EMAIL = "private.person@example.com"


def request(*identifiers) -> api.EnrolCustomerRequest:
    return api.EnrolCustomerRequest(
        idempotency_key=uuid.uuid4().hex,
        identifiers=list(identifiers),
        given_name="Privata",
        family_name="Person",
    )


async def test_no_personal_data_reaches_the_logs(stub, tenant, caplog, monkeypatch):
    phone = customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_PHONE, value=PHONE)
    email = customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_EMAIL, value=EMAIL)
    bad_phone = customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_PHONE, value="0151 7777777")
    with caplog.at_level(logging.DEBUG):
        await stub.EnrolCustomer(request(phone, email), metadata=tenant)
        await rpc_failure(stub.EnrolCustomer(request(phone), metadata=tenant))  # identifier taken
        await rpc_failure(stub.EnrolCustomer(request(bad_phone), metadata=tenant))  # malformed

        from loyalty_profile import servicer

        def leak(customer):
            raise RuntimeError(f"cannot encode {customer.given_name}")

        monkeypatch.setattr(servicer, "customer_out", leak)
        other = customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_EMAIL, value="x" + EMAIL)
        await rpc_failure(stub.EnrolCustomer(request(other), metadata=tenant))  # internal error
        # abort() answers the client before the interceptor writes its access line: wait for it.
        async with asyncio.timeout(5):
            while True:
                if any(getattr(r, "fields", {}).get("code") == "INTERNAL" for r in caplog.records):
                    break
                await asyncio.sleep(0.01)

    formatter = JsonFormatter("profile")
    written = "\n".join(formatter.format(record) for record in caplog.records)
    assert "/loyalty.profile.v1.ProfileService/EnrolCustomer" in written
    access = [json.loads(formatter.format(r)) for r in caplog.records if r.getMessage() == "rpc"]
    assert {entry["code"] for entry in access} >= {"OK", "ALREADY_EXISTS", "INVALID_ARGUMENT", "INTERNAL"}
    assert all(len(entry.get("trace_id", "")) == 32 for entry in access), "access logs carry the trace id"
    for secret in (PHONE, "7777777", EMAIL, "Privata"):
        assert secret not in written
