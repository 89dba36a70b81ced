"""The pure parts of the runtime's background work: envelopes, backoff, logging an outage once,
pausing that a stop signal cuts short, and which stream entry trimming may reach."""

import asyncio
import logging
from datetime import UTC, datetime

import pytest
from hypothesis import given, strategies as st

from loyalty_runtime.events import Envelope, MalformedEvent
from loyalty_runtime.loops import Backoff, jittered, pause
from loyalty_runtime.streams import entry_order, oldest_needed


def test_an_envelope_survives_the_stream():
    envelope = Envelope(
        event_id="ledger.events:7",
        event_type="points.earned",
        tenant_id="demo",
        key="acc-1",
        payload=b"\x0a\x00\xff",
        occurred_at=datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC),
        trace_parent="00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
    )
    fields = {
        key.encode(): value if isinstance(value, bytes) else value.encode()
        for key, value in envelope.to_fields().items()
    }
    assert Envelope.from_fields(fields) == envelope


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {b"id": b"x"},
        {b"id": b"\xff", b"type": b"t", b"tenant": b"t", b"key": b"k", b"payload": b"", b"at": b"now"},
    ],
    ids=["empty", "incomplete", "not text"],
)
def test_an_entry_that_is_not_an_envelope_says_so(fields):
    with pytest.raises(MalformedEvent):
        Envelope.from_fields(fields)


@given(st.integers(min_value=1, max_value=60))
def test_backoff_grows_to_its_cap_with_jitter(attempt):
    delay = jittered(0.5, attempt, 30.0)
    step = min(30.0, 0.5 * 2 ** (attempt - 1))
    assert step / 2 <= delay <= step


def test_an_outage_is_logged_once_per_error_type_and_its_end_once(caplog):
    caplog.set_level(logging.INFO)
    backoff = Backoff(logging.getLogger("test.loop"), "relay")
    for _ in range(5):
        backoff.failed(ConnectionError("redis://secret@host"))
    backoff.failed(TimeoutError())
    backoff.succeeded()
    backoff.succeeded()
    messages = [(r.getMessage(), r.fields.get("error_type")) for r in caplog.records]
    assert messages == [
        ("background work failing; backing off", "ConnectionError"),
        ("background work failing; backing off", "TimeoutError"),
        ("background work recovered", None),
    ]
    assert "secret" not in caplog.text


async def test_a_pause_ends_when_any_of_its_events_is_set():
    stopping = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stopping.set)
    started = asyncio.get_running_loop().time()
    await pause(10, asyncio.Event(), stopping)
    assert asyncio.get_running_loop().time() - started < 1


def test_entry_ids_order_numerically():
    assert sorted(["10-0", "9-5", "9-10"], key=entry_order) == ["9-5", "9-10", "10-0"]


def test_trimming_reaches_no_further_than_the_group_furthest_behind():
    groups = [
        {"name": b"a", "last-delivered-id": b"100-0"},
        {"name": b"b", "last-delivered-id": b"90-3"},
        {"name": b"c", "last-delivered-id": b"200-0"},
    ]
    assert oldest_needed(groups, {}) == "90-3"
    assert oldest_needed(groups, {b"c": b"20-1"}) == "20-1"
    assert oldest_needed([], {}) is None
