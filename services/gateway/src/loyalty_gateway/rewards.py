"""The reward catalogue for the customer's app: ListRewards (what is offered now, and whether the
customer's balance affords it) and RedeemReward, a saga over promotion and the ledger in which
every step is keyed by the redemption id (derived from the caller's idempotency key), so a retry
after any failure finishes the same redemption instead of starting another:

1. promotion reserves one of the reward's stock (a guarded update: never oversold);
2. the ledger takes the points: held and captured as a burn, or, for a donation, transferred to
   the programme's donation account;
3. promotion issues the code into the customer's wallet (nothing to issue for a donation).

A step refused for good is compensated: points not taken -> the stock is given back; points
taken but no code issued -> the points are given back (the entry reversed) and then the stock. A
step that does not answer is UNAVAILABLE: the retry resumes where the first attempt stopped."""

import uuid

from loyalty.gateway.v1 import customer_service_pb2 as customer_api
from loyalty.ledger.v1 import ledger_service_pb2 as ledger_api
from loyalty.promotion.v1 import catalogue_pb2, promotion_service_pb2 as promotion_api
from loyalty_gateway.customers import Customers
from loyalty_gateway.downstream import Downstream, DownstreamError, call
from loyalty_gateway.tenants import Tenants
from loyalty_runtime.uow import require_key

DONATION = catalogue_pb2.CATALOGUE_REWARD_KIND_DONATION
# Redemption ids are derived from (tenant, idempotency key) in this namespace.
REDEMPTIONS = uuid.UUID("6f1b1c2e-9a57-4c55-8d7e-2f0f4b7e9a11")


def offer(reward: catalogue_pb2.CatalogueReward, available: int) -> customer_api.CatalogueRewardOffer:
    shown = customer_api.CatalogueRewardOffer(
        reward_id=reward.reward_id,
        display_name=reward.display_name,
        description=reward.description,
        points_cost=reward.points_cost,
        kind=reward.kind,  # RewardKind numbers the same kinds alike
        charity_name=reward.charity_name,
        affordable=reward.points_cost <= available,
    )
    if reward.HasField("stock"):
        shown.stock_left = max(reward.stock - reward.redeemed_count, 0)
    if reward.HasField("end_time"):
        shown.end_time.CopyFrom(reward.end_time)
    return shown


class Rewards:
    def __init__(self, downstream: Downstream, customers: Customers, tenants: Tenants) -> None:
        self.downstream = downstream
        self.customers = customers
        self.tenants = tenants

    async def list(
        self, tenant: str, request: customer_api.ListRewardsRequest
    ) -> customer_api.ListRewardsResponse:
        settings = await self.tenants.get(tenant)
        program = request.program_id or settings.default_program_id
        customer_id = await self.customers.resolve(tenant, request.customer)
        account = await self.customers.account(customer_id, program)
        available = account.balance.available
        listing = promotion_api.ListCatalogueRewardsRequest(
            page_size=request.page_size,
            page_token=request.page_token,
            available_only=True,
            program_id=program,
        )
        if request.affordable_only:
            listing.max_points_cost = max(available, 0)
        found = await call("promotion", self.downstream.promotion.ListCatalogueRewards, listing)
        return customer_api.ListRewardsResponse(
            rewards=[offer(r, available) for r in found.rewards],
            next_page_token=found.next_page_token,
            available_points=available,
        )

    async def redeem(
        self, tenant: str, request: customer_api.RedeemRewardRequest
    ) -> customer_api.RedeemRewardResponse:
        key = require_key(request.idempotency_key)
        customer_id = await self.customers.resolve(tenant, request.customer)
        redemption_id = str(uuid.uuid5(REDEMPTIONS, f"{tenant}:{key}"))
        steps = Steps(self.downstream, redemption_id)
        reserved = await steps.reserve(request.reward_id, customer_id)
        try:
            account_id = await self.customers.open_account(customer_id, reserved.program_id)
            entry_id = await steps.pay(reserved, account_id)
        except DownstreamError as failure:
            if not failure.transient:
                await steps.cancel()
            raise
        try:
            issued = await steps.issue(entry_id)
        except DownstreamError as failure:
            if not failure.transient:
                await steps.refund(entry_id)
                await steps.cancel()
            raise
        self.customers.forget(tenant, customer_id)
        return customer_api.RedeemRewardResponse(
            redemption_id=redemption_id,
            reward_id=issued.reward_id,
            kind=issued.kind,
            points_spent=issued.points_cost,
            code=issued.code,
            charity_name=issued.charity_name,
            entry_id=issued.entry_id,
        )


class Steps:
    """The saga's calls for one redemption, each with a key of its own derived from the redemption."""

    def __init__(self, downstream: Downstream, redemption_id: str) -> None:
        self.d = downstream
        self.redemption_id = redemption_id

    def key(self, step: str) -> str:
        return f"gateway:reward:{self.redemption_id}:{step}"

    async def reserve(self, reward_id: str, customer_id: str) -> catalogue_pb2.CatalogueRedemption:
        reserved = await call(
            "promotion",
            self.d.promotion.ReserveCatalogueReward,
            promotion_api.ReserveCatalogueRewardRequest(
                idempotency_key=self.key("reserve"),
                redemption_id=self.redemption_id,
                reward_id=reward_id,
                customer_id=customer_id,
            ),
        )
        return reserved.redemption

    async def pay(self, reserved: catalogue_pb2.CatalogueRedemption, account_id: str) -> str:
        """The ledger entry that took the points."""
        reason = f"reward {reserved.reward_id}"
        if reserved.kind == DONATION:
            program = await call(
                "ledger",
                self.d.ledger.GetProgram,
                ledger_api.GetProgramRequest(program_id=reserved.program_id),
            )
            donated = await call(
                "ledger",
                self.d.ledger.TransferPoints,
                ledger_api.TransferPointsRequest(
                    source_account_id=account_id,
                    destination_account_id=program.program.system_accounts.donation_account_id,
                    amount=reserved.points_cost,
                    reason=reason,
                    idempotency_key=self.key("donate"),
                ),
            )
            return donated.entry.entry_id
        held = await call(
            "ledger",
            self.d.ledger.HoldPoints,
            ledger_api.HoldPointsRequest(
                account_id=account_id,
                amount=reserved.points_cost,
                reason=reason,
                source_ref=self.redemption_id,
                idempotency_key=self.key("hold"),
            ),
        )
        captured = await call(
            "ledger",
            self.d.ledger.CaptureHold,
            ledger_api.CaptureHoldRequest(
                hold_id=held.hold.hold_id, reason=reason, idempotency_key=self.key("capture")
            ),
        )
        return captured.entry.entry_id

    async def issue(self, entry_id: str) -> catalogue_pb2.CatalogueRedemption:
        issued = await call(
            "promotion",
            self.d.promotion.IssueCatalogueReward,
            promotion_api.IssueCatalogueRewardRequest(
                idempotency_key=self.key("issue"), redemption_id=self.redemption_id, entry_id=entry_id
            ),
        )
        return issued.redemption

    async def refund(self, entry_id: str) -> None:
        await call(
            "ledger",
            self.d.ledger.ReverseEntry,
            ledger_api.ReverseEntryRequest(
                entry_id=entry_id, reason="reward not issued", idempotency_key=self.key("refund")
            ),
        )

    async def cancel(self) -> None:
        await call(
            "promotion",
            self.d.promotion.CancelCatalogueReward,
            promotion_api.CancelCatalogueRewardRequest(
                idempotency_key=self.key("cancel"), redemption_id=self.redemption_id
            ),
        )
