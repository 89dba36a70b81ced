"""The reference model: the whole ledger in memory, driven by the same rules as the repository.

It is the executable specification the property tests hunt through (and a fake for callers' unit
tests). State changes are all-or-nothing: a call that raises leaves nothing behind.
"""

import itertools
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from loyalty_ledger.domain import rules as r
from loyalty_ledger.domain.model import (
    SYSTEM_KINDS,
    Account,
    AccountKind,
    Bucket,
    EntryType,
    Hold,
    HoldState,
    Plan,
    Posting,
    ProgramRules,
    ReversibleEntry,
)
from loyalty_runtime.errors import FailedPrecondition, NotFound, Reason


@dataclass
class MemoryEntry:
    entry_id: str
    entry_type: EntryType
    program_id: str
    postings: tuple[Posting, ...]
    created_at: datetime
    plan: Plan
    reversed_amount: int = 0
    reverses: str | None = None
    hold_id: str | None = None
    lot_id: str | None = None
    qualifying_account: str | None = None


@dataclass
class MemoryLedger:
    programs: dict[str, ProgramRules] = field(default_factory=dict)
    system: dict[str, dict[AccountKind, str]] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)
    account_program: dict[str, str] = field(default_factory=dict)
    entries: dict[str, MemoryEntry] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    idempotency: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    tiers: dict[str, str] = field(default_factory=dict)
    _ids: Any = field(default_factory=itertools.count)

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    # --- idempotency: same key + same request -> first result; different request -> refused ---

    def _once(self, key: str, fingerprint: Any, action):
        r.require_idempotency_key(key)
        if key in self.idempotency:
            stored_fingerprint, result = self.idempotency[key]
            if stored_fingerprint != fingerprint:
                raise FailedPrecondition(
                    Reason.IDEMPOTENCY_KEY_REUSED, "idempotency key used for a different request"
                )
            return result
        snapshot = (dict(self.accounts), dict(self.entries), dict(self.holds), dict(self.tiers))
        try:
            result = action()
        except Exception:
            self.accounts, self.entries, self.holds, self.tiers = snapshot
            raise
        self.idempotency[key] = (fingerprint, result)
        return result

    # --- setup ---

    def create_program(self, rules: ProgramRules) -> str:
        r.validate_rules(rules)
        program_id = self._id("p")
        self.programs[program_id] = rules
        self.system[program_id] = {}
        for kind in SYSTEM_KINDS:
            account_id = self._id("s")
            self.accounts[account_id] = Account(account_id, kind, program_id=program_id)
            self.account_program[account_id] = program_id
            self.system[program_id][kind] = account_id
        return program_id

    def open_account(self, program_id: str) -> str:
        if program_id not in self.programs:
            raise NotFound(Reason.PROGRAM_NOT_FOUND, "program not found", field="program_id")
        account_id = self._id("a")
        self.accounts[account_id] = Account(account_id, AccountKind.CUSTOMER, program_id=program_id)
        self.account_program[account_id] = program_id
        return account_id

    # --- internals ---

    def _account(self, account_id: str, now: datetime) -> Account:
        if account_id not in self.accounts:
            raise NotFound(Reason.ACCOUNT_NOT_FOUND, "account not found", field="account_id")
        self._housekeep(account_id, now)
        return self.accounts[account_id]

    def _housekeep(self, account_id: str, now: datetime) -> None:
        """What the repository does right after locking an account: void timed-out holds, mature
        pending points whose time has come."""
        account = self.accounts[account_id]
        live = [h for h in self.holds.values() if h.account_id == account_id]
        for hold in r.plan_void_expired_holds(live, now):
            self.holds[hold.hold_id] = hold
            account = replace(account, held=account.held - hold.amount)
        self.accounts[account_id] = account
        plan = r.plan_maturation(account, now)
        if plan is not None:
            self._post(self.account_program[account_id], plan, now)

    def _system(self, program_id: str, kind: AccountKind) -> Account:
        return self.accounts[self.system[program_id][kind]]

    def _post(self, program_id: str, plan: Plan, now: datetime, **extra) -> MemoryEntry:
        entry_id = self._id("e")
        first_lot = None
        for effect in plan.effects:
            lot_ids = [self._id("l") for _ in effect.new_lots]
            first_lot = first_lot or (lot_ids[0] if lot_ids else None)
            self.accounts[effect.account_id] = r.apply_effect(
                self.accounts[effect.account_id], effect, lot_ids, int(lot_ids[0][1:]) if lot_ids else 0
            )
        entry = MemoryEntry(entry_id, plan.entry_type, program_id, plan.postings, now, plan, **extra)
        if plan.entry_type is EntryType.EARN:
            entry.lot_id = first_lot
        self.entries[entry_id] = entry
        return entry

    def _recompute_tier(self, account_id: str, now: datetime) -> None:
        rules = self.programs[self.account_program[account_id]]
        start = r.tier_window_start(rules, now)
        qualifying = sum(
            e.plan.qualifying_delta
            for e in self.entries.values()
            if e.qualifying_account == account_id and e.created_at >= start
        )
        tier = r.tier_for(rules.tiers, qualifying)
        self.tiers[account_id] = tier.code if tier else ""

    # --- operations ---

    def earn(
        self,
        key: str,
        account_id: str,
        amount: int,
        now: datetime,
        *,
        available_at=None,
        expires_at=None,
        qualifying: bool = True,
    ) -> str:
        def action():
            account = self._account(account_id, now)
            program_id = self.account_program[account_id]
            plan = r.plan_earn(
                account,
                self._system(program_id, AccountKind.ISSUANCE),
                amount,
                self.programs[program_id],
                now,
                available_at=available_at,
                expires_at=expires_at,
                qualifying=qualifying,
            )
            entry = self._post(program_id, plan, now, qualifying_account=account_id)
            if plan.qualifying_delta:  # tiers follow qualifying entries only, as the repository does
                self._recompute_tier(account_id, now)
            return entry.entry_id

        return self._once(key, ("earn", account_id, amount, available_at, expires_at, qualifying), action)

    def hold(
        self, key: str, account_id: str, amount: int, now: datetime, ttl_seconds: int | None = None
    ) -> str:
        def action():
            account = self._account(account_id, now)
            rules = self.programs[self.account_program[account_id]]
            effect = r.plan_hold(account, amount, rules)
            ttl = r.hold_ttl(rules, ttl_seconds)
            hold_id = self._id("h")
            hold = Hold(hold_id, account_id, amount, now + timedelta(seconds=ttl), seq=int(hold_id[1:]))
            self.accounts[account_id] = r.apply_effect(account, effect, (), 0)
            self.holds[hold.hold_id] = hold
            return hold.hold_id

        return self._once(key, ("hold", account_id, amount, ttl_seconds), action)

    def _hold(self, hold_id: str) -> Hold:
        if hold_id not in self.holds:
            raise NotFound(Reason.HOLD_NOT_FOUND, "hold not found", field="hold_id")
        return self.holds[hold_id]

    def capture(self, key: str, hold_id: str, amount: int | None, now: datetime) -> str:
        def action():
            hold = self._hold(hold_id)
            account = self._account(hold.account_id, now)
            hold = self.holds[hold_id]
            program_id = self.account_program[hold.account_id]
            plan, captured = r.plan_capture(
                account, self._system(program_id, AccountKind.REDEMPTION), hold, amount, now
            )
            entry = self._post(program_id, plan, now, hold_id=hold_id)
            self.holds[hold_id] = captured
            return entry.entry_id

        return self._once(key, ("capture", hold_id, amount), action)

    def release(self, key: str, hold_id: str, now: datetime) -> HoldState:
        def action():
            hold = self._hold(hold_id)
            self._account(hold.account_id, now)
            effect, released = r.plan_release(self.holds[hold_id], now)
            if effect is not None:
                self.accounts[hold.account_id] = r.apply_effect(self.accounts[hold.account_id], effect, (), 0)
            self.holds[hold_id] = released
            return released.state

        return self._once(key, ("release", hold_id), action)

    def transfer(self, key: str, source_id: str, destination_id: str, amount: int, now: datetime) -> str:
        def action():
            source = self._account(source_id, now)
            destination = self._account(destination_id, now)
            program_id = self.account_program[source_id]
            r.require_same_program(program_id, self.account_program[destination_id])
            plan = r.plan_transfer(source, destination, amount, self.programs[program_id], now)
            return self._post(program_id, plan, now).entry_id

        return self._once(key, ("transfer", source_id, destination_id, amount), action)

    def reverse(self, key: str, entry_id: str, amount: int | None, now: datetime) -> str:
        def action():
            if entry_id not in self.entries:
                raise NotFound(Reason.ENTRY_NOT_FOUND, "entry not found", field="entry_id")
            original = self.entries[entry_id]
            program_id = original.program_id
            customers = [
                p.account_id
                for p in original.postings
                if self.accounts[p.account_id].kind is AccountKind.CUSTOMER
            ]
            accounts = {a: self._account(a, now) for a in customers}
            for a in self.system[program_id].values():
                accounts.setdefault(a, self.accounts[a])
            reversible = ReversibleEntry(
                entry_id,
                original.entry_type,
                amount=sum(p.amount for p in original.postings if p.amount > 0),
                reversed_amount=original.reversed_amount,
                account_id=self._reversal_subject(original),
                counter_account_id=(
                    next((p.account_id for p in original.postings if p.amount > 0), None)
                    if original.entry_type is EntryType.TRANSFER
                    else None
                ),
                lot_id=original.lot_id,
                qualifying=original.plan.qualifying_delta > 0,
                restore_expires_at=original.plan.restore_expires_at,
            )
            plan = r.plan_reversal(
                reversible,
                amount,
                accounts,
                {k: self.accounts[v] for k, v in self.system[program_id].items()},
                self.programs[program_id],
                [h for h in self.holds.values() if h.account_id in accounts and h.state is HoldState.ACTIVE],
            )
            for voided in plan.voided_holds:
                self.holds[voided.hold_id] = voided
            entry = self._post(
                program_id, plan, now, reverses=entry_id, qualifying_account=original.qualifying_account
            )
            self.entries[entry_id] = replace(
                original, reversed_amount=original.reversed_amount + plan.reversed_amount
            )
            if plan.qualifying_delta:
                self._recompute_tier(reversible.account_id, now)
            return entry.entry_id

        return self._once(key, ("reverse", entry_id, amount), action)

    def _reversal_subject(self, entry: MemoryEntry) -> str:
        if entry.entry_type is EntryType.EARN:
            return next((p.account_id for p in entry.postings if p.amount > 0), "")
        return next((p.account_id for p in entry.postings if p.amount < 0), "")

    def run_expiry(self, now: datetime) -> int:
        """Expire due lots on every account (idempotent: a second run at the same time does nothing)."""
        expired = 0
        for account_id, account in list(self.accounts.items()):
            if account.kind is not AccountKind.CUSTOMER:
                continue
            account = self._account(account_id, now)
            program_id = self.account_program[account_id]
            plan, _ = r.plan_expiry(account, self._system(program_id, AccountKind.EXPIRY), now)
            if plan is not None:
                self._post(program_id, plan, now)
                expired += plan.postings[1].amount
        return expired

    # --- what must always hold ---

    def check_invariants(self) -> None:
        sums: dict[tuple[str, Bucket], int] = defaultdict(int)
        per_program: dict[str, int] = defaultdict(int)
        for entry in self.entries.values():
            assert sum(p.amount for p in entry.postings) == 0, f"entry {entry.entry_id} does not balance"
            for posting in entry.postings:
                sums[(posting.account_id, posting.bucket)] += posting.amount
                per_program[entry.program_id] += posting.amount
        assert all(v == 0 for v in per_program.values())
        held: dict[str, int] = defaultdict(int)
        for hold in self.holds.values():
            assert 0 <= hold.captured_amount <= hold.amount
            if hold.state is HoldState.ACTIVE:
                held[hold.account_id] += hold.amount
        for account_id, account in self.accounts.items():
            assert account.posted == sums[(account_id, Bucket.POSTED)], f"{account_id} posted drifted"
            assert account.pending == sums[(account_id, Bucket.PENDING)], f"{account_id} pending drifted"
            assert account.held == held[account_id], f"{account_id} held drifted"
            if account.kind is not AccountKind.CUSTOMER:
                assert not account.lots and account.held == 0
                continue
            assert account.pending >= 0 and account.held >= 0
            if not self.programs[self.account_program[account_id]].allow_overdraft:
                assert account.posted >= 0 and account.available >= 0, f"{account_id} overdrawn"
            assert all(lot.remaining > 0 for lot in account.lots)
            assert sum(lot.remaining for lot in account.lots if not lot.pending) == max(account.posted, 0)
            assert sum(lot.remaining for lot in account.lots if lot.pending) == account.pending
