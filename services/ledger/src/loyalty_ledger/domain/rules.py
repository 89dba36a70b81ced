"""The ledger's rules as pure functions: validation, expiry dates, tiers, FIFO lot consumption, the
hold state machine, the plans (postings + balance changes) of every kind of entry, and how a
checkout's lines share its earn and burn.

Sign convention: a posting's amount is signed and positive increases the account's balance. A
customer's balance is what the programme owes the customer; the issuance account goes negative
by as much as is outstanding. Every plan's postings add up to zero.

Lots track the positive part of a customer's posted balance: sum(spendable lots) = max(posted, 0)
and sum(pending lots) = pending. Points going out consume lots earliest-expiry-first.

Taking points back (a reversal of an earn or a transfer) takes them from what is available first,
then from what the account's live holds reserve, voiding those holds whole, newest first, until the
rest is covered: a reservation whose points were taken back cannot be honoured, and leaving it in
place would let the customer spend points the ledger no longer owes (a hold's points beyond the
shortfall become available again). Only what is neither available nor held, because it was already
spent, is left unrecovered (or, where the programme allows overdraft, taken below zero).
"""

import calendar
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from loyalty_ledger.domain.model import (
    REVERSIBLE_TYPES,
    Account,
    AccountEffect,
    AccountKind,
    Bucket,
    Checkout,
    CheckoutLine,
    EntryType,
    ExpiryPolicy,
    ExpiryRule,
    Hold,
    HoldState,
    LineReturn,
    Lot,
    LotUpdate,
    NewLot,
    Plan,
    Posting,
    ProgramRules,
    ReversibleEntry,
    Tier,
)
from loyalty_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Reason

MAX_AMOUNT = 10**15
MAX_UNITS = 10**9
MAX_HOLD_TTL_SECONDS = 7 * 24 * 3600
MAX_WARNING_DAYS = 365
# Points may be pending (a return window) for at most this long.
MAX_PENDING = timedelta(days=366)
# Column sizes the rules keep to, whoever calls them (the contract says the same).
MAX_ASSET_CODE, MAX_TIER_CODE = 16, 64
# The ids this ledger issues: str(uuid.uuid4()).
ID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# --- validation -------------------------------------------------------------------------------


def require_amount(amount: int, field: str = "amount") -> int:
    if amount <= 0 or amount > MAX_AMOUNT:
        raise InvalidArgument(
            Reason.INVALID_AMOUNT, f"{field} must be a positive integer up to {MAX_AMOUNT}", field=field
        )
    return amount


def require_asset(requested: str, actual: str, field: str = "asset_code") -> None:
    if requested and requested != actual:
        raise FailedPrecondition(
            Reason.ASSET_MISMATCH,
            f"{field} {requested!r} does not match the programme's asset {actual!r}",
            field=field,
        )


def require_same_program(source_program: str, destination_program: str) -> None:
    if source_program != destination_program:
        raise FailedPrecondition(
            Reason.ASSET_MISMATCH,
            "transfers stay within one programme and asset",
            field="destination_account_id",
        )


def require_id(value: str, field: str) -> str:
    """An id this ledger issued (a UUID), lower-cased; anything else is refused before any query."""
    if not value:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, f"{field} is required", field=field)
    normalised = value.lower()
    if not ID_PATTERN.fullmatch(normalised):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, f"{field} is not an id this ledger issued", field=field
        )
    return normalised


def require_text(value: str, field: str) -> str:
    """A caller's own identifier (customer id, checkout id): required; the contract bounds its length."""
    if not value:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, f"{field} is required", field=field)
    return value


def require_idempotency_key(key: str) -> str:
    if not key or len(key) > 200:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            "idempotency_key is required (at most 200 characters)",
            field="idempotency_key",
        )
    return key


def validate_rules(rules: ProgramRules) -> ProgramRules:
    if not rules.asset_code or len(rules.asset_code) > MAX_ASSET_CODE:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            f"asset_code is required (at most {MAX_ASSET_CODE} characters)",
            field="program.asset_code",
        )
    policy = rules.expiry_policy
    if policy.rule is ExpiryRule.MONTHS_AFTER_EARN and not 1 <= policy.months <= 600:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "months must be 1..600", field="program.expiry_policy.months"
        )
    if not 0 <= policy.warning_days <= MAX_WARNING_DAYS:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            f"warning_days must be 0..{MAX_WARNING_DAYS}",
            field="program.expiry_policy.warning_days",
        )
    if not 0 < rules.default_hold_ttl_seconds <= MAX_HOLD_TTL_SECONDS:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "hold ttl out of range", field="program.default_hold_ttl"
        )
    if not 1 <= rules.tier_window_days <= 3660:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "tier window out of range", field="program.tier_window_days"
        )
    codes = [t.code for t in rules.tiers]
    if len(set(codes)) != len(codes) or any(not c or len(c) > MAX_TIER_CODE for c in codes):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            f"tier codes must be unique, 1 to {MAX_TIER_CODE} characters",
            field="program.tiers",
        )
    for tier in rules.tiers:
        if not 0 <= tier.qualifying_points <= MAX_AMOUNT or not 0 <= tier.earn_multiplier_bps <= 1_000_000:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, f"tier {tier.code} out of range", field="program.tiers"
            )
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


def tier_ladder(tiers: Iterable[Tier]) -> tuple[Tier, ...]:
    """Tiers in precedence order: the account's tier is the first whose threshold its qualifying
    points meet (the highest threshold; on equal thresholds the larger multiplier, then the earlier
    tier). The repository hands this order to the statement that posts an entry, which picks the
    first threshold met, so SQL and `tier_for` decide alike."""
    return tuple(sorted(tiers, key=lambda t: (t.qualifying_points, t.earn_multiplier_bps), reverse=True))


def tier_for(tiers: Iterable[Tier], qualifying_points: int) -> Tier | None:
    return next((t for t in tier_ladder(tiers) if qualifying_points >= t.qualifying_points), None)


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


def _debit_posted(account: Account, amount: int, prefer: str | None = None) -> AccountEffect:
    if not account.is_customer:
        return AccountEffect(account.account_id, d_posted=-amount)
    consumed = max(account.posted, 0) - max(account.posted - amount, 0)
    return AccountEffect(
        account.account_id, d_posted=-amount, lot_updates=tuple(consume_lots(account.lots, consumed, prefer))
    )


def _credit_posted(account: Account, chunks: Sequence[tuple[int, datetime | None]]) -> AccountEffect:
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


def _consumed_chunks(account: Account, effect: AccountEffect) -> list[tuple[int, datetime | None]]:
    by_id = {lot.lot_id: lot for lot in account.lots}
    return [(-u.delta, by_id[u.lot_id].expires_at) for u in effect.lot_updates]


def _require_funds(account: Account, amount: int, allow_overdraft: bool) -> None:
    if account.is_customer and not allow_overdraft and account.available < amount:
        raise FailedPrecondition(
            Reason.INSUFFICIENT_BALANCE,
            f"available balance {account.available} is less than {amount}",
            field="amount",
        )


def _take_back(
    account: Account, wanted: int, holds: Iterable[Hold], rules: ProgramRules, prefer: str | None = None
) -> tuple[int, AccountEffect | None, tuple[Hold, ...]]:
    """Take up to `wanted` points back from `account` (the rule in the module's docstring): how
    many it takes, the effect, and the holds it voids."""
    if not account.is_customer:
        return wanted, _debit_posted(account, wanted), ()
    available = max(account.available, 0)
    shortfall = wanted - available
    voided: list[Hold] = []
    live = (h for h in holds if h.account_id == account.account_id and h.state is HoldState.ACTIVE)
    for hold in sorted(live, key=lambda h: h.seq, reverse=True):
        if shortfall <= 0:
            break
        voided.append(hold.with_state(HoldState.VOIDED))
        shortfall -= hold.amount
    freed = sum(h.amount for h in voided)
    taken = wanted if rules.allow_overdraft else min(wanted, available + freed)
    if not taken and not freed:
        return 0, None, ()
    return taken, replace(_debit_posted(account, taken, prefer), d_held=-freed), tuple(voided)


# --- plans ------------------------------------------------------------------------------------


def plan_maturation(account: Account, now: datetime) -> Plan | None:
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
    account: Account,
    issuance: Account,
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
            Reason.INVALID_ARGUMENT, "points are earned by customer accounts", field="account_id"
        )
    if available_at is not None and available_at > now + MAX_PENDING:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "available_time is at most a year ahead", field="available_time"
        )
    expiry = expires_at if expires_at is not None else lot_expiry(rules.expiry_policy, available_at or now)
    if expiry is not None and expiry <= now:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "expire_time must be in the future", field="expire_time"
        )
    if available_at is not None and available_at > now:
        if expiry is not None and expiry <= available_at:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "expire_time must be after available_time", field="expire_time"
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
        EntryType.EARN, postings, (effect, issuance_effect), qualifying_delta=amount if qualifying else 0
    )


def plan_hold(account: Account, amount: int, rules: ProgramRules) -> AccountEffect:
    require_amount(amount)
    if not account.is_customer:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "holds are placed on customer accounts", field="account_id"
        )
    _require_funds(account, amount, rules.allow_overdraft)
    return AccountEffect(account.account_id, d_held=amount)


def hold_ttl(rules: ProgramRules, requested_seconds: int | None) -> int:
    if requested_seconds is None:
        return rules.default_hold_ttl_seconds
    if not 0 < requested_seconds <= MAX_HOLD_TTL_SECONDS:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, f"ttl must be 1..{MAX_HOLD_TTL_SECONDS} seconds", field="ttl"
        )
    return requested_seconds


def require_live_hold(hold: Hold, now: datetime) -> None:
    if not hold.is_live(now):
        state = hold.state if hold.state is not HoldState.ACTIVE else HoldState.EXPIRED
        raise FailedPrecondition(
            Reason.HOLD_NOT_ACTIVE, f"hold is {state.value}", metadata={"state": state.value}
        )


def plan_capture(
    account: Account, redemption: Account, hold: Hold, amount: int | None, now: datetime
) -> tuple[Plan, Hold]:
    """Burn all or part of a live hold; the rest of it is released."""
    require_live_hold(hold, now)
    amount = hold.amount if amount is None else amount
    require_amount(amount)
    if amount > hold.amount:
        raise FailedPrecondition(
            Reason.CAPTURE_EXCEEDS_HOLD, f"capture {amount} exceeds hold {hold.amount}", field="amount"
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
    """Release a hold. Releasing a released, timed-out or voided hold is harmless; a captured one is
    not."""
    if hold.state is HoldState.CAPTURED:
        raise FailedPrecondition(Reason.HOLD_NOT_ACTIVE, "hold is CAPTURED", metadata={"state": "CAPTURED"})
    if hold.state is not HoldState.ACTIVE:
        return None, hold
    new_state = HoldState.RELEASED if hold.is_live(now) else HoldState.EXPIRED
    return AccountEffect(hold.account_id, d_held=-hold.amount), hold.with_state(new_state)


def plan_void_expired_holds(holds: Iterable[Hold], now: datetime) -> list[Hold]:
    return [
        h.with_state(HoldState.EXPIRED) for h in holds if h.state is HoldState.ACTIVE and h.expires_at <= now
    ]


def plan_expiry(account: Account, expiry: Account, now: datetime) -> tuple[Plan | None, int]:
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


# (source kind, destination kind) a transfer may move points between. The adjustment account is
# where manual adjustments come from and go to (the gateway's AdjustPoints).
TRANSFER_ROUTES = frozenset(
    {
        (AccountKind.CUSTOMER, AccountKind.CUSTOMER),
        (AccountKind.CUSTOMER, AccountKind.DONATION),
        (AccountKind.CUSTOMER, AccountKind.ADJUSTMENT),
        (AccountKind.ADJUSTMENT, AccountKind.CUSTOMER),
    }
)


def plan_transfer(
    source: Account, destination: Account, amount: int, rules: ProgramRules, now: datetime
) -> Plan:
    """Move spendable points; they keep their expiry dates. Transfers never overdraw a customer.
    Points credited from the adjustment account are new to the customer: they expire as earned
    points earned `now` do (the programme's policy)."""
    require_amount(amount)
    if source.account_id == destination.account_id:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "source and destination are the same", field="destination_account_id"
        )
    if (source.kind, destination.kind) not in TRANSFER_ROUTES:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            "transfers go between customers, to a donation account, or to or from the adjustment account",
            field="destination_account_id",
        )
    _require_funds(source, amount, allow_overdraft=False)
    debit = _debit_posted(source, amount)
    chunks = (
        _consumed_chunks(source, debit)
        if source.is_customer
        else [(amount, lot_expiry(rules.expiry_policy, now))]
    )
    credit = _credit_posted(destination, chunks)
    return Plan(
        EntryType.TRANSFER,
        (Posting(source.account_id, -amount), Posting(destination.account_id, amount)),
        (debit, credit),
        restore_expires_at=_latest_expiry(source.lots, debit.lot_updates),
    )


def _reversible_amount(entry: ReversibleEntry, amount: int | None) -> int:
    if entry.entry_type not in REVERSIBLE_TYPES:
        raise FailedPrecondition(
            Reason.REVERSAL_EXCEEDS_ENTRY,
            f"{entry.entry_type.value} entries cannot be reversed",
            field="entry_id",
        )
    amount = entry.reversible if amount is None else amount
    if amount <= 0 and entry.reversible == 0:
        raise FailedPrecondition(
            Reason.REVERSAL_EXCEEDS_ENTRY, "entry is already fully reversed", field="amount"
        )
    require_amount(amount)
    if amount > entry.reversible:
        raise FailedPrecondition(
            Reason.REVERSAL_EXCEEDS_ENTRY,
            f"only {entry.reversible} of the entry is left to reverse",
            field="amount",
        )
    return amount


def plan_reversal(
    entry: ReversibleEntry,
    amount: int | None,
    accounts: Mapping[str, Account],
    system: Mapping[AccountKind, Account],
    rules: ProgramRules,
    holds: Sequence[Hold] = (),
) -> Plan:
    """Reverse (part of) an earn, burn or transfer as a new entry. Points taken back follow the
    take-back rule of the module's docstring; `holds` are the live holds of the accounts involved."""
    amount = _reversible_amount(entry, amount)
    if entry.entry_type is EntryType.EARN:
        return _reverse_earn(
            entry, amount, accounts[entry.account_id], system[AccountKind.ISSUANCE], rules, holds
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
    recovered, debit, voided = _take_back(destination, amount, holds, rules)
    credit = _credit_posted(source, [(recovered, entry.restore_expires_at)]) if recovered else None
    postings = (
        (Posting(destination.account_id, -recovered), Posting(source.account_id, recovered))
        if recovered
        else ()
    )
    return Plan(
        EntryType.REVERSAL,
        postings,
        tuple(e for e in (debit, credit) if e),
        unrecovered=amount - recovered,
        reversed_amount=amount,
        voided_holds=voided,
    )


def _reverse_earn(
    entry: ReversibleEntry,
    amount: int,
    account: Account,
    issuance: Account,
    rules: ProgramRules,
    holds: Sequence[Hold],
) -> Plan:
    """Points still pending in the earn's own lot go first, then the take-back rule."""
    lot = next((lot for lot in account.lots if lot.lot_id == entry.lot_id), None)
    from_pending = min(amount, lot.remaining) if lot is not None and lot.pending else 0
    recovered, debit, voided = _take_back(account, amount - from_pending, holds, rules, entry.lot_id)
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
        voided_holds=voided,
    )


def plan_merge(merged: Account, survivor: Account, holds: Iterable[Hold]) -> Plan | None:
    """Move everything a merged-away customer's account holds to the survivor's account in the same
    programme (profile's customer.merged): spendable and pending points keep their expiry and
    available dates; the merged account's live holds are voided (their points move, so their
    checkouts can no longer capture them and must reserve again). An overdrawn balance moves as a
    debt. `merged` carries all its lots; `survivor`, when the moved balance is negative, the lots that
    cover it. Nothing left to move: None (so a repeated merge changes nothing)."""
    voided = tuple(
        h.with_state(HoldState.VOIDED)
        for h in holds
        if h.account_id == merged.account_id and h.state is HoldState.ACTIVE
    )
    if merged.posted == 0 and merged.pending == 0 and not voided:
        return None
    spendable = [(lot.remaining, lot.expires_at) for lot in merged.lots if not lot.pending]
    pending = tuple(
        NewLot(lot.remaining, lot.expires_at, pending=True, available_at=lot.available_at)
        for lot in merged.lots
        if lot.pending
    )
    out = AccountEffect(
        merged.account_id,
        d_posted=-merged.posted,
        d_pending=-merged.pending,
        d_held=-sum(h.amount for h in voided),
        lot_updates=tuple(LotUpdate(lot.lot_id, -lot.remaining) for lot in merged.lots),
    )
    if merged.posted >= 0:
        credit = _credit_posted(survivor, spendable)
    else:
        credit = _debit_posted(survivor, -merged.posted)
    credit = replace(credit, d_pending=merged.pending, new_lots=(*credit.new_lots, *pending))
    postings = tuple(
        p
        for p in (
            Posting(merged.account_id, -merged.posted),
            Posting(survivor.account_id, merged.posted),
            Posting(merged.account_id, -merged.pending, Bucket.PENDING),
            Posting(survivor.account_id, merged.pending, Bucket.PENDING),
        )
        if p.amount
    )
    return Plan(EntryType.MERGE, postings, (out, credit), voided_holds=voided)


# --- checkouts --------------------------------------------------------------------------------


def validate_lines(lines: Sequence[CheckoutLine]) -> tuple[CheckoutLine, ...]:
    """A settled checkout's lines: at least one, ids unique, units and points in range."""
    if not lines:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "a checkout has at least one line", field="lines")
    seen: set[str] = set()
    for index, line in enumerate(lines):
        field = f"lines[{index}]"
        if not line.line_id or line.line_id in seen:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "line ids are required and unique", field=f"{field}.line_id"
            )
        seen.add(line.line_id)
        if not 1 <= line.quantity <= MAX_UNITS:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, f"quantity must be 1..{MAX_UNITS}", field=f"{field}.quantity"
            )
        for name in ("earn_points", "burn_points"):
            if not 0 <= getattr(line, name) <= MAX_AMOUNT:
                raise InvalidArgument(
                    Reason.INVALID_AMOUNT, f"{name} must be 0..{MAX_AMOUNT}", field=f"{field}.{name}"
                )
    if sum(line.earn_points for line in lines) > MAX_AMOUNT:
        raise InvalidArgument(Reason.INVALID_AMOUNT, f"the lines earn more than {MAX_AMOUNT}", field="lines")
    return tuple(lines)


def allocate_burn(lines: Sequence[CheckoutLine], burned: int) -> tuple[CheckoutLine, ...]:
    """Every burned point belongs to a line: as the till allocated them (their burn_points then add
    up to what was burned), or, when it gave none, spread over the units by largest remainder (ties
    to the earlier line), so that the shares add up exactly."""
    given = sum(line.burn_points for line in lines)
    if given:
        if given != burned:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT,
                f"the lines' burn_points add up to {given}, the burn is {burned}",
                field="lines",
            )
        return tuple(lines)
    units = sum(line.quantity for line in lines)
    shares = [burned * line.quantity // units for line in lines]
    order = sorted(range(len(lines)), key=lambda i: (-(burned * lines[i].quantity % units), i))
    for i in order[: burned - sum(shares)]:
        shares[i] += 1
    return tuple(replace(line, burn_points=share) for line, share in zip(lines, shares, strict=True))


def _share(points: int, units: int, quantity: int) -> int:
    """What `units` of a line's `quantity` units carry of its `points`, rounded down."""
    return points * units // quantity


def plan_line_returns(checkout: Checkout, returning: Sequence[LineReturn]) -> tuple[LineReturn, ...]:
    """What each returned line takes back: for the units returned now, floor(points x units returned
    so far / units) minus the same for the units returned before, of its earn and of its burn. Every
    return rounds down and the last unit takes what rounding left, so returning all of a line's
    units, in any number of returns, reverses exactly its earn and restores exactly its burn."""
    if not returning:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "a return has at least one line", field="lines")
    lines = {line.line_id: line for line in checkout.lines}
    seen: set[str] = set()
    planned = []
    for index, wanted in enumerate(returning):
        field = f"lines[{index}]"
        line = lines.get(wanted.line_id)
        if line is None:
            raise NotFound(
                Reason.CHECKOUT_LINE_NOT_FOUND, "the checkout has no such line", field=f"{field}.line_id"
            )
        if wanted.line_id in seen:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, "each line at most once", field=f"{field}.line_id")
        seen.add(wanted.line_id)
        if not 1 <= wanted.quantity <= MAX_UNITS:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, f"quantity must be 1..{MAX_UNITS}", field=f"{field}.quantity"
            )
        before = checkout.returned.get(line.line_id, 0)
        after = before + wanted.quantity
        if after > line.quantity:
            raise FailedPrecondition(
                Reason.RETURN_EXCEEDS_LINE,
                f"the line has {line.quantity} units, {before} already returned",
                field=f"{field}.quantity",
            )
        planned.append(
            LineReturn(
                line.line_id,
                wanted.quantity,
                _share(line.earn_points, after, line.quantity)
                - _share(line.earn_points, before, line.quantity),
                _share(line.burn_points, after, line.quantity)
                - _share(line.burn_points, before, line.quantity),
            )
        )
    return tuple(planned)


# --- applying a plan to in-memory state (the reference model, and a unit of work's locked accounts) ---


def apply_effect(
    account: Account, effect: AccountEffect, new_lot_ids: Iterable[str], next_seq: int
) -> Account:
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
