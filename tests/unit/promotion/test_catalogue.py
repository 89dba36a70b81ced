"""The reward catalogue's rules (domain/catalogue.py)."""

from datetime import UTC, datetime, timedelta

import pytest

from loyalty.promotion.v1 import catalogue_pb2 as pb
from loyalty_promotion.domain import catalogue as rules
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.protobuf import timestamp

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


def reward(**fields) -> pb.CatalogueReward:
    fields.setdefault("kind", pb.CATALOGUE_REWARD_KIND_CODE)
    fields.setdefault("campaign_id", "c")
    fields.setdefault("points_cost", 100)
    return pb.CatalogueReward(program_id="p", display_name="Coffee", **fields)


def test_a_working_reward_has_no_problems():
    assert rules.problems(reward()) == []
    assert (
        rules.problems(reward(kind=pb.CATALOGUE_REWARD_KIND_DONATION, charity_name="Red Cross", stock=0))
        == []
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"points_cost": 0}, "reward.points_cost"),
        ({"campaign_id": ""}, "reward.campaign_id"),
        ({"kind": pb.CATALOGUE_REWARD_KIND_DONATION, "campaign_id": ""}, "reward.charity_name"),
        ({"kind": pb.CATALOGUE_REWARD_KIND_UNSPECIFIED}, "reward.kind"),
        ({"stock": -1}, "reward.stock"),
        ({"start_time": timestamp(NOW), "end_time": timestamp(NOW)}, "reward.end_time"),
    ],
)
def test_what_cannot_work_is_named(fields, field):
    with pytest.raises(InvalidArgument) as refused:
        rules.check(reward(**fields))
    assert refused.value.reason is Reason.CATALOGUE_REWARD_INVALID
    assert [v.field for v in refused.value.violations] == [field]


def test_a_refused_reservation_says_whether_the_window_or_the_stock_was_the_cause():
    assert rules.refusal(NOW + timedelta(days=1), None, NOW).reason is Reason.CATALOGUE_REWARD_UNAVAILABLE
    assert rules.refusal(None, NOW, NOW).reason is Reason.CATALOGUE_REWARD_UNAVAILABLE
    assert rules.refusal(None, None, NOW).reason is Reason.CATALOGUE_REWARD_OUT_OF_STOCK
