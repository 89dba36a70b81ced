"""PostgreSQL side of the ledger. Every change runs in one transaction that:

1. claims the idempotency key (a replay returns the first answer),
2. locks the customer account rows it touches (`SELECT ... FOR UPDATE`, in account-id order),
3. voids timed-out holds and matures due pending points of those accounts,
4. asks the domain for a plan and writes it in one statement (`sql.POST_ENTRY`): the entry, its
   postings, lot and balance changes and its outbox event,
5. remembers the answer.

So an earn is four statements (claim, lock, post, remember), a hold four and a capture six (the
hold's row and the lots it consumes are read too): Python's cost per statement, not PostgreSQL's, is
what limits. The repository reads what the rule at hand needs and no more: balances always, lots only
for a debit and then only the earliest-expiring ones that cover it.

Concurrency correctness comes from the row lock: two burns on one account run one after the other,
each seeing the other's result, and everything read after the lock is current. Every query filters
by the caller's tenant; another tenant's row is simply not found.
"""

import json
import uuid
from collections.abc import Awaitable, Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf.message import Message
from opentelemetry import propagate
from sqlalchemy import ColumnElement, Table, TextClause, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty_ledger import sql
from loyalty_ledger.domain import rules as r
from loyalty_ledger.domain.model import (
    SYSTEM_KINDS,
    AccountKind,
    AccountState,
    EntryType,
    ExpiryPolicy,
    ExpiryRule,
    Hold as DomainHold,
    HoldState,
    Lot as DomainLot,
    NewLot,
    Plan,
    ProgramRules,
    ReversibleEntry,
    Tier,
)
from loyalty_ledger.models import (
    Account,
    Hold,
    JournalEntry,
    Lot,
    Posting,
    Program,
    idempotency_keys,
    outbox,
)
from loyalty_runtime.context import CallContext, bind_call, current_tenant, unbind_call
from loyalty_runtime.db import Database
from loyalty_runtime.errors import Aborted, NotFound
from loyalty_runtime.events import record_event
from loyalty_runtime.idempotency import claim, remember

ResponseT = TypeVar("ResponseT", bound=Message)

ACCOUNTS: Table = Account.__table__
HOLDS: Table = Hold.__table__
ENTRIES: Table = JournalEntry.__table__
POSTINGS: Table = Posting.__table__
LOTS: Table = Lot.__table__

# Lots read for a debit at first: a burn rarely spans more. Should they not cover it, all are read.
FIRST_LOTS = 16


def _new_id() -> str:
    return str(uuid.uuid4())


def _utcnow() -> datetime:
    return datetime.now(UTC)


def rules_of(program: Program) -> ProgramRules:
    return ProgramRules(
        asset_kind=program.asset_kind,
        asset_code=program.asset_code,
        allow_overdraft=program.allow_overdraft,
        expiry_policy=ExpiryPolicy(ExpiryRule(program.expiry_rule), program.expiry_months),
        default_hold_ttl_seconds=program.default_hold_ttl_seconds,
        tiers=tuple(Tier(**t) for t in program.tiers),
        tier_window_days=program.tier_window_days,
    )


# --- rows as the servicer sees them ---------------------------------------------------------------


@dataclass(slots=True)
class AccountRecord:
    """A row of `ledger.accounts`. Once locked, the repository keeps its balances in step with what it
    writes, so answers need no read-back."""

    account_id: str
    program_id: str
    customer_id: str | None
    kind: str
    posted: int
    pending: int
    held: int
    tier_code: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class HoldRecord:
    hold_id: str
    account_id: str
    amount: int
    captured_amount: int
    state: str
    expires_at: datetime
    reason: str
    source_ref: str
    capture_entry_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EntryRecord:
    entry_id: str
    program_id: str
    entry_type: str
    asset_code: str
    amount: int
    reversed_amount: int
    unrecovered_amount: int
    reason: str
    source_ref: str
    idempotency_key: str | None
    reversed_entry_id: str | None
    hold_id: str | None
    subject_account_id: str | None
    counter_account_id: str | None
    lot_id: str | None
    restore_expires_at: datetime | None
    qualifying_account_id: str | None
    qualifying_delta: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PostingRecord:
    account_id: str
    amount: int
    bucket: str


@dataclass(frozen=True, slots=True)
class EntryEvent:
    """The event an entry publishes through the outbox; `post` adds the entry's id to the payload."""

    event_type: str
    key: str
    payload: dict


def _columns(table: Table, record: type) -> list[ColumnElement]:
    """The table's columns a record holds, in the record's order."""
    return [table.c[f.name] for f in fields(record)]


def _domain_hold(hold: HoldRecord) -> DomainHold:
    return DomainHold(
        hold.hold_id,
        hold.account_id,
        hold.amount,
        hold.expires_at,
        HoldState(hold.state),
        hold.captured_amount,
    )


@dataclass
class ProgramView:
    program: Program
    rules: ProgramRules
    system: dict[AccountKind, str]


@dataclass
class EntryView:
    entry: EntryRecord
    postings: list[PostingRecord]


@dataclass
class Posted:
    view: EntryView
    # Tier-qualifying points in the programme's window, this entry included; None unless the
    # programme has tiers and the entry changes them.
    qualifying: int | None


@dataclass
class AccountView:
    account: AccountRecord
    # Earliest first: (expires_at, amount). Filled for GetAccount only.
    expiring: list[tuple[datetime, int]] = field(default_factory=list)


@dataclass
class RunResult:
    expired_points: int = 0
    expired_lots: int = 0
    voided_holds: int = 0
    matured_points: int = 0
    run_time: datetime = field(default_factory=_utcnow)


def _map_db_error(error: DBAPIError) -> Exception:
    code = getattr(getattr(error, "orig", None), "sqlstate", None) or getattr(
        getattr(getattr(error, "orig", None), "__cause__", None), "sqlstate", None
    )
    if code in ("40001", "40P01"):
        return Aborted("CONCURRENT_MODIFICATION", "concurrent modification; retry with the same key")
    return error


class LedgerTx:
    """One transaction's view of the ledger (one session, one tenant, one `now`)."""

    def __init__(
        self, repo: "LedgerRepository", session: AsyncSession, now: datetime, key: str | None
    ) -> None:
        self.repo = repo
        self.session = session
        self.tenant = current_tenant()
        self.now = now
        self.key = key
        self.locked: dict[str, AccountRecord] = {}

    async def _rows(self, statement: TextClause, **params) -> Sequence:
        return (await self.session.execute(statement, params)).all()

    # --- programmes and accounts ---

    async def create_program(self, display_name: str, rules: ProgramRules) -> ProgramView:
        r.validate_rules(rules)
        program = Program(
            program_id=_new_id(),
            tenant_id=self.tenant,
            display_name=display_name,
            asset_kind=rules.asset_kind.value,
            asset_code=rules.asset_code,
            allow_overdraft=rules.allow_overdraft,
            expiry_rule=rules.expiry_policy.rule.value,
            expiry_months=rules.expiry_policy.months,
            default_hold_ttl_seconds=rules.default_hold_ttl_seconds,
            tier_window_days=rules.tier_window_days,
            tiers=[t.__dict__ for t in rules.tiers],
            created_at=self.now,
        )
        self.session.add(program)
        await self.session.flush()
        system = {kind: _new_id() for kind in SYSTEM_KINDS}
        await self.session.execute(
            insert(ACCOUNTS),
            [
                {
                    "account_id": account_id,
                    "tenant_id": self.tenant,
                    "program_id": program.program_id,
                    "customer_id": None,
                    "kind": kind.value,
                    "posted": 0,
                    "pending": 0,
                    "held": 0,
                    "tier_code": "",
                    "created_at": self.now,
                }
                for kind, account_id in system.items()
            ],
        )
        return ProgramView(program, rules, system)

    async def program(self, program_id: str) -> ProgramView:
        return await self.repo.program(self.session, self.tenant, program_id)

    async def open_account(self, program_id: str, customer_id: str) -> tuple[AccountView, bool]:
        r.require_id(customer_id, "customer_id")
        await self.program(program_id)
        columns = _columns(ACCOUNTS, AccountRecord)
        inserted = (
            await self.session.execute(
                pg_insert(ACCOUNTS)
                .values(
                    account_id=_new_id(),
                    tenant_id=self.tenant,
                    program_id=program_id,
                    customer_id=customer_id,
                    kind=AccountKind.CUSTOMER.value,
                    posted=0,
                    pending=0,
                    held=0,
                    tier_code="",
                    created_at=self.now,
                )
                .on_conflict_do_nothing(
                    index_elements=["tenant_id", "program_id", "customer_id"],
                    index_where=ACCOUNTS.c.customer_id.is_not(None),
                )
                .returning(*columns)
            )
        ).first()
        if inserted is not None:
            return AccountView(AccountRecord(**inserted._mapping)), True
        existing = (
            await self.session.execute(
                select(*columns).where(
                    ACCOUNTS.c.tenant_id == self.tenant,
                    ACCOUNTS.c.program_id == program_id,
                    ACCOUNTS.c.customer_id == customer_id,
                )
            )
        ).one()
        return AccountView(AccountRecord(**existing._mapping)), False

    # --- locking and housekeeping ---

    async def lock(self, *account_ids: str) -> list[AccountRecord]:
        """Lock accounts in id order (no deadlocks between transfers), then tidy them up."""
        wanted = sorted(set(account_ids) - set(self.locked))
        if wanted:
            rows = await self._rows(sql.LOCK_ACCOUNTS, tenant_id=self.tenant, account_ids=wanted)
            if len(rows) != len(wanted):
                raise NotFound("ACCOUNT_NOT_FOUND", "account not found", field="account_id")
            for row in rows:
                account = self.locked[row.account_id] = AccountRecord(**row._mapping)
                await self._housekeep(account)
        return [self.locked[a] for a in account_ids]

    async def _locked_hold(self, hold_id: str) -> tuple[HoldRecord, AccountRecord]:
        """Lock the hold's account, tidy it up, and return the hold as it is then."""
        row = (
            await self.session.execute(
                sql.LOCK_ACCOUNT_OF_HOLD, {"tenant_id": self.tenant, "hold_id": hold_id}
            )
        ).first()
        if row is None:
            raise NotFound("HOLD_NOT_FOUND", "hold not found", field="hold_id")
        account = self.locked[row.account_id] = AccountRecord(**row._mapping)
        _, hold = await self._housekeep(account, settling=hold_id)
        return hold, account

    async def _housekeep(
        self, account: AccountRecord, settling: str | None = None
    ) -> tuple[RunResult, HoldRecord | None]:
        """Void the account's timed-out holds and mature its due pending points. The account's holds
        are read only when it holds points, together with the hold `settling` names, which is
        returned as it stands after the voiding."""
        result = RunResult(run_time=self.now)
        settled = None
        if account.held > 0 or settling:
            holds = [
                HoldRecord(**row._mapping)
                for row in await self._rows(
                    sql.ACCOUNT_HOLDS, account_id=account.account_id, hold_id=settling
                )
            ]
            voided = r.plan_void_expired_holds(map(_domain_hold, holds), self.now)
            if voided:
                await self._end_holds(account, voided, HoldState.EXPIRED)
                result.voided_holds = len(voided)
            states = {h.hold_id: h.state.value for h in voided}
            settled = next(
                (replace(h, state=states.get(h.hold_id, h.state)) for h in holds if h.hold_id == settling),
                None,
            )
        if account.pending > 0:
            plan = r.plan_maturation(
                await self._state_with_lots(account, sql.MATURING_LOTS, now=self.now), self.now
            )
            if plan is not None:
                await self.post(plan, await self.program(account.program_id), reason="matured")
                result.matured_points = plan.effects[0].d_posted
        return result, settled

    async def _end_holds(self, account: AccountRecord, ended: Sequence[DomainHold], state: HoldState) -> None:
        released = sum(h.amount for h in ended)
        await self.session.execute(
            sql.END_HOLDS,
            {
                "state": state.value,
                "hold_ids": [h.hold_id for h in ended],
                "released": released,
                "account_id": account.account_id,
            },
        )
        account.held -= released

    # --- what the domain sees of a locked account ---

    @staticmethod
    def _state(account: AccountRecord, lots: Iterable[DomainLot] = ()) -> AccountState:
        kind = AccountKind(account.kind)
        if kind is not AccountKind.CUSTOMER:
            return AccountState(account.account_id, kind)  # balance: the sum of its postings
        return AccountState(
            account.account_id, kind, account.posted, account.pending, account.held, tuple(lots)
        )

    async def _lots(self, statement: TextClause, account: AccountRecord, **params) -> list[DomainLot]:
        rows = await self._rows(statement, account_id=account.account_id, **params)
        return [DomainLot(**row._mapping) for row in rows]

    async def _state_with_lots(self, account: AccountRecord, statement: TextClause, **params) -> AccountState:
        if account.kind != AccountKind.CUSTOMER.value:
            return self._state(account)
        return self._state(account, await self._lots(statement, account, **params))

    async def _state_to_debit(
        self, account: AccountRecord, amount: int, prefer: str | None = None
    ) -> AccountState:
        """With the earliest-expiring spendable lots that cover `amount` (a debit of `amount` consumes
        no more, in this order) and the lot `prefer` names, pending or not."""
        if account.kind != AccountKind.CUSTOMER.value:
            return self._state(account)
        lots = await self._lots(sql.SPENDABLE_LOTS, account, limit=FIRST_LOTS)
        if len(lots) == FIRST_LOTS and sum(lot.remaining for lot in lots) < amount:
            lots = await self._lots(sql.SPENDABLE_LOTS, account, limit=None)
        if prefer and all(lot.lot_id != prefer for lot in lots):
            lots += await self._lots(sql.LOT, account, lot_id=prefer)
        return self._state(account, lots)

    # --- writing a plan ---

    async def post(
        self,
        plan: Plan,
        program: ProgramView,
        *,
        amount: int = 0,
        reason: str = "",
        source_ref: str = "",
        hold_id: str | None = None,
        captured_amount: int | None = None,
        reversed_entry_id: str | None = None,
        reversal_amount: int | None = None,
        subject_account_id: str | None = None,
        counter_account_id: str | None = None,
        qualifying_account_id: str | None = None,
        event: EntryEvent | None = None,
    ) -> Posted:
        """Write a planned entry in one statement: the entry, its postings, lots and customer balances,
        the hold it captures or the entry it reverses, and its event."""
        deltas = self._customer_deltas(plan)
        balances_after = {
            account_id: tuple(now + d for now, d in zip(self._balances(account_id), delta, strict=True))
            for account_id, delta in deltas.items()
        }
        lot_updates, new_lots = self._lot_changes(plan, deltas)
        entry = EntryRecord(
            entry_id=_new_id(),
            program_id=program.program.program_id,
            entry_type=plan.entry_type.value,
            asset_code=program.rules.asset_code,
            amount=amount,
            reversed_amount=0,
            unrecovered_amount=plan.unrecovered,
            reason=reason,
            source_ref=source_ref,
            idempotency_key=self.key if plan.entry_type is not EntryType.MATURATION else None,
            reversed_entry_id=reversed_entry_id,
            hold_id=hold_id,
            subject_account_id=subject_account_id,
            counter_account_id=counter_account_id,
            lot_id=new_lots[0][0] if new_lots and plan.entry_type is EntryType.EARN else None,
            restore_expires_at=plan.restore_expires_at,
            qualifying_account_id=qualifying_account_id,
            qualifying_delta=plan.qualifying_delta,
            created_at=self.now,
        )
        postings = [PostingRecord(p.account_id, p.amount, p.bucket.value) for p in plan.postings]
        # Tiers follow each entry that changes qualifying points; the statement sums the window.
        window_account = qualifying_account_id if program.rules.tiers and plan.qualifying_delta else None
        qualifying = (
            await self.session.execute(
                sql.POST_ENTRY,
                {
                    **{f.name: getattr(entry, f.name) for f in fields(EntryRecord)},
                    "tenant_id": self.tenant,
                    "posting_accounts": [p.account_id for p in postings],
                    "posting_amounts": [p.amount for p in postings],
                    "posting_buckets": [p.bucket for p in postings],
                    # Statement running balance: posted + pending of a customer account after the entry.
                    "posting_balances": [
                        sum(balances_after[p.account_id][:2]) if p.account_id in balances_after else None
                        for p in postings
                    ],
                    "balance_accounts": list(deltas),
                    **{
                        f"balance_{part}": [delta[i] for delta in deltas.values()]
                        for i, part in enumerate(("posted", "pending", "held"))
                    },
                    "lot_update_ids": list(lot_updates),
                    "lot_update_deltas": [delta for delta, _ in lot_updates.values()],
                    "lot_update_matures": [mature for _, mature in lot_updates.values()],
                    **self._new_lot_params(new_lots),
                    "captured_amount": captured_amount,
                    "reversal_amount": reversal_amount,
                    "window_account_id": window_account,
                    "window_start": r.tier_window_start(program.rules, self.now),
                    **self._event_params(event, entry.entry_id),
                },
            )
        ).scalar_one()
        for account_id, (posted, pending, held) in balances_after.items():
            account = self.locked[account_id]
            account.posted, account.pending, account.held = posted, pending, held
        return Posted(
            EntryView(entry, postings), int(qualifying) + plan.qualifying_delta if window_account else None
        )

    def _customer_deltas(self, plan: Plan) -> dict[str, tuple[int, int, int]]:
        """(posted, pending, held) changes of each locked customer account the plan touches."""
        deltas: dict[str, tuple[int, int, int]] = {}
        for effect in plan.effects:
            account = self.locked.get(effect.account_id)
            if account is None or account.kind != AccountKind.CUSTOMER.value:
                continue  # system accounts: balance is the sum of their postings
            posted, pending, held = deltas.get(effect.account_id, (0, 0, 0))
            deltas[effect.account_id] = (
                posted + effect.d_posted,
                pending + effect.d_pending,
                held + effect.d_held,
            )
        return deltas

    def _balances(self, account_id: str) -> tuple[int, int, int]:
        account = self.locked[account_id]
        return account.posted, account.pending, account.held

    @staticmethod
    def _lot_changes(
        plan: Plan, customers: Container[str]
    ) -> tuple[dict[str, tuple[int, bool]], list[tuple[str, str, NewLot]]]:
        """Changes to existing lots, one per lot (an UPDATE ... FROM applies one match only), and the
        new lots with their ids and accounts, in plan order."""
        updates: dict[str, tuple[int, bool]] = {}
        new_lots: list[tuple[str, str, NewLot]] = []
        for effect in (e for e in plan.effects if e.account_id in customers):
            for change in effect.lot_updates:
                delta, mature = updates.get(change.lot_id, (0, False))
                updates[change.lot_id] = (delta + change.delta, mature or change.mature)
            new_lots += [(_new_id(), effect.account_id, lot) for lot in effect.new_lots]
        return updates, new_lots

    @staticmethod
    def _new_lot_params(new_lots: Sequence[tuple[str, str, NewLot]]) -> dict[str, list]:
        return {
            "new_lot_ids": [lot_id for lot_id, _, _ in new_lots],
            "new_lot_accounts": [account_id for _, account_id, _ in new_lots],
            "new_lot_amounts": [lot.amount for _, _, lot in new_lots],
            "new_lot_expiries": [lot.expires_at for _, _, lot in new_lots],
            "new_lot_pendings": [lot.pending for _, _, lot in new_lots],
            "new_lot_availables": [lot.available_at for _, _, lot in new_lots],
        }

    def _event_params(self, event: EntryEvent | None, entry_id: str) -> dict[str, str | None]:
        if event is None:
            return dict.fromkeys(("event_type", "event_key", "event_payload", "event_trace_context"))
        # The row `record_event` writes, trace context included, so the trace follows the event.
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return {
            "event_type": event.event_type,
            "event_key": event.key,
            "event_payload": json.dumps({"entry_id": entry_id, **event.payload}),
            "event_trace_context": json.dumps(carrier),
        }

    async def _tier(self, account: AccountRecord, rules: ProgramRules, qualifying: int) -> None:
        tier = r.tier_for(rules.tiers, qualifying)
        await self._set_tier(account.account_id, account.tier_code, tier, qualifying)
        account.tier_code = tier.code if tier else ""

    async def _set_tier(self, account_id: str, old: str, tier: Tier | None, qualifying: int) -> bool:
        new = tier.code if tier else ""
        if new == old:
            return False
        changed = await self.session.execute(
            update(ACCOUNTS)
            .where(ACCOUNTS.c.account_id == account_id, ACCOUNTS.c.tier_code == old)
            .values(tier_code=new)
            .returning(ACCOUNTS.c.account_id)
        )
        if changed.first() is None:
            return False
        await record_event(
            self.session,
            outbox,
            "tier.changed",
            account_id,
            {
                "account_id": account_id,
                "from_tier": old,
                "to_tier": new,
                "qualifying_points": int(qualifying),
            },
        )
        return True

    # --- operations ---

    async def earn(
        self,
        account_id: str,
        amount: int,
        *,
        asset_code: str,
        reason: str,
        source_ref: str,
        available_at: datetime | None,
        expires_at: datetime | None,
        qualifying: bool,
    ) -> tuple[EntryView, AccountRecord]:
        (account,) = await self.lock(account_id)
        program = await self.program(account.program_id)
        r.require_asset(asset_code, program.rules.asset_code)
        plan = r.plan_earn(
            self._state(account),  # a credit reads balances, never lots
            AccountState(program.system[AccountKind.ISSUANCE], AccountKind.ISSUANCE),
            amount,
            program.rules,
            self.now,
            available_at=available_at,
            expires_at=expires_at,
            qualifying=qualifying,
        )
        posted = await self.post(
            plan,
            program,
            amount=amount,
            reason=reason,
            source_ref=source_ref,
            subject_account_id=account_id,
            qualifying_account_id=account_id if qualifying else None,
            event=EntryEvent(
                "points.earned",
                account_id,
                {
                    "account_id": account_id,
                    "customer_id": account.customer_id,
                    "program_id": account.program_id,
                    "amount": amount,
                    "pending": plan.postings[0].bucket.value == "PENDING",
                    "source_ref": source_ref,
                },
            ),
        )
        if posted.qualifying is not None:
            await self._tier(account, program.rules, posted.qualifying)
        return posted.view, account

    async def hold(
        self,
        account_id: str,
        amount: int,
        *,
        asset_code: str,
        reason: str,
        source_ref: str,
        ttl_seconds: int | None,
    ) -> tuple[HoldRecord, AccountRecord]:
        (account,) = await self.lock(account_id)
        program = await self.program(account.program_id)
        r.require_asset(asset_code, program.rules.asset_code)
        effect = r.plan_hold(self._state(account), amount, program.rules)
        ttl = r.hold_ttl(program.rules, ttl_seconds)
        hold = HoldRecord(
            hold_id=_new_id(),
            account_id=account_id,
            amount=amount,
            captured_amount=0,
            state=HoldState.ACTIVE.value,
            expires_at=self.now + timedelta(seconds=ttl),
            reason=reason,
            source_ref=source_ref,
            capture_entry_id=None,
            created_at=self.now,
        )
        await self.session.execute(
            sql.PLACE_HOLD,
            {
                "hold_id": hold.hold_id,
                "tenant_id": self.tenant,
                "account_id": account_id,
                "amount": amount,
                "expires_at": hold.expires_at,
                "reason": reason,
                "source_ref": source_ref,
                "created_at": self.now,
                "held_delta": effect.d_held,
            },
        )
        account.held += effect.d_held
        return hold, account

    async def capture(
        self, hold_id: str, amount: int | None, reason: str
    ) -> tuple[HoldRecord, EntryView, AccountRecord]:
        hold, account = await self._locked_hold(hold_id)
        program = await self.program(account.program_id)
        plan, captured = r.plan_capture(
            await self._state_to_debit(account, hold.amount),  # a capture takes at most the hold
            AccountState(program.system[AccountKind.REDEMPTION], AccountKind.REDEMPTION),
            _domain_hold(hold),
            amount,
            self.now,
        )
        posted = await self.post(
            plan,
            program,
            amount=captured.captured_amount,
            reason=reason,
            source_ref=hold.source_ref,
            hold_id=hold_id,
            captured_amount=captured.captured_amount,
            subject_account_id=account.account_id,
            event=EntryEvent(
                "points.burned",
                account.account_id,
                {
                    "account_id": account.account_id,
                    "customer_id": account.customer_id,
                    "program_id": account.program_id,
                    "amount": captured.captured_amount,
                    "hold_id": hold_id,
                    "source_ref": hold.source_ref,
                },
            ),
        )
        hold = replace(
            hold,
            state=captured.state.value,
            captured_amount=captured.captured_amount,
            capture_entry_id=posted.view.entry.entry_id,
        )
        return hold, posted.view, account

    async def release(self, hold_id: str) -> tuple[HoldRecord, AccountRecord]:
        hold, account = await self._locked_hold(hold_id)
        effect, released = r.plan_release(_domain_hold(hold), self.now)
        if effect is not None:
            await self._end_holds(account, [released], released.state)
            hold = replace(hold, state=released.state.value)
        return hold, account

    async def reverse(self, entry_id: str, amount: int | None, reason: str, source_ref: str) -> EntryView:
        found = (
            await self.session.execute(
                select(ENTRIES.c.subject_account_id, ENTRIES.c.counter_account_id).where(
                    ENTRIES.c.tenant_id == self.tenant, ENTRIES.c.entry_id == entry_id
                )
            )
        ).one_or_none()
        if found is None:
            raise NotFound("ENTRY_NOT_FOUND", "entry not found", field="entry_id")
        involved = [a for a in found if a]
        if involved:
            await self.lock(*involved)
        # Read again under the locks: a concurrent reversal may have taken part of it meanwhile.
        original = EntryRecord(
            **(
                await self.session.execute(
                    select(*_columns(ENTRIES, EntryRecord)).where(ENTRIES.c.entry_id == entry_id)
                )
            )
            .one()
            ._mapping
        )
        program = await self.program(original.program_id)
        # Taking points back consumes at most the original amount; an earn's own lot goes first.
        accounts = {
            a.account_id: await self._state_to_debit(a, original.amount, prefer=original.lot_id)
            for a in self.locked.values()
        }
        for kind, account_id in program.system.items():
            accounts.setdefault(account_id, AccountState(account_id, kind))
        reversible = ReversibleEntry(
            entry_id,
            EntryType(original.entry_type),
            original.amount,
            original.reversed_amount,
            original.subject_account_id or "",
            original.counter_account_id,
            original.lot_id,
            original.qualifying_delta > 0,
            original.restore_expires_at,
        )
        plan = r.plan_reversal(
            reversible,
            amount,
            accounts,
            {k: AccountState(v, k) for k, v in program.system.items()},
            program.rules,
        )
        posted = await self.post(
            plan,
            program,
            reason=reason,
            source_ref=source_ref or original.source_ref,
            reversed_entry_id=entry_id,
            reversal_amount=plan.reversed_amount,
            qualifying_account_id=original.qualifying_account_id if plan.qualifying_delta else None,
            event=EntryEvent(
                "points.reversed",
                original.subject_account_id or entry_id,
                {
                    "reversed_entry_id": entry_id,
                    "amount": plan.reversed_amount,
                    "unrecovered_amount": plan.unrecovered,
                    "program_id": original.program_id,
                    "account_id": original.subject_account_id,
                    "review": plan.unrecovered > 0,
                },
            ),
        )
        if posted.qualifying is not None and original.qualifying_account_id:
            await self._tier(self.locked[original.qualifying_account_id], program.rules, posted.qualifying)
        return posted.view

    async def transfer(
        self, source_id: str, destination_id: str, amount: int, *, asset_code: str, reason: str
    ) -> EntryView:
        r.require_amount(amount)
        source, destination = await self.lock(source_id, destination_id)
        program = await self.program(source.program_id)
        r.require_same_program(source.program_id, destination.program_id)
        r.require_asset(asset_code, program.rules.asset_code)
        plan = r.plan_transfer(await self._state_to_debit(source, amount), self._state(destination), amount)
        posted = await self.post(
            plan,
            program,
            amount=amount,
            reason=reason,
            subject_account_id=source_id,
            counter_account_id=destination_id,
            event=EntryEvent(
                "points.transferred",
                source_id,
                {
                    "source_account_id": source_id,
                    "destination_account_id": destination_id,
                    "amount": amount,
                    "program_id": source.program_id,
                },
            ),
        )
        return posted.view

    async def expire_account(self, account_id: str) -> RunResult:
        """Housekeeping plus expiry of due lots for one account (idempotent)."""
        rows = await self._rows(sql.LOCK_ACCOUNTS, tenant_id=self.tenant, account_ids=[account_id])
        if not rows:
            return RunResult(run_time=self.now)
        account = self.locked[account_id] = AccountRecord(**rows[0]._mapping)
        result, _ = await self._housekeep(account)
        program = await self.program(account.program_id)
        plan, lots = r.plan_expiry(
            await self._state_with_lots(account, sql.DUE_LOTS, now=self.now),
            AccountState(program.system[AccountKind.EXPIRY], AccountKind.EXPIRY),
            self.now,
        )
        if plan is not None:
            result.expired_points, result.expired_lots = plan.postings[1].amount, lots
            event = EntryEvent(
                "points.expired",
                account_id,
                {
                    "account_id": account_id,
                    "customer_id": account.customer_id,
                    "program_id": account.program_id,
                    "amount": result.expired_points,
                },
            )
            await self.post(plan, program, reason="expired", event=event)
        return result


class LedgerRepository:
    def __init__(self, database: Database, clock: Callable[[], datetime] = _utcnow) -> None:
        self.database = database
        self.clock = clock
        self._programs: dict[tuple[str, str], ProgramView] = {}

    async def program(self, session: AsyncSession, tenant: str, program_id: str) -> ProgramView:
        """Programmes never change after creation, so they are cached per process."""
        cached = self._programs.get((tenant, program_id))
        if cached is not None:
            return cached
        program = (
            await session.execute(
                select(Program).where(Program.tenant_id == tenant, Program.program_id == program_id)
            )
        ).scalar_one_or_none()
        if program is None:
            raise NotFound("PROGRAM_NOT_FOUND", "program not found", field="program_id")
        system = dict(
            (
                await session.execute(
                    select(ACCOUNTS.c.kind, ACCOUNTS.c.account_id).where(
                        ACCOUNTS.c.program_id == program_id, ACCOUNTS.c.customer_id.is_(None)
                    )
                )
            ).all()
        )
        view = ProgramView(program, rules_of(program), {AccountKind(k): v for k, v in system.items()})
        self._programs[(tenant, program_id)] = view
        return view

    async def idempotent(
        self,
        request: Message,
        response_type: type[ResponseT],
        method: str,
        work: Callable[[LedgerTx], Awaitable[ResponseT]],
    ) -> ResponseT:
        """Run `work` in one transaction with the request's idempotency key claimed and its answer
        remembered; a replay returns the first answer without running `work`."""
        try:
            async with self.database.transaction() as session:
                replay = await claim(session, idempotency_keys, request, response_type, method=method)
                if replay is not None:
                    return replay
                response = await work(LedgerTx(self, session, self.clock(), request.idempotency_key))
                await remember(session, idempotency_keys, request.idempotency_key, response)
                return response
        except DBAPIError as error:
            raise _map_db_error(error) from error

    async def read(self, work: Callable[[LedgerTx], Awaitable[ResponseT]]) -> ResponseT:
        async with self.database.transaction() as session:
            return await work(LedgerTx(self, session, self.clock(), None))

    async def replay(self, request: Message, response_type: type[ResponseT], method: str) -> ResponseT | None:
        """The first answer for this key, if any, without claiming the key (the claim rolls back)."""

        class _Rollback(Exception):
            pass

        try:
            async with self.database.transaction() as session:
                replay = await claim(session, idempotency_keys, request, response_type, method=method)
                if replay is not None:
                    return replay
                raise _Rollback
        except _Rollback:
            return None

    async def remember_answer(
        self, request: Message, response_type: type[ResponseT], method: str, response: ResponseT
    ) -> ResponseT:
        async with self.database.transaction() as session:
            replay = await claim(session, idempotency_keys, request, response_type, method=method)
            if replay is not None:
                return replay  # a concurrent run with the same key finished first; both were harmless
            await remember(session, idempotency_keys, request.idempotency_key, response)
            return response

    # --- reads ---

    async def account(
        self, account_id: str = "", program_id: str = "", customer_id: str = ""
    ) -> tuple[AccountView, ProgramRules]:
        tenant = current_tenant()
        async with self.database.transaction() as session:
            query = select(*_columns(ACCOUNTS, AccountRecord)).where(ACCOUNTS.c.tenant_id == tenant)
            if account_id:
                query = query.where(ACCOUNTS.c.account_id == account_id)
            else:
                await self.program(session, tenant, r.require_id(program_id, "program_id"))
                query = query.where(
                    ACCOUNTS.c.program_id == program_id,
                    ACCOUNTS.c.customer_id == r.require_id(customer_id, "customer_id"),
                )
            row = (await session.execute(query)).first()
            if row is None:
                raise NotFound("ACCOUNT_NOT_FOUND", "account not found", field="account_id")
            account = AccountRecord(**row._mapping)
            rules = (await self.program(session, tenant, account.program_id)).rules
            if account.customer_id is None:
                total = (
                    await session.execute(
                        select(func.coalesce(func.sum(POSTINGS.c.amount), 0)).where(
                            POSTINGS.c.account_id == account.account_id
                        )
                    )
                ).scalar_one()
                account.posted = int(total)
                return AccountView(account), rules
            if account.held > 0 or account.pending > 0:
                tx = LedgerTx(self, session, self.clock(), None)
                (account,) = await tx.lock(account.account_id)
            expiring = (
                await session.execute(
                    select(LOTS.c.expires_at, func.sum(LOTS.c.remaining))
                    .where(
                        LOTS.c.account_id == account.account_id,
                        LOTS.c.remaining > 0,
                        LOTS.c.pending.is_(False),
                        LOTS.c.expires_at.is_not(None),
                    )
                    .group_by(LOTS.c.expires_at)
                    .order_by(LOTS.c.expires_at)
                    .limit(12)
                )
            ).all()
            return AccountView(account, [(e, int(a)) for e, a in expiring]), rules

    async def hold(self, hold_id: str) -> HoldRecord:
        async with self.database.transaction() as session:
            row = (
                await session.execute(
                    select(*_columns(HOLDS, HoldRecord)).where(
                        HOLDS.c.tenant_id == current_tenant(), HOLDS.c.hold_id == hold_id
                    )
                )
            ).first()
        if row is None:
            raise NotFound("HOLD_NOT_FOUND", "hold not found", field="hold_id")
        hold = HoldRecord(**row._mapping)
        if hold.state == HoldState.ACTIVE.value and hold.expires_at <= self.clock():
            hold = replace(hold, state=HoldState.EXPIRED.value)  # voided lazily; shown as it is
        return hold

    async def entry(self, entry_id: str = "", idempotency_key: str = "") -> EntryView:
        tenant = current_tenant()
        async with self.database.transaction() as session:
            query = select(*_columns(ENTRIES, EntryRecord)).where(ENTRIES.c.tenant_id == tenant)
            query = (
                query.where(ENTRIES.c.entry_id == entry_id)
                if entry_id
                else query.where(ENTRIES.c.idempotency_key == idempotency_key)
            )
            row = (await session.execute(query.limit(1))).first()
            if row is None:
                raise NotFound("ENTRY_NOT_FOUND", "entry not found", field="entry_id")
            postings = (
                await session.execute(
                    select(*_columns(POSTINGS, PostingRecord))
                    .where(POSTINGS.c.entry_id == row.entry_id)
                    .order_by(POSTINGS.c.id)
                )
            ).all()
        return EntryView(EntryRecord(**row._mapping), [PostingRecord(**p._mapping) for p in postings])

    async def statement(self, account_id: str, page_size: int, before: int | None):
        """Lines newest first: (entry, net amount, balance after, last posting id)."""
        tenant = current_tenant()
        async with self.database.transaction() as session:
            exists = (
                await session.execute(
                    select(ACCOUNTS.c.account_id).where(
                        ACCOUNTS.c.tenant_id == tenant, ACCOUNTS.c.account_id == account_id
                    )
                )
            ).first()
            if exists is None:
                raise NotFound("ACCOUNT_NOT_FOUND", "account not found", field="account_id")
            last_id = func.max(POSTINGS.c.id).label("last_id")
            query = (
                select(
                    POSTINGS.c.entry_id,
                    func.sum(POSTINGS.c.amount).label("amount"),
                    func.max(POSTINGS.c.balance_after).label("balance_after"),
                    last_id,
                )
                .where(POSTINGS.c.tenant_id == tenant, POSTINGS.c.account_id == account_id)
                .group_by(POSTINGS.c.entry_id)
                .order_by(last_id.desc())
                .limit(page_size + 1)
            )
            if before is not None:
                query = query.having(func.max(POSTINGS.c.id) < before)
            lines = (await session.execute(query)).all()
            entries = {
                e.entry_id: EntryRecord(**e._mapping)
                for e in await session.execute(
                    select(*_columns(ENTRIES, EntryRecord)).where(
                        ENTRIES.c.entry_id.in_([x.entry_id for x in lines])
                    )
                )
            }
        more = len(lines) > page_size
        lines = lines[:page_size]
        return [
            (entries[x.entry_id], int(x.amount), int(x.balance_after or 0), x.last_id) for x in lines
        ], more

    # --- runs ---

    async def run_expiry(self, program_id: str = "") -> RunResult:
        """Expire due lots, void timed-out holds, mature pending points; one transaction per account
        so a long run never holds many locks. Running it twice changes nothing the second time."""
        tenant = current_tenant()
        now = self.clock()
        async with self.database.transaction() as session:
            if program_id:
                await self.program(session, tenant, program_id)
            due = [
                select(LOTS.c.account_id).where(
                    LOTS.c.tenant_id == tenant,
                    LOTS.c.remaining > 0,
                    LOTS.c.pending.is_(False),
                    LOTS.c.expires_at <= now,
                ),
                select(LOTS.c.account_id).where(
                    LOTS.c.tenant_id == tenant,
                    LOTS.c.remaining > 0,
                    LOTS.c.pending.is_(True),
                    LOTS.c.available_at <= now,
                ),
                select(HOLDS.c.account_id).where(
                    HOLDS.c.tenant_id == tenant,
                    HOLDS.c.state == HoldState.ACTIVE.value,
                    HOLDS.c.expires_at <= now,
                ),
            ]
            account_ids: set[str] = set()
            for query in due:
                account_ids.update((await session.execute(query)).scalars().all())
            if program_id and account_ids:
                account_ids = set(
                    (
                        await session.execute(
                            select(ACCOUNTS.c.account_id).where(
                                ACCOUNTS.c.account_id.in_(account_ids), ACCOUNTS.c.program_id == program_id
                            )
                        )
                    )
                    .scalars()
                    .all()
                )
        total = RunResult(run_time=now)
        for account_id in sorted(account_ids):
            async with self.database.transaction() as session:
                result = await LedgerTx(self, session, now, None).expire_account(account_id)
            total.expired_points += result.expired_points
            total.expired_lots += result.expired_lots
            total.voided_holds += result.voided_holds
            total.matured_points += result.matured_points
        return total

    async def recompute_tiers(self, program_id: str = "") -> tuple[int, int]:
        tenant = current_tenant()
        now = self.clock()
        checked = changed = 0
        async with self.database.transaction() as session:
            if program_id:
                program_ids = [(await self.program(session, tenant, program_id)).program.program_id]
            else:
                program_ids = list(
                    (
                        await session.execute(select(Program.program_id).where(Program.tenant_id == tenant))
                    ).scalars()
                )
            tx = LedgerTx(self, session, now, None)
            for pid in program_ids:
                program = await self.program(session, tenant, pid)
                if not program.rules.tiers:
                    continue
                start = r.tier_window_start(program.rules, now)
                sums = (
                    select(
                        ENTRIES.c.qualifying_account_id.label("account_id"),
                        func.sum(ENTRIES.c.qualifying_delta).label("points"),
                    )
                    .where(
                        ENTRIES.c.tenant_id == tenant,
                        ENTRIES.c.program_id == pid,
                        ENTRIES.c.qualifying_delta != 0,
                        ENTRIES.c.created_at >= start,
                    )
                    .group_by(ENTRIES.c.qualifying_account_id)
                    .subquery()
                )
                rows = (
                    await session.execute(
                        select(ACCOUNTS.c.account_id, ACCOUNTS.c.tier_code, func.coalesce(sums.c.points, 0))
                        .outerjoin(sums, sums.c.account_id == ACCOUNTS.c.account_id)
                        .where(
                            ACCOUNTS.c.tenant_id == tenant,
                            ACCOUNTS.c.program_id == pid,
                            ACCOUNTS.c.customer_id.is_not(None),
                        )
                    )
                ).all()
                for account_id, tier_code, points in rows:
                    checked += 1
                    changed += await tx._set_tier(
                        account_id, tier_code, r.tier_for(program.rules.tiers, points), points
                    )
        return checked, changed

    async def tenants(self) -> Sequence[str]:
        async with self.database.transaction() as session:
            return list((await session.execute(select(Program.tenant_id).distinct())).scalars())

    async def run_for_every_tenant(self, work: Callable[[], Awaitable[object]]) -> None:
        for tenant in await self.tenants():
            token = bind_call(CallContext(tenant_id=tenant, principal="ledger-scheduler"))
            try:
                await work()
            finally:
                unbind_call(token)
