import asyncio
import uuid

import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import text

from loyalty.common.v1 import customer_pb2
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as api, profile_service_pb2_grpc
from loyalty_profile.service import DEFINITION, ProfileSettings
from loyalty_runtime.migrations import migrate
from loyalty_runtime.testing import running_service


@pytest.fixture(scope="session")
async def profile_settings(database_url, redis_url):
    await migrate(database_url, DEFINITION.migrations, DEFINITION.schema)
    return ProfileSettings(database_url=database_url, redis_url=redis_url, grpc_port=0, grpc_host="127.0.0.1")


@pytest.fixture(scope="session")
async def profile(profile_settings):
    async with running_service(DEFINITION, profile_settings) as service:
        yield service


@pytest.fixture
def stub(profile):
    return profile_service_pb2_grpc.ProfileServiceStub(profile.channel)


@pytest.fixture
def tenant(profile):
    """A fresh tenant per test, so tests never see each other's customers."""
    return profile.metadata(f"tenant-{uuid.uuid4().hex[:10]}")


def enrol_request(card: str) -> api.EnrolCustomerRequest:
    return api.EnrolCustomerRequest(
        idempotency_key=uuid.uuid4().hex,
        identifiers=[customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, value=card)],
    )


async def locked_customer(channel, database, tenant):
    """A customer whose row the test holds locked, so an update waits as long as the test wants."""
    stub = profile_service_pb2_grpc.ProfileServiceStub(channel)
    customer = (
        await stub.EnrolCustomer(enrol_request(uuid.uuid4().hex[:12].upper()), metadata=tenant)
    ).customer
    connection = await database.engine.connect()
    transaction = await connection.begin()
    await connection.execute(
        text("SELECT 1 FROM profile.customers WHERE id = :id FOR UPDATE"), {"id": customer.customer_id}
    )
    return customer, connection, transaction


async def wait_until_a_call_waits_on_the_lock(database) -> None:
    """Poll PostgreSQL until some backend of this database waits for a row lock: the call arrived."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with asyncio.timeout(15), database.engine.connect() as connection:
        while True:
            if (await connection.execute(query)).scalar_one():
                return
            await asyncio.sleep(0.02)


def rename(customer_id: str) -> api.UpdateCustomerRequest:
    return api.UpdateCustomerRequest(
        idempotency_key=uuid.uuid4().hex,
        customer=profile_pb2.Customer(customer_id=customer_id, given_name="Renamed"),
        update_mask=FieldMask(paths=["given_name"]),
    )
