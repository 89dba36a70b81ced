"""The in-memory statistics buffer: what one evaluation adds, its bound, and a failed flush's counts
kept for the next."""

from dataclasses import dataclass
from datetime import UTC, date, datetime

from loyalty_promotion.statistics import WHOLE_CAMPAIGN, StatisticsBuffer

NOW = datetime(2030, 2, 1, 23, 59, tzinfo=UTC)


@dataclass(frozen=True)
class Applied:
    campaign_id: str
    promotion_id: str
    discount: int
    points: int


def _by_key(deltas):
    return {(d.campaign_id, d.promotion_id): (d.evaluations, d.discount, d.points) for d in deltas}


def test_an_evaluation_counts_each_promotion_and_its_campaign_once():
    buffer = StatisticsBuffer()
    buffer.count(
        "t", "EUR", NOW, [Applied("c1", "p1", 100, 0), Applied("c1", "p2", 50, 7), Applied("c2", "p3", 1, 0)]
    )
    buffer.count("t", "EUR", NOW, [Applied("c1", "p1", 10, 0)])
    assert _by_key(buffer.take()) == {
        ("c1", "p1"): (2, 110, 0),
        ("c1", "p2"): (1, 50, 7),
        ("c1", WHOLE_CAMPAIGN): (2, 160, 7),
        ("c2", "p3"): (1, 1, 0),
        ("c2", WHOLE_CAMPAIGN): (1, 1, 0),
    }
    assert buffer.take() == []


def test_counts_are_kept_per_currency_and_day():
    buffer = StatisticsBuffer()
    buffer.count("t", "EUR", NOW, [Applied("c", "p", 1, 0)])
    buffer.count("t", "JPY", NOW, [Applied("c", "p", 1, 0)])
    deltas = buffer.take()
    assert sorted(d.currency for d in deltas) == ["EUR", "EUR", "JPY", "JPY"]
    assert {d.day for d in deltas} == {date(2030, 2, 1)}


def test_the_buffer_is_bounded_and_says_what_it_dropped():
    buffer = StatisticsBuffer(max_keys=2)
    buffer.count("t", "EUR", NOW, [Applied("c1", "p1", 1, 0)])  # two keys: promotion and campaign
    buffer.count("t", "EUR", NOW, [Applied("c1", "p1", 1, 0), Applied("c2", "p2", 5, 0)])
    assert _by_key(buffer.take()) == {("c1", "p1"): (2, 2, 0), ("c1", WHOLE_CAMPAIGN): (2, 2, 0)}
    assert buffer.dropped == 2


def test_counts_put_back_after_a_failed_flush_add_to_new_ones():
    buffer = StatisticsBuffer()
    buffer.count("t", "EUR", NOW, [Applied("c", "p", 3, 1)])
    failed = buffer.take()
    buffer.count("t", "EUR", NOW, [Applied("c", "p", 4, 0)])
    buffer.put_back(failed)
    assert _by_key(buffer.take())[("c", "p")] == (2, 7, 1)
