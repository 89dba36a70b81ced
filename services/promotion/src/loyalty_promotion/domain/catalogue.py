"""The reward catalogue's rules (pure): what a catalogue reward must say to work, and whether one
can be redeemed now."""

from datetime import datetime

from loyalty.promotion.v1 import catalogue_pb2 as pb
from loyalty_runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, Reason

CODE_KINDS = frozenset({pb.CATALOGUE_REWARD_KIND_CODE, pb.CATALOGUE_REWARD_KIND_FREE_ITEM})
MAX_POINTS = 10**12


def problems(reward: pb.CatalogueReward) -> list[FieldViolation]:
    """Why `reward` cannot work as saved; empty when it can."""
    found = []

    def refuse(field: str, description: str) -> None:
        found.append(FieldViolation(f"reward.{field}", description))

    if not reward.display_name.strip():
        refuse("display_name", "a name is required")
    if not reward.program_id:
        refuse("program_id", "the programme whose points pay is required")
    if not 0 < reward.points_cost <= MAX_POINTS:
        refuse("points_cost", f"a positive number of points up to {MAX_POINTS}")
    if reward.kind in CODE_KINDS and not reward.campaign_id:
        refuse("campaign_id", "the voucher campaign its codes come from is required")
    if reward.kind == pb.CATALOGUE_REWARD_KIND_DONATION and not reward.charity_name.strip():
        refuse("charity_name", "the charity is required")
    if reward.kind == pb.CATALOGUE_REWARD_KIND_UNSPECIFIED:
        refuse("kind", "a code, a free item or a donation")
    if reward.HasField("stock") and not 0 <= reward.stock <= MAX_POINTS:
        refuse("stock", "0 or more")
    if (
        reward.HasField("start_time")
        and reward.HasField("end_time")
        and reward.end_time.ToDatetime() <= reward.start_time.ToDatetime()
    ):
        refuse("end_time", "after start_time")
    return found


def check(reward: pb.CatalogueReward) -> None:
    if found := problems(reward):
        raise InvalidArgument(
            Reason.CATALOGUE_REWARD_INVALID, "the reward cannot work as it is", violations=found
        )


def refusal(start: datetime | None, end: datetime | None, now: datetime) -> FailedPrecondition:
    """Why a reward that exists could not be reserved now: outside its window, or out of stock."""
    if (start is not None and now < start) or (end is not None and now >= end):
        return FailedPrecondition(
            Reason.CATALOGUE_REWARD_UNAVAILABLE, "the reward is not offered now", field="reward_id"
        )
    return FailedPrecondition(
        Reason.CATALOGUE_REWARD_OUT_OF_STOCK, "the reward is out of stock", field="reward_id"
    )
