"""ListMessages and CancelMessage over the real server with delivery workers running: newest-first
paging and filters, cancelling only what is not sent yet (also while workers race to send it), bad
input, and another tenant's messages looking exactly like unknown ones."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.notification.v1 import message_pb2 as mpb, notification_service_pb2 as api
from loyalty_runtime.paging import encode_token
from tests.conftest import rpc_failure
from tests.service.notification.helpers import MARKETING, WEBHOOK, Client, key
from tests.service.notification.receivers import HttpReceiver

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
async def receiver():
    server = await HttpReceiver().start()
    yield server
    await server.stop()


def _at(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def _list(client: Client, **fields) -> api.ListMessagesResponse:
    return await client.stub.ListMessages(api.ListMessagesRequest(**fields), metadata=client.md)


async def _all(client: Client, **fields) -> list[mpb.Message]:
    found, token = [], ""
    while True:
        page = await _list(client, page_token=token, **fields)
        found += page.messages
        token = page.next_page_token
        if not token:
            return found


async def _cancel(client: Client, message_id: str, idempotency_key: str | None = None) -> mpb.Message:
    request = api.CancelMessageRequest(idempotency_key=idempotency_key or key(), message_id=message_id)
    return (await client.stub.CancelMessage(request, metadata=client.md)).message


async def test_messages_are_listed_newest_first_in_pages_and_filtered(tenant, notification, receiver):
    ana, bea = await tenant.enrol(), await tenant.enrol()
    await tenant.template()
    await tenant.template("offer", purpose=MARKETING)  # no consent: suppressed
    before = datetime.now(UTC)
    sent = [await tenant.send(ana, url=receiver.url, correlation_id=f"c{i % 2}") for i in range(5)]
    middle = datetime.now(UTC)
    sent += [await tenant.send(bea, url=receiver.url) for _ in range(2)]
    suppressed = await tenant.send(bea, "offer", url=receiver.url)
    expected = [m.message_id for m in reversed([*sent, suppressed])]

    pages = [await _list(tenant, page_size=3)]
    while pages[-1].next_page_token:
        pages.append(await _list(tenant, page_size=3, page_token=pages[-1].next_page_token))
    assert [len(p.messages) for p in pages] == [3, 3, 2]
    assert [m.message_id for p in pages for m in p.messages] == expected
    assert all(not m.attempts for p in pages for m in p.messages)

    def ids(messages):
        return [m.message_id for m in messages]

    assert ids(await _all(tenant, customer_id=ana, page_size=2)) == expected[3:]
    assert ids(await _all(tenant, correlation_id="c1")) == [sent[3].message_id, sent[1].message_id]
    assert ids(await _all(tenant, status=mpb.MESSAGE_STATUS_SUPPRESSED)) == [suppressed.message_id]
    assert ids(await _all(tenant, template_key="offer")) == [suppressed.message_id]
    assert ids(await _all(tenant, channel=WEBHOOK)) == expected[1:]
    assert ids(await _all(tenant, start_time=_at(middle))) == expected[:3]
    assert ids(await _all(tenant, start_time=_at(before), end_time=_at(middle))) == expected[3:]
    assert ids(await _all(tenant, customer_id=bea, status=mpb.MESSAGE_STATUS_SUPPRESSED)) == expected[:1]

    other = Client(notification, tenant.profile, f"o-{key()[:8]}")
    assert await _all(other) == [] and await _all(other, customer_id=ana) == []


async def test_list_messages_refuses_bad_input(tenant):
    now = datetime.now(UTC)
    cases = [
        ({"page_size": -1}, "page_size"),
        ({"page_token": "%%%"}, "page_token"),
        ({"page_token": encode_token("yesterday|not-an-id")}, "page_token"),
        ({"status": 42}, "status"),
        ({"channel": 42}, "channel"),
        ({"customer_id": "x" * 65}, "customer_id"),
        ({"start_time": _at(now), "end_time": _at(now - timedelta(seconds=1))}, "end_time"),
    ]
    for fields, field in cases:
        failure = await rpc_failure(
            tenant.stub.ListMessages(api.ListMessagesRequest(**fields), metadata=tenant.md)
        )
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field]), fields


async def test_a_message_not_sent_yet_is_cancelled_and_never_delivered(tenant, receiver, db):
    customer = await tenant.enrol()
    await tenant.template()
    later = await tenant.send(
        customer, url=receiver.url, send_time=_at(datetime.now(UTC) + timedelta(seconds=1))
    )
    once = key()
    cancelled = await _cancel(tenant, later.message_id, once)
    assert cancelled.status == mpb.MESSAGE_STATUS_CANCELLED
    assert await _cancel(tenant, later.message_id, once) == cancelled  # the same key: the same answer
    again = await rpc_failure(_cancel(tenant, later.message_id))
    assert (again.code, again.reason, again.fields) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "MESSAGE_NOT_CANCELLABLE",
        ["message_id"],
    )
    for _ in range(100):  # its job comes due and finds nothing to do
        state = await db.fetchval(
            "SELECT state FROM notification.jobs WHERE tenant_id = $1 AND name = 'notification.deliver'",
            tenant.tenant_id,
        )
        if state != "queued":
            break
        await asyncio.sleep(0.05)
    assert state != "queued"
    assert receiver.requests == []
    assert (await tenant.message(later.message_id)).status == mpb.MESSAGE_STATUS_CANCELLED


async def test_a_sent_or_suppressed_message_cannot_be_cancelled(tenant, receiver):
    customer = await tenant.enrol()
    await tenant.template()
    await tenant.template("offer", purpose=MARKETING)
    sent = await tenant.settled((await tenant.send(customer, url=receiver.url)).message_id)
    assert sent.status == mpb.MESSAGE_STATUS_SENT
    suppressed = await tenant.send(customer, "offer", url=receiver.url)
    for message in (sent, suppressed):
        failure = await rpc_failure(_cancel(tenant, message.message_id))
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "MESSAGE_NOT_CANCELLABLE",
        )
    assert (await tenant.message(sent.message_id)).status == mpb.MESSAGE_STATUS_SENT


async def test_another_tenants_message_cannot_be_cancelled_and_looks_unknown(tenant, notification, receiver):
    customer = await tenant.enrol()
    await tenant.template()
    later = await tenant.send(
        customer, url=receiver.url, send_time=_at(datetime.now(UTC) + timedelta(hours=1))
    )
    other = Client(notification, tenant.profile, f"o-{key()[:8]}")
    answers = [await rpc_failure(_cancel(other, m)) for m in (later.message_id, str(uuid.uuid4()))]
    assert {(a.code, a.reason, tuple(a.fields)) for a in answers} == {
        (grpc.StatusCode.NOT_FOUND, "MESSAGE_NOT_FOUND", ("message_id",))
    }
    malformed = await rpc_failure(_cancel(tenant, "42"))
    assert (malformed.code, malformed.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["message_id"])
    assert (await tenant.message(later.message_id)).status == later.status


async def test_cancelling_while_workers_deliver_leaves_each_message_sent_or_cancelled_never_both(
    tenant, receiver
):
    async def slowly(_request):
        await asyncio.sleep(0.05)
        return 200

    receiver.respond = slowly
    customer = await tenant.enrol()
    await tenant.template()
    queued = [await tenant.send(customer, url=receiver.url) for _ in range(40)]

    async def cancel(message: mpb.Message):
        await asyncio.sleep(0.01 * (hash(message.message_id) % 20))
        try:
            return await _cancel(tenant, message.message_id)
        except grpc.aio.AioRpcError as error:
            return error.code()

    answers = await asyncio.gather(*(cancel(m) for m in queued))
    final = [await tenant.settled(m.message_id) for m in queued]
    await asyncio.sleep(0.3)  # a delivery that slipped past a cancel would show up by now
    delivered = [r.headers["loyalty-message-id"] for r in receiver.requests]
    for message, answer, settled in zip(queued, answers, final, strict=True):
        if isinstance(answer, mpb.Message):
            assert settled.status == mpb.MESSAGE_STATUS_CANCELLED
            assert message.message_id not in delivered
        else:
            assert answer == grpc.StatusCode.FAILED_PRECONDITION
            assert settled.status == mpb.MESSAGE_STATUS_SENT
            assert delivered.count(message.message_id) == 1
    outcomes = {isinstance(a, mpb.Message) for a in answers}
    assert outcomes == {True, False}, "the race should see both outcomes"
