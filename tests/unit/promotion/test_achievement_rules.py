"""Achievements and birthdays, pure: what an event contributes, progress in a rolling window less
what returns refunded, what may be saved, and on which day a birthday is celebrated where."""

from datetime import UTC, date, datetime, timedelta

from google.protobuf.duration_pb2 import Duration

from loyalty.promotion.v1 import trigger_pb2 as t
from loyalty_promotion.domain import achievements, birthdays
from loyalty_promotion.domain.achievements import Contribution, Counted

NOW = datetime(2031, 3, 31, 12, tzinfo=UTC)
SUM = t.AchievementRule(
    measure=t.ACHIEVEMENT_MEASURE_SUM, property="net_total", target=500, window=Duration(seconds=30 * 86_400)
)
DISTINCT = t.AchievementRule(measure=t.ACHIEVEMENT_MEASURE_DISTINCT, property="categories", target=3)


def counted(event: str, days_ago: int, amount: int = 0, value: str = "", refunded: int = 0) -> Counted:
    return Counted(event, value, amount, NOW - timedelta(days=days_ago), max(amount, 100), refunded)


def test_an_event_contributes_its_measured_property_or_nothing():
    assert achievements.contributions(SUM, {"net_total": 120}) == [Contribution("", 120)]
    assert achievements.contributions(SUM, {"net_total": True}) == []  # a bool is no amount
    assert achievements.contributions(SUM, {}) == []
    assert achievements.contributions(DISTINCT, {"categories": ("toys", "dairy", "toys")}) == [
        Contribution("dairy", 0),
        Contribution("toys", 0),
    ]


def test_a_rolling_sum_counts_the_window_before_as_of_less_what_was_refunded():
    rows = [counted("a", 40, 300), counted("b", 20, 300), counted("c", 5, 300, refunded=100)]
    assert achievements.progress(SUM, rows, NOW) == 300 + 200  # a has left the window
    assert achievements.progress(SUM, rows, NOW - timedelta(days=11)) == 600  # a was in, c to come
    refunded_in_full = [counted("b", 20, 300, refunded=300)]
    assert achievements.progress(SUM, refunded_in_full, NOW) == 0


def test_distinct_values_and_counts_ignore_purchases_refunded_in_full():
    rows = [
        counted("a", 1, value="toys"),
        counted("a", 1, value="dairy"),
        counted("b", 1, value="toys", refunded=100),
    ]
    assert achievements.progress(DISTINCT, rows, NOW) == 2
    count = t.AchievementRule(measure=t.ACHIEVEMENT_MEASURE_COUNT, target=2)
    assert achievements.progress(count, rows, NOW) == 1


def test_a_delay_must_be_more_than_zero_and_at_most_a_year():
    def fields(**trigger) -> list[str]:
        return [v.field for v in achievements.violations(t.Trigger(**trigger), lambda _e: True)]

    assert fields(delay=Duration(seconds=1)) == []
    assert fields(delay=Duration(seconds=365 * 86_400)) == []
    assert fields(delay=Duration(seconds=0)) == ["trigger.delay"]
    assert fields(delay=Duration(seconds=365 * 86_400 + 1)) == ["trigger.delay"]


def test_a_birthday_is_today_in_the_customers_zone_and_29_february_falls_on_the_28th():
    assert birthdays.celebrated_on(2, 29, 2031) == date(2031, 2, 28)
    assert birthdays.celebrated_on(2, 29, 2032) == date(2032, 2, 29)
    evening = datetime(2031, 6, 14, 20, tzinfo=UTC)
    people = [
        birthdays.Birthday("t", "auckland", 6, 15, "Pacific/Auckland", None),
        birthdays.Birthday("t", "tenant-zone", 6, 15, "", None),
        birthdays.Birthday("t", "done", 6, 14, "", 2031),
    ]
    due = birthdays.due_today(people, evening, {"t": "Asia/Tokyo"})
    assert [(b.customer_id, year) for b, year in due] == [("auckland", 2031), ("tenant-zone", 2031)]
    assert (6, 15) in birthdays.candidate_days(evening) and (6, 14) in birthdays.candidate_days(evening)
