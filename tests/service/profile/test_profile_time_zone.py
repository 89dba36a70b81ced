"""A customer's IANA time zone: given at enrolment or by update, checked against the tz database,
kept through a merge, gone with an erasure, in the export; and the 0003 migration that adds it."""

import asyncpg
import grpc
import pytest
from alembic import command
from google.protobuf.field_mask_pb2 import FieldMask

from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as api
from loyalty_runtime.db import asyncpg_dsn
from tests.conftest import rpc_failure
from tests.service.profile.conftest import card, enrol, key, published_when, tenant_of
from tests.service.profile.test_profile_migrations import alembic, scratch_database, version


def _update(customer_id: str, time_zone: str) -> api.UpdateCustomerRequest:
    return api.UpdateCustomerRequest(
        idempotency_key=key(),
        customer=profile_pb2.Customer(customer_id=customer_id, time_zone=time_zone),
        update_mask=FieldMask(paths=["time_zone"]),
    )


async def test_a_time_zone_is_kept_changed_and_cleared(stub, tenant, redis_url):
    customer = await enrol(stub, tenant, time_zone="Europe/Berlin")
    assert customer.time_zone == "Europe/Berlin"
    got = await stub.GetCustomer(api.GetCustomerRequest(customer_id=customer.customer_id), metadata=tenant)
    assert got.customer.time_zone == "Europe/Berlin"
    moved = await stub.UpdateCustomer(_update(customer.customer_id, "America/Sao_Paulo"), metadata=tenant)
    assert moved.customer.time_zone == "America/Sao_Paulo"
    cleared = await stub.UpdateCustomer(_update(customer.customer_id, ""), metadata=tenant)
    assert cleared.customer.time_zone == ""
    assert (await enrol(stub, tenant)).time_zone == ""  # unknown: the tenant's default applies

    def updates(events):
        return [payload for kind, _key, payload in events if kind == "customer.updated"]

    events = await published_when(lambda e: len(updates(e)) == 2, redis_url, tenant_of(tenant))
    assert [list(u.fields) for u in updates(events)] == [["time_zone"], ["time_zone"]]


@pytest.mark.parametrize(
    "zone",
    ["Mars/Olympus_Mons", "europe/berlin", "localtime", "Factory", "../../etc/passwd", "+02:00", " UTC"],
)
async def test_a_time_zone_outside_the_tz_database_is_refused_naming_the_field(stub, tenant, db, zone):
    request = api.EnrolCustomerRequest(idempotency_key=key(), identifiers=[card()], time_zone=zone)
    failure = await rpc_failure(stub.EnrolCustomer(request, metadata=tenant))
    assert (failure.code, failure.reason, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        ["time_zone"],
    )
    customer = await enrol(stub, tenant, time_zone="Asia/Tokyo")
    failure = await rpc_failure(stub.UpdateCustomer(_update(customer.customer_id, zone), metadata=tenant))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["customer.time_zone"])
    stored = await db.fetchval(
        "SELECT array_agg(time_zone) FROM profile.customers WHERE tenant_id = $1", tenant_of(tenant)
    )
    assert stored == ["Asia/Tokyo"]


async def test_another_tenants_customer_cannot_be_given_a_time_zone(stub, tenant, profile, db):
    customer = await enrol(stub, tenant, time_zone="Asia/Tokyo")
    other = profile.metadata(f"other-{key()[:8]}")
    failure = await rpc_failure(stub.UpdateCustomer(_update(customer.customer_id, "UTC"), metadata=other))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
    assert await db.fetchval(
        "SELECT time_zone FROM profile.customers WHERE id = $1", customer.customer_id
    ) == ("Asia/Tokyo")


async def test_a_merge_keeps_a_zone_the_survivor_lacks_and_an_erasure_removes_it(stub, tenant, db):
    survivor = await enrol(stub, tenant)
    duplicate = await enrol(stub, tenant, time_zone="Europe/Lisbon")
    merged = await stub.MergeCustomers(
        api.MergeCustomersRequest(
            idempotency_key=key(),
            survivor_customer_id=survivor.customer_id,
            merged_customer_id=duplicate.customer_id,
        ),
        metadata=tenant,
    )
    assert merged.survivor.time_zone == "Europe/Lisbon"
    exported = await stub.ExportCustomerData(
        api.ExportCustomerDataRequest(customer_id=survivor.customer_id), metadata=tenant
    )
    assert exported.customer.time_zone == "Europe/Lisbon"
    await stub.EraseCustomer(
        api.EraseCustomerRequest(idempotency_key=key(), customer_id=survivor.customer_id), metadata=tenant
    )
    zones = await db.fetch(
        "SELECT time_zone FROM profile.customers WHERE id = ANY($1::uuid[])",
        [survivor.customer_id, duplicate.customer_id],
    )
    assert [row["time_zone"] for row in zones] == ["", ""]


async def test_0003_gives_existing_customers_no_zone_and_goes_down_and_up(infra):
    async with scratch_database(infra) as url:
        await alembic(url, command.upgrade, "0002")
        connection = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await connection.execute(
                """INSERT INTO profile.customers (id, tenant_id, given_name, family_name, locale, attributes,
                       status) VALUES (gen_random_uuid(), 'old', 'Anna', 'Alt', 'de-AT', '{}', 'active')"""
            )
            await alembic(url, command.upgrade, "head")
            assert await version(connection) == "0003"
            assert await connection.fetchval("SELECT time_zone FROM profile.customers") == ""
            await alembic(url, command.downgrade, "0002")
            assert await version(connection) == "0002"
            await alembic(url, command.upgrade, "head")
            assert await connection.fetchval("SELECT count(*) FROM profile.customers") == 1
        finally:
            await connection.close()
