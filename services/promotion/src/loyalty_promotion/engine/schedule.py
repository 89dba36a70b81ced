"""Validity of a campaign or rule at one instant: the absolute range, then weekly windows in
local wall time (see conditions.in_windows for DST)."""

from dataclasses import dataclass
from datetime import UTC, datetime

from loyalty.promotion.v1 import schedule_pb2
from loyalty_promotion.engine.conditions import in_windows
from loyalty_promotion.engine.facts import Facts


@dataclass(frozen=True)
class CompiledSchedule:
    start: datetime | None
    end: datetime | None
    tz: str
    windows: tuple

    def open_at(self, facts: Facts) -> bool:
        if self is ALWAYS:
            return True
        now = facts.now
        if self.start is not None and now < self.start:
            return False
        if self.end is not None and now >= self.end:
            return False
        return not self.windows or in_windows(self.windows, facts.local(self.tz))


ALWAYS = CompiledSchedule(None, None, "", ())


def compile_schedule(message: schedule_pb2.Schedule | None) -> CompiledSchedule:
    if message is None:
        return ALWAYS
    start = message.start_time.ToDatetime(tzinfo=UTC) if message.HasField("start_time") else None
    end = message.end_time.ToDatetime(tzinfo=UTC) if message.HasField("end_time") else None
    return CompiledSchedule(start, end, message.time_zone, tuple(message.recurring_windows))
