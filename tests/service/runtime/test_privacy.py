"""Customer data through the runtime, on a real server: ExportCustomerData answers a service's records
in the caller's tenant; the profile service's customer.merged and customer.erased events reach the
service's hooks, in order, and erasure forgets the stored answers about the customer too."""

import uuid

import grpc
import pytest

from loyalty.common.v1 import customer_data_pb2, customer_data_pb2_grpc
from loyalty.profile.v1 import events_pb2
from loyalty.testing.v1 import echo_pb2
from loyalty_runtime.events import OutboxRelay, RedisStreamsBroker
from loyalty_runtime.privacy import PROFILE_EVENTS, CustomerData
from loyalty_runtime.server import ServiceDefinition
from loyalty_runtime.testing import EchoSettings, running_service
from loyalty_runtime.wiring import runtime_loops, subscriptions_of
from tests.conftest import rpc_failure
from tests.service.runtime.conftest import as_tenant, eventually


@pytest.fixture
async def records(database, schema):
    """The service's customer data: a note per row, by tenant and customer."""
    async with database.connection() as connection:
        await connection.execute(
            f"CREATE TABLE {schema}.records (tenant_id text, customer_id text, note text)"
        )
        await connection.executemany(
            f"INSERT INTO {schema}.records VALUES ($1, $2, $3)",
            [("t1", "c1", "a"), ("t1", "c1", "b"), ("t1", "c2", "dup"), ("t2", "c1", "other tenant")],
        )
    return f"{schema}.records"


def custodian(records: str, schema: str) -> ServiceDefinition:
    async def export(uow, customer_id):
        rows = await uow.connection.fetch(
            f"SELECT note FROM {records} WHERE tenant_id = $1 AND customer_id = $2 ORDER BY note",
            uow.tenant,
            customer_id,
        )
        return [echo_pb2.EchoResponse(text=row["note"]) for row in rows]

    async def erase(uow, customer_id):
        await uow.connection.execute(
            f"UPDATE {records} SET note = '' WHERE tenant_id = $1 AND customer_id = $2",
            uow.tenant,
            customer_id,
        )

    async def merge(uow, survivor_id, merged_id):
        await uow.connection.execute(
            f"UPDATE {records} SET customer_id = $2 WHERE tenant_id = $1 AND customer_id = $3",
            uow.tenant,
            survivor_id,
            merged_id,
        )

    return ServiceDefinition(
        name=f"custodian-{uuid.uuid4().hex[:6]}",
        settings=EchoSettings,
        apis=[],
        schema=schema,
        customer_data=CustomerData(export, erase, merge),
    )


@pytest.fixture
async def service(records, schema, database_url, redis_url):
    settings = EchoSettings(database_url=database_url, redis_url=redis_url, grpc_host="127.0.0.1")
    async with running_service(custodian(records, schema), settings) as running:
        yield running


async def export(service, tenant: str, customer_id: str) -> tuple[str, list[str]]:
    stub = customer_data_pb2_grpc.CustomerDataServiceStub(service.channel)
    answer = await stub.ExportCustomerData(
        customer_data_pb2.ExportCustomerDataRequest(customer_id=customer_id),
        metadata=service.metadata(tenant),
    )
    notes = []
    for record in answer.records:
        note = echo_pb2.EchoResponse()
        assert record.Unpack(note)
        notes.append(note.text)
    return answer.service, notes


async def test_export_answers_the_services_records_about_the_customer_in_the_callers_tenant(service):
    assert await export(service, "t1", "c1") == (service.server.definition.name, ["a", "b"])
    assert (await export(service, "t2", "c1"))[1] == ["other tenant"]
    assert (await export(service, "t1", "nobody"))[1] == []


@pytest.mark.parametrize("customer_id", ["", "   ", "c\x001"])
async def test_export_of_no_valid_customer_is_invalid_argument(service, customer_id):
    stub = customer_data_pb2_grpc.CustomerDataServiceStub(service.channel)
    request = customer_data_pb2.ExportCustomerDataRequest(customer_id=customer_id)
    failure = await rpc_failure(stub.ExportCustomerData(request, metadata=service.metadata("t1")))
    assert (failure.code, failure.reason, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        ["customer_id"],
    )


async def test_merge_then_erasure_events_reach_the_hooks_and_erase_stored_answers(
    service, units, database, schema, records, redis
):
    async with database.connection() as connection:
        await connection.execute(
            f"""INSERT INTO {schema}.idempotency_keys (tenant_id, key, method, fingerprint, response, subject)
                VALUES ('t1', 'enrol-1', 'EnrolCustomer', '\\x00', '\\x0a01', 'c1')"""
        )
    with as_tenant("t1"):  # what the profile service records, in this order
        async with units.change() as uow:
            uow.record(
                events_pb2.CustomerMerged(survivor_customer_id="c1", merged_customer_id="c2"), key="c1"
            )
            uow.record(events_pb2.CustomerErased(customer_id="c1"), key="c1")
    await OutboxRelay(database, schema, RedisStreamsBroker(redis), PROFILE_EVENTS).publish_pending()

    async def merged_then_erased() -> bool:  # c2's note moved to c1, then all of c1's erased
        return (await export(service, "t1", "c1"))[1] == ["", "", ""]

    await eventually(merged_then_erased)
    assert (await export(service, "t2", "c1"))[1] == ["other tenant"]
    async with database.connection() as connection:
        row = await connection.fetchrow(f"SELECT response, erased_at FROM {schema}.idempotency_keys")
    assert row["response"] is None and row["erased_at"] is not None


def test_a_service_that_only_exports_subscribes_to_nothing():
    async def export(uow, customer_id):
        return []

    definition = ServiceDefinition(
        name="source", settings=EchoSettings, apis=[], schema="source", customer_data=CustomerData(export)
    )
    assert subscriptions_of(definition) == []
    assert len(runtime_loops(definition)) == 1  # the scheduler's housekeeping; no consumer
