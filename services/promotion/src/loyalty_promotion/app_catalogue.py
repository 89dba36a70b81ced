"""Use cases of the reward catalogue: rewards customers buy with points (admin CRUD, listing for the
customer's app) and the three steps the gateway's RedeemReward saga takes here, each idempotent on
the redemption id the saga chose: reserve (one of the stock, by one guarded update), issue (a
unique code held by the customer, from the reward's voucher campaign; nothing for a donation) and
cancel (the stock back; only while reserved)."""

import secrets
import uuid
from dataclasses import dataclass

from loyalty.promotion.v1 import catalogue_pb2 as pb, voucher_pb2
from loyalty_promotion import app_codes, repository_catalogue as sql, repository_codes as codes_sql
from loyalty_promotion.domain import catalogue as rules, codegen
from loyalty_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Reason
from loyalty_runtime.protobuf import moment, timestamp
from loyalty_runtime.uow import UnitOfWork

DEFAULT_PATTERN = "RWD-##########"
MAX_DRAWS = 5
STATES = {
    "reserved": pb.CATALOGUE_REDEMPTION_STATE_RESERVED,
    "issued": pb.CATALOGUE_REDEMPTION_STATE_ISSUED,
    "cancelled": pb.CATALOGUE_REDEMPTION_STATE_CANCELLED,
}


def not_found(field: str = "reward_id") -> NotFound:
    return NotFound(Reason.CATALOGUE_REWARD_NOT_FOUND, "no such reward", field=field)


def reward_of(row) -> pb.CatalogueReward:
    reward = pb.CatalogueReward.FromString(row["payload"])
    reward.reward_id = str(row["reward_id"])
    reward.redeemed_count = row["redeemed_count"]
    reward.create_time.CopyFrom(timestamp(row["created_at"]))
    reward.update_time.CopyFrom(timestamp(row["updated_at"]))
    return reward


def _columns(reward: pb.CatalogueReward, now) -> dict:
    stored = pb.CatalogueReward()
    stored.CopyFrom(reward)
    for output in ("reward_id", "redeemed_count", "create_time", "update_time"):
        stored.ClearField(output)
    return {
        "program_id": reward.program_id,
        "points_cost": reward.points_cost,
        "stock": reward.stock if reward.HasField("stock") else None,
        "start_time": moment(reward, "start_time"),
        "end_time": moment(reward, "end_time"),
        "payload": stored.SerializeToString(deterministic=True),
        "updated_at": now,
    }


async def _check_campaign(uow: UnitOfWork, reward: pb.CatalogueReward) -> None:
    rules.check(reward)
    if reward.kind in rules.CODE_KINDS:
        await app_codes.voucher_campaign(uow, reward.campaign_id, "reward.campaign_id")


async def create_reward(uow: UnitOfWork, reward: pb.CatalogueReward) -> pb.CatalogueReward:
    await _check_campaign(uow, reward)
    values = {"reward_id": str(uuid.uuid4()), "created_at": uow.now, **_columns(reward, uow.now)}
    return reward_of(await sql.insert_reward(uow.connection, uow.tenant, values))


async def get_reward(uow: UnitOfWork, reward_id: str) -> pb.CatalogueReward:
    row = await sql.reward(uow.connection, uow.tenant, reward_id)
    if row is None:
        raise not_found()
    return reward_of(row)


@dataclass(frozen=True)
class ListRewards:
    after: str | None
    limit: int
    available_only: bool
    max_points_cost: int | None
    program_id: str


async def list_rewards(uow: UnitOfWork, command: ListRewards) -> tuple[list[pb.CatalogueReward], str | None]:
    rows = await sql.rewards(
        uow.connection,
        uow.tenant,
        command.after,
        command.limit,
        uow.now,
        available_only=command.available_only,
        max_cost=command.max_points_cost,
        program=command.program_id,
    )
    last = str(rows[-1]["reward_id"]) if len(rows) == command.limit else None
    return [reward_of(r) for r in rows], last


async def update_reward(uow: UnitOfWork, reward: pb.CatalogueReward) -> pb.CatalogueReward:
    await _check_campaign(uow, reward)
    row = await sql.update_reward(uow.connection, uow.tenant, reward.reward_id, _columns(reward, uow.now))
    if row is None:
        if await sql.reward(uow.connection, uow.tenant, reward.reward_id) is None:
            raise not_found("reward.reward_id")
        raise InvalidArgument(
            Reason.CATALOGUE_REWARD_INVALID, "the stock is below what was redeemed", field="reward.stock"
        )
    return reward_of(row)


async def delete_reward(uow: UnitOfWork, reward_id: str) -> None:
    if not await sql.delete_reward(uow.connection, uow.tenant, reward_id, uow.now):
        raise not_found()


# --- the RedeemReward saga's steps ---


@dataclass(frozen=True)
class Reserve:
    redemption_id: str
    reward_id: str
    customer_id: str


def redemption_of(row) -> pb.CatalogueRedemption:
    redemption = pb.CatalogueRedemption.FromString(row["payload"])
    redemption.state = STATES[row["state"]]
    return redemption


async def reserve(uow: UnitOfWork, command: Reserve) -> pb.CatalogueRedemption:
    if not command.customer_id:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "a customer is required", field="customer_id")
    found = await sql.reward(uow.connection, uow.tenant, command.reward_id)
    if found is None:
        raise not_found()
    reward = reward_of(found)
    redemption = pb.CatalogueRedemption(
        redemption_id=command.redemption_id,
        reward_id=reward.reward_id,
        customer_id=command.customer_id,
        program_id=reward.program_id,
        kind=reward.kind,
        points_cost=reward.points_cost,
        charity_name=reward.charity_name,
        create_time=timestamp(uow.now),
    )
    payload = redemption.SerializeToString(deterministic=True)
    if not await sql.insert_redemption(
        uow.connection,
        uow.tenant,
        command.redemption_id,
        found["reward_id"],
        command.customer_id,
        payload,
        uow.now,
    ):
        return redemption_of(await sql.redemption(uow.connection, uow.tenant, command.redemption_id))
    if await sql.take_stock(uow.connection, uow.tenant, command.reward_id, uow.now) is None:
        latest = await sql.reward(uow.connection, uow.tenant, command.reward_id)
        if latest is None:
            raise not_found()
        raise rules.refusal(latest["start_time"], latest["end_time"], uow.now)
    redemption.state = pb.CATALOGUE_REDEMPTION_STATE_RESERVED
    uow.concerns(command.customer_id)
    return redemption


async def _locked(uow: UnitOfWork, redemption_id: str):
    row = await sql.redemption(uow.connection, uow.tenant, redemption_id)
    if row is None:
        raise NotFound(Reason.CATALOGUE_REWARD_NOT_FOUND, "no such redemption", field="redemption_id")
    return row


@dataclass(frozen=True)
class Issue:
    redemption_id: str
    entry_id: str


async def issue(uow: UnitOfWork, command: Issue) -> pb.CatalogueRedemption:
    row = await _locked(uow, command.redemption_id)
    redemption = redemption_of(row)
    if row["state"] == "issued":
        return redemption
    if row["state"] == "cancelled":
        raise FailedPrecondition(
            Reason.CATALOGUE_REWARD_UNAVAILABLE, "the redemption was cancelled", field="redemption_id"
        )
    found = await sql.reward(uow.connection, uow.tenant, redemption.reward_id)
    if redemption.kind in rules.CODE_KINDS:
        if found is None:
            raise not_found()
        voucher = await _draw_code(uow, reward_of(found).campaign_id, redemption.customer_id)
        redemption.code, redemption.voucher_id = voucher.code, voucher.voucher_id
    redemption.entry_id = command.entry_id
    redemption.state = pb.CATALOGUE_REDEMPTION_STATE_ISSUED
    await _save(uow, redemption, "issued")
    uow.concerns(redemption.customer_id)
    return redemption


async def _draw_code(uow: UnitOfWork, campaign_id: str, customer_id: str) -> codes_sql.StoredVoucher:
    """A new unique code of the campaign, held by the customer (it shows in their wallet)."""
    campaign = await app_codes.voucher_campaign(uow, campaign_id, "reward_id")
    pattern = codegen.parse(campaign.code_pattern.pattern or DEFAULT_PATTERN, campaign.code_pattern.charset)
    for _ in range(MAX_DRAWS):
        (code,) = codegen.generate(pattern, 1, secrets.token_bytes)
        requested = voucher_pb2.Voucher(
            code=code, type=voucher_pb2.VOUCHER_TYPE_UNIQUE, holder_customer_id=customer_id
        )
        voucher = app_codes.new_voucher(requested, campaign_id, uow.now)
        if await codes_sql.insert_voucher(uow.connection, uow.tenant, voucher):
            return voucher
    raise FailedPrecondition(
        Reason.CODE_PATTERN_TOO_SMALL, "the campaign's code pattern is crowded", field="reward_id"
    )


async def cancel(uow: UnitOfWork, redemption_id: str) -> pb.CatalogueRedemption:
    row = await _locked(uow, redemption_id)
    redemption = redemption_of(row)
    if row["state"] == "cancelled":
        return redemption
    if row["state"] == "issued":
        raise FailedPrecondition(
            Reason.CATALOGUE_REWARD_UNAVAILABLE, "an issued redemption stays", field="redemption_id"
        )
    await sql.give_stock(uow.connection, uow.tenant, row["reward_id"])
    redemption.state = pb.CATALOGUE_REDEMPTION_STATE_CANCELLED
    await _save(uow, redemption, "cancelled")
    return redemption


async def _save(uow: UnitOfWork, redemption: pb.CatalogueRedemption, state: str) -> None:
    stored = pb.CatalogueRedemption()
    stored.CopyFrom(redemption)
    stored.ClearField("state")
    await sql.save_redemption(
        uow.connection,
        uow.tenant,
        redemption.redemption_id,
        state,
        stored.SerializeToString(deterministic=True),
        uow.now,
    )
