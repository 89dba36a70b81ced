"""Campaign manifests: what they read as, and the plan against what the tenant has: nothing to do
for what matches, a field left out cleared, a promotion left out deleted from a draft and disabled
in a campaign that ran, the state asked for reached, a type change refused."""

from pathlib import Path

import pytest

from loyalty.promotion.v1 import campaign_pb2, promotion_pb2
from loyalty_gateway.cli.manifests import (
    KEY_LABEL,
    ManifestError,
    diff_lines,
    manifest_files,
    plan_campaign,
    read_manifests,
)

EXAMPLES = Path(__file__).parents[3] / "docs" / "examples" / "campaigns"
MANIFEST = """
key: spring
active: true
campaign:
  display_name: Spring
  priority: 5
  schedule: {start_time: 2027-03-01T00:00:00Z}
promotions:
  - key: five
    effects: [{percent_off: {percent_bps: 500}}]
"""


def manifest(tmp_path: Path, text: str = MANIFEST):
    path = tmp_path / "spring.yaml"
    path.write_text(text)
    return read_manifests([path])[0]


def stored(wanted, state=campaign_pb2.CAMPAIGN_STATE_DRAFT) -> campaign_pb2.Campaign:
    """The campaign as the service answers for `wanted`: ids, times, an etag and usage added."""
    campaign = campaign_pb2.Campaign()
    campaign.CopyFrom(wanted.campaign)
    campaign.campaign_id, campaign.etag, campaign.state = "c1", "3", state
    campaign.create_time.GetCurrentTime()
    campaign.budget.usage.redemptions_committed = 7
    return campaign


def stored_promotion(wanted, promotion_id: str = "p1") -> promotion_pb2.Promotion:
    promotion = promotion_pb2.Promotion()
    promotion.CopyFrom(wanted.promotion)
    promotion.promotion_id, promotion.campaign_id, promotion.etag = promotion_id, "c1", "1"
    return promotion


def test_a_manifest_reads_as_the_contracts_messages_with_its_key_as_a_label(tmp_path):
    read = manifest(tmp_path)
    assert read.key == "spring" and read.active is True
    assert read.campaign.labels[KEY_LABEL] == "spring"
    assert read.campaign.type == campaign_pb2.CAMPAIGN_TYPE_PROMOTION
    assert read.campaign.schedule.start_time.ToJsonString() == "2027-03-01T00:00:00Z"
    (five,) = read.promotions
    assert five.promotion.labels[KEY_LABEL] == "five"
    assert five.promotion.state == promotion_pb2.PROMOTION_STATE_ENABLED


def test_the_examples_read():
    keys = {m.key for m in read_manifests(manifest_files([EXAMPLES]))}
    assert keys == {"cheese-week", "summer-codes"}


def test_a_new_campaign_is_created_with_its_promotions_and_activated(tmp_path):
    plan = plan_campaign(manifest(tmp_path), None)
    assert plan.action == "create" and plan.transition == "activate"
    assert [p.action for p in plan.promotions] == ["create"]
    lines = diff_lines(plan)
    assert lines[0].startswith("+ campaign spring") and "+    display_name: Spring" in lines


def test_what_matches_needs_nothing(tmp_path):
    wanted = manifest(tmp_path)
    current = stored(wanted, campaign_pb2.CAMPAIGN_STATE_SCHEDULED)
    plan = plan_campaign(wanted, current, [stored_promotion(wanted.promotions[0])])
    assert not plan.changed
    assert diff_lines(plan) == [f"= campaign spring ({wanted.source}): no changes"]


def test_a_field_left_out_is_cleared_and_only_changed_fields_are_named(tmp_path):
    wanted = manifest(tmp_path)
    current = stored(wanted)
    current.description = "written in the console"
    current.priority = 9
    plan = plan_campaign(wanted, current, [stored_promotion(wanted.promotions[0])])
    assert plan.action == "update"
    assert {(c.field, c.before, c.after) for c in plan.changes} == {
        ("description", "written in the console", None),
        ("priority", 9, 5),
    }
    assert plan.transition == "activate"


def test_a_promotion_left_out_goes_from_a_draft_and_is_disabled_once_the_campaign_ran(tmp_path):
    wanted = manifest(tmp_path)
    extra = promotion_pb2.Promotion(promotion_id="p2", state=promotion_pb2.PROMOTION_STATE_ENABLED)
    extra.labels[KEY_LABEL] = "old"
    kept = stored_promotion(wanted.promotions[0])
    draft = plan_campaign(wanted, stored(wanted), [kept, extra])
    assert [(p.key, p.action) for p in draft.promotions] == [("five", "keep"), ("old", "delete")]
    ran = plan_campaign(wanted, stored(wanted, campaign_pb2.CAMPAIGN_STATE_ACTIVE), [kept, extra])
    assert [(p.key, p.action) for p in ran.promotions] == [("five", "keep"), ("old", "disable")]
    extra.state = promotion_pb2.PROMOTION_STATE_DISABLED
    done = plan_campaign(wanted, stored(wanted, campaign_pb2.CAMPAIGN_STATE_ACTIVE), [kept, extra])
    assert not done.changed


def test_active_false_pauses_a_running_campaign_and_absent_leaves_the_state_alone(tmp_path):
    paused = manifest(tmp_path, MANIFEST.replace("active: true", "active: false"))
    current = stored(paused, campaign_pb2.CAMPAIGN_STATE_ACTIVE)
    promotions = [stored_promotion(paused.promotions[0])]
    assert plan_campaign(paused, current, promotions).transition == "pause"
    unmanaged = manifest(tmp_path, MANIFEST.replace("active: true\n", ""))
    assert plan_campaign(unmanaged, current, promotions).transition is None


def test_a_type_change_is_refused(tmp_path):
    wanted = manifest(tmp_path)
    current = stored(wanted)
    current.type = campaign_pb2.CAMPAIGN_TYPE_VOUCHER
    with pytest.raises(ManifestError, match=r"campaign\.type: cannot change"):
        plan_campaign(wanted, current)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("key: a\ncampaign: {schedule: {strat_time: x}}\n", "campaign.schedule.strat_time: unknown field"),
        (
            "key: a\ncampaign: {budget: {max_points: 1.5}}\n",
            "campaign.budget.max_points: Couldn't parse integer",
        ),
        ("key: a\ncampaign: {etag: '1'}\n", "campaign.etag: is output only"),
        ("key: a\ncampaign: {labels: {loyalty.dev/key: b}}\n", "campaign.labels: loyalty.dev/key is the"),
        ("key: a\npromotions: [{key: x}, {key: x}]\n", "promotions: the key 'x' appears twice"),
        ("key: a\nactive: yes please\n", "active: must be true or false"),
        ("- just a list\n", "a manifest is a mapping"),
    ],
)
def test_a_bad_manifest_names_its_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as refused:
        read_manifests([path])
    assert str(refused.value).startswith(f"{path}: ") and message in str(refused.value)
