"""RedeemReward and ListRewards through the real gateway and services: the reward catalogue kept by
promotion (managed through the gateway's admin API), points burned in the ledger and a unique code
issued into the customer's wallet, once per idempotency key; the points given back when the code
cannot be issued; a donation's points given to the programme's donation account; the stock never
oversold by concurrent redemptions."""

import asyncio
import uuid

import grpc
import pytest

from loyalty.gateway.v1 import customer_service_pb2 as customer_api
from loyalty.ledger.v1 import ledger_service_pb2 as ledger_api, ledger_service_pb2_grpc
from loyalty.promotion.v1 import (
    campaign_pb2,
    catalogue_pb2,
    promotion_service_pb2 as promotion_api,
    promotion_service_pb2_grpc,
    voucher_pb2,
)
from loyalty_runtime.testing import internal_metadata
from tests.conftest import rpc_failure
from tests.service.gateway.conftest import provision
from tests.service.gateway.test_gateway_adjustments import balance
from tests.service.gateway.test_gateway_checkout import enrol
from tests.service.promotion.helpers import percent_off

CODE = catalogue_pb2.CATALOGUE_REWARD_KIND_CODE
DONATION = catalogue_pb2.CATALOGUE_REWARD_KIND_DONATION


@pytest.fixture
async def tenant(shop, services):
    tenant = await provision(shop, services)
    service = services["promotion"]
    internal = promotion_service_pb2_grpc.PromotionServiceStub(service.channel)
    metadata = internal_metadata(service.server.settings, tenant.tenant_id)
    campaign = await internal.CreateCampaign(
        promotion_api.CreateCampaignRequest(
            idempotency_key=uuid.uuid4().hex,
            campaign={"display_name": "Rewards", "type": campaign_pb2.CAMPAIGN_TYPE_VOUCHER},
        ),
        metadata=metadata,
    )
    tenant.campaign_id = campaign.campaign.campaign_id
    promotion = percent_off(1000)
    promotion.campaign_id = tenant.campaign_id
    await internal.CreatePromotion(
        promotion_api.CreatePromotionRequest(idempotency_key=uuid.uuid4().hex, promotion=promotion),
        metadata=metadata,
    )
    await internal.ActivateCampaign(
        promotion_api.ActivateCampaignRequest(
            idempotency_key=uuid.uuid4().hex, campaign_id=tenant.campaign_id
        ),
        metadata=metadata,
    )
    tenant.promotion = internal, metadata
    # The catalogue is managed through the gateway's admin API, as the promotion RPCs it forwards.
    tenant.catalogue = promotion_service_pb2_grpc.PromotionServiceStub(shop.channel)
    return tenant


async def create_reward(tenant, **fields) -> catalogue_pb2.CatalogueReward:
    fields.setdefault("kind", CODE)
    if fields["kind"] == CODE:
        fields.setdefault("campaign_id", tenant.campaign_id)
    reward = catalogue_pb2.CatalogueReward(
        program_id=tenant.program_id,
        display_name="Coffee",
        points_cost=fields.pop("points_cost", 100),
        **fields,
    )
    created = await tenant.catalogue.CreateCatalogueReward(
        promotion_api.CreateCatalogueRewardRequest(idempotency_key=uuid.uuid4().hex, reward=reward),
        metadata=tenant.auth,
    )
    return created.reward


async def earn(services, tenant, customer_id: str, points: int) -> None:
    stub = ledger_service_pb2_grpc.LedgerServiceStub(services["ledger"].channel)
    metadata = internal_metadata(services["ledger"].server.settings, tenant.tenant_id)
    opened = await stub.OpenAccount(
        ledger_api.OpenAccountRequest(
            program_id=tenant.program_id, customer_id=customer_id, idempotency_key=uuid.uuid4().hex
        ),
        metadata=metadata,
    )
    await stub.EarnPoints(
        ledger_api.EarnPointsRequest(
            account_id=opened.account.account_id, amount=points, idempotency_key=uuid.uuid4().hex
        ),
        metadata=metadata,
    )


def redeem(shop, tenant, customer_id: str, reward_id: str, key: str | None = None):
    return shop.customers.RedeemReward(
        customer_api.RedeemRewardRequest(
            idempotency_key=key or uuid.uuid4().hex,
            customer={"customer_id": customer_id},
            reward_id=reward_id,
        ),
        metadata=tenant.till_auth,
    )


async def held_codes(tenant, customer_id: str) -> list[str]:
    internal, metadata = tenant.promotion
    listed = await internal.ListVouchers(
        promotion_api.ListVouchersRequest(campaign_id=tenant.campaign_id, page_size=100), metadata=metadata
    )
    return [v.code for v in listed.vouchers if v.holder_customer_id == customer_id]


async def test_a_code_is_issued_into_the_wallet_for_the_points_once_per_key(shop, services, tenant):
    customer_id = await enrol(shop, tenant)
    await earn(services, tenant, customer_id, 250)
    reward = await create_reward(tenant, points_cost=100)
    key = uuid.uuid4().hex
    redeemed = await redeem(shop, tenant, customer_id, reward.reward_id, key)
    assert redeemed.code and redeemed.points_spent == 100 and redeemed.entry_id
    assert await redeem(shop, tenant, customer_id, reward.reward_id, key) == redeemed
    assert await balance(services, tenant, customer_id) == 150
    assert await held_codes(tenant, customer_id) == [redeemed.code]
    wallet = await shop.customers.GetWallet(
        customer_api.GetWalletRequest(customer={"customer_id": customer_id}), metadata=tenant.till_auth
    )
    assert redeemed.code in {v.code for v in wallet.wallet.vouchers}
    assert (
        await tenant.promotion[0].GetVoucher(
            promotion_api.GetVoucherRequest(code=redeemed.code), metadata=tenant.promotion[1]
        )
    ).voucher.type == voucher_pb2.VOUCHER_TYPE_UNIQUE
    second = await redeem(shop, tenant, customer_id, reward.reward_id)
    assert second.code != redeemed.code
    short = await rpc_failure(redeem(shop, tenant, customer_id, reward.reward_id))
    assert (short.code, short.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_BALANCE")
    assert await balance(services, tenant, customer_id) == 50


async def test_the_points_come_back_when_the_code_cannot_be_issued(shop, services, tenant):
    customer_id = await enrol(shop, tenant)
    await earn(services, tenant, customer_id, 100)
    reward = await create_reward(tenant, points_cost=100, stock=1)
    internal, metadata = tenant.promotion
    await internal.ArchiveCampaign(
        promotion_api.ArchiveCampaignRequest(
            idempotency_key=uuid.uuid4().hex, campaign_id=tenant.campaign_id
        ),
        metadata=metadata,
    )
    failed = await rpc_failure(redeem(shop, tenant, customer_id, reward.reward_id))
    assert failed.code is grpc.StatusCode.FAILED_PRECONDITION
    assert await balance(services, tenant, customer_id) == 100
    again = await tenant.catalogue.GetCatalogueReward(
        promotion_api.GetCatalogueRewardRequest(reward_id=reward.reward_id), metadata=tenant.auth
    )
    assert again.reward.redeemed_count == 0  # the stock is back


async def test_a_donation_gives_the_points_to_the_donation_account(shop, services, tenant):
    customer_id = await enrol(shop, tenant)
    await earn(services, tenant, customer_id, 80)
    reward = await create_reward(tenant, kind=DONATION, charity_name="Red Cross", points_cost=50)
    donated = await redeem(shop, tenant, customer_id, reward.reward_id)
    assert (donated.code, donated.charity_name) == ("", "Red Cross")
    assert await balance(services, tenant, customer_id) == 30
    stub = ledger_service_pb2_grpc.LedgerServiceStub(services["ledger"].channel)
    metadata = internal_metadata(services["ledger"].server.settings, tenant.tenant_id)
    program = await stub.GetProgram(
        ledger_api.GetProgramRequest(program_id=tenant.program_id), metadata=metadata
    )
    charity = await stub.GetAccount(
        ledger_api.GetAccountRequest(account_id=program.program.system_accounts.donation_account_id),
        metadata=metadata,
    )
    assert charity.account.balance.posted == 50


async def test_concurrent_redemptions_never_oversell_the_stock(shop, services, tenant):
    reward = await create_reward(tenant, points_cost=10, stock=3)
    customers = [await enrol(shop, tenant) for _ in range(8)]
    for customer_id in customers:
        await earn(services, tenant, customer_id, 10)
    answers = await asyncio.gather(
        *(redeem(shop, tenant, c, reward.reward_id) for c in customers), return_exceptions=True
    )
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(refused) == 5, refused
    assert all(a.code() is grpc.StatusCode.FAILED_PRECONDITION for a in refused)
    balances = [await balance(services, tenant, c) for c in customers]
    assert sorted(balances) == [0, 0, 0, 10, 10, 10, 10, 10]
    shown = await tenant.catalogue.GetCatalogueReward(
        promotion_api.GetCatalogueRewardRequest(reward_id=reward.reward_id), metadata=tenant.auth
    )
    assert shown.reward.redeemed_count == 3


async def test_the_app_lists_what_is_offered_and_what_the_customer_can_afford(shop, services, tenant):
    customer_id = await enrol(shop, tenant)
    await earn(services, tenant, customer_id, 150)
    cheap = await create_reward(tenant, points_cost=100)
    dear = await create_reward(tenant, points_cost=200)
    await create_reward(tenant, points_cost=10, stock=0)  # none left: not offered
    listed = await shop.customers.ListRewards(
        customer_api.ListRewardsRequest(customer={"customer_id": customer_id}), metadata=tenant.till_auth
    )
    assert listed.available_points == 150
    assert {(r.reward_id, r.affordable) for r in listed.rewards} == {
        (cheap.reward_id, True),
        (dear.reward_id, False),
    }
    affordable = await shop.customers.ListRewards(
        customer_api.ListRewardsRequest(customer={"customer_id": customer_id}, affordable_only=True),
        metadata=tenant.till_auth,
    )
    assert [r.reward_id for r in affordable.rewards] == [cheap.reward_id]


async def test_a_reward_that_cannot_work_is_refused(shop, services, tenant):
    refused = await rpc_failure(create_reward(tenant, kind=DONATION, points_cost=0))
    assert (refused.code, refused.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CATALOGUE_REWARD_INVALID")
    assert set(refused.fields) == {"reward.points_cost", "reward.charity_name"}
    missing = await rpc_failure(redeem(shop, tenant, await enrol(shop, tenant), str(uuid.uuid4())))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "CATALOGUE_REWARD_NOT_FOUND")
