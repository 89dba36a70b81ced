"""Hunt for the interleaving that breaks the ledger (TigerBeetle's attitude), against the in-memory
reference ledger, which runs the very rules the repository runs.

How the search is aimed:
- Few accounts: two customers in a no-overdraft programme, two in a programme whose overdraft flag is
  drawn, so operations pile up on the same account.
- Choices come from live state: active holds, entries with something left to reverse, funded
  accounts; amounts sit on the boundaries that matter (all that is available, one more, one less,
  the whole hold, one above it); time jumps to the next deadline (a hold's timeout, a lot's expiry,
  a pending lot's available time), one second before, on, or after it.
- The awkward transitions are rules of their own: hold then reverse the earn that funded it,
  capture at the hold's timeout, partial capture then release, reverse a burn, transfer then
  reverse, an expiry run over held points, pending points maturing under a hold.

What is checked after every call, without trusting the rules under test:
- the invariants (`check_invariants`): every entry and every asset sums to zero, each balance is the
  sum of its postings, posted/pending/held match the lots and the active holds, no customer below
  zero without overdraft, lots never negative;
- a prediction written from the specification (`_predict`): whether the call must be accepted or
  refused (and why), and every balance after it;
- lot order: points leave earliest-expiring lots first (an earn's reversal takes its own lot
  first), transfers keep expiry dates, a reversed burn comes back with the latest expiry it used;
- a qualifying entry leaves the account in the tier its qualifying points in the window reach;
- a refused call changes nothing; every accepted call is replayed at once under its key and
  changes nothing; replays later, and the same key with another request, are rules too.

Mutation-tested by hand (rules copied to a scratch directory, one change each, ten seeds): the
search finds, every time and well within its budget (worst seen: example 80 of 200), a reversal
that ignores held points, latest-expiry-first consumption, a capture above its hold, an expiry run
that expires the same points again, expiry eating held points, holds ignoring the overdraft flag,
a partial capture that keeps the rest held, a burn reversal restoring the earliest expiry, a
transfer reversal ignoring held points, early maturation, a hold voided a second late, and an earn
reversal not taking its own lot first. Keep it that way when changing the strategies.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from loyalty_ledger.domain.memory import MemoryLedger
from loyalty_ledger.domain.model import (
    Account,
    AccountKind,
    Bucket,
    EntryType,
    ExpiryPolicy,
    ExpiryRule,
    HoldState,
    Lot,
    ProgramRules,
    Tier,
)
from loyalty_runtime.errors import DomainError, FailedPrecondition, Reason

TIERS = (Tier("SILVER", "Silver", 100, 12_000), Tier("GOLD", "Gold", 500, 15_000))
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
REVERSIBLE = (EntryType.EARN, EntryType.BURN, EntryType.TRANSFER)
UNKNOWN = object()  # a lot order the test cannot tell (maturation trimmed lots of an overdrawn account)

earn_amounts = st.one_of(st.integers(1, 60), st.sampled_from([1, 100, 250]), st.sampled_from([0, -1]))
pending_periods = st.sampled_from([None, None, None, HOUR, 2 * DAY])
expiry_offsets = st.sampled_from([None, None, HOUR, DAY, 10 * DAY, 40 * DAY, timedelta(0)])


def near(pivot: int, *more: int) -> st.SearchStrategy[int]:
    """Amounts on a boundary (all of it, one more, one less, and `more`), or anything up to it."""
    pivot = max(pivot, 1)
    points = {pivot, pivot + 1, max(pivot - 1, 1), 1, max(pivot // 2, 1), *(max(m, 1) for m in more)}
    return st.one_of(st.sampled_from(sorted(points)), st.integers(1, pivot + 2))


# --- the ledger as the test sees it -------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One state-changing call, as data: so it can be replayed and varied."""

    kind: str  # earn hold capture release reverse transfer
    target: str  # account (earn, hold, transfer source), hold, or entry id
    amount: int | None = None
    other: str | None = None  # transfer destination
    available_at: datetime | None = None
    expires_at: datetime | None = None
    qualifying: bool = True
    ttl: int | None = None


def invoke(ledger: MemoryLedger, key: str, op: Op, now: datetime):
    if op.kind == "earn":
        return ledger.earn(
            key,
            op.target,
            op.amount,
            now,
            available_at=op.available_at,
            expires_at=op.expires_at,
            qualifying=op.qualifying,
        )
    if op.kind == "hold":
        return ledger.hold(key, op.target, op.amount, now, op.ttl)
    if op.kind == "capture":
        return ledger.capture(key, op.target, op.amount, now)
    if op.kind == "release":
        return ledger.release(key, op.target, now)
    if op.kind == "reverse":
        return ledger.reverse(key, op.target, op.amount, now)
    if op.kind == "transfer":
        return ledger.transfer(key, op.target, op.other, op.amount, now)
    raise AssertionError(op.kind)


def snapshot(ledger: MemoryLedger):
    """Everything a call may change (the model's values are immutable, so shallow copies do)."""
    return (
        dict(ledger.accounts),
        dict(ledger.holds),
        {k: (e.reversed_amount, e.postings) for k, e in ledger.entries.items()},
        dict(ledger.tiers),
        len(ledger.idempotency),
    )


@dataclass(frozen=True)
class Bal:
    posted: int
    pending: int
    held: int

    @property
    def available(self) -> int:
        return self.posted - self.held


def settled(ledger: MemoryLedger, account_id: str, now: datetime) -> Bal:
    """The balance once timed-out holds are voided and due pending points have matured, which
    every call does first (the ledger does both lazily)."""
    a = ledger.accounts[account_id]
    due = sum(lot.remaining for lot in a.lots if lot.pending and lot.available_at <= now)
    voided = sum(
        h.amount
        for h in ledger.holds.values()
        if h.account_id == account_id and h.state is HoldState.ACTIVE and h.expires_at <= now
    )
    return Bal(a.posted + due, a.pending - due, a.held - voided)


def settled_lots(account: Account, now: datetime) -> tuple[Lot, ...] | None:
    """Lots as a call sees them after maturation; None when maturation trims lots (overdrawn)."""
    due = [lot for lot in account.lots if lot.pending and lot.available_at <= now]
    if due and account.posted < 0:
        return None
    return tuple(replace(lot, pending=False) if lot in due else lot for lot in account.lots)


def expires_before(a: Lot, b: Lot) -> bool:
    return a.expires_at is not None and (b.expires_at is None or a.expires_at < b.expires_at)


def taken_from(before: tuple[Lot, ...], after: Account) -> dict[str, int]:
    """How much left each spendable lot."""
    left = {lot.lot_id: lot.remaining for lot in after.lots}
    return {
        lot.lot_id: lot.remaining - left.get(lot.lot_id, 0)
        for lot in before
        if not lot.pending and left.get(lot.lot_id, 0) < lot.remaining
    }


def check_lot_order(before: tuple[Lot, ...], after: Account, prefer: str | None = None) -> dict:
    """Points leave the earliest-expiring lots first (never-expiring last); `prefer` goes first."""
    taken = taken_from(before, after)
    left = {lot.lot_id: lot.remaining for lot in after.lots}
    spendable = [lot for lot in before if not lot.pending]
    for used in spendable:
        if used.lot_id not in taken or used.lot_id == prefer:
            continue
        for other in spendable:
            if other.lot_id not in (used.lot_id, prefer) and expires_before(other, used):
                assert left.get(other.lot_id, 0) == 0, (
                    f"took from a lot expiring {used.expires_at} while one expiring "
                    f"{other.expires_at} was left: {before} -> {after.lots}"
                )
    own = prefer is not None and any(lot.lot_id == prefer for lot in spendable)
    if own and any(lot_id != prefer for lot_id in taken):
        assert left.get(prefer, 0) == 0, "a reversal took other lots before the earn's own lot"
    return taken


def latest_expiry(before: tuple[Lot, ...], taken: dict[str, int]) -> datetime | None:
    expiries = [lot.expires_at for lot in before if lot.lot_id in taken]
    return None if not expiries or None in expiries else max(expiries)


def new_lots(before: Account, after: Account) -> list[Lot]:
    old = {lot.lot_id for lot in before.lots}
    return [lot for lot in after.lots if lot.lot_id not in old]


def check_invariants(ledger: MemoryLedger) -> None:
    """What must hold of any ledger at any time, computed from the journal and the holds."""
    sums: dict[tuple[str, Bucket], int] = defaultdict(int)
    per_asset: dict[tuple, int] = defaultdict(int)
    for entry in ledger.entries.values():
        assert sum(p.amount for p in entry.postings) == 0, f"entry {entry.entry_id} does not balance"
        rules = ledger.programs[entry.program_id]
        for p in entry.postings:
            assert ledger.account_program[p.account_id] == entry.program_id, "entry crosses programmes"
            kind = ledger.accounts[p.account_id].kind
            assert p.bucket is Bucket.POSTED or kind is AccountKind.CUSTOMER
            sums[(p.account_id, p.bucket)] += p.amount
            per_asset[(rules.asset_kind, rules.asset_code)] += p.amount
        if entry.entry_type in REVERSIBLE:
            amount = sum(p.amount for p in entry.postings if p.amount > 0)
            assert 0 <= entry.reversed_amount <= amount, f"{entry.entry_id} reversed beyond its amount"
    assert all(total == 0 for total in per_asset.values()), per_asset
    held: dict[str, int] = defaultdict(int)
    for hold in ledger.holds.values():
        assert hold.amount > 0 and 0 <= hold.captured_amount <= hold.amount, hold
        assert (hold.captured_amount > 0) == (hold.state is HoldState.CAPTURED), hold
        if hold.state is HoldState.ACTIVE:
            held[hold.account_id] += hold.amount
    for account_id, a in ledger.accounts.items():
        assert a.posted == sums[(account_id, Bucket.POSTED)], f"{account_id} posted != its postings"
        assert a.pending == sums[(account_id, Bucket.PENDING)], f"{account_id} pending != its postings"
        assert a.held == held[account_id], f"{account_id} held != its active holds"
        if a.kind is not AccountKind.CUSTOMER:
            assert not a.lots and a.held == 0 and a.pending == 0
            continue
        assert a.pending >= 0 and a.held >= 0
        assert all(lot.remaining > 0 for lot in a.lots), "a lot went negative (or empty and kept)"
        assert all(lot.available_at is not None for lot in a.lots if lot.pending)
        assert sum(lot.remaining for lot in a.lots if not lot.pending) == max(a.posted, 0), (
            f"{account_id} spendable lots != posted"
        )
        assert sum(lot.remaining for lot in a.lots if lot.pending) == a.pending
        if not ledger.programs[ledger.account_program[account_id]].allow_overdraft:
            assert a.posted >= 0 and a.available >= 0, f"{account_id} overdrawn: {a}"


@dataclass
class EntryInfo:
    """What the test itself remembers about an entry it made (not read back from the ledger)."""

    kind: EntryType
    amount: int = 0
    account: str = ""
    counter: str | None = None
    lot: str | None = None
    restore: object = UNKNOWN  # the expiry points get back when this is reversed
    qualifying: bool = False
    reversed: int = 0


@dataclass
class Call:
    key: str
    op: Op
    result: object


@dataclass
class Prediction:
    refusals: set[str] = field(default_factory=set)  # every reason that applies; none: must succeed
    after: dict[str, Bal] = field(default_factory=dict)
    unrecovered: int | None = None
    voided: set[str] = field(default_factory=set)  # holds a reversal must void


# --- the machine ----------------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    @initialize(
        overdraft=st.booleans(),
        policy=st.sampled_from(
            [
                ExpiryPolicy(),
                ExpiryPolicy(ExpiryRule.END_OF_NEXT_CALENDAR_YEAR),
                ExpiryPolicy(ExpiryRule.MONTHS_AFTER_EARN, 2),
            ]
        ),
        ttl=st.sampled_from([60, 3600]),
    )
    def setup(self, overdraft: bool, policy: ExpiryPolicy, ttl: int) -> None:
        self.ledger = MemoryLedger()
        self.now = datetime(2025, 1, 31, tzinfo=UTC)
        strict = self.ledger.create_program(
            ProgramRules(
                expiry_policy=ExpiryPolicy(ExpiryRule.MONTHS_AFTER_EARN, 1),
                tiers=TIERS,
                tier_window_days=30,
                default_hold_ttl_seconds=ttl,
            )
        )
        other = self.ledger.create_program(ProgramRules(allow_overdraft=overdraft, expiry_policy=policy))
        self.customers = [self.ledger.open_account(p) for p in (strict, strict, other, other)]
        system = self.ledger.system
        self.destinations = [
            *self.customers,
            system[strict][AccountKind.DONATION],
            system[other][AccountKind.DONATION],
            system[strict][AccountKind.ISSUANCE],
        ]
        self.entries: dict[str, EntryInfo] = {}
        self.holds: list[str] = []
        self.calls: list[Call] = []
        self.keys = 0
        self.qualifying: list[tuple[str, datetime, int]] = []  # (account, when, points)

    # --- helpers ---

    def _rules(self, account_id: str) -> ProgramRules:
        return self.ledger.programs[self.ledger.account_program[account_id]]

    def _bal(self, account_id: str) -> Bal:
        return settled(self.ledger, account_id, self.now)

    def _customer(self, data, funded: bool = False) -> str:
        if funded:
            rich = [a for a in self.customers if self._bal(a).available > 0]
            if rich and data.draw(st.integers(0, 3), label="prefer funded") > 0:
                return data.draw(st.sampled_from(rich), label="funded account")
        return data.draw(st.sampled_from(self.customers), label="account")

    def _topped_up(self, data) -> str:
        """A funded account; when none is, earn into one first (holds tend to drain them all)."""
        account = self._customer(data, funded=True)
        if self._bal(account).available <= 0:
            self._do(Op("earn", account, data.draw(st.integers(1, 100), label="top up")))
        return account

    def _destination(self, data, source: str) -> str:
        """Mostly a valid one (the same programme's other customer or donation pool)."""
        program = self.ledger.account_program[source]
        valid = [
            a for a in self.destinations[:-1] if a != source and self.ledger.account_program[a] == program
        ]
        if data.draw(st.integers(0, 4), label="valid destination") > 0:
            return data.draw(st.sampled_from(valid), label="destination")
        return data.draw(st.sampled_from(self.destinations), label="any destination")

    def _live_holds(self) -> list[str]:
        return [h for h in self.holds if self.ledger.holds[h].state is HoldState.ACTIVE]

    def _hold_id(self, data) -> str:
        live = self._live_holds()
        if live and data.draw(st.integers(0, 4), label="prefer live hold") > 0:
            return data.draw(st.sampled_from(live), label="live hold")
        return data.draw(st.sampled_from(self.holds), label="hold")

    def _entry_id(self, data, kinds=REVERSIBLE) -> str | None:
        open_ = [e for e, i in self.entries.items() if i.kind in kinds and i.amount > i.reversed]
        if open_ and data.draw(st.integers(0, 5), label="prefer reversible") > 0:
            return data.draw(st.sampled_from(open_), label="reversible entry")
        return data.draw(st.sampled_from(list(self.entries)), label="entry") if self.entries else None

    def _deadlines(self) -> list[datetime]:
        moments = {h.expires_at for h in self.ledger.holds.values() if h.state is HoldState.ACTIVE}
        for a in self.customers:
            for lot in self.ledger.accounts[a].lots:
                moments.add(lot.available_at if lot.pending else lot.expires_at)
        return sorted(m for m in moments if m is not None and m > self.now)

    def _advance(self, data, moment: datetime | None = None, offsets=(-1, 0, 1)) -> None:
        """Jump to a deadline (a second before, on it, or a second after) or by a plain step."""
        if moment is None:
            deadlines = self._deadlines()
            if deadlines and data.draw(st.booleans(), label="to a deadline"):
                moment = data.draw(st.sampled_from(deadlines), label="deadline")
        if moment is not None:
            offset = data.draw(st.sampled_from(offsets), label="offset")
            self.now = max(self.now, moment + timedelta(seconds=offset))
        else:
            step = data.draw(st.sampled_from([1, 600, 3600, 86_400, 5 * 86_400, 20 * 86_400]), label="step")
            self.now += timedelta(seconds=step)

    # --- the prediction, from the specification ---

    def _predict(self, op: Op) -> Prediction:
        p = Prediction()
        now, amount = self.now, op.amount
        if op.kind == "earn":
            b = self._bal(op.target)
            if amount < 1:
                p.refusals.add("INVALID_AMOUNT")
            pending = op.available_at is not None and op.available_at > now
            if op.expires_at is not None and (
                op.expires_at <= now or (pending and op.expires_at <= op.available_at)
            ):
                p.refusals.add("INVALID_ARGUMENT")
            grow = {"pending": b.pending + amount} if pending else {"posted": b.posted + amount}
            p.after[op.target] = replace(b, **grow)
        elif op.kind == "hold":
            b = self._bal(op.target)
            if amount < 1:
                p.refusals.add("INVALID_AMOUNT")
            elif not self._rules(op.target).allow_overdraft and amount > b.available:
                p.refusals.add("INSUFFICIENT_BALANCE")
            p.after[op.target] = replace(b, held=b.held + amount)
        elif op.kind in ("capture", "release"):
            hold = self.ledger.holds[op.target]
            b = self._bal(hold.account_id)
            live = hold.state is HoldState.ACTIVE and now < hold.expires_at
            if op.kind == "release":
                if hold.state is HoldState.CAPTURED:
                    p.refusals.add("HOLD_NOT_ACTIVE")
                p.after[hold.account_id] = replace(b, held=b.held - (hold.amount if live else 0))
            else:
                amount = hold.amount if amount is None else amount
                if not live:
                    p.refusals.add("HOLD_NOT_ACTIVE")
                if amount < 1:
                    p.refusals.add("INVALID_AMOUNT")
                elif amount > hold.amount:
                    p.refusals.add("CAPTURE_EXCEEDS_HOLD")
                p.after[hold.account_id] = Bal(b.posted - amount, b.pending, b.held - hold.amount)
        elif op.kind == "transfer":
            src, dst = op.target, op.other
            if amount < 1:
                p.refusals.add("INVALID_AMOUNT")
            if src == dst or self.ledger.accounts[dst].kind not in (
                AccountKind.CUSTOMER,
                AccountKind.DONATION,
            ):
                p.refusals.add("INVALID_ARGUMENT")
            if self.ledger.account_program[src] != self.ledger.account_program[dst]:
                p.refusals.add("ASSET_MISMATCH")
            if amount > self._bal(src).available:  # transfers never overdraw, whatever the programme
                p.refusals.add("INSUFFICIENT_BALANCE")
            bs, bd = self._bal(src), self._bal(dst)
            p.after[src] = replace(bs, posted=bs.posted - amount)
            p.after[dst] = replace(bd, posted=bd.posted + amount)
        elif op.kind == "reverse":
            info = self.entries[op.target]
            left = info.amount - info.reversed if info.kind in REVERSIBLE else 0
            amount = left if amount is None else amount
            if left == 0:
                p.refusals.add("REVERSAL_EXCEEDS_ENTRY")
            if amount < 1:
                p.refusals.add("INVALID_AMOUNT")
            elif amount > left:
                p.refusals.add("REVERSAL_EXCEEDS_ENTRY")
            if not p.refusals:
                self._predict_reversal(p, info, amount)
        return p

    def _takes_back(self, p: Prediction, account_id: str, wanted: int) -> tuple[int, int]:
        """Taking points back takes what is available, then what the account's live holds hold,
        voiding them whole, newest first, until they cover the rest; what is left is unrecovered,
        or taken below zero where the programme allows overdraft. (taken, points freed from holds)"""
        a = self.ledger.accounts[account_id]
        if a.kind is not AccountKind.CUSTOMER:
            return wanted, 0
        available = max(self._bal(account_id).available, 0)
        shortfall, freed = wanted - available, 0
        for hold_id in reversed(self.holds):  # the test's own record, in the order they were made
            hold = self.ledger.holds[hold_id]
            if shortfall <= 0:
                break
            if (
                hold.account_id == account_id
                and hold.state is HoldState.ACTIVE
                and self.now < hold.expires_at
            ):
                p.voided.add(hold_id)
                shortfall -= hold.amount
                freed += hold.amount
        if self._rules(account_id).allow_overdraft:
            return wanted, freed
        return min(wanted, available + freed), freed

    def _predict_reversal(self, p: Prediction, info: EntryInfo, amount: int) -> None:
        if info.kind is EntryType.EARN:
            b = self._bal(info.account)
            lot = next((x for x in self.ledger.accounts[info.account].lots if x.lot_id == info.lot), None)
            still_pending = lot is not None and lot.pending and lot.available_at > self.now
            from_pending = min(amount, lot.remaining) if still_pending else 0
            recovered, freed = self._takes_back(p, info.account, amount - from_pending)
            p.after[info.account] = Bal(b.posted - recovered, b.pending - from_pending, b.held - freed)
            p.unrecovered = amount - from_pending - recovered
        elif info.kind is EntryType.BURN:
            b = self._bal(info.account)
            p.after[info.account] = replace(b, posted=b.posted + amount)
            p.unrecovered = 0
        else:
            recovered, freed = self._takes_back(p, info.counter, amount)
            bs, bd = self._bal(info.account), self._bal(info.counter)
            p.after[info.counter] = replace(bd, posted=bd.posted - recovered, held=bd.held - freed)
            p.after[info.account] = replace(bs, posted=bs.posted + recovered)
            p.unrecovered = amount - recovered

    # --- one call, checked every way ---

    def _do(self, op: Op):
        self.keys += 1
        key = f"k{self.keys}"
        expected = self._predict(op)
        before = snapshot(self.ledger)
        balances = {a: self._bal(a) for a in self.destinations}
        lots = {a: settled_lots(self.ledger.accounts[a], self.now) for a in self.customers}
        try:
            result = invoke(self.ledger, key, op, self.now)
        except DomainError as error:
            assert snapshot(self.ledger) == before, f"refused {op} ({error.reason}) but changed state"
            assert expected.refusals, f"{op} refused ({error.reason}: {error}) but must succeed"
            assert error.reason.name in expected.refusals, (
                f"{op}: {error.reason.name}, expected {expected.refusals}"
            )
            return None
        assert not expected.refusals, f"{op} accepted, must be refused: {expected.refusals}"
        for account_id, balance in expected.after.items():
            # A call tidies the accounts it touches first, so their stored balance is settled.
            a = self.ledger.accounts[account_id]
            assert Bal(a.posted, a.pending, a.held) == balance, f"{op}: {account_id} is {a}, not {balance}"
        for account_id in set(self.destinations[:-1]) - set(expected.after):
            assert self._bal(account_id) == balances[account_id], f"{op} touched {account_id}"
        voided = {
            h
            for h, hold in self.ledger.holds.items()
            if hold.state is HoldState.VOIDED
            and h in before[1]
            and before[1][h].state is not HoldState.VOIDED
        }
        assert voided == expected.voided, f"{op} voided {voided}, not {expected.voided}"
        self._after(op, result, expected, before[0], lots)
        check_invariants(self.ledger)
        # The same key and request again: the first answer, and nothing changes.
        state = snapshot(self.ledger)
        assert invoke(self.ledger, key, op, self.now) == result, "a replay answered differently"
        assert snapshot(self.ledger) == state, "a replay changed state"
        self.calls.append(Call(key, op, result))
        return result

    def _after(self, op: Op, result, expected: Prediction, accounts: dict, lots: dict) -> None:
        """Lot-level checks and the test's own record of what it made."""
        ledger = self.ledger
        if op.kind == "earn":
            made = new_lots(accounts[op.target], ledger.accounts[op.target])
            posted = expected.after[op.target].posted
            pending = op.available_at is not None and op.available_at > self.now
            # A lot holds what is pending, or what the earn lifts the balance above zero.
            size = op.amount if pending else max(posted, 0) - max(posted - op.amount, 0)
            assert [(lot.remaining, lot.pending) for lot in made] == ([(size, pending)] if size else [])
            if made and op.expires_at is not None:
                assert made[0].expires_at == op.expires_at
            lot = made[0].lot_id if made else None
            self.entries[result] = EntryInfo(
                EntryType.EARN, op.amount, op.target, lot=lot, qualifying=op.qualifying
            )
            if op.qualifying:
                self._check_tier(op.target, op.amount)
        elif op.kind == "hold":
            self.holds.append(result)
        elif op.kind == "capture":
            hold = ledger.holds[op.target]
            amount = hold.amount if op.amount is None else op.amount
            assert (hold.state, hold.captured_amount) == (HoldState.CAPTURED, amount)
            restore = self._consumed(hold.account_id, lots)
            self.entries[result] = EntryInfo(EntryType.BURN, amount, hold.account_id, restore=restore)
        elif op.kind == "release":
            hold = ledger.holds[op.target]
            assert result is hold.state and hold.state in (
                HoldState.RELEASED,
                HoldState.EXPIRED,
                HoldState.VOIDED,
            )
        elif op.kind == "transfer":
            before = lots[op.target]
            restore = self._consumed(op.target, lots)
            destination = ledger.accounts[op.other]
            if destination.kind is AccountKind.CUSTOMER and accounts[op.other].posted >= 0 and before:
                taken = taken_from(before, ledger.accounts[op.target])
                by_lot = {lot.lot_id: lot.expires_at for lot in before}
                moved = Counter()
                for lot_id, amount in taken.items():
                    moved[by_lot[lot_id]] += amount
                arrived = Counter()
                for lot in new_lots(accounts[op.other], destination):
                    arrived[lot.expires_at] += lot.remaining
                assert arrived == moved, f"transferred points changed expiry: {moved} -> {arrived}"
            self.entries[result] = EntryInfo(
                EntryType.TRANSFER, op.amount, op.target, counter=op.other, restore=restore
            )
        elif op.kind == "reverse":
            info = self.entries[op.target]
            amount = info.amount - info.reversed if op.amount is None else op.amount
            info.reversed += amount
            assert ledger.entries[op.target].reversed_amount == info.reversed
            assert ledger.entries[result].plan.unrecovered == expected.unrecovered, "unrecovered differs"
            debited = {EntryType.EARN: info.account, EntryType.TRANSFER: info.counter}.get(info.kind)
            if expected.unrecovered and ledger.accounts[debited].kind is AccountKind.CUSTOMER:
                # Reported unrecovered only when the customer has nothing left it could come from.
                assert self._bal(debited).available <= 0, "unrecovered while points are available"
                assert not [
                    h
                    for h in ledger.holds.values()
                    if h.account_id == debited and h.state is HoldState.ACTIVE and self.now < h.expires_at
                ], "unrecovered while points are held"
            if info.kind is EntryType.EARN:
                self._consumed(info.account, lots, prefer=info.lot)
            elif info.kind is EntryType.TRANSFER and info.counter in lots:
                self._consumed(info.counter, lots)
            # Points that come back keep the latest expiry they were taken from.
            if info.kind is not EntryType.EARN and info.restore is not UNKNOWN:
                for lot in new_lots(accounts[info.account], ledger.accounts[info.account]):
                    assert lot.expires_at == info.restore, f"came back expiring {lot.expires_at}"
            self.entries[result] = EntryInfo(EntryType.REVERSAL)
            if info.kind is EntryType.EARN and info.qualifying:
                self._check_tier(info.account, -amount)

    def _check_tier(self, account_id: str, points: int) -> None:
        """A qualifying entry puts the account in the highest tier its qualifying points in the
        window reach."""
        self.qualifying.append((account_id, self.now, points))
        rules = self._rules(account_id)
        start = self.now - timedelta(days=rules.tier_window_days)
        total = sum(p for a, at, p in self.qualifying if a == account_id and at >= start)
        reached = [t for t in rules.tiers if total >= t.qualifying_points]
        best = max(reached, key=lambda t: t.qualifying_points).code if reached else ""
        assert self.ledger.tiers.get(account_id, "") == best, f"{account_id}: {total} points, tier {best}"

    def _consumed(self, account_id: str, lots: dict, prefer: str | None = None) -> object:
        """Check the lot order of what left `account_id`; the expiry to restore on reversal."""
        before = lots.get(account_id)
        if before is None:
            return UNKNOWN
        taken = check_lot_order(before, self.ledger.accounts[account_id], prefer)
        return latest_expiry(before, taken)

    # --- single operations ---

    @rule(data=st.data(), amount=earn_amounts, pending=pending_periods, expires=expiry_offsets)
    def earn(self, data, amount, pending, expires):
        account = self._customer(data)
        self._do(
            Op(
                "earn",
                account,
                amount,
                available_at=self.now + pending if pending else None,
                expires_at=self.now + expires if expires is not None else None,
                qualifying=data.draw(st.booleans(), label="qualifying"),
            )
        )

    @rule(data=st.data())
    def hold(self, data):
        account = self._customer(data, funded=True)
        amount = data.draw(near(self._bal(account).available), label="amount")
        ttl = data.draw(st.sampled_from([None, None, 30, 7200, 7 * 86_400]), label="ttl")
        self._do(Op("hold", account, amount, ttl=ttl))

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def capture(self, data):
        hold = self._hold_id(data)
        amount = data.draw(st.one_of(st.none(), near(self.ledger.holds[hold].amount)), label="amount")
        self._do(Op("capture", hold, amount))

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def release(self, data):
        self._do(Op("release", self._hold_id(data)))

    @precondition(lambda self: self.entries)
    @rule(data=st.data())
    def reverse(self, data):
        entry = self._entry_id(data)
        info = self.entries[entry]
        amount = data.draw(st.one_of(st.none(), near(info.amount - info.reversed)), label="amount")
        self._do(Op("reverse", entry, amount))

    @rule(data=st.data())
    def transfer(self, data):
        source = self._customer(data, funded=True)
        destination = self._destination(data, source)
        amount = data.draw(near(self._bal(source).available), label="amount")
        self._do(Op("transfer", source, amount, other=destination))

    @rule(data=st.data())
    def tick(self, data):
        self._advance(data)

    @rule()
    def expire(self):
        ledger, now = self.ledger, self.now
        before = {a: (self._bal(a), settled_lots(ledger.accounts[a], now)) for a in self.customers}
        expired = ledger.run_expiry(now)
        total = 0
        for account_id, (balance, lots) in before.items():
            after = ledger.accounts[account_id]
            assert after.held == balance.held and after.pending == balance.pending
            gone = balance.posted - after.posted
            assert gone >= 0, "an expiry run added points"
            total += gone
            assert after.available >= min(balance.available, 0), "expiry ate into held points"
            due = [lot for lot in after.lots if not lot.pending and lot.expires_at and lot.expires_at <= now]
            assert not due or after.available <= 0, f"{account_id}: due points left unexpired {due}"
            if lots is not None:
                taken = check_lot_order(lots, after)
                assert all(
                    lot.expires_at is not None and lot.expires_at <= now
                    for lot in lots
                    if lot.lot_id in taken
                ), "expired a lot that was not due"
                assert sum(taken.values()) == gone
        assert expired == total
        check_invariants(ledger)
        state = snapshot(ledger)
        assert ledger.run_expiry(now) == 0, "a second expiry run expired more"
        assert snapshot(ledger) == state, "a second expiry run changed something"

    # --- replays and key reuse ---

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def replay(self, data):
        call = data.draw(st.sampled_from(self.calls), label="call")
        state = snapshot(self.ledger)
        assert invoke(self.ledger, call.key, call.op, self.now) == call.result
        assert snapshot(self.ledger) == state, "a replay changed state"

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def reuse_key(self, data):
        call = data.draw(st.sampled_from(self.calls), label="call")
        if call.op.kind == "release" or data.draw(st.booleans(), label="other kind"):
            other = Op("earn", self.customers[0], 7)
        else:
            other = replace(call.op, amount=(call.op.amount or 0) + 1)
        if other == call.op:
            other = replace(other, amount=8)
        state = snapshot(self.ledger)
        try:
            invoke(self.ledger, call.key, other, self.now)
        except FailedPrecondition as error:
            assert error.reason is Reason.IDEMPOTENCY_KEY_REUSED, error.reason
        else:
            raise AssertionError("the same key with another request was accepted")
        assert snapshot(self.ledger) == state

    # --- the awkward transitions ---

    @precondition(lambda self: any(i.kind is EntryType.EARN for i in self.entries.values()))
    @rule(data=st.data())
    def hold_then_reverse_the_funding_earn(self, data):
        entry = self._entry_id(data, kinds=(EntryType.EARN,))
        info = self.entries[entry]
        if info.kind is not EntryType.EARN:
            return
        account = info.account
        hold = self._do(Op("hold", account, data.draw(near(self._bal(account).available), label="hold")))
        amount = data.draw(st.one_of(st.none(), near(info.amount - info.reversed)), label="reverse")
        self._do(Op("reverse", entry, amount))
        if hold is not None:
            kind = data.draw(st.sampled_from(["capture", "release", "none"]), label="then")
            if kind != "none":
                self._do(Op(kind, hold))

    @rule(data=st.data())
    def partial_capture_then_release(self, data):
        account = self._topped_up(data)
        hold = self._do(Op("hold", account, data.draw(near(self._bal(account).available), label="hold")))
        if hold is None:
            return
        size = self.ledger.holds[hold].amount
        amount = data.draw(st.one_of(st.integers(1, size), near(size)), label="capture")
        self._do(Op("capture", hold, amount))
        self._do(Op("release", hold))  # refused: it was captured

    @rule(data=st.data())
    def burn_then_reverse(self, data):
        account = self._topped_up(data)
        if data.draw(st.booleans(), label="another lot first"):
            expires = data.draw(st.sampled_from([HOUR, 3 * DAY, 20 * DAY]), label="expiring in")
            self._do(Op("earn", account, data.draw(st.integers(1, 40)), expires_at=self.now + expires))
        hold = self._do(Op("hold", account, data.draw(near(self._bal(account).available), label="hold")))
        if hold is None:
            return
        amount = data.draw(st.one_of(st.none(), near(self.ledger.holds[hold].amount)), label="capture")
        burn = self._do(Op("capture", hold, amount))
        if burn is None:
            return
        for _ in range(data.draw(st.integers(1, 2), label="reversals")):
            info = self.entries[burn]
            self._do(Op("reverse", burn, data.draw(st.one_of(st.none(), near(info.amount - info.reversed)))))

    @rule(data=st.data())
    def transfer_then_reverse(self, data):
        source = self._topped_up(data)
        program = self.ledger.account_program[source]
        peer = next(a for a in self.customers if a != source and self.ledger.account_program[a] == program)
        to_peer = data.draw(st.integers(0, 3), label="to the peer")
        destination = peer if to_peer else self._destination(data, source)
        amount = data.draw(near(self._bal(source).available), label="amount")
        entry = self._do(Op("transfer", source, amount, other=destination))
        if entry is None:
            return
        then = data.draw(
            st.sampled_from(["hold", "hold", "hold", "capture", "release", "pass on", "-"]), label="then"
        )
        if destination in self.customers and then != "-":
            available = self._bal(destination).available
            if then == "pass on":
                onward = self._destination(data, destination)
                self._do(Op("transfer", destination, data.draw(near(available)), other=onward))
            else:
                # Most telling: the hold leaves less available than the transfer brought.
                size = data.draw(
                    st.one_of(st.sampled_from([available, available - amount + 1]), near(available)),
                    label="hold",
                )
                hold = self._do(Op("hold", destination, max(size, 1)))
                if hold is not None and then != "hold":
                    self._do(Op(then, hold))
        self._do(Op("reverse", entry, data.draw(st.one_of(st.none(), near(amount)), label="reverse")))

    @rule(data=st.data(), amount=st.integers(1, 60), soon=st.sampled_from([HOUR, DAY]))
    def expiry_run_over_held_points(self, data, amount, soon):
        account = self._customer(data)
        self._do(Op("earn", account, amount, expires_at=self.now + soon))
        available = self._bal(account).available
        size = data.draw(near(available, available - amount + 1), label="hold")
        ttl = data.draw(st.sampled_from([None, 2 * int(soon.total_seconds())]), label="ttl")
        hold = self._do(Op("hold", account, size, ttl=ttl))
        self._advance(data, self.now + soon, offsets=(0, 0, 1, -1))
        self.expire()
        if hold is not None:
            kind = data.draw(st.sampled_from(["capture", "release"]), label="then")
            self._do(Op(kind, hold))

    @rule(data=st.data(), amount=st.integers(1, 60), period=st.sampled_from([HOUR, 2 * DAY]))
    def pending_points_mature_under_a_hold(self, data, amount, period):
        account = self._topped_up(data)
        earned = self._do(Op("earn", account, amount, available_at=self.now + period))
        hold = self._do(Op("hold", account, data.draw(near(self._bal(account).available), label="hold")))
        if data.draw(st.booleans(), label="reverse while pending") and earned is not None:
            self._do(Op("reverse", earned, data.draw(st.one_of(st.none(), near(amount)), label="part")))
        self._advance(data, self.now + period)
        then = data.draw(st.sampled_from(["hold", "reverse", "capture", "expire"]), label="then")
        if then == "hold":
            self._do(Op("hold", account, data.draw(near(self._bal(account).available), label="more")))
        elif then == "reverse" and earned is not None:
            self._do(Op("reverse", earned, None))
        elif then == "capture" and hold is not None:
            self._do(Op("capture", hold, None))
        else:
            self.expire()

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def at_the_hold_timeout(self, data):
        """A second before, on, or after a hold times out: capture it, release it, or use the
        account (the points it held must be free again exactly at its timeout)."""
        hold = self._hold_id(data)
        account = self.ledger.holds[hold].account_id
        self._advance(data, self.ledger.holds[hold].expires_at)
        then = data.draw(st.sampled_from(["capture", "release", "hold", "earn"]), label="then")
        if then == "capture":
            amount = data.draw(st.one_of(st.none(), near(self.ledger.holds[hold].amount)), label="amount")
            self._do(Op("capture", hold, amount))
        elif then == "release":
            self._do(Op("release", hold))
        elif then == "hold":
            self._do(Op("hold", account, data.draw(near(self._bal(account).available), label="more")))
        else:
            self._do(Op("earn", account, data.draw(st.integers(1, 20), label="earn")))

    @invariant()
    def invariants(self):
        if hasattr(self, "ledger"):
            check_invariants(self.ledger)


LedgerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLedgerProperties = LedgerMachine.TestCase
