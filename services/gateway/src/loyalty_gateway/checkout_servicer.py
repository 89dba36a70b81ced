"""CheckoutService and CustomerService: check the caller's scope, run the use case, translate a
downstream failure into the caller's error. No SQL, no business rule."""

import asyncio
import functools
from datetime import UTC, datetime, timedelta

from loyalty.gateway.v1 import (
    checkout_service_pb2 as api,
    customer_pb2 as gw,
    customer_service_pb2 as customer_api,
    wallet_pb2,
)
from loyalty.ledger.v1 import ledger_service_pb2 as ledger_api
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as profile_api
from loyalty.promotion.v1 import offer_pb2, promotion_service_pb2 as promotion_api
from loyalty_gateway import activities
from loyalty_gateway.auth import Authenticator, require
from loyalty_gateway.checkout import Checkouts
from loyalty_gateway.downstream import DownstreamError, call
from loyalty_gateway.enrolment_fraud import assess_enrolment
from loyalty_gateway.referrals import Referrals, Referred
from loyalty_gateway.returns import Returns
from loyalty_gateway.rewards import Rewards
from loyalty_runtime.errors import InvalidArgument, NotFound, PermissionDenied, Reason
from loyalty_runtime.protobuf import moment, timestamp
from loyalty_runtime.uow import require_key


def rpc(method):
    """Scope check first (nothing is done for a caller who may not), downstream errors translated."""

    @functools.wraps(method)
    async def handle(self, request, context):
        require(method.__name__)
        caller = self.auth.key_caller()
        if caller is None:
            raise PermissionDenied(Reason.PERMISSION_DENIED, "checkout and customer calls take an API key")
        try:
            return await method(self, caller, request)
        except DownstreamError as failure:
            raise failure.error from None

    return handle


class CheckoutServicer:
    def __init__(self, checkouts: Checkouts, auth: Authenticator) -> None:
        self.checkouts = checkouts
        self.returns = Returns(checkouts.units, checkouts.downstream, checkouts.customers)
        self.auth = auth

    @rpc
    async def PreviewCheckout(self, caller, request):
        return api.PreviewCheckoutResponse(result=await self.checkouts.preview(caller, request))

    @rpc
    async def ReserveCheckout(self, caller, request):
        return api.ReserveCheckoutResponse(checkout=await self.checkouts.reserve(caller, request))

    @rpc
    async def CommitCheckout(self, caller, request):
        return api.CommitCheckoutResponse(checkout=await self.checkouts.commit(caller, request))

    @rpc
    async def CancelCheckout(self, caller, request):
        return api.CancelCheckoutResponse(checkout=await self.checkouts.cancel(request))

    @rpc
    async def GetCheckout(self, caller, request):
        return api.GetCheckoutResponse(checkout=await self.checkouts.get(request.checkout_id))

    @rpc
    async def ReturnItems(self, caller, request):
        checkout_row, return_row = await self.returns.record(request)
        returned = await self.returns.finish(checkout_row, return_row)
        return api.ReturnItemsResponse(
            checkout_return=returned, checkout=await self.checkouts.get(request.checkout_id)
        )


DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL = timedelta(minutes=5), timedelta(hours=1)

CONSENT_CHANNELS = {
    gw.CONTACT_CHANNEL_EMAIL: profile_pb2.CONSENT_CHANNEL_EMAIL,
    gw.CONTACT_CHANNEL_SMS: profile_pb2.CONSENT_CHANNEL_SMS,
    gw.CONTACT_CHANNEL_PUSH: profile_pb2.CONSENT_CHANNEL_PUSH,
}


def _profile_attribute(name: str, value: gw.AttributeValue) -> profile_pb2.AttributeValue:
    kind = value.WhichOneof("kind")
    if kind in ("string_value", "int_value", "bool_value", "date_value"):
        return profile_pb2.AttributeValue(**{kind: getattr(value, kind)})
    raise InvalidArgument(
        Reason.ATTRIBUTE_TYPE_MISMATCH, "a string, integer, boolean or date", field=f"attributes.{name}"
    )


def _consents(grants) -> list[profile_pb2.Consent]:
    consents = []
    for n, grant in enumerate(grants):
        if grant.channel not in CONSENT_CHANNELS or grant.purpose != gw.CONSENT_PURPOSE_MARKETING:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT,
                "consents are for e-mail, SMS or push marketing",
                field=f"consents[{n}]",
            )
        consents.append(
            profile_pb2.Consent(
                channel=CONSENT_CHANNELS[grant.channel],
                purpose=profile_pb2.CONSENT_PURPOSE_MARKETING,
                granted=grant.granted,
                source="gateway",
            )
        )
    return consents


class CustomerServicer:
    def __init__(self, checkouts: Checkouts, auth: Authenticator) -> None:
        self.checkouts = checkouts
        self.customers = checkouts.customers
        self.tenants = checkouts.tenants
        self.downstream = checkouts.downstream
        self.referrals = Referrals(
            checkouts.downstream, checkouts.settings.signal_hash_secret.get_secret_value().encode()
        )
        self.auth = auth
        self.rewards = Rewards(checkouts.downstream, checkouts.customers, checkouts.tenants)

    @rpc
    async def ListRewards(self, caller, request):
        return await self.rewards.list(caller.tenant_id, request)

    @rpc
    async def RedeemReward(self, caller, request):
        return await self.rewards.redeem(caller.tenant_id, request)

    @rpc
    async def ListAchievementProgress(self, caller, request):
        customer_id = await self.customers.resolve(caller.tenant_id, request.customer)
        found = await call(
            "promotion",
            self.downstream.promotion.ListAchievementProgress,
            promotion_api.ListAchievementProgressRequest(
                customer_id=customer_id,
                campaign_id=request.campaign_id,
                page_size=request.page_size,
                page_token=request.page_token,
            ),
        )
        return customer_api.ListAchievementProgressResponse(
            progress=found.progress, next_page_token=found.next_page_token
        )

    @rpc
    async def IdentifyCustomer(self, caller, request):
        settings = await self.tenants.get(caller.tenant_id)
        customer_id = await self.customers.resolve(caller.tenant_id, request.customer)
        context = await self.customers.context(caller.tenant_id, customer_id, settings.default_program_id)
        return customer_api.IdentifyCustomerResponse(customer=summary(context))

    @rpc
    async def GetWallet(self, caller, request):
        """Balance and expiries from the ledger, offers, vouchers and the referral code from promotion:
        two calls in parallel, both current (a wallet is not a till's hot path)."""
        settings = await self.tenants.get(caller.tenant_id)
        program = request.program_id or settings.default_program_id
        customer_id = await self.customers.resolve(caller.tenant_id, request.customer)
        context = await self.customers.context(caller.tenant_id, customer_id, program)
        account, offers = await asyncio.gather(
            self.customers.account(customer_id, program),
            call(
                "promotion",
                self.downstream.promotion.ListCustomerOffers,
                promotion_api.ListCustomerOffersRequest(
                    page_size=200, customer=context.for_promotion(request.locale)
                ),
            ),
        )
        return customer_api.GetWalletResponse(wallet=wallet(context, account, offers.offers))

    @rpc
    async def EnrolCustomer(self, caller, request):
        key = require_key(request.idempotency_key)
        settings = await self.tenants.get(caller.tenant_id)
        await assess_enrolment(
            self.downstream,
            self.referrals.secret,
            caller.tenant_id,
            f"gateway:{caller.api_key_id}:{key}",
            caller,
            request,
        )
        enrolled = await call(
            "profile",
            self.downstream.profile.EnrolCustomer,
            profile_api.EnrolCustomerRequest(
                idempotency_key=f"gateway:{caller.api_key_id}:{key}",
                identifiers=request.identifiers,
                given_name=request.given_name,
                family_name=request.family_name,
                birth_date=request.birth_date if request.HasField("birth_date") else None,
                locale=request.locale or settings.default_locale,
                attributes={n: _profile_attribute(n, v) for n, v in request.attributes.items()},
                consents=_consents(request.consents),
            ),
        )
        customer_id = enrolled.customer.customer_id
        program = request.program_id or settings.default_program_id
        await call(
            "ledger",
            self.downstream.ledger.OpenAccount,
            ledger_api.OpenAccountRequest(
                program_id=program,
                customer_id=customer_id,
                idempotency_key=f"gateway:open:{program}:{customer_id}",
            ),
        )
        referred = Referred(False)
        if request.referral_code.strip():
            referred = await self.referrals.accept(
                caller.tenant_id,
                f"gateway:{caller.api_key_id}:{key}",
                request.referral_code,
                enrolled.customer,
                caller,
                request.signals,
            )
        self.customers.forget(caller.tenant_id, customer_id)
        context = await self.customers.context(caller.tenant_id, customer_id, program)
        return customer_api.EnrolCustomerResponse(
            customer=summary(context), referral_accepted=referred.accepted, referral_reason=referred.reason
        )

    @rpc
    async def RecordEvent(self, caller, request):
        require_key(request.idempotency_key)
        activity = activities.Activity(
            customer_id=await self._existing_customer(caller, request.customer),
            event_type=activities.check_event_type(request.event_type),
            occur_time=moment(request, "occur_time"),
            properties=dict(request.properties),
        )
        fresh: list[str] = []

        async def record(uow, command):
            fresh.append(await activities.record_activity(uow, command))
            return fresh[-1]

        response = await self.checkouts.units.idempotent(
            request, record, activity, lambda event_id: customer_api.RecordEventResponse(event_id=event_id)
        )
        # A replay answers the first event's id; this call's own attempt was rolled back.
        response.duplicate = not fresh or fresh[-1] != response.event_id
        return response

    @rpc
    async def CreateCustomerToken(self, caller, request):
        key = require_key(request.idempotency_key)
        ttl = request.ttl.ToTimedelta() if request.HasField("ttl") else DEFAULT_TOKEN_TTL
        if not timedelta(seconds=1) <= ttl <= MAX_TOKEN_TTL:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, "a lifetime of 1 s to 1 hour", field="ttl")
        customer_id = await self._existing_customer(caller, request.customer)
        token, expires = await self.customers.tokens.issue(
            caller.tenant_id, customer_id, f"{caller.api_key_id}:{key}", ttl, datetime.now(UTC)
        )
        return customer_api.CreateCustomerTokenResponse(customer_token=token, expire_time=timestamp(expires))

    async def _existing_customer(self, caller, lookup) -> str:
        customer_id = await self.customers.resolve(caller.tenant_id, lookup)
        try:
            await call(
                "profile",
                self.downstream.profile.GetCustomer,
                profile_api.GetCustomerRequest(customer_id=customer_id),
            )
        except DownstreamError as failure:
            if failure.transient:
                raise
            raise NotFound(Reason.CUSTOMER_NOT_FOUND, "no such customer", field="customer") from None
        return customer_id


def wallet(context, account, offers) -> wallet_pb2.Wallet:
    out = wallet_pb2.Wallet(
        customer_id=context.customer_id,
        balance=summary(context).balance,
        tier=gw.TierSummary(tier_id=account.tier_code, display_name=account.tier_code),
        expiring_points=[
            gw.ExpiringPoints(points=e.points, expire_time=e.expire_time) for e in account.balance.expiring
        ],
    )
    out.balance.available_points = account.balance.available
    out.balance.pending_points = account.balance.pending
    for offer in offers:
        shared = {
            "campaign_id": offer.campaign_id,
            "display_name": offer.display_name,
            "message": offer.message,
            "start_time": offer.start_time if offer.HasField("start_time") else None,
            "end_time": offer.end_time if offer.HasField("end_time") else None,
        }
        if offer.HasField("remaining_redemptions"):
            shared["remaining_uses"] = offer.remaining_redemptions
        if offer.kind == offer_pb2.OFFER_KIND_PROMOTION:
            out.offers.append(wallet_pb2.WalletOffer(promotion_id=offer.promotion_id, **shared))
        elif offer.kind == offer_pb2.OFFER_KIND_VOUCHER:
            out.vouchers.append(wallet_pb2.WalletVoucher(code=offer.code, **shared))
        elif offer.kind == offer_pb2.OFFER_KIND_REFERRAL_CODE and not out.referral_code:
            out.referral_code = offer.code
    return out


def summary(context) -> gw.CustomerSummary:
    return gw.CustomerSummary(
        customer_id=context.customer_id,
        given_name=context.given_name,
        tier=gw.TierSummary(tier_id=context.tier_code, display_name=context.tier_code),
        balance=gw.PointsBalance(
            program_id=context.program_id,
            available_points=context.available_points,
            pending_points=context.pending_points,
        ),
        enrol_time=timestamp(None),
    )
