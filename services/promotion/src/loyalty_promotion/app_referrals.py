"""Use cases of referral programmes (campaigns of type REFERRAL). A referrer's code is a voucher of
the campaign marked with its referrer, one per referrer (get-or-create), limited to the
programme's max_conversions_per_referrer uses; a referee presenting it gets the campaign's
promotions, unless it is their own code or (first_purchase_only) not their first purchase.
When the referee's checkout commits, a conversion is recorded: confirmed at once, or after the
programme's confirmation delay if the purchase was not rolled back meanwhile, and then published
as `referral.converted`, with the programme's referrer reward granted (`reward.granted`).

A new customer may also enrol with a code (AcceptReferral, at the gateway's EnrolCustomer, after
fraud's referral check): refused for the referrer's own code, a referee already referred in the
programme, or a referrer over the programme's cap per period; accepted, it grants the referee reward,
and the referee's first qualifying purchase committed afterwards (`purchase.committed`, with or
without the code) converts it."""

import secrets
import uuid
from dataclasses import dataclass, replace

from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.promotion.v1 import campaign_pb2, events_pb2, referral_pb2, reward_pb2, voucher_pb2
from loyalty_promotion import app, app_codes, repository, repository_codes as sql
from loyalty_promotion.commands import (
    AcceptReferral,
    CreateReferralCode,
    ListReferralCodes,
    ListReferralConversions,
)
from loyalty_promotion.domain import codegen, referrals, vouchers
from loyalty_promotion.domain.lifecycle import State
from loyalty_promotion.repository_codes import StoredVoucher
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.events import Subscription
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork, UnitsOfWork

DEFAULT_PATTERN = "REF-########"
CONVERSION_STATES = {
    "pending": referral_pb2.REFERRAL_CONVERSION_STATE_PENDING,
    "confirmed": referral_pb2.REFERRAL_CONVERSION_STATE_CONFIRMED,
    "cancelled": referral_pb2.REFERRAL_CONVERSION_STATE_CANCELLED,
}
PB_TO_CONVERSION_STATE = {number: name for name, number in CONVERSION_STATES.items()}
# Codes drawn before giving up on a crowded pattern.
MAX_DRAWS = 5


def _code_of(voucher: StoredVoucher, conversions: int) -> referral_pb2.ReferralCode:
    return referral_pb2.ReferralCode(
        code=voucher.code,
        campaign_id=voucher.campaign_id,
        referrer_customer_id=voucher.referrer_customer_id or "",
        conversion_count=conversions,
        create_time=timestamp(voucher.created_at),
    )


def conversion_of(row: dict) -> referral_pb2.ReferralConversion:
    conversion = referral_pb2.ReferralConversion(
        conversion_id=str(row["conversion_id"]),
        campaign_id=str(row["campaign_id"]),
        code=row["code"],
        referrer_customer_id=row["referrer_customer_id"],
        referee_customer_id=row["referee_customer_id"],
        checkout_id=row["checkout_id"],
        state=CONVERSION_STATES[row["state"]],
        create_time=timestamp(row["created_at"]),
    )
    if row["confirmed_at"]:
        conversion.confirm_time.CopyFrom(timestamp(row["confirmed_at"]))
    return conversion


def converted(row: dict) -> events_pb2.ReferralConverted:
    return events_pb2.ReferralConverted(
        conversion_id=str(row["conversion_id"]),
        campaign_id=str(row["campaign_id"]),
        referrer_customer_id=row["referrer_customer_id"],
        referee_customer_id=row["referee_customer_id"],
        checkout_id=row["checkout_id"],
    )


async def create_referral_code(
    uow: UnitOfWork, command: CreateReferralCode
) -> tuple[referral_pb2.ReferralCode, bool]:
    campaign = await app_codes.voucher_campaign(
        uow, command.campaign_id, "campaign_id", campaign_pb2.CAMPAIGN_TYPE_REFERRAL
    )
    if not command.referrer.strip():
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "a referrer is required", field="referrer_customer_id")
    existing = await sql.referral_code(uow.connection, uow.tenant, command.campaign_id, command.referrer)
    if existing is not None:
        return _code_of(existing, 0), False
    requested = campaign.code_pattern.pattern or DEFAULT_PATTERN
    pattern = codegen.parse(requested, campaign.code_pattern.charset)
    ignore_dashes = await app_codes.ignoring_dashes(uow)
    for _ in range(MAX_DRAWS):
        (code,) = codegen.generate(pattern, 1, secrets.token_bytes)
        voucher = app_codes.new_voucher(
            voucher_pb2.Voucher(
                code=code,
                type=voucher_pb2.VOUCHER_TYPE_GENERIC,
                max_redemptions=campaign.referral.max_conversions_per_referrer,
            ),
            command.campaign_id,
            uow.now,
            ignore_dashes=ignore_dashes,
        )
        voucher = replace(voucher, referrer_customer_id=command.referrer)
        if await sql.insert_voucher(uow.connection, uow.tenant, voucher):
            uow.concerns(command.referrer)
            return _code_of(voucher, 0), True
        raced = await sql.referral_code(uow.connection, uow.tenant, command.campaign_id, command.referrer)
        if raced is not None:
            return _code_of(raced, 0), False
    raise InvalidArgument(
        Reason.CODE_PATTERN_TOO_SMALL, "the campaign's code pattern is crowded", field="campaign_id"
    )


async def list_referral_codes(uow: UnitOfWork, command: ListReferralCodes) -> tuple[list, str | None]:
    found = await sql.list_referral_codes(
        uow.connection, uow.tenant, command.campaign_id, command.referrer, command.after, command.limit
    )
    last = found[-1][0].voucher_id if len(found) == command.limit else None
    return [_code_of(v, n) for v, n in found], last


async def list_conversions(
    uow: UnitOfWork, command: ListReferralConversions
) -> list[referral_pb2.ReferralConversion]:
    rows = await sql.list_conversions(
        uow.connection,
        uow.tenant,
        campaign_id=command.campaign_id,
        referrer=command.referrer,
        referee=command.referee,
        state=command.state,
        before=command.before,
        limit=command.limit,
    )
    return [conversion_of(r) for r in rows]


async def record_conversions(
    uow: UnitOfWork, catalog_referrals: dict, checkout_id: str, referee: str, redemptions
) -> None:
    """At commit: a conversion for each referral code the checkout used."""
    voucher_ids = [r.voucher_id for r in redemptions if r.first and r.voucher_id]
    delays = {
        campaign_id: float(settings.confirmation_delay.ToTimedelta().total_seconds())
        for campaign_id, settings in catalog_referrals.items()
        if any(r.campaign_id == campaign_id for r in redemptions)
    }
    if not voucher_ids or not delays or not referee:
        return
    for row in await sql.add_conversions(
        uow.connection, uow.tenant, checkout_id, referee, voucher_ids, delays, uow.now
    ):
        if row["state"] == "confirmed":
            await _confirmed(uow, row)


async def confirm_due(units: UnitsOfWork) -> int:
    """Confirms every tenant's pending conversions past their delay (the schedule's run)."""
    async with units.database.connection() as connection:
        due = await sql.due_conversions(connection, units.clock(), 500)
    confirmed = 0
    for tenant, conversion_id in due:
        token = bind_call(CallContext(tenant_id=tenant, principal="promotion-referrals"))
        try:
            async with units.change() as uow:
                row = await sql.confirm_conversion(uow.connection, uow.tenant, conversion_id, uow.now)
                if row is not None:
                    await _confirmed(uow, row)
                    confirmed += 1
        finally:
            unbind_call(token)
    return confirmed


async def _confirmed(uow: UnitOfWork, row: dict) -> None:
    """A confirmed conversion: published, and the programme's referrer reward granted (once: the grant
    id follows from the conversion's)."""
    uow.record(converted(row), key=row["referrer_customer_id"])
    campaign = await _campaign(uow, str(row["campaign_id"]))
    if campaign is not None and campaign.referral.HasField("referrer_reward"):
        _grant(
            uow,
            campaign,
            campaign.referral.referrer_reward,
            row["referrer_customer_id"],
            _grant_id(row["conversion_id"], "referrer"),
            str(row["conversion_id"]),
        )


async def _campaign(uow: UnitOfWork, campaign_id: str) -> campaign_pb2.Campaign | None:
    stored = await repository.get_campaign(uow.connection, uow.tenant, campaign_id)
    return campaign_pb2.Campaign.FromString(stored.payload) if stored is not None else None


def _grant_id(of: object, party: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"referral:{party}:{of}"))


def _grant(
    uow: UnitOfWork,
    campaign: campaign_pb2.Campaign,
    reward: reward_pb2.Reward,
    customer_id: str,
    grant_id: str,
    source: str,
) -> None:
    """A referral reward, published as `reward.granted` for the ledger to post (idempotent on the grant
    id). Points rewards only: a code reward needs the issuing that triggers do, not built for referrals."""
    if reward.WhichOneof("kind") != "points":
        return
    uow.record(
        events_pb2.RewardGranted(
            grant_id=grant_id,
            customer_id=customer_id,
            campaign_id=campaign.campaign_id,
            source_event_id=source,
            reward=reward,
            program_id=reward.points.program_id or campaign.program_id,
        ),
        key=customer_id,
    )


# --- acceptance at enrolment -----------------------------------------------------------------------


@dataclass(frozen=True)
class Acceptance:
    accepted: bool
    reason: Reason | None = None
    campaign_id: str = ""
    referrer: str = ""
    referee_grant_id: str = ""


async def accept_referral(uow: UnitOfWork, command: AcceptReferral) -> Acceptance:
    if not command.referee.strip():
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "a referee is required", field="referee_customer_id")
    code = vouchers.normalize(command.code)
    voucher = (await sql.vouchers_by_code(uow.connection, uow.tenant, [code])).get(code) if code else None
    stored = (
        await repository.get_campaign(uow.connection, uow.tenant, voucher.campaign_id) if voucher else None
    )
    if (
        voucher is None
        or not voucher.referrer_customer_id
        or stored is None
        or stored.state != State.ACTIVE.value
    ):
        return Acceptance(False, Reason.VOUCHER_NOT_FOUND)
    campaign = campaign_pb2.Campaign.FromString(stored.payload)
    found = Acceptance(True, None, voucher.campaign_id, voucher.referrer_customer_id)
    refusal = vouchers.rejection(voucher.facts, command.referee, uow.now)
    if refusal is None and command.referee == voucher.referrer_customer_id:
        refusal = Reason.REFERRAL_SELF_REFERRAL
    if refusal is not None:
        return replace(found, accepted=False, reason=refusal)
    if not command.validate_only:
        await sql.lock_referral_code(uow.connection, uow.tenant, voucher.voucher_id)
    since = uow.now
    if campaign.referral.max_referrals_per_period:
        time_zone = (await app.read_settings(uow.connection, uow.tenant)).time_zone or app.DEFAULT_TIME_ZONE
        since = referrals.period_start(campaign.referral.referral_period, uow.now, time_zone)
    in_period, referred_by, grant_id = await sql.referral_acceptances(
        uow.connection, uow.tenant, voucher, command.referee, since
    )
    if referred_by is not None:
        if referred_by == voucher.voucher_id:  # accepted before: the same answer again
            return replace(found, referee_grant_id=grant_id or "")
        return replace(found, accepted=False, reason=Reason.REFERRAL_NOT_ELIGIBLE)
    if referrals.cap_reached(campaign.referral, in_period):
        return replace(found, accepted=False, reason=Reason.REFERRAL_CAP_REACHED)
    if command.validate_only:
        return found
    reward = campaign.referral.referee_reward if campaign.referral.HasField("referee_reward") else None
    grant_id = _grant_id(f"{voucher.voucher_id}:{command.referee}", "referee") if reward else None
    await sql.add_referral_acceptance(uow.connection, uow.tenant, voucher, command.referee, grant_id, uow.now)
    uow.concerns(command.referee)
    if reward is not None:
        _grant(uow, campaign, reward, command.referee, grant_id, f"acceptance:{voucher.voucher_id}")
    return replace(found, referee_grant_id=grant_id or "")


async def convert_accepted(uow: UnitOfWork, event: gateway_events.PurchaseCommitted) -> None:
    """`purchase.committed`: the referee's first purchase after an accepted enrolment converts it, in
    each active programme whose minimum purchase it reaches. A customer with no open acceptance (the
    usual case) costs one index probe."""
    if not event.customer_id:
        return
    delays = {}
    for campaign_id in await sql.open_acceptances(uow.connection, uow.tenant, event.customer_id):
        stored = await repository.get_campaign(uow.connection, uow.tenant, campaign_id)
        if stored is None or stored.state != State.ACTIVE.value:
            continue
        settings = campaign_pb2.Campaign.FromString(stored.payload).referral
        if _qualifies(settings, event):
            delays[campaign_id] = float(settings.confirmation_delay.ToTimedelta().total_seconds())
    if not delays:
        return
    for row in await sql.convert_acceptances(
        uow.connection, uow.tenant, event.customer_id, event.checkout_id, delays, uow.now
    ):
        if row["state"] == "confirmed":
            await _confirmed(uow, row)


def _qualifies(settings: campaign_pb2.ReferralSettings, event: gateway_events.PurchaseCommitted) -> bool:
    minimum = settings.min_purchase
    if not minimum.currency_code:
        return True
    return (
        event.net_total.currency_code == minimum.currency_code
        and event.net_total.amount_minor >= minimum.amount_minor
    )


def with_conversions(subscriptions: list[Subscription]) -> list[Subscription]:
    """The service's subscriptions with referral conversions added to `purchase.committed` (one
    subscription per event type: triggers already listen to it, so the handlers run one after the
    other, in the one unit of work of the event)."""
    out = []
    for subscription in subscriptions:
        if subscription.event is gateway_events.PurchaseCommitted:
            out.append(replace(subscription, handle=_both(convert_accepted, subscription.handle)))
        else:
            out.append(subscription)
    return out


def _both(first, then):
    async def handle(uow: UnitOfWork, event) -> None:
        await first(uow, event)
        await then(uow, event)

    return handle
