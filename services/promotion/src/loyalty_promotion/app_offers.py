"""ListCustomerOffers: a customer's wallet. Every automatic promotion open to them now and every
code assigned to them, minus what they cannot use: a spent budget, a used-up customer limit, a
code that is disabled, expired or used up. With a basket, each offer says whether it applies and
what it would give on its own. Reads only: the catalog, vouchers and usage counters."""

import asyncpg

from loyalty.promotion.v1 import campaign_pb2, offer_pb2
from loyalty_promotion import app, engine, repository_codes as sql
from loyalty_promotion.commands import ListCustomerOffers
from loyalty_promotion.domain import vouchers as rules
from loyalty_promotion.repository_codes import StoredVoucher
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork

# Assigned codes read per customer (a wallet is small; this bounds a pathological one).
MAX_ASSIGNED = 500


def _spent(budget: campaign_pb2.Budget | None, usage: rules.Usage) -> bool:
    if budget is None:
        return False
    return bool(
        (budget.max_redemptions and usage.redemptions >= budget.max_redemptions)
        or (budget.max_points and usage.points >= budget.max_points)
        or (budget.max_discount.amount_minor and usage.discount >= budget.max_discount.amount_minor)
        or (budget.max_redemptions_per_store and usage.at_store >= budget.max_redemptions_per_store)
    )


async def _remaining(
    connection: asyncpg.Connection,
    tenant: str,
    customer_id: str,
    scopes: dict[tuple[str, str, str], list[rules.Scope]],
) -> dict[tuple[str, str, str], int | None]:
    """Uses left per offer (None = no limit; 0 = used up), from one read of the counters."""
    keys = sorted({s.key for found in scopes.values() for s in found})
    used = await sql.customer_uses(connection, tenant, customer_id, keys) if keys else {}
    return {
        offer: min((s.limit - used.get(s.key, 0) for s in found), default=None)
        for offer, found in scopes.items()
    }


def _offer_scopes(
    catalog, campaign_id: str, promotion_id: str, voucher: StoredVoucher | None, now
) -> list[rules.Scope]:
    limits = {p: catalog.promotion_limits[p] for p in [promotion_id] if p in catalog.promotion_limits}
    return rules.customer_scopes(
        campaign_id,
        catalog.budgets.get(campaign_id),
        limits,
        voucher.facts if voucher else None,
        now,
        catalog.tz,
    )


async def list_customer_offers(
    uow: UnitOfWork, catalog: engine.Catalog, command: ListCustomerOffers
) -> list[offer_pb2.Offer]:
    customer = app.customer_of(command.customer)
    if customer.anonymous:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "a wallet belongs to a customer", field="customer.customer_id"
        )
    basket = app.basket_of(command.basket) if command.basket is not None else engine.Basket("", ())
    now = uow.now
    found: list[tuple[offer_pb2.Offer, StoredVoucher | None]] = []
    kinds = set(command.kinds)
    if not kinds or offer_pb2.OFFER_KIND_PROMOTION in kinds:
        for candidate in engine.customer_offers(catalog, basket, customer, now):
            offer = offer_pb2.Offer(
                kind=offer_pb2.OFFER_KIND_PROMOTION,
                campaign_id=candidate.campaign_id,
                promotion_id=candidate.promotion_id,
                display_name=candidate.display_name,
                message=candidate.message,
            )
            for name, value in (("start_time", candidate.start), ("end_time", candidate.end)):
                if value is not None:
                    getattr(offer, name).CopyFrom(timestamp(value))
            found.append((offer, None))
    if not kinds or offer_pb2.OFFER_KIND_VOUCHER in kinds:
        for voucher in await sql.vouchers_of_holder(
            uow.connection, uow.tenant, customer.customer_id, MAX_ASSIGNED
        ):
            if voucher.campaign_id not in catalog.campaigns or rules.rejection(
                voucher.facts, customer.customer_id, now
            ):
                continue
            offer = offer_pb2.Offer(
                kind=offer_pb2.OFFER_KIND_VOUCHER,
                campaign_id=voucher.campaign_id,
                voucher_id=voucher.voucher_id,
                code=voucher.code,
            )
            schedule = catalog.campaigns[voucher.campaign_id].schedule
            for name, own, campaign_bound in (
                ("start_time", voucher.start_time, schedule.start),
                ("end_time", voucher.end_time, schedule.end),
            ):
                bounds = [b for b in (own, campaign_bound) if b is not None]
                if bounds:
                    getattr(offer, name).CopyFrom(
                        timestamp(max(bounds) if name == "start_time" else min(bounds))
                    )
            found.append((offer, voucher))
    return await _usable(uow, catalog, customer, basket, command, found)


async def _usable(uow, catalog, customer, basket, command, found) -> list[offer_pb2.Offer]:
    """Drops what budgets and limits refuse, sets uses left and (with a basket) qualification."""
    campaigns = sorted({offer.campaign_id for offer, _ in found})
    store = basket.store_id if command.basket is not None else None  # no basket: no store to count
    usage = await sql.usage_of(uow.connection, uow.tenant, campaigns, store) if campaigns else {}
    scopes = {
        (o.campaign_id, o.promotion_id, o.voucher_id): _offer_scopes(
            catalog, o.campaign_id, o.promotion_id, v, uow.now
        )
        for o, v in found
    }
    remaining = await _remaining(uow.connection, uow.tenant, customer.customer_id, scopes)
    base = engine.evaluate(catalog, basket, customer, [], uow.now) if command.basket is not None else None
    offers = []
    for offer, voucher in found:
        if _spent(catalog.budgets.get(offer.campaign_id), usage.get(offer.campaign_id, rules.Usage())):
            continue
        left = remaining[(offer.campaign_id, offer.promotion_id, offer.voucher_id)]
        if voucher is not None and voucher.max_redemptions:
            code_left = voucher.max_redemptions - voucher.redemption_count - voucher.reserved_count
            left = code_left if left is None else min(left, code_left)
        if left is not None and left <= 0:
            continue
        if left is not None:
            offer.remaining_redemptions = left
        if base is not None:
            evaluation = base
            if voucher is not None:
                code = engine.PresentedCode(voucher.code, voucher.campaign_id)
                evaluation = engine.evaluate(catalog, basket, customer, [code], uow.now)
            offer.qualification.CopyFrom(_qualification(evaluation, offer))
        offers.append(offer)
    return sorted(offers, key=_expiring_first)


def _qualification(evaluation: engine.Evaluation, offer: offer_pb2.Offer) -> offer_pb2.Qualification:
    def mine(item) -> bool:
        return item.campaign_id == offer.campaign_id and (
            not offer.promotion_id or item.promotion_id == offer.promotion_id
        )

    applied = [a for a in evaluation.applied if mine(a)]
    currency = evaluation.currency
    if applied:
        qualification = offer_pb2.Qualification(
            qualified=True, estimated_points=sum(a.points for a in applied)
        )
        qualification.estimated_discount.currency_code = currency
        qualification.estimated_discount.amount_minor = sum(a.discount for a in applied)
        return qualification
    missed = next((c for c in evaluation.candidates if mine(c)), None)
    qualification = offer_pb2.Qualification(
        qualified=False, reason=missed.reason if missed else Reason.CONDITIONS_NOT_MET
    )
    if missed is not None and missed.amount_to_qualify:
        qualification.amount_to_qualify.currency_code = currency
        qualification.amount_to_qualify.amount_minor = missed.amount_to_qualify
    return qualification


def _expiring_first(offer: offer_pb2.Offer) -> tuple:
    end = offer.end_time.ToNanoseconds() if offer.HasField("end_time") else 1 << 62
    return end, offer.kind, offer.campaign_id, offer.promotion_id, offer.voucher_id
