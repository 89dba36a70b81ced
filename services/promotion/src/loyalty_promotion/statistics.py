"""What evaluations offered, counted in memory and flushed in the background, so that an evaluation
itself writes nothing.

Each replica adds to its own bounded buffer (one key per tenant, campaign, promotion, currency and
day) and a background loop adds the buffer to PostgreSQL every `statistics_flush_seconds` in one
statement. A failed flush keeps its counts for the next one. What a replica counted since its last
flush is lost if it crashes (seconds of preview counts; redemption figures come from redemptions,
not from here), and counts beyond `max_keys` distinct keys between two flushes are dropped and
logged; both are the price of a write-free evaluation.
"""

import asyncio
import logging
from collections import defaultdict
from datetime import datetime

from loyalty_promotion import repository
from loyalty_promotion.repository import StatisticsDelta
from loyalty_runtime.db import Database
from loyalty_runtime.loops import Backoff, pause
from loyalty_runtime.telemetry import untraced

log = logging.getLogger("loyalty.promotion.statistics")

# promotion_id of the row counting the campaign as a whole.
WHOLE_CAMPAIGN = ""

Key = tuple[str, str, str, str, object]


class StatisticsBuffer:
    def __init__(self, max_keys: int = 50_000) -> None:
        self.max_keys = max_keys
        self._counts: dict[Key, list[int]] = {}
        self.dropped = 0

    def count(self, tenant: str, currency: str, now: datetime, applied) -> None:
        """Count one evaluation's applied promotions (engine `Applied` entries)."""
        day = now.date()
        per_campaign: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for entry in applied:
            self._add(
                (tenant, entry.campaign_id, entry.promotion_id, currency, day), entry.discount, entry.points
            )
            totals = per_campaign[entry.campaign_id]
            totals[0] += entry.discount
            totals[1] += entry.points
        for campaign_id, (discount, points) in per_campaign.items():
            self._add((tenant, campaign_id, WHOLE_CAMPAIGN, currency, day), discount, points)

    def _add(self, key: Key, discount: int, points: int, evaluations: int = 1) -> None:
        counts = self._counts.get(key)
        if counts is None:
            if len(self._counts) >= self.max_keys:
                self.dropped += 1
                return
            counts = self._counts[key] = [0, 0, 0]
        counts[0] += evaluations
        counts[1] += discount
        counts[2] += points

    def take(self) -> list[StatisticsDelta]:
        counts, self._counts = self._counts, {}
        return [StatisticsDelta(*key, *values) for key, values in counts.items()]

    def put_back(self, deltas: list[StatisticsDelta]) -> None:
        for d in deltas:
            key = (d.tenant_id, d.campaign_id, d.promotion_id, d.currency, d.day)
            self._add(key, d.discount, d.points, evaluations=d.evaluations)


async def flush(buffer: StatisticsBuffer, database: Database) -> int:
    """Write what the buffer holds; on failure it goes back into the buffer. Returns rows written."""
    deltas = buffer.take()
    if not deltas:
        return 0
    try:
        with untraced():
            async with database.transaction(5.0) as connection:
                await repository.add_statistics(connection, deltas)
    except BaseException:
        buffer.put_back(deltas)
        raise
    return len(deltas)


async def flush_loop(
    buffer: StatisticsBuffer, database: Database, every: float, stopping: asyncio.Event
) -> None:
    """Flush every `every` seconds until stopped, then once more (bounded by the server's stop)."""
    backoff = Backoff(log, "promotion.statistics")
    while not stopping.is_set():
        await pause(every, stopping)
        try:
            await flush(buffer, database)
            backoff.succeeded()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await pause(backoff.failed(error), stopping)
        if buffer.dropped:
            log.warning("statistics dropped: buffer full", extra={"fields": {"count": buffer.dropped}})
            buffer.dropped = 0
    try:
        await flush(buffer, database)
    except Exception as error:
        log.warning("final statistics flush failed", extra={"fields": {"error_type": type(error).__name__}})
