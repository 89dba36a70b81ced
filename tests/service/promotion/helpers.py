"""Building campaigns, promotions and baskets for the promotion service tests, and a client that
calls as one tenant."""

import uuid

from google.protobuf import field_mask_pb2

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.promotion.v1 import (
    campaign_pb2,
    condition_pb2,
    effect_pb2,
    promotion_pb2,
    promotion_service_pb2 as api,
    promotion_service_pb2_grpc,
)


def key() -> str:
    return uuid.uuid4().hex


def eur(amount: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", amount_minor=amount)


def percent_off(bps: int, *, skus=(), min_quantity: int = 0) -> promotion_pb2.Promotion:
    """`bps` off the lines with these SKUs (all lines if none), optionally from a quantity on."""
    line_filter = condition_pb2.LineFilter(skus=list(skus))
    promotion = promotion_pb2.Promotion(
        display_name=f"{bps / 100:g}% off",
        effects=[
            effect_pb2.Effect(
                percent_off=effect_pb2.PercentOffEffect(percent_bps=bps, line_filter=line_filter)
            )
        ],
    )
    if min_quantity:
        promotion.condition.CopyFrom(
            condition_pb2.Condition(
                line_quantity=condition_pb2.LineQuantityCondition(
                    line_filter=line_filter, min_quantity=min_quantity
                )
            )
        )
    return promotion


def basket(*lines: tuple[str, int, int], currency: str = "EUR") -> basket_pb2.Basket:
    """Lines of (sku, quantity, unit price in minor units)."""
    return basket_pb2.Basket(
        currency_code=currency,
        lines=[
            basket_pb2.LineItem(
                line_id=f"l{i}",
                sku=sku,
                quantity=quantity,
                unit_price=money_pb2.Money(currency_code=currency, amount_minor=price),
                line_total=money_pb2.Money(currency_code=currency, amount_minor=price * quantity),
            )
            for i, (sku, quantity, price) in enumerate(lines)
        ],
    )


class Client:
    """The promotion API as one tenant."""

    def __init__(self, service, tenant_id: str, stub=None) -> None:
        self.service = service
        self.tenant_id = tenant_id
        self.stub = stub or service.stub
        self.metadata = service.metadata(tenant_id)

    def on(self, service) -> "Client":
        """The same tenant on another server."""
        return Client(
            service, self.tenant_id, promotion_service_pb2_grpc.PromotionServiceStub(service.channel)
        )

    async def create_campaign(self, **fields) -> campaign_pb2.Campaign:
        fields.setdefault("display_name", "Spring sale")
        response = await self.stub.CreateCampaign(
            api.CreateCampaignRequest(idempotency_key=key(), campaign=campaign_pb2.Campaign(**fields)),
            metadata=self.metadata,
        )
        return response.campaign

    async def add_promotion(
        self, campaign_id: str, promotion: promotion_pb2.Promotion
    ) -> promotion_pb2.Promotion:
        promotion.campaign_id = campaign_id
        response = await self.stub.CreatePromotion(
            api.CreatePromotionRequest(idempotency_key=key(), promotion=promotion), metadata=self.metadata
        )
        return response.promotion

    async def activate(self, campaign_id: str, etag: str = "") -> campaign_pb2.Campaign:
        response = await self.stub.ActivateCampaign(
            api.ActivateCampaignRequest(idempotency_key=key(), campaign_id=campaign_id, etag=etag),
            metadata=self.metadata,
        )
        return response.campaign

    async def pause(self, campaign_id: str) -> campaign_pb2.Campaign:
        response = await self.stub.PauseCampaign(
            api.PauseCampaignRequest(idempotency_key=key(), campaign_id=campaign_id), metadata=self.metadata
        )
        return response.campaign

    async def live_campaign(self, promotion: promotion_pb2.Promotion, **fields) -> campaign_pb2.Campaign:
        campaign = await self.create_campaign(**fields)
        await self.add_promotion(campaign.campaign_id, promotion)
        return await self.activate(campaign.campaign_id)

    async def get(self, campaign_id: str) -> campaign_pb2.Campaign:
        response = await self.stub.GetCampaign(
            api.GetCampaignRequest(campaign_id=campaign_id), metadata=self.metadata
        )
        return response.campaign

    def update(self, campaign: campaign_pb2.Campaign, *paths: str, idempotency_key: str = ""):
        return self.stub.UpdateCampaign(
            api.UpdateCampaignRequest(
                idempotency_key=idempotency_key or key(),
                campaign=campaign,
                update_mask=field_mask_pb2.FieldMask(paths=list(paths)),
            ),
            metadata=self.metadata,
        )

    async def evaluate(self, basket_pb: basket_pb2.Basket, *codes: str):
        response = await self.stub.EvaluateBasket(
            api.EvaluateBasketRequest(basket=basket_pb, codes=list(codes)), metadata=self.metadata
        )
        return response.result


def customer(customer_id: str = ""):
    from loyalty.promotion.v1 import evaluation_pb2

    return evaluation_pb2.CustomerContext(customer_id=customer_id)


class Codes:
    """Voucher campaigns, codes and checkouts for one tenant."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.stub = client.stub
        self.metadata = client.metadata

    async def voucher_campaign(self, promotion=None, **fields) -> campaign_pb2.Campaign:
        campaign = await self.client.create_campaign(type=campaign_pb2.CAMPAIGN_TYPE_VOUCHER, **fields)
        await self.client.add_promotion(campaign.campaign_id, promotion or percent_off(1000))
        return await self.client.activate(campaign.campaign_id)

    async def voucher(self, campaign_id: str, code: str, **fields):
        from loyalty.promotion.v1 import voucher_pb2

        fields.setdefault("type", voucher_pb2.VOUCHER_TYPE_GENERIC)
        response = await self.stub.CreateVoucher(
            api.CreateVoucherRequest(
                idempotency_key=key(),
                voucher=voucher_pb2.Voucher(campaign_id=campaign_id, code=code, **fields),
            ),
            metadata=self.metadata,
        )
        return response.voucher

    async def get_voucher(self, **which):
        return (await self.stub.GetVoucher(api.GetVoucherRequest(**which), metadata=self.metadata)).voucher

    def reserve(self, checkout_id: str, basket_pb, *codes: str, customer_id: str = ""):
        return self.stub.ReserveRedemptions(
            api.ReserveRedemptionsRequest(
                checkout_id=checkout_id, basket=basket_pb, codes=list(codes), customer=customer(customer_id)
            ),
            metadata=self.metadata,
        )

    def commit(self, checkout_id: str):
        return self.stub.CommitRedemptions(
            api.CommitRedemptionsRequest(checkout_id=checkout_id), metadata=self.metadata
        )

    def rollback(self, checkout_id: str):
        return self.stub.RollbackRedemptions(
            api.RollbackRedemptionsRequest(checkout_id=checkout_id, reason="test"), metadata=self.metadata
        )

    async def evaluate(self, basket_pb, *codes: str, customer_id: str = ""):
        response = await self.stub.EvaluateBasket(
            api.EvaluateBasketRequest(basket=basket_pb, codes=list(codes), customer=customer(customer_id)),
            metadata=self.metadata,
        )
        return response.result
