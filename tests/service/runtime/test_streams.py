"""Stream retention on the real Redis: trimming never drops what a consumer group has not read and
acknowledged, and the gauges show what is kept and how far each group lags."""

import pytest
from prometheus_client import REGISTRY

from loyalty_runtime.streams import StreamRetention


@pytest.fixture
async def entries(redis, stream) -> list[bytes]:
    return [await redis.xadd(stream, {"n": str(n)}) for n in range(10)]


async def read(redis, stream, group: str, count: int) -> list[bytes]:
    [(_, delivered)] = await redis.xreadgroup(group, "c", {stream: ">"}, count=count)
    return [entry_id for entry_id, _ in delivered]


def gauge(name: str, **labels) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_trimming_keeps_what_any_group_has_not_read_and_acknowledged(redis, stream, entries):
    for group in ("done", "behind"):
        await redis.xgroup_create(stream, group, id="0")
    await redis.xack(stream, "done", *await read(redis, stream, "done", 10))
    behind = await read(redis, stream, "behind", 6)
    await redis.xack(stream, "behind", *behind[:3])
    retention = StreamRetention(redis, stream)

    assert await retention.trim() == 3  # "behind" still needs its pending 4th entry onwards
    assert [entry_id for entry_id, _ in await redis.xrange(stream)] == entries[3:]
    assert await read(redis, stream, "behind", 10) == entries[6:]

    await redis.xack(stream, "behind", *entries[3:])
    assert await retention.trim() == 6  # everything read: only the last delivered entry stays
    assert await redis.xlen(stream) == 1


async def test_a_group_that_has_read_nothing_keeps_the_whole_stream(redis, stream, entries):
    await redis.xgroup_create(stream, "new", id="0")
    assert await StreamRetention(redis, stream).trim() == 0
    assert await redis.xlen(stream) == 10


async def test_a_stream_nobody_consumes_yet_is_left_to_its_length_cap(redis, stream, entries):
    assert await StreamRetention(redis, stream).trim() == 0
    assert await redis.xlen(stream) == 10


async def test_the_gauges_show_length_age_lag_and_pending(redis, stream, entries):
    await redis.xgroup_create(stream, "behind", id="0")
    delivered = await read(redis, stream, "behind", 6)
    await redis.xack(stream, "behind", *delivered[:3])
    await StreamRetention(redis, stream).observe()

    assert gauge("loyalty_stream_length", stream=stream) == 10
    assert 0 <= gauge("loyalty_stream_oldest_entry_age_seconds", stream=stream) < 60
    assert gauge("loyalty_stream_group_lag", stream=stream, group="behind") == 4
    assert gauge("loyalty_stream_group_pending", stream=stream, group="behind") == 3

    await redis.xdel(stream, entries[8])  # Redis can no longer count the lag itself
    await StreamRetention(redis, stream).observe()
    assert gauge("loyalty_stream_group_lag", stream=stream, group="behind") == 3
