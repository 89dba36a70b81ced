"""Enrolments judged by fraud through the gateway and the real services: a velocity rule of enrolments
per device lets its limit through and refuses the next (FRAUD_DECLINED, nothing created in profile);
another device still enrols; a retried enrolment is one assessment, not counted twice."""

import uuid

import grpc
import pytest
from google.protobuf import duration_pb2

from loyalty.common.v1 import customer_pb2, errors_pb2 as err
from loyalty.fraud.v1 import assessment_pb2, fraud_service_pb2 as fraud_api, fraud_service_pb2_grpc, rule_pb2
from loyalty.gateway.v1 import customer_service_pb2 as customer_api
from loyalty.profile.v1 import profile_service_pb2 as profile_api, profile_service_pb2_grpc
from loyalty_runtime.testing import internal_metadata
from tests.conftest import rpc_failure
from tests.service.gateway.conftest import provision

ENROLMENTS_PER_DEVICE = 2


@pytest.fixture
async def tenant(shop, services):
    tenant = await provision(shop, services)
    await device_limit(services, tenant, ENROLMENTS_PER_DEVICE, assessment_pb2.DECISION_DECLINE)
    return tenant


async def device_limit(services, tenant, limit: int, action: int) -> None:
    fraud = fraud_service_pb2_grpc.FraudServiceStub(services["fraud"].channel)
    await fraud.CreateRule(
        fraud_api.CreateRuleRequest(
            idempotency_key=uuid.uuid4().hex,
            rule=rule_pb2.Rule(
                display_name="sign-up farm",
                applies_to=[assessment_pb2.ASSESSMENT_KIND_ENROLMENT],
                velocity=rule_pb2.VelocityRule(
                    key=rule_pb2.VELOCITY_KEY_DEVICE,
                    window=duration_pb2.Duration(seconds=3600),
                    max_count=limit,
                ),
                action=action,
                score=100,
                reason=err.ERROR_REASON_VELOCITY_LIMIT,
            ),
        ),
        metadata=internal_metadata(services["fraud"].server.settings, tenant.tenant_id),
    )


def enrolment(device: str, key: str = "") -> customer_api.EnrolCustomerRequest:
    return customer_api.EnrolCustomerRequest(
        idempotency_key=key or uuid.uuid4().hex,
        identifiers=[
            {"type": customer_pb2.IDENTIFIER_TYPE_EMAIL, "value": f"{uuid.uuid4().hex[:10]}@example.com"}
        ],
        given_name="Ada",
        signals={"device_id": device, "ip_address": "203.0.113.7"},
    )


async def in_profile(services, tenant, request) -> bool:
    profile = profile_service_pb2_grpc.ProfileServiceStub(services["profile"].channel)
    try:
        await profile.LookupCustomer(
            profile_api.LookupCustomerRequest(identifier=request.identifiers[0]),
            metadata=internal_metadata(services["profile"].server.settings, tenant.tenant_id),
        )
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
        return False
    return True


async def test_enrolments_past_the_device_limit_are_declined_and_create_nothing(shop, services, tenant):
    enrol = shop.customers.EnrolCustomer
    for _ in range(ENROLMENTS_PER_DEVICE):
        request = enrolment("farm-phone")
        enrolled = await enrol(request, metadata=tenant.till_auth)
        assert enrolled.customer.customer_id
        assert await in_profile(services, tenant, request)

    refused = enrolment("farm-phone")
    failure = await rpc_failure(enrol(refused, metadata=tenant.till_auth))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "FRAUD_DECLINED")
    assert "velocity" not in failure.message.lower() and "farm" not in failure.message.lower()
    assert not await in_profile(services, tenant, refused)

    other = enrolment("someone-elses-phone")
    assert (await enrol(other, metadata=tenant.till_auth)).customer.customer_id
    assert await in_profile(services, tenant, other)


async def test_a_retried_enrolment_is_counted_once(shop, services, tenant):
    enrol = shop.customers.EnrolCustomer
    first = enrolment("retrying-phone")
    answers = [await enrol(first, metadata=tenant.till_auth) for _ in range(ENROLMENTS_PER_DEVICE + 1)]
    assert len({a.customer.customer_id for a in answers}) == 1

    # The retries used none of the device's allowance: one more enrolment still fits, then no more.
    assert (await enrol(enrolment("retrying-phone"), metadata=tenant.till_auth)).customer.customer_id
    failure = await rpc_failure(enrol(enrolment("retrying-phone"), metadata=tenant.till_auth))
    assert failure.reason == "FRAUD_DECLINED"


async def test_an_enrolment_fraud_would_review_goes_through(shop, services, tenant):
    await device_limit(services, tenant, 1, assessment_pb2.DECISION_REVIEW)
    enrol = shop.customers.EnrolCustomer
    await enrol(enrolment("shared-tablet"), metadata=tenant.till_auth)
    reviewed = enrolment("shared-tablet")  # over the review limit, within the decline limit
    assert (await enrol(reviewed, metadata=tenant.till_auth)).customer.customer_id
    assert await in_profile(services, tenant, reviewed)
