"""Campaign edits: what a new campaign starts as, what an update mask may change (label keys one by
one), and channels/stores/audience as the engine's one condition tree."""

import pytest
from google.protobuf import field_mask_pb2

from loyalty.common.v1 import basket_pb2
from loyalty.promotion.v1 import campaign_pb2 as pb, condition_pb2, promotion_pb2
from loyalty_promotion.domain import campaigns as rules
from loyalty_promotion.domain.lifecycle import State


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def test_a_new_campaign_is_a_draft_without_output_only_fields():
    asked = pb.Campaign(
        campaign_id="mine", state=pb.CAMPAIGN_STATE_ACTIVE, etag="9", display_name="x", priority=3
    )
    campaign = rules.new_campaign(asked)
    assert (campaign.campaign_id, campaign.etag) == ("", "")
    assert campaign.state == pb.CAMPAIGN_STATE_DRAFT
    assert campaign.type == pb.CAMPAIGN_TYPE_PROMOTION
    assert campaign.priority == 3
    assert rules.new_campaign(pb.Campaign(type=pb.CAMPAIGN_TYPE_VOUCHER)).type == pb.CAMPAIGN_TYPE_VOUCHER


def test_the_mask_takes_only_its_fields():
    current = pb.Campaign(display_name="a", description="keep", priority=1, store_ids=["s1", "s2"])
    changes = pb.Campaign(display_name="b", description="drop", priority=2, store_ids=["s3"])
    updated = rules.apply_mask(current, changes, mask("display_name", "store_ids"), State.ACTIVE)
    assert (updated.display_name, updated.description, updated.priority) == ("b", "keep", 1)
    assert list(updated.store_ids) == ["s3"]  # repeated fields are replaced, not appended
    assert current.display_name == "a"  # the input is not changed


def test_an_empty_mask_means_every_updatable_field():
    current = pb.Campaign(display_name="a", type=pb.CAMPAIGN_TYPE_VOUCHER)
    updated = rules.apply_mask(current, pb.Campaign(display_name="b"), mask(), State.DRAFT)
    assert updated.display_name == "b"
    assert updated.type == pb.CAMPAIGN_TYPE_VOUCHER  # not updatable, kept


def test_label_keys_are_set_and_removed_one_by_one():
    current = pb.Campaign(labels={"a": "1", "b": "2"})
    updated = rules.apply_mask(
        current, pb.Campaign(labels={"c": "3"}), mask("labels.c", "labels.a"), State.DRAFT
    )
    assert dict(updated.labels) == {"b": "2", "c": "3"}


@pytest.mark.parametrize("path", ["type", "state", "etag", "campaign_id"])
def test_fields_that_are_not_updatable_are_refused(path):
    with pytest.raises(rules.EditRefused) as refused:
        rules.apply_mask(pb.Campaign(), pb.Campaign(), mask(path), State.DRAFT)
    assert refused.value.field == f"update_mask.{path}"


def test_the_programme_changes_only_in_drafts():
    current, changes = pb.Campaign(program_id="p1"), pb.Campaign(program_id="p2")
    assert rules.apply_mask(current, changes, mask("program_id"), State.DRAFT).program_id == "p2"
    with pytest.raises(rules.EditRefused) as refused:
        rules.apply_mask(current, changes, mask("program_id"), State.ACTIVE)
    assert refused.value.field == "campaign.program_id"
    # Sending the same value again is no change.
    assert rules.apply_mask(current, current, mask("program_id"), State.ACTIVE).program_id == "p1"


def test_everyone_everywhere_has_no_audience_condition():
    assert rules.audience_condition(pb.Campaign()) is None


def test_one_restriction_is_its_own_condition():
    condition = rules.audience_condition(pb.Campaign(store_ids=["s1"]))
    assert condition == condition_pb2.Condition(store=condition_pb2.StoreCondition(store_ids=["s1"]))


def test_channels_stores_segments_and_customer_conditions_are_all_required():
    segments = condition_pb2.SegmentCondition(segment_ids=["vip"], match=condition_pb2.SEGMENT_MATCH_NONE)
    first_purchase = condition_pb2.Condition(first_purchase=condition_pb2.FirstPurchaseCondition())
    campaign = pb.Campaign(
        channels=[basket_pb2.CHANNEL_WEB],
        store_ids=["s1"],
        audience=pb.Audience(segments=segments, customer_condition=first_purchase),
    )
    condition = rules.audience_condition(campaign)
    kinds = [c.WhichOneof("kind") for c in condition.all_of.conditions]
    assert kinds == ["channel", "store", "customer_segment", "first_purchase"]
    assert condition.all_of.conditions[2].customer_segment.match == condition_pb2.SEGMENT_MATCH_NONE


def test_a_new_promotion_is_enabled_and_belongs_to_its_campaign():
    promotion = rules.new_promotion(
        promotion_pb2.Promotion(promotion_id="x", campaign_id="y", etag="3"), "c1"
    )
    assert (promotion.promotion_id, promotion.campaign_id, promotion.etag) == ("", "c1", "")
    assert promotion.state == promotion_pb2.PROMOTION_STATE_ENABLED
    assert rules.enabled(
        [promotion, promotion_pb2.Promotion(state=promotion_pb2.PROMOTION_STATE_DISABLED)]
    ) == [promotion]
