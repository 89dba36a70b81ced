"""Notification's part in GDPR export, erasure and merges, driven by the real profile service's
events: the export lists the customer's messages (another tenant's customer has none); an erasure
wipes addresses and texts and cancels what is still pending; a merge moves the duplicate's messages to
the survivor."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.common.v1 import customer_data_pb2, customer_data_pb2_grpc
from loyalty.notification.v1 import message_pb2 as mpb, notification_service_pb2 as api
from loyalty.profile.v1 import profile_service_pb2 as profile_api
from tests.service.notification.helpers import Client, key
from tests.service.notification.receivers import HttpReceiver

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
async def receiver():
    server = await HttpReceiver().start()
    yield server
    await server.stop()


def _in_an_hour() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    return stamp


async def _export(client: Client, customer_id: str) -> list[mpb.Message]:
    stub = customer_data_pb2_grpc.CustomerDataServiceStub(client.service.channel)
    answer = await stub.ExportCustomerData(
        customer_data_pb2.ExportCustomerDataRequest(customer_id=customer_id), metadata=client.md
    )
    assert answer.service == "notification"
    records = []
    for record in answer.records:
        message = mpb.Message()
        assert record.Unpack(message)
        records.append(message)
    return records


async def _eventually(check, what: str):
    for _ in range(200):
        if result := await check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(what)


async def test_the_export_lists_the_customers_messages_with_their_attempts(tenant, notification, receiver):
    customer = await tenant.enrol()
    await tenant.template()
    sent = await tenant.settled((await tenant.send(customer, url=receiver.url)).message_id)
    later = await tenant.send(customer, url=receiver.url, send_time=_in_an_hour())
    exported = await _export(tenant, customer)
    assert [m.message_id for m in exported] == [sent.message_id, later.message_id]
    assert exported[0] == sent  # attempts included, as GetMessage shows them
    other = Client(notification, tenant.profile, f"o-{key()[:8]}")
    assert await _export(other, customer) == []
    assert await _export(tenant, "00000000-0000-0000-0000-000000000000") == []


async def test_an_erasure_wipes_what_identifies_the_customer_and_cancels_what_is_pending(
    tenant, receiver, db
):
    customer = await tenant.enrol(phone="+4915112345678")
    await tenant.template()
    sent = await tenant.settled((await tenant.send(customer, url=receiver.url)).message_id)
    later = await tenant.send(customer, url=receiver.url, send_time=_in_an_hour())
    await tenant.profile.stub.EraseCustomer(
        profile_api.EraseCustomerRequest(idempotency_key=key(), customer_id=customer),
        metadata=tenant.profile.metadata(tenant.tenant_id),
    )

    async def cancelled():
        found = await tenant.message(later.message_id)
        return found if found.status == mpb.MESSAGE_STATUS_CANCELLED else None

    await _eventually(cancelled, "the erasure did not reach notification")
    rows = await db.fetch(
        "SELECT status, recipient, recipient_hint, subject, body, html_body FROM notification.messages"
        " WHERE tenant_id = $1 ORDER BY create_time",
        tenant.tenant_id,
    )
    assert [tuple(r) for r in rows] == [("sent", "", "", "", "", ""), ("cancelled", "", "", "", "", "")]
    assert (await tenant.message(sent.message_id)).status == mpb.MESSAGE_STATUS_SENT


async def test_a_merge_moves_the_duplicates_messages_to_the_survivor(tenant, receiver):
    survivor, duplicate = await tenant.enrol(), await tenant.enrol()
    await tenant.template()
    mine = await tenant.send(survivor, url=receiver.url)
    theirs = [await tenant.send(duplicate, url=receiver.url) for _ in range(2)]
    await tenant.profile.stub.MergeCustomers(
        profile_api.MergeCustomersRequest(
            idempotency_key=key(), survivor_customer_id=survivor, merged_customer_id=duplicate
        ),
        metadata=tenant.profile.metadata(tenant.tenant_id),
    )

    async def moved():
        listed = await tenant.stub.ListMessages(
            api.ListMessagesRequest(customer_id=survivor), metadata=tenant.md
        )
        return listed.messages if len(listed.messages) == 3 else None

    messages = await _eventually(moved, "the merge did not reach notification")
    assert {m.message_id for m in messages} == {mine.message_id, *(m.message_id for m in theirs)}
    assert await _export(tenant, duplicate) == []
