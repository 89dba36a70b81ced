"""Use cases of the redemption RPCs: reserve, commit, roll back, reverse, read. Keyed by the till's
checkout id, which is the idempotency key: the reservation row is claimed first (a concurrent call
with the same id waits on it and then replays it), and every later step is a state transition that
a retry finds already made.

Reserving evaluates the basket (the replica's compiled catalog), then takes every limit and saves
the reservation in one statement (`Rounds`): the customer's uses, the campaigns' uses per store,
their budgets, the codes' uses, each kind locked in one order by every checkout (so concurrent
checkouts do not deadlock) with a guarded upsert or UPDATE. A round refused anywhere gives back
what it took, blocks what refused, and the basket is evaluated again without it (another promotion
may apply instead); so what is reserved is always exactly what the returned result says.
A reservation not committed by its expiry is released by the sweep (`expire_reservations`)."""

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.promotion.v1 import campaign_pb2, evaluation_pb2, events_pb2, redemption_pb2
from loyalty_promotion import app, app_codes, app_referrals, engine, repository_codes as sql
from loyalty_promotion.commands import ListRedemptions, ReserveRedemptions, ReverseRedemptions
from loyalty_promotion.domain import returns, vouchers as limits
from loyalty_promotion.domain.returns import CommittedLine
from loyalty_promotion.repository_codes import StoredRedemption, StoredReservation, StoredVoucher
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Reason,
)
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork, UnitsOfWork

log = logging.getLogger("loyalty.promotion")

STATE_TO_PB = {
    "reserved": redemption_pb2.RESERVATION_STATE_RESERVED,
    "committed": redemption_pb2.RESERVATION_STATE_COMMITTED,
    "rolled_back": redemption_pb2.RESERVATION_STATE_ROLLED_BACK,
    "expired": redemption_pb2.RESERVATION_STATE_EXPIRED,
}
REDEMPTION_STATE_TO_PB = {
    "reserved": redemption_pb2.REDEMPTION_STATE_RESERVED,
    "committed": redemption_pb2.REDEMPTION_STATE_COMMITTED,
    "rolled_back": redemption_pb2.REDEMPTION_STATE_ROLLED_BACK,
    "expired": redemption_pb2.REDEMPTION_STATE_EXPIRED,
    "reversed": redemption_pb2.REDEMPTION_STATE_REVERSED,
}
PB_TO_REDEMPTION_STATE = {number: name for name, number in REDEMPTION_STATE_TO_PB.items()}
# Reservations the sweep releases per run and tenant batch.
SWEEP_BATCH = 500


def fingerprint(request) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


def _not_found() -> NotFound:
    return NotFound(Reason.RESERVATION_NOT_FOUND, "no reservation for this checkout", field="checkout_id")


# --- encoding ---


def _money(currency: str, amount: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, amount_minor=amount)


def redemption_of(stored: StoredRedemption) -> redemption_pb2.Redemption:
    return redemption_pb2.Redemption(
        redemption_id=stored.redemption_id,
        checkout_id=stored.checkout_id,
        customer_id=stored.customer_id or "",
        campaign_id=stored.campaign_id,
        promotion_id=stored.promotion_id,
        voucher_id=stored.voucher_id or "",
        code=stored.code or "",
        state=REDEMPTION_STATE_TO_PB[stored.state],
        discount=_money(stored.currency, stored.discount),
        points=stored.points,
        discount_reversed=_money(stored.currency, stored.discount_reversed),
        points_reversed=stored.points_reversed,
        create_time=timestamp(stored.created_at),
        update_time=timestamp(stored.updated_at),
    )


def _state(stored: StoredReservation, now: datetime) -> str:
    """A reservation past its expiry is EXPIRED even before the sweep has released it."""
    return "expired" if stored.state == "reserved" and stored.expire_at <= now else stored.state


def _reservation_from(
    stored: StoredReservation, redemptions: list[StoredRedemption], reversals: list[bytes]
) -> redemption_pb2.Reservation:
    reservation = redemption_pb2.Reservation(
        checkout_id=stored.checkout_id,
        state=STATE_TO_PB[stored.state],
        customer_id=stored.customer_id or "",
        redemptions=[redemption_of(r) for r in redemptions],
        result=evaluation_pb2.EvaluationResult.FromString(stored.result),
        reversals=[redemption_pb2.RedemptionReversal.FromString(p) for p in reversals],
        create_time=timestamp(stored.created_at),
        expire_time=timestamp(stored.expire_at),
    )
    if stored.commit_at:
        reservation.commit_time.CopyFrom(timestamp(stored.commit_at))
    if stored.rollback_at:
        reservation.rollback_time.CopyFrom(timestamp(stored.rollback_at))
    return reservation


async def reservation_of(
    connection: asyncpg.Connection, tenant: str, stored: StoredReservation, now: datetime
) -> redemption_pb2.Reservation:
    reservation = _reservation_from(
        stored,
        await sql.redemptions_of(connection, tenant, stored.checkout_id),
        await sql.reversals_of(connection, tenant, stored.checkout_id),
    )
    reservation.state = STATE_TO_PB[_state(stored, now)]
    return reservation


def _summaries(redemptions: list[StoredRedemption]) -> list[events_pb2.RedemptionSummary]:
    return [
        events_pb2.RedemptionSummary(
            redemption_id=r.redemption_id,
            campaign_id=r.campaign_id,
            promotion_id=r.promotion_id,
            voucher_id=r.voucher_id or "",
            discount=_money(r.currency, r.discount),
            points=r.points,
        )
        for r in redemptions
    ]


# --- reserve ---


@dataclass(frozen=True)
class CampaignHold:
    """What one campaign's redemption takes."""

    campaign_id: str
    discount: int
    points: int
    voucher: StoredVoucher | None
    scopes: list[limits.Scope]
    budget: campaign_pb2.Budget | None

    @property
    def store_limit(self) -> int:
        return self.budget.max_redemptions_per_store if self.budget is not None else 0


def _holds(
    catalog: engine.Catalog, evaluation: engine.Evaluation, vouchers, now: datetime
) -> list[CampaignHold]:
    by_code = {code: v for code, v in vouchers.items()}
    holds = []
    for campaign_id in sorted({a.campaign_id for a in evaluation.applied}):
        applied = [a for a in evaluation.applied if a.campaign_id == campaign_id]
        code = next((a.code for a in applied if a.code), "")
        voucher = by_code.get(code) if code else None
        holds.append(
            CampaignHold(
                campaign_id,
                sum(a.discount for a in applied),
                sum(a.points for a in applied),
                voucher,
                app_codes.scopes_of(catalog, evaluation, campaign_id, voucher, now),
                catalog.budgets.get(campaign_id),
            )
        )
    return holds


def _impossible(hold: CampaignHold, customer_id: str, currency: str) -> tuple[str, Reason] | None:
    """What refuses this hold whatever the counters say (what, why): a per-customer limit without a
    customer, a redemption bigger than its whole budget, a discount budget in another currency."""
    if hold.scopes and not customer_id:
        return _scope_target(hold, hold.scopes[0]), hold.scopes[0].reason
    budget = hold.budget
    if budget is None:
        return None
    room = limits.discount_limit(budget, currency)
    if (room < 0 and hold.discount) or (room and hold.discount > room):
        return hold.campaign_id, Reason.BUDGET_EXHAUSTED
    if budget.max_points and hold.points > budget.max_points:
        return hold.campaign_id, Reason.BUDGET_EXHAUSTED
    return None


def _scope_target(hold: CampaignHold, scope: limits.Scope) -> str:
    """A promotion's or voucher's own limit blocks that promotion or code; the others the campaign."""
    return scope.key.split(":")[1] if scope.key.startswith(("p:", "v:")) else hold.campaign_id


def _to_take(holds: list[CampaignHold], currency: str) -> sql.Holds:
    budgets = []
    for hold in holds:
        if hold.budget is not None:
            room = max(limits.discount_limit(hold.budget, currency), 0)
            b = hold.budget
            budgets.append(
                (hold.campaign_id, 1, hold.discount, hold.points, b.max_redemptions, room, b.max_points)
            )
    return sql.Holds(
        scopes=sorted((s.key, s.limit) for hold in holds for s in hold.scopes),
        stores=[(hold.campaign_id, hold.store_limit) for hold in holds if hold.store_limit],
        budgets=budgets,
        vouchers=[hold.voucher.voucher_id for hold in holds if hold.voucher is not None],
    )


def _refusal(holds: list[CampaignHold], taken: sql.Taken) -> tuple[str, Reason] | None:
    """The first hold, in campaign order, that was not taken whole, and why."""
    for hold in holds:
        for scope in hold.scopes:
            if scope.key not in taken.scopes:
                return _scope_target(hold, scope), scope.reason
        if hold.store_limit and hold.campaign_id not in taken.stores:
            return hold.campaign_id, Reason.STORE_LIMIT_REACHED
        if hold.budget is not None and hold.campaign_id not in taken.budgets:
            return hold.campaign_id, Reason.BUDGET_EXHAUSTED
        if hold.voucher is not None and hold.voucher.voucher_id not in taken.vouchers:
            return hold.voucher.voucher_id, Reason.VOUCHER_EXHAUSTED
    return None


async def _existing(
    uow: UnitOfWork, checkout_id: str, digest: bytes, expire_at: datetime
) -> redemption_pb2.Reservation | None:
    """A retry's answer: the reservation as it is; or None when it expired, which is renewed
    (its uses were given back, so reserving them again double-counts nothing)."""
    stored = await sql.get_reservation(uow.connection, uow.tenant, checkout_id, lock=True)
    if stored.fingerprint == b"":
        raise FailedPrecondition(
            Reason.RESERVATION_ROLLED_BACK, "this checkout was rolled back; it cannot be reserved"
        )
    if stored.fingerprint != digest:
        raise AlreadyExists(
            Reason.IDEMPOTENCY_KEY_REUSED,
            "this checkout id was reserved with another basket, customer or codes",
            field="checkout_id",
        )
    if _state(stored, uow.now) != "expired":
        return await reservation_of(uow.connection, uow.tenant, stored, uow.now)
    if stored.state == "reserved":  # past its expiry, not swept yet
        await _release(uow, stored, "expired")
    await sql.renew_reservation(uow.connection, uow.tenant, checkout_id, expire_at, uow.now)
    return None


async def reserve(
    uow: UnitOfWork, catalog: engine.Catalog, command: ReserveRedemptions, ttl_seconds: float
) -> redemption_pb2.Reservation:
    """`catalog` is the replica's, fetched before the transaction began (a rebuild needs a
    connection of its own, which a pool full of waiting reservations would never give it)."""
    expire_at = uow.now + timedelta(seconds=ttl_seconds)
    basket = app.basket_of(command.basket)
    customer = app.customer_of(command.customer)
    claimed = await sql.claim_reservation(
        uow.connection, uow.tenant, command.checkout_id, "reserved", command.fingerprint, expire_at, uow.now
    )
    if not claimed:
        existing = await _existing(uow, command.checkout_id, command.fingerprint, expire_at)
        if existing is not None:
            return existing
    presented, vouchers, as_presented = await app_codes.resolve_codes(
        uow.connection, uow.tenant, catalog, command.codes, customer, uow.now
    )
    rounds = Rounds(uow, catalog, command, basket, customer, vouchers, as_presented)
    result, redemptions = await rounds.reserve(presented)
    return redemption_pb2.Reservation(
        checkout_id=command.checkout_id,
        state=redemption_pb2.RESERVATION_STATE_RESERVED,
        customer_id=customer.customer_id,
        redemptions=[redemption_of(r) for r in redemptions],
        result=result,
        create_time=timestamp(uow.now),
        expire_time=timestamp(expire_at),
    )


@dataclass
class Rounds:
    """A reservation's rounds: evaluate, then take every hold and save the reservation in one
    statement. A refusal gives back what its round took, blocks its campaign, promotion or code,
    and the basket is evaluated again without it (another promotion may apply instead); each round
    refuses one more thing, so the rounds are bounded. What is reserved is always exactly what the
    returned result says."""

    uow: UnitOfWork
    catalog: engine.Catalog
    command: ReserveRedemptions
    basket: engine.Basket
    customer: engine.CustomerContext
    vouchers: dict[str, StoredVoucher]
    as_presented: dict[str, str]

    async def reserve(self, presented) -> tuple[evaluation_pb2.EvaluationResult, list[StoredRedemption]]:
        blocked: dict[str, int] = {}
        voucher_codes = {v.voucher_id: code for code, v in self.vouchers.items()}
        for _ in range(len(self.catalog.campaigns) + len(presented) + 1):
            evaluation = engine.evaluate(
                self.catalog,
                self.basket,
                self.customer,
                presented,
                self.uow.now,
                blocked,
                self.command.points_to_burn,
            )
            saved, refused = await self._take(evaluation)
            if saved is not None:
                return saved
            what, reason = refused
            if what in voucher_codes:
                code = voucher_codes[what]
                presented = [
                    engine.PresentedCode(p.code, p.campaign_id, int(reason)) if p.code == code else p
                    for p in presented
                ]
            else:
                blocked[what] = int(reason)
        raise AssertionError("the reservation rounds are bounded by what can be refused")

    async def _take(self, evaluation: engine.Evaluation):
        """((result, redemptions), None) when every hold was taken and the reservation saved, else
        (None, (what, why)) after giving back what was taken."""
        uow, customer_id, currency = self.uow, self.customer.customer_id, self.basket.currency
        store_id = self.basket.store_id
        holds = _holds(self.catalog, evaluation, self.vouchers, uow.now)
        impossible = next(
            ((n, refusal) for n, h in enumerate(holds) if (refusal := _impossible(h, customer_id, currency))),
            None,
        )
        takes = holds[: impossible[0]] if impossible else holds
        reserved = None
        if impossible is None:
            result = app.encode_result(evaluation, self.as_presented)
            rows = _redemption_rows(
                holds, evaluation, self.command.checkout_id, customer_id, store_id, uow.now
            )
            reserved = sql.Reserved(
                self.command.checkout_id,
                customer_id or None,
                result.SerializeToString(),
                self.command.basket.SerializeToString(deterministic=True),
                rows,
                result.total_payable.amount_minor,
                uow.now,
            )
        to_take = _to_take(takes, currency)
        taken = await sql.take_holds(uow.connection, uow.tenant, customer_id, store_id, to_take, reserved)
        if taken.saved:
            return (result, rows), None
        refused = _refusal(takes, taken) or impossible[1]
        if taken.scopes or taken.stores or taken.budgets or taken.vouchers:
            await sql.give_back(uow.connection, uow.tenant, customer_id, store_id, to_take, taken)
        return None, refused


def _redemption_rows(
    holds: list[CampaignHold], evaluation, checkout_id: str, customer_id: str, store_id: str, now
) -> list[StoredRedemption]:
    by_campaign = {h.campaign_id: h for h in holds}
    rows, seen = [], set()
    for applied in sorted(evaluation.applied, key=lambda a: (a.campaign_id, a.promotion_id)):
        hold = by_campaign[applied.campaign_id]
        first = applied.campaign_id not in seen
        seen.add(applied.campaign_id)
        rows.append(
            StoredRedemption(
                redemption_id=str(uuid.uuid4()),
                checkout_id=checkout_id,
                customer_id=customer_id or None,
                campaign_id=applied.campaign_id,
                promotion_id=applied.promotion_id,
                voucher_id=hold.voucher.voucher_id if hold.voucher else None,
                code=applied.code or None,
                state="reserved",
                currency=evaluation.currency,
                discount=applied.discount,
                points=applied.points,
                discount_reversed=0,
                points_reversed=0,
                scopes=[s.key for s in hold.scopes] if first else [],
                first=first,
                budgeted=hold.budget is not None,
                created_at=now,
                updated_at=now,
                store_id=store_id or None,
                store_limited=first and bool(hold.store_limit),
            )
        )
    return rows


# --- commit, roll back, expire ---


async def commit(uow: UnitOfWork, checkout_id: str, catalog: engine.Catalog) -> redemption_pb2.Reservation:
    """`catalog` (the replica's, fetched before the transaction) says which campaigns are referral
    programmes and their confirmation delays. The usual commit is one statement; anything else (a
    replay, an expired or rolled-back reservation) is read under the row's lock and answered."""
    committed = await sql.commit_reserved(uow.connection, uow.tenant, checkout_id, uow.now)
    if committed is None:
        stored = await sql.get_reservation(uow.connection, uow.tenant, checkout_id, lock=True)
        if stored is None:
            raise _not_found()
        state = _state(stored, uow.now)
        if state == "rolled_back":
            raise FailedPrecondition(Reason.RESERVATION_ROLLED_BACK, "this checkout was rolled back")
        if state == "expired":
            raise FailedPrecondition(Reason.RESERVATION_EXPIRED, "the reservation expired; reserve again")
        if state == "reserved":  # it was released and reserved again between the two statements
            raise Aborted(Reason.CONCURRENT_MODIFICATION, "the reservation changed meanwhile; retry")
        return await reservation_of(uow.connection, uow.tenant, stored, uow.now)
    stored, redemptions = committed
    uow.record(
        events_pb2.RedemptionsCommitted(
            checkout_id=checkout_id, customer_id=stored.customer_id or "", redemptions=_summaries(redemptions)
        ),
        key=checkout_id,
    )
    await app_referrals.record_conversions(
        uow, catalog.referrals, checkout_id, stored.customer_id or "", redemptions
    )
    return _reservation_from(stored, redemptions, [])


async def _release(uow: UnitOfWork, stored: StoredReservation, to_state: str) -> StoredReservation:
    """Gives back what the reservation holds (reserved or committed uses) and records the release."""
    released = await sql.set_reservation_state(
        uow.connection, uow.tenant, stored.checkout_id, to_state, uow.now
    )
    await sql.cancel_conversions(uow.connection, uow.tenant, stored.checkout_id)
    redemptions = await sql.move_uses(
        uow.connection,
        uow.tenant,
        stored.checkout_id,
        from_state=stored.state,
        to_state=to_state,
        now=uow.now,
    )
    uow.record(
        events_pb2.RedemptionsReleased(
            checkout_id=stored.checkout_id,
            customer_id=stored.customer_id or "",
            redemptions=_summaries(redemptions),
            expired=to_state == "expired",
        ),
        key=stored.checkout_id,
    )
    return released


async def rollback(uow: UnitOfWork, checkout_id: str) -> redemption_pb2.Reservation:
    """Releases a reserved or committed checkout. An unknown checkout gets a tombstone, so a
    reserve arriving after its rollback (a saga's late step) is refused."""
    stored = await sql.get_reservation(uow.connection, uow.tenant, checkout_id, lock=True)
    if stored is None:
        await sql.claim_reservation(
            uow.connection, uow.tenant, checkout_id, "rolled_back", b"", uow.now, uow.now
        )
        stored = await sql.get_reservation(uow.connection, uow.tenant, checkout_id, lock=True)
    if stored.state in ("reserved", "committed"):
        stored = await _release(uow, stored, "rolled_back")
    return await reservation_of(uow.connection, uow.tenant, stored, uow.now)


async def expire(uow: UnitOfWork, checkout_id: str) -> bool:
    stored = await sql.get_reservation(uow.connection, uow.tenant, checkout_id, lock=True)
    if stored is None or stored.state != "reserved" or stored.expire_at > uow.now:
        return False
    await _release(uow, stored, "expired")
    return True


async def sweep(units: UnitsOfWork) -> None:
    """The schedule's run: expired reservations released, due referral conversions confirmed."""
    await expire_reservations(units)
    await app_referrals.confirm_due(units)


async def expire_reservations(units: UnitsOfWork) -> int:
    """Releases every tenant's reservations past their expiry (the schedule's run): each in its
    own transaction, bound to its tenant."""
    async with units.database.connection() as connection:
        due = await sql.expired_reservations(connection, units.clock(), SWEEP_BATCH)
    released = 0
    for tenant, checkout_id in due:
        token = bind_call(CallContext(tenant_id=tenant, principal="promotion-expiry"))
        try:
            async with units.change() as uow:
                released += await expire(uow, checkout_id)
        except Exception:
            log.exception("releasing an expired reservation failed", extra={"fields": {"tenant": tenant}})
        finally:
            unbind_call(token)
    return released


# --- reads ---


async def get_reservation(uow: UnitOfWork, checkout_id: str) -> redemption_pb2.Reservation:
    stored = await sql.get_reservation(uow.connection, uow.tenant, checkout_id)
    if stored is None or stored.fingerprint == b"":
        raise _not_found()
    return await reservation_of(uow.connection, uow.tenant, stored, uow.now)


async def list_redemptions(uow: UnitOfWork, command: ListRedemptions) -> list[redemption_pb2.Redemption]:
    stored = await sql.list_redemptions(
        uow.connection,
        uow.tenant,
        campaign_id=command.campaign_id,
        customer_id=command.customer_id,
        voucher_id=command.voucher_id,
        state=command.state,
        before=command.before,
        limit=command.limit,
    )
    return [redemption_of(r) for r in stored]


# --- returns ---


def _committed_lines(
    basket: basket_pb2.Basket, result: evaluation_pb2.EvaluationResult
) -> list[CommittedLine]:
    outcomes = {line.line_id: line for line in result.lines}
    lines = []
    for line in basket.lines:
        outcome = outcomes[line.line_id]
        weighed = line.quantity_milli > 0
        lines.append(
            CommittedLine(
                line.line_id,
                line.quantity_milli if weighed else line.quantity,
                weighed,
                outcome.final_total.amount_minor,
                outcome.points_to_earn,
                tuple(
                    (d.promotion_id, d.amount.amount_minor)
                    for d in outcome.discounts
                    if d.source != evaluation_pb2.DISCOUNT_SOURCE_POINTS
                ),
                outcome.points_burned,
            )
        )
    return lines


def _returned(reversals: list[redemption_pb2.RedemptionReversal], weighed: set[str]) -> dict[str, int]:
    returned: dict[str, int] = {}
    for reversal in reversals:
        for line in reversal.lines:
            units = line.quantity_milli if line.line_id in weighed else line.quantity
            returned[line.line_id] = returned.get(line.line_id, 0) + units
    return returned


async def reverse(
    uow: UnitOfWork, command: ReverseRedemptions
) -> tuple[redemption_pb2.RedemptionReversal, redemption_pb2.Reservation]:
    """A return on a committed checkout, in proportion to the units returned; a redemption all of
    whose discounted lines are back is REVERSED and gives back its code's and customer's uses.
    Idempotent on (checkout_id, return_id)."""
    stored = await sql.get_reservation(uow.connection, uow.tenant, command.checkout_id, lock=True)
    if stored is None or stored.fingerprint == b"":
        raise _not_found()
    done_before = await sql.get_reversal(uow.connection, uow.tenant, command.checkout_id, command.return_id)
    if done_before is not None:
        if done_before[0] != command.fingerprint:
            raise AlreadyExists(
                Reason.IDEMPOTENCY_KEY_REUSED, "this return id was used for other lines", field="return_id"
            )
        reversal = redemption_pb2.RedemptionReversal.FromString(done_before[1])
        return reversal, await reservation_of(uow.connection, uow.tenant, stored, uow.now)
    if stored.state != "committed":
        raise FailedPrecondition(
            Reason.RESERVATION_NOT_COMMITTED, "only a committed checkout can be returned"
        )
    basket = basket_pb2.Basket.FromString(stored.basket)
    result = evaluation_pb2.EvaluationResult.FromString(stored.result)
    lines = _committed_lines(basket, result)
    previous = [
        redemption_pb2.RedemptionReversal.FromString(p)
        for p in await sql.reversals_of(uow.connection, uow.tenant, command.checkout_id)
    ]
    weighed = {line.line_id for line in lines if line.weighed}
    returned = _returned(previous, weighed)
    try:
        plan = returns.plan_return(lines, returned, command.lines, command.full_return)
    except returns.ReturnRefused as refused:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, refused.description, field=refused.field) from None
    for part in plan:
        returned[part.line_id] = returned.get(part.line_id, 0) + part.units
    back = returns.fully_returned(lines, returned)
    redemptions = await sql.redemptions_of(uow.connection, uow.tenant, command.checkout_id)
    changes, reinstated = _redemption_changes(lines, plan, back, redemptions)
    await sql.reverse_redemptions(uow.connection, uow.tenant, changes, uow.now)
    if reinstated:  # a referral purchase returned before its confirmation converts nothing
        await sql.cancel_conversions(uow.connection, uow.tenant, command.checkout_id)
    reversal = _reversal_message(command, result.subtotal.currency_code, plan, weighed, reinstated, uow.now)
    await sql.insert_reversal(
        uow.connection,
        uow.tenant,
        command.checkout_id,
        command.return_id,
        command.fingerprint,
        reversal.SerializeToString(),
        uow.now,
    )
    return reversal, await reservation_of(uow.connection, uow.tenant, stored, uow.now)


def _redemption_changes(lines, plan, back: set[str], redemptions: list[StoredRedemption]):
    """(id, discount back, points back, fully reversed) per committed redemption, and the vouchers
    whose use comes back."""
    taken: dict[str, int] = {}
    for part in plan:
        for promotion_id, amount in part.by_promotion.items():
            taken[promotion_id] = taken.get(promotion_id, 0) + amount
    touched: dict[str, set[str]] = {}
    for line in lines:
        for promotion_id, _ in line.discounts:
            touched.setdefault(promotion_id, set()).add(line.line_id)
    changes, reinstated = [], []
    for r in redemptions:
        if r.state != "committed":
            continue
        done = bool(touched.get(r.promotion_id)) and touched[r.promotion_id] <= back
        points = r.points - r.points_reversed if done else 0
        discount = r.discount - r.discount_reversed if done else min(taken.get(r.promotion_id, 0), r.discount)
        if discount or points or done:
            changes.append((r.redemption_id, discount, points, done))
        if done and r.first and r.voucher_id:
            reinstated.append(r.voucher_id)
    return changes, reinstated


def _reversal_message(
    command, currency: str, plan, weighed: set[str], reinstated, now
) -> redemption_pb2.RedemptionReversal:
    return redemption_pb2.RedemptionReversal(
        return_id=command.return_id,
        checkout_id=command.checkout_id,
        lines=[
            redemption_pb2.LineReversal(
                line_id=part.line_id,
                quantity=0 if part.line_id in weighed else part.units,
                quantity_milli=part.units if part.line_id in weighed else 0,
                discount_reversed=_money(currency, part.discount),
                points_to_reverse=part.points,
                points_to_refund=part.points_refund,
                refund_amount=_money(currency, part.refund),
            )
            for part in plan
        ],
        points_to_reverse=sum(part.points for part in plan),
        points_to_refund=sum(part.points_refund for part in plan),
        refund_amount=_money(currency, sum(part.refund for part in plan)),
        reinstated_voucher_ids=sorted(reinstated),
        create_time=timestamp(now),
    )
