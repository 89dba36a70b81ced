"""Use cases of referral programmes (campaigns of type REFERRAL). A referrer's code is a voucher of
the campaign marked with its referrer, one per referrer (get-or-create), limited to the
programme's max_conversions_per_referrer uses; a referee presenting it gets the campaign's
promotions, unless it is their own code or (first_purchase_only) not their first purchase.
When the referee's checkout commits, a conversion is recorded: confirmed at once, or after the
programme's confirmation delay if the purchase was not rolled back meanwhile, and then published
as `referral.converted` for the referrer's reward."""

import secrets
from dataclasses import replace

from loyalty.promotion.v1 import campaign_pb2, events_pb2, referral_pb2, voucher_pb2
from loyalty_promotion import app_codes, repository_codes as sql
from loyalty_promotion.commands import CreateReferralCode, ListReferralCodes, ListReferralConversions
from loyalty_promotion.domain import codegen
from loyalty_promotion.repository_codes import StoredVoucher
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.errors import InvalidArgument, Reason
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
            uow.record(converted(row), key=row["referrer_customer_id"])


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
                    uow.record(converted(row), key=row["referrer_customer_id"])
                    confirmed += 1
        finally:
            unbind_call(token)
    return confirmed
