"""The ledger's rules as pure functions: validation, expiry dates, tiers, FIFO lot consumption, the
hold state machine and the plans (postings + balance changes) of every kind of entry.

Sign convention: a posting's amount is signed and positive increases the account's balance. A
customer's balance is what the programme owes the customer; the issuance account goes negative
by as much as is outstanding. Every plan's postings add up to zero.

Lots track the positive part of a customer's posted balance: sum(spendable lots) = max(posted, 0)
and sum(pending lots) = pending. Points going out consume lots earliest-expiry-first.
"""

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from loyalty_ledger.domain.model import (
    REVERSIBLE_TYPES,
    AccountEffect,
    AccountKind,
    AccountState,
    Bucket,
    EntryType,
    ExpiryPolicy,
    ExpiryRule,
    Hold,
    HoldState,
    Lot,
    LotUpdate,
    NewLot,
    Plan,
    Posting,
    ProgramRules,
    ReversibleEntry,
    Tier,
)
from loyalty_runtime.errors import FailedPrecondition, InvalidArgument

MAX_AMOUNT = 10**15
MAX_HOLD_TTL_SECONDS = 7 * 24 * 3600


# --- validation -------------------------------------------------------------------------------


def require_amount(amount: int, field: str = "amount") -> int:
    if amount <= 0 or amount > MAX_AMOUNT:
        raise InvalidArgument(
            "INVALID_AMOUNT", f"{field} must be a positive integer up to {MAX_AMOUNT}", field=field
        )
    return amount


def require_asset(requested: str, actual: str, field: str = "asset_code") -> None:
    if requested and requested != actual:
        raise FailedPrecondition(
            "ASSET_MISMATCH",
            f"{field} {requested!r} does not match the programme's asset {actual!r}",
            field=field,
        )


def require_same_program(source_program: str, destination_program: str) -> None:
    if source_program != destination_program:
        raise FailedPrecondition(
            "ASSET_MISMATCH", "transfers stay within one programme and asset", field="destination_account_id"
        )


def require_id(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument("INVALID_ARGUMENT", f"{field} is required", field=field)
    return value


def require_idempotency_key(key: str) -> str:
    if not key or len(key) > 200:
        raise InvalidArgument(
            "INVALID_ARGUMENT",
            "idempotency_key is required (at most 200 characters)",
            field="idempotency_key",
        )
    return key


def validate_rules(rules: ProgramRules) -> ProgramRules:
    if not rules.asset_code or len(rules.asset_code) > 16:
        raise InvalidArgument("INVALID_ARGUMENT", "asset_code is required", field="program.asset_code")
    policy = rules.expiry_policy
    if policy.rule is ExpiryRule.MONTHS_AFTER_EARN and not 1 <= policy.months <= 600:
        raise InvalidArgument(
            "INVALID_ARGUMENT", "months must be 1..600", field="program.expiry_policy.months"
        )
    if not 0 < rules.default_hold_ttl_seconds <= MAX_HOLD_TTL_SECONDS:
        raise InvalidArgument("INVALID_ARGUMENT", "hold ttl out of range", field="program.default_hold_ttl")
    if not 1 <= rules.tier_window_days <= 3660:
        raise InvalidArgument(
            "INVALID_ARGUMENT", "tier window out of range", field="program.tier_window_days"
        )
    codes = [t.code for t in rules.tiers]
    if len(set(codes)) != len(codes) or any(not c for c in codes):
        raise InvalidArgument(
            "INVALID_ARGUMENT", "tier codes must be unique and non-empty", field="program.tiers"
        )
    for tier in rules.tiers:
        if tier.qualifying_points < 0 or not 0 <= tier.earn_multiplier_bps <= 1_000_000:
            raise InvalidArgument("INVALID_ARGUMENT", f"tier {tier.code} out of range", field="program.tiers")
    return rules


# --- expiry dates and tiers -------------------------------------------------------------------


def add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def lot_expiry(policy: ExpiryPolicy, earned_at: datetime) -> datetime | None:
    if policy.rule is ExpiryRule.MONTHS_AFTER_EARN:
        return add_months(earned_at, policy.months)
    if policy.rule is ExpiryRule.END_OF_NEXT_CALENDAR_YEAR:
        return datetime(earned_at.year + 2, 1, 1, tzinfo=earned_at.tzinfo or UTC)
    return None


def tier_for(tiers: Iterable[Tier], qualifying_points: int) -> Tier | None:
    """The highest tier whose threshold is met (ties: the larger multiplier)."""
    reached = [t for t in tiers if qualifying_points >= t.qualifying_points]
    return max(reached, key=lambda t: (t.qualifying_points, t.earn_multiplier_bps), default=None)


def tier_window_start(rules: ProgramRules, now: datetime) -> datetime:
    return now - timedelta(days=rules.tier_window_days)


# --- lots -------------------------------------------------------------------------------------


def _fifo_key(lot: Lot) -> tuple:
    # Earliest expiry first; lots that never expire last; then creation order.
    return (lot.expires_at is None, lot.expires_at or datetime.min.replace(tzinfo=UTC), lot.seq)


def consume_lots(lots: Sequence[Lot], amount: int, prefer: str | None = None) -> list[LotUpdate]:
    """Take `amount` from spendable lots, earliest expiry first (a preferred lot before all)."""
    spendable = sorted((lot for lot in lots if not lot.pending and lot.remaining > 0), key=_fifo_key)
    if prefer is not None:
        spendable.sort(key=lambda lot: lot.lot_id != prefer)
    updates: list[LotUpdate] = []
    for lot in spendable:
        if amount <= 0:
            break
        take = min(lot.remaining, amount)
        updates.append(LotUpdate(lot.lot_id, -take))
        amount -= take
    if amount > 0:
        raise AssertionError("lots do not cover the posted balance")  # invariant broken: a bug
    return updates


def _debit_posted(account: AccountState, amount: int, prefer: str | None = None) -> AccountEffect:
    if not account.is_customer:
        return AccountEffect(account.account_id, d_posted=-amount)
    consumed = max(account.posted, 0) - max(account.posted - amount, 0)
    return AccountEffect(
        account.account_id, d_posted=-amount, lot_updates=tuple(consume_lots(account.lots, consumed, prefer))
    )


def _credit_posted(account: AccountState, chunks: Sequence[tuple[int, datetime | None]]) -> AccountEffect:
    """Credit the sum of `chunks`; each chunk (amount, expiry) becomes a lot, as far as the credit
    lifts the balance above zero (latest-expiring chunks first)."""
    amount = sum(a for a, _ in chunks)
    if not account.is_customer:
        return AccountEffect(account.account_id, d_posted=amount)
    budget = max(account.posted + amount, 0) - max(account.posted, 0)
    lots = []
    for chunk_amount, expires_at in sorted(
        chunks, key=lambda c: (c[1] is None, c[1] or datetime.min.replace(tzinfo=UTC)), reverse=True
    ):
        take = min(chunk_amount, budget)
        if take > 0:
            lots.append(NewLot(take, expires_at))
            budget -= take
    return AccountEffect(account.account_id, d_posted=amount, new_lots=tuple(lots))


def _latest_expiry(lots: Sequence[Lot], updates: Sequence[LotUpdate]) -> datetime | None:
    by_id = {lot.lot_id: lot for lot in lots}
    expiries = [by_id[u.lot_id].expires_at for u in updates]
    if not expiries or any(e is None for e in expiries):
        return None
    return max(e for e in expiries if e is not None)


def _consumed_chunks(account: AccountState, effect: AccountEffect) -> list[tuple[int, datetime | None]]:
    by_id = {lot.lot_id: lot for lot in account.lots}
    return [(-u.delta, by_id[u.lot_id].expires_at) for u in effect.lot_updates]


def _require_funds(account: AccountState, amount: int, allow_overdraft: bool) -> None:
    if account.is_customer and not allow_overdraft and account.available < amount:
        raise FailedPrecondition(
            "INSUFFICIENT_BALANCE",
            f"available balance {account.available} is less than {amount}",
            field="amount",
        )


# --- plans ------------------------------------------------------------------------------------


def plan_maturation(account: AccountState, now: datetime) -> Plan | None:
    """Pending lots whose available time has come become spendable (pending -> posted)."""
    due = [
        lot
        for lot in account.lots
        if lot.pending and lot.available_at is not None and lot.available_at <= now
    ]
    if not due:
        return None
    total = sum(lot.remaining for lot in due)
    budget = max(account.posted + total, 0) - max(account.posted, 0)
    updates = []
    for lot in sorted(due, key=_fifo_key, reverse=True):
        keep = min(lot.remaining, budget)
        budget -= keep
        updates.append(LotUpdate(lot.lot_id, keep - lot.remaining, mature=True))
    effect = AccountEffect(account.account_id, d_posted=total, d_pending=-total, lot_updates=tuple(updates))
    postings = (
        (
            Posting(account.account_id, -total, Bucket.PENDING),
            Posting(account.account_id, total, Bucket.POSTED),
        )
        if total
        else ()
    )
    return Plan(EntryType.MATURATION, postings, (effect,))


def plan_earn(
    account: AccountState,
    issuance: AccountState,
    amount: int,
    rules: ProgramRules,
    now: datetime,
    *,
    available_at: datetime | None = None,
    expires_at: datetime | None = None,
    qualifying: bool = True,
) -> Plan:
    require_amount(amount)
    if not account.is_customer:
        raise InvalidArgument(
            "INVALID_ARGUMENT", "points are earned by customer accounts", field="account_id"
        )
    expiry = expires_at if expires_at is not None else lot_expiry(rules.expiry_policy, available_at or now)
    if expiry is not None and expiry <= now:
        raise InvalidArgument("INVALID_ARGUMENT", "expire_time must be in the future", field="expire_time")
    if available_at is not None and available_at > now:
        if expiry is not None and expiry <= available_at:
            raise InvalidArgument(
                "INVALID_ARGUMENT", "expire_time must be after available_time", field="expire_time"
            )
        effect = AccountEffect(
            account.account_id,
            d_pending=amount,
            new_lots=(NewLot(amount, expiry, pending=True, available_at=available_at),),
        )
        bucket = Bucket.PENDING
    else:
        effect = _credit_posted(account, [(amount, expiry)])
        bucket = Bucket.POSTED
    postings = (Posting(account.account_id, amount, bucket), Posting(issuance.account_id, -amount))
    issuance_effect = AccountEffect(issuance.account_id, d_posted=-amount)
    return Plan(
        EntryType.EARN,
        postings,
        (effect, issuance_effect),
        qualifying_delta=amount if qualifying else 0,
        lot_count=len(effect.new_lots),
    )


def plan_hold(account: AccountState, amount: int, rules: ProgramRules) -> AccountEffect:
    require_amount(amount)
    if not account.is_customer:
        raise InvalidArgument("INVALID_ARGUMENT", "holds are placed on customer accounts", field="account_id")
    _require_funds(account, amount, rules.allow_overdraft)
    return AccountEffect(account.account_id, d_held=amount)


def hold_ttl(rules: ProgramRules, requested_seconds: int | None) -> int:
    if requested_seconds is None:
        return rules.default_hold_ttl_seconds
    if not 0 < requested_seconds <= MAX_HOLD_TTL_SECONDS:
        raise InvalidArgument(
            "INVALID_ARGUMENT", f"ttl must be 1..{MAX_HOLD_TTL_SECONDS} seconds", field="ttl"
        )
    return requested_seconds


def require_live_hold(hold: Hold, now: datetime) -> None:
    if not hold.is_live(now):
        state = hold.state if hold.state is not HoldState.ACTIVE else HoldState.EXPIRED
        raise FailedPrecondition("HOLD_NOT_ACTIVE", f"hold is {state.value}", metadata={"state": state.value})


def plan_capture(
    account: AccountState, redemption: AccountState, hold: Hold, amount: int | None, now: datetime
) -> tuple[Plan, Hold]:
    """Burn all or part of a live hold; the rest of it is released."""
    require_live_hold(hold, now)
    amount = hold.amount if amount is None else amount
    require_amount(amount)
    if amount > hold.amount:
        raise FailedPrecondition(
            "CAPTURE_EXCEEDS_HOLD", f"capture {amount} exceeds hold {hold.amount}", field="amount"
        )
    debit = _debit_posted(account, amount)
    effect = replace(debit, d_held=-hold.amount)
    plan = Plan(
        EntryType.BURN,
        (Posting(account.account_id, -amount), Posting(redemption.account_id, amount)),
        (effect, AccountEffect(redemption.account_id, d_posted=amount)),
        restore_expires_at=_latest_expiry(account.lots, debit.lot_updates),
    )
    return plan, hold.with_state(HoldState.CAPTURED, amount)


def plan_release(hold: Hold, now: datetime) -> tuple[AccountEffect | None, Hold]:
    """Release a hold. Releasing a released or timed-out hold is harmless; a captured one is not."""
    if hold.state is HoldState.CAPTURED:
        raise FailedPrecondition("HOLD_NOT_ACTIVE", "hold is CAPTURED", metadata={"state": "CAPTURED"})
    if hold.state is not HoldState.ACTIVE:
        return None, hold
    new_state = HoldState.RELEASED if hold.is_live(now) else HoldState.EXPIRED
    return AccountEffect(hold.account_id, d_held=-hold.amount), hold.with_state(new_state)


def plan_void_expired_holds(holds: Iterable[Hold], now: datetime) -> list[Hold]:
    return [
        h.with_state(HoldState.EXPIRED) for h in holds if h.state is HoldState.ACTIVE and h.expires_at <= now
    ]


def plan_expiry(account: AccountState, expiry: AccountState, now: datetime) -> tuple[Plan | None, int]:
    """Expire what is left in due lots, never eating into held points (those expire on capture or
    on the next run after release). Returns the plan and how many lots it touched."""
    budget = max(account.available, 0)
    updates = []
    for lot in sorted(account.lots, key=_fifo_key):
        if lot.pending or lot.remaining <= 0 or lot.expires_at is None or lot.expires_at > now:
            continue
        take = min(lot.remaining, budget)
        if take <= 0:
            break
        updates.append(LotUpdate(lot.lot_id, -take))
        budget -= take
    total = -sum(u.delta for u in updates)
    if total == 0:
        return None, 0
    plan = Plan(
        EntryType.EXPIRY,
        (Posting(account.account_id, -total), Posting(expiry.account_id, total)),
        (
            AccountEffect(account.account_id, d_posted=-total, lot_updates=tuple(updates)),
            AccountEffect(expiry.account_id, d_posted=total),
        ),
    )
    return plan, len(updates)


def plan_transfer(source: AccountState, destination: AccountState, amount: int) -> Plan:
    """Move spendable points; they keep their expiry dates. Transfers never overdraw."""
    require_amount(amount)
    if source.account_id == destination.account_id:
        raise InvalidArgument(
            "INVALID_ARGUMENT", "source and destination are the same", field="destination_account_id"
        )
    if not source.is_customer:
        raise InvalidArgument(
            "INVALID_ARGUMENT", "transfers start from a customer account", field="source_account_id"
        )
    if destination.kind not in (AccountKind.CUSTOMER, AccountKind.DONATION):
        raise InvalidArgument(
            "INVALID_ARGUMENT",
            "transfers go to a customer or donation account",
            field="destination_account_id",
        )
    _require_funds(source, amount, allow_overdraft=False)
    debit = _debit_posted(source, amount)
    credit = _credit_posted(destination, _consumed_chunks(source, debit))
    return Plan(
        EntryType.TRANSFER,
        (Posting(source.account_id, -amount), Posting(destination.account_id, amount)),
        (debit, credit),
        restore_expires_at=_latest_expiry(source.lots, debit.lot_updates),
    )


def plan_reversal(
    entry: ReversibleEntry,
    amount: int | None,
    accounts: dict[str, AccountState],
    system: dict[AccountKind, AccountState],
    rules: ProgramRules,
) -> Plan:
    """Reverse (part of) an earn, burn or transfer as a new entry. Taking points back never goes
    below what is available unless the programme allows overdraft; the rest is `unrecovered`."""
    if entry.entry_type not in REVERSIBLE_TYPES:
        raise FailedPrecondition(
            "REVERSAL_EXCEEDS_ENTRY", f"{entry.entry_type.value} entries cannot be reversed", field="entry_id"
        )
    amount = entry.reversible if amount is None else amount
    if amount <= 0 and entry.reversible == 0:
        raise FailedPrecondition("REVERSAL_EXCEEDS_ENTRY", "entry is already fully reversed", field="amount")
    require_amount(amount)
    if amount > entry.reversible:
        raise FailedPrecondition(
            "REVERSAL_EXCEEDS_ENTRY",
            f"only {entry.reversible} of the entry is left to reverse",
            field="amount",
        )

    def take_back(
        account: AccountState, wanted: int, prefer: str | None = None
    ) -> tuple[int, AccountEffect | None]:
        if account.is_customer and not rules.allow_overdraft:
            wanted = min(wanted, max(account.available, 0))
        return wanted, (_debit_posted(account, wanted, prefer) if wanted > 0 else None)

    if entry.entry_type is EntryType.EARN:
        account = accounts[entry.account_id]
        issuance = system[AccountKind.ISSUANCE]
        lot = next((lot for lot in account.lots if lot.lot_id == entry.lot_id), None)
        from_pending = min(amount, lot.remaining) if lot is not None and lot.pending else 0
        recovered, debit = take_back(account, amount - from_pending, entry.lot_id)
        effect = debit or AccountEffect(account.account_id)
        if from_pending:
            effect = replace(
                effect,
                d_pending=-from_pending,
                lot_updates=(*effect.lot_updates, LotUpdate(lot.lot_id, -from_pending)),
            )
        total = from_pending + recovered
        postings = tuple(
            p
            for p in (
                Posting(account.account_id, -from_pending, Bucket.PENDING),
                Posting(account.account_id, -recovered),
                Posting(issuance.account_id, total),
            )
            if p.amount
        )
        return Plan(
            EntryType.REVERSAL,
            postings,
            (effect, AccountEffect(issuance.account_id, d_posted=total)),
            qualifying_delta=-amount if entry.qualifying else 0,
            unrecovered=amount - total,
            reversed_amount=amount,
        )

    if entry.entry_type is EntryType.BURN:
        account = accounts[entry.account_id]
        redemption = system[AccountKind.REDEMPTION]
        return Plan(
            EntryType.REVERSAL,
            (Posting(account.account_id, amount), Posting(redemption.account_id, -amount)),
            (
                _credit_posted(account, [(amount, entry.restore_expires_at)]),
                AccountEffect(redemption.account_id, d_posted=-amount),
            ),
            reversed_amount=amount,
        )

    # TRANSFER: take back from the destination, give back to the source.
    source = accounts[entry.account_id]
    destination = accounts[entry.counter_account_id or ""]
    recovered, debit = take_back(destination, amount)
    effects = tuple(
        e
        for e in (
            debit,
            _credit_posted(source, [(recovered, entry.restore_expires_at)]) if recovered else None,
        )
        if e
    )
    postings = (
        (Posting(destination.account_id, -recovered), Posting(source.account_id, recovered))
        if recovered
        else ()
    )
    return Plan(EntryType.REVERSAL, postings, effects, unrecovered=amount - recovered, reversed_amount=amount)


# --- applying a plan to in-memory state (the reference model; the repository does it in SQL) ---


def apply_effect(
    account: AccountState, effect: AccountEffect, new_lot_ids: Iterable[str], next_seq: int
) -> AccountState:
    lots = {lot.lot_id: lot for lot in account.lots}
    for update in effect.lot_updates:
        lot = lots[update.lot_id]
        lots[update.lot_id] = replace(
            lot, remaining=lot.remaining + update.delta, pending=lot.pending and not update.mature
        )
    for offset, (lot_id, new) in enumerate(zip(new_lot_ids, effect.new_lots, strict=True)):
        lots[lot_id] = Lot(
            lot_id, new.amount, new.expires_at, next_seq + offset, new.pending, new.available_at
        )
    return replace(
        account,
        posted=account.posted + effect.d_posted,
        pending=account.pending + effect.d_pending,
        held=account.held + effect.d_held,
        lots=tuple(lot for lot in lots.values() if lot.remaining > 0),
    )
