"""What one unit of work changes, staged in memory so the repository writes it in one statement.

A use case locks the accounts it touches, asks the rules for plans and stages each one here: the
entry with its postings (running balances filled in), the balance deltas of customer accounts, the
lots consumed and created, the holds placed or settled, and the accounts whose tier follows the
change. The locked accounts are kept as they stand after what is staged, so the next plan of the
same unit sees the first one's effect, and answers need no read-back. Pure: ids come from `new_id`.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from loyalty_ledger.domain import rules
from loyalty_ledger.domain.model import Account, Entry, EntryType, Hold, NewLot, Plan, Posting, Program

# New lots sort after every stored one (their seq is the database's, given when they are written).
STAGED_SEQ = 2**62


@dataclass(frozen=True)
class StagedLot:
    lot_id: str
    account_id: str
    entry_id: str
    lot: NewLot


@dataclass
class Journal:
    now: datetime
    new_id: Callable[[], str]
    # The locked accounts, as they stand after what is staged.
    accounts: dict[str, Account] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    # (posted, pending, held) changes of customer accounts.
    deltas: dict[str, list[int]] = field(default_factory=dict)
    # lot id -> (remaining delta, matures)
    lot_updates: dict[str, tuple[int, bool]] = field(default_factory=dict)
    new_lots: list[StagedLot] = field(default_factory=list)
    new_holds: list[Hold] = field(default_factory=list)
    # hold id -> the hold as it ends up (state, captured amount, capture entry)
    changed_holds: dict[str, Hold] = field(default_factory=dict)
    # Accounts whose tier follows this unit, and the qualifying points it adds to their window.
    qualifying: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.entries or self.deltas or self.new_holds or self.changed_holds)

    def add(self, account: Account) -> Account:
        self.accounts[account.account_id] = account
        return account

    def post(self, plan: Plan, program: Program, **entry_fields) -> Entry:
        """Stage a planned entry. `entry_fields` are the Entry's own (amount, reason, source_ref,
        hold_id, subject/counter accounts, ...)."""
        entry_id = self.new_id()
        first_lot = None
        for effect in plan.effects:
            account = self.accounts.get(effect.account_id)
            if account is None or not account.is_customer:
                continue  # a system account: its balance is the sum of its postings
            lot_ids = [self.new_id() for _ in effect.new_lots]
            first_lot = first_lot or (lot_ids[0] if lot_ids else None)
            self.new_lots += [
                StagedLot(lot_id, account.account_id, entry_id, lot)
                for lot_id, lot in zip(lot_ids, effect.new_lots, strict=True)
            ]
            for update in effect.lot_updates:
                delta, mature = self.lot_updates.get(update.lot_id, (0, False))
                self.lot_updates[update.lot_id] = (delta + update.delta, mature or update.mature)
            self._move(account.account_id, effect.d_posted, effect.d_pending, effect.d_held)
            self.accounts[account.account_id] = rules.apply_effect(
                account, effect, lot_ids, STAGED_SEQ + len(self.new_lots)
            )
        self.change_holds(plan.voided_holds)
        entry = Entry(
            entry_id=entry_id,
            program_id=program.program_id,
            entry_type=plan.entry_type,
            asset_code=program.rules.asset_code,
            postings=tuple(self._with_balance(p) for p in plan.postings),
            created_at=self.now,
            unrecovered_amount=plan.unrecovered,
            restore_expires_at=plan.restore_expires_at,
            qualifying_delta=plan.qualifying_delta,
            lot_id=first_lot if plan.entry_type is EntryType.EARN else None,
            **entry_fields,
        )
        self.entries.append(entry)
        qualifying_account = entry.qualifying_account_id
        if program.rules.tiers and plan.qualifying_delta and qualifying_account:
            self.qualifying[qualifying_account] = (
                self.qualifying.get(qualifying_account, 0) + plan.qualifying_delta
            )
            self._move(qualifying_account, 0, 0, 0)  # its row gets the new tier
        return entry

    def place_hold(self, hold: Hold, d_held: int) -> None:
        self.new_holds.append(hold)
        self._move(hold.account_id, 0, 0, d_held)
        account = self.accounts[hold.account_id]
        self.accounts[hold.account_id] = replace(account, held=account.held + d_held)

    def change_holds(self, holds: Iterable[Hold]) -> None:
        """Holds that end (released, timed out, voided, captured), as they end. What they held is
        released by the plan that ended them (captures, voids) or by `release`."""
        for hold in holds:
            self.changed_holds[hold.hold_id] = hold

    def release(self, account_id: str, amount: int) -> None:
        """Held points stop being held (a release or a timeout)."""
        self._move(account_id, 0, 0, -amount)
        account = self.accounts[account_id]
        self.accounts[account_id] = replace(account, held=account.held - amount)

    def set_tier(self, account_id: str, tier_code: str) -> None:
        self.accounts[account_id] = replace(self.accounts[account_id], tier_code=tier_code)

    def written(self) -> None:
        """What was staged is stored now; the accounts stay as they stand."""
        self.entries = []
        self.deltas = {}
        self.lot_updates = {}
        self.new_lots = []
        self.new_holds = []
        self.changed_holds = {}
        self.qualifying = {}

    def _move(self, account_id: str, posted: int, pending: int, held: int) -> None:
        delta = self.deltas.setdefault(account_id, [0, 0, 0])
        delta[0] += posted
        delta[1] += pending
        delta[2] += held

    def _with_balance(self, posting: Posting) -> Posting:
        account = self.accounts.get(posting.account_id)
        if account is None or not account.is_customer:
            return posting
        return replace(posting, balance_after=account.posted + account.pending)
