"""PostgreSQL side of the ledger. Every change runs in one transaction that:

1. claims the idempotency key (a replay returns the first answer),
2. locks the customer account rows it touches (`SELECT ... FOR UPDATE`, in account-id order),
3. voids timed-out holds and matures due pending points of those accounts,
4. asks the domain for a plan and writes it: the entry, its postings, lot and balance changes,
5. writes the outbox events and remembers the answer.

So concurrency correctness comes from the row lock: two burns on one account run one after the
other, each seeing the other's result. Every query filters by the caller's tenant; another tenant's
row is simply not found.
"""

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty_ledger.domain import rules as r
from loyalty_ledger.domain.model import (
    SYSTEM_KINDS,
    AccountKind,
    AccountState,
    EntryType,
    ExpiryPolicy,
    ExpiryRule,
    HoldState,
    Plan,
    ProgramRules,
    ReversibleEntry,
    Tier,
)
from loyalty_ledger.domain.model import Hold as DomainHold
from loyalty_ledger.domain.model import Lot as DomainLot
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


@dataclass
class ProgramView:
    program: Program
    rules: ProgramRules
    system: dict[AccountKind, str]


@dataclass
class EntryView:
    entry: JournalEntry
    postings: list[Posting]


@dataclass
class AccountView:
    account: Account
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
        self.locked: dict[str, Account] = {}
        self.lots: dict[str, tuple[DomainLot, ...]] = {}

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
            insert(Account),
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
        inserted = await self.session.execute(
            pg_insert(Account)
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
                index_where=Account.customer_id.is_not(None),
            )
            .returning(Account)
        )
        account = inserted.scalar_one_or_none()
        if account is not None:
            return AccountView(account), True
        account = (
            await self.session.execute(
                select(Account).where(
                    Account.tenant_id == self.tenant,
                    Account.program_id == program_id,
                    Account.customer_id == customer_id,
                )
            )
        ).scalar_one()
        return AccountView(account), False

    # --- locking and housekeeping ---

    async def lock(self, *account_ids: str) -> list[Account]:
        """Lock accounts in id order (no deadlocks between transfers), then tidy them up."""
        wanted = sorted(set(account_ids) - set(self.locked))
        if wanted:
            rows = (
                (
                    await self.session.execute(
                        select(Account)
                        .where(Account.tenant_id == self.tenant, Account.account_id.in_(wanted))
                        .order_by(Account.account_id)
                        .with_for_update()
                        .execution_options(populate_existing=True)
                    )
                )
                .scalars()
                .all()
            )
            if len(rows) != len(wanted):
                raise NotFound("ACCOUNT_NOT_FOUND", "account not found", field="account_id")
            for row in rows:
                self.locked[row.account_id] = row
                await self._housekeep(row)
        return [self.locked[a] for a in account_ids]

    async def _housekeep(self, account: Account) -> RunResult:
        result = RunResult(run_time=self.now)
        if account.held > 0:
            voided = (
                (
                    await self.session.execute(
                        update(Hold)
                        .where(
                            Hold.account_id == account.account_id,
                            Hold.state == HoldState.ACTIVE.value,
                            Hold.expires_at <= self.now,
                        )
                        .values(state=HoldState.EXPIRED.value)
                        .returning(Hold.amount)
                    )
                )
                .scalars()
                .all()
            )
            if voided:
                await self._apply_balances(account, 0, 0, -sum(voided))
                result.voided_holds = len(voided)
        if account.pending > 0:
            state = await self.state(account)
            plan = r.plan_maturation(state, self.now)
            if plan is not None:
                await self.post(plan, account.program_id, reason="matured")
                result.matured_points = plan.effects[0].d_posted
        return result

    async def state(self, account: Account) -> AccountState:
        kind = AccountKind(account.kind)
        if kind is not AccountKind.CUSTOMER:
            return AccountState(account.account_id, kind)
        if account.account_id not in self.lots:
            rows = (
                (
                    await self.session.execute(
                        select(Lot).where(Lot.account_id == account.account_id, Lot.remaining > 0)
                    )
                )
                .scalars()
                .all()
            )
            self.lots[account.account_id] = tuple(
                DomainLot(x.lot_id, x.remaining, x.expires_at, x.seq, x.pending, x.available_at) for x in rows
            )
        return AccountState(
            account.account_id,
            kind,
            account.posted,
            account.pending,
            account.held,
            self.lots[account.account_id],
        )

    async def _apply_balances(self, account: Account, d_posted: int, d_pending: int, d_held: int) -> None:
        if not (d_posted or d_pending or d_held):
            return
        row = (
            await self.session.execute(
                update(Account)
                .where(Account.account_id == account.account_id)
                .values(
                    posted=Account.posted + d_posted,
                    pending=Account.pending + d_pending,
                    held=Account.held + d_held,
                )
                .returning(Account.posted, Account.pending, Account.held)
            )
        ).one()
        account.posted, account.pending, account.held = row.posted, row.pending, row.held

    async def post(self, plan: Plan, program_id: str, **fields) -> EntryView:
        """Write a planned entry: the entry, its postings, lots and customer balances."""
        entry_id = _new_id()
        program = await self.program(program_id)
        new_lots: list[dict] = []
        lot_updates: list[dict] = []
        for effect in plan.effects:
            account = self.locked.get(effect.account_id)
            if account is None or account.kind != AccountKind.CUSTOMER.value:
                continue  # system accounts: balance is the sum of their postings
            await self._apply_balances(account, effect.d_posted, effect.d_pending, effect.d_held)
            lot_updates += [
                {"b_id": u.lot_id, "b_delta": u.delta, "b_mature": u.mature} for u in effect.lot_updates
            ]
            new_lots += [
                {
                    "lot_id": _new_id(),
                    "tenant_id": self.tenant,
                    "account_id": effect.account_id,
                    "entry_id": entry_id,
                    "amount": n.amount,
                    "remaining": n.amount,
                    "expires_at": n.expires_at,
                    "pending": n.pending,
                    "available_at": n.available_at,
                }
                for n in effect.new_lots
            ]
            self.lots.pop(effect.account_id, None)
        entry = JournalEntry(
            entry_id=entry_id,
            tenant_id=self.tenant,
            program_id=program_id,
            entry_type=plan.entry_type.value,
            asset_code=program.rules.asset_code,
            amount=fields.pop("amount", 0),
            reversed_amount=0,
            unrecovered_amount=plan.unrecovered,
            idempotency_key=self.key if plan.entry_type is not EntryType.MATURATION else None,
            restore_expires_at=plan.restore_expires_at,
            qualifying_delta=plan.qualifying_delta,
            lot_id=new_lots[0]["lot_id"] if new_lots and plan.entry_type is EntryType.EARN else None,
            created_at=self.now,
            reason=fields.pop("reason", ""),
            source_ref=fields.pop("source_ref", ""),
            **fields,
        )
        self.session.add(entry)
        await self.session.flush()
        postings = [
            {
                "entry_id": entry_id,
                "tenant_id": self.tenant,
                "account_id": p.account_id,
                "amount": p.amount,
                "bucket": p.bucket.value,
                "balance_after": (self.locked[p.account_id].posted + self.locked[p.account_id].pending)
                if p.account_id in self.locked
                and self.locked[p.account_id].kind == AccountKind.CUSTOMER.value
                else None,
            }
            for p in plan.postings
        ]
        rows = (
            (await self.session.execute(insert(Posting).returning(Posting), postings)).scalars().all()
            if postings
            else []
        )
        if lot_updates:
            await self.session.execute(
                update(Lot.__table__)
                .where(Lot.__table__.c.lot_id == bindparam("b_id"))
                .values(
                    remaining=Lot.__table__.c.remaining + bindparam("b_delta"),
                    pending=Lot.__table__.c.pending & ~bindparam("b_mature"),
                ),
                lot_updates,
            )
        if new_lots:
            await self.session.execute(insert(Lot), new_lots)
        return EntryView(entry, list(rows))

    async def event(self, event_type: str, key: str, payload: dict) -> None:
        await record_event(self.session, outbox, event_type, key, payload)

    async def _tier(self, account: Account, rules: ProgramRules) -> None:
        if not rules.tiers:
            return
        qualifying = (
            await self.session.execute(
                select(func.coalesce(func.sum(JournalEntry.qualifying_delta), 0)).where(
                    JournalEntry.qualifying_account_id == account.account_id,
                    JournalEntry.qualifying_delta != 0,
                    JournalEntry.created_at >= r.tier_window_start(rules, self.now),
                )
            )
        ).scalar_one()
        await self._set_tier(
            account.account_id, account.tier_code, r.tier_for(rules.tiers, qualifying), qualifying
        )
        account.tier_code = (r.tier_for(rules.tiers, qualifying) or Tier("", "", 0, 0)).code

    async def _set_tier(self, account_id: str, old: str, tier: Tier | None, qualifying: int) -> bool:
        new = tier.code if tier else ""
        if new == old:
            return False
        changed = await self.session.execute(
            update(Account)
            .where(Account.account_id == account_id, Account.tier_code == old)
            .values(tier_code=new)
            .returning(Account.account_id)
        )
        if changed.first() is None:
            return False
        await self.event(
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
    ) -> tuple[EntryView, Account]:
        (account,) = await self.lock(account_id)
        program = await self.program(account.program_id)
        r.require_asset(asset_code, program.rules.asset_code)
        plan = r.plan_earn(
            await self.state(account),
            AccountState(program.system[AccountKind.ISSUANCE], AccountKind.ISSUANCE),
            amount,
            program.rules,
            self.now,
            available_at=available_at,
            expires_at=expires_at,
            qualifying=qualifying,
        )
        view = await self.post(
            plan,
            account.program_id,
            amount=amount,
            reason=reason,
            source_ref=source_ref,
            subject_account_id=account_id,
            qualifying_account_id=account_id if qualifying else None,
        )
        await self.event(
            "points.earned",
            account_id,
            {
                "entry_id": view.entry.entry_id,
                "account_id": account_id,
                "customer_id": account.customer_id,
                "program_id": account.program_id,
                "amount": amount,
                "pending": plan.postings[0].bucket.value == "PENDING",
                "source_ref": source_ref,
            },
        )
        if qualifying:
            await self._tier(account, program.rules)
        return view, account

    async def hold(
        self,
        account_id: str,
        amount: int,
        *,
        asset_code: str,
        reason: str,
        source_ref: str,
        ttl_seconds: int | None,
    ) -> tuple[Hold, Account]:
        (account,) = await self.lock(account_id)
        program = await self.program(account.program_id)
        r.require_asset(asset_code, program.rules.asset_code)
        effect = r.plan_hold(await self.state(account), amount, program.rules)
        ttl = r.hold_ttl(program.rules, ttl_seconds)
        hold = Hold(
            hold_id=_new_id(),
            tenant_id=self.tenant,
            account_id=account_id,
            amount=amount,
            captured_amount=0,
            state=HoldState.ACTIVE.value,
            expires_at=self.now + timedelta(seconds=ttl),
            reason=reason,
            source_ref=source_ref,
            created_at=self.now,
        )
        self.session.add(hold)
        await self._apply_balances(account, 0, 0, effect.d_held)
        await self.session.flush()
        return hold, account

    async def _locked_hold(self, hold_id: str) -> tuple[Hold, Account]:
        found = (
            await self.session.execute(
                select(Hold.account_id).where(Hold.tenant_id == self.tenant, Hold.hold_id == hold_id)
            )
        ).scalar_one_or_none()
        if found is None:
            raise NotFound("HOLD_NOT_FOUND", "hold not found", field="hold_id")
        (account,) = await self.lock(found)
        hold = (
            await self.session.execute(
                select(Hold).where(Hold.hold_id == hold_id).execution_options(populate_existing=True)
            )
        ).scalar_one()
        return hold, account

    @staticmethod
    def _domain_hold(hold: Hold) -> DomainHold:
        return DomainHold(
            hold.hold_id,
            hold.account_id,
            hold.amount,
            hold.expires_at,
            HoldState(hold.state),
            hold.captured_amount,
        )

    async def capture(self, hold_id: str, amount: int | None, reason: str) -> tuple[Hold, EntryView, Account]:
        hold, account = await self._locked_hold(hold_id)
        program = await self.program(account.program_id)
        plan, captured = r.plan_capture(
            await self.state(account),
            AccountState(program.system[AccountKind.REDEMPTION], AccountKind.REDEMPTION),
            self._domain_hold(hold),
            amount,
            self.now,
        )
        view = await self.post(
            plan,
            account.program_id,
            amount=captured.captured_amount,
            reason=reason,
            source_ref=hold.source_ref,
            hold_id=hold_id,
            subject_account_id=account.account_id,
        )
        hold.state, hold.captured_amount, hold.capture_entry_id = (
            captured.state.value,
            captured.captured_amount,
            view.entry.entry_id,
        )
        await self.session.flush()
        await self.event(
            "points.burned",
            account.account_id,
            {
                "entry_id": view.entry.entry_id,
                "account_id": account.account_id,
                "customer_id": account.customer_id,
                "program_id": account.program_id,
                "amount": captured.captured_amount,
                "hold_id": hold_id,
                "source_ref": hold.source_ref,
            },
        )
        return hold, view, account

    async def release(self, hold_id: str) -> tuple[Hold, Account]:
        hold, account = await self._locked_hold(hold_id)
        effect, released = r.plan_release(self._domain_hold(hold), self.now)
        if effect is not None:
            await self._apply_balances(account, 0, 0, effect.d_held)
            hold.state = released.state.value
            await self.session.flush()
        return hold, account

    async def reverse(self, entry_id: str, amount: int | None, reason: str, source_ref: str) -> EntryView:
        found = (
            await self.session.execute(
                select(JournalEntry.subject_account_id, JournalEntry.counter_account_id).where(
                    JournalEntry.tenant_id == self.tenant, JournalEntry.entry_id == entry_id
                )
            )
        ).one_or_none()
        if found is None:
            raise NotFound("ENTRY_NOT_FOUND", "entry not found", field="entry_id")
        involved = [a for a in found if a]
        if involved:
            await self.lock(*involved)
        original = (
            await self.session.execute(
                select(JournalEntry)
                .where(JournalEntry.entry_id == entry_id)
                .execution_options(populate_existing=True)
            )
        ).scalar_one()
        program = await self.program(original.program_id)
        accounts = {a.account_id: await self.state(a) for a in self.locked.values()}
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
        view = await self.post(
            plan,
            original.program_id,
            amount=0,
            reason=reason,
            source_ref=source_ref or original.source_ref,
            reversed_entry_id=entry_id,
            subject_account_id=None,
            qualifying_account_id=original.qualifying_account_id if plan.qualifying_delta else None,
        )
        await self.session.execute(
            update(JournalEntry)
            .where(JournalEntry.entry_id == entry_id)
            .values(reversed_amount=JournalEntry.reversed_amount + plan.reversed_amount)
        )
        await self.event(
            "points.reversed",
            original.subject_account_id or entry_id,
            {
                "entry_id": view.entry.entry_id,
                "reversed_entry_id": entry_id,
                "amount": plan.reversed_amount,
                "unrecovered_amount": plan.unrecovered,
                "program_id": original.program_id,
                "account_id": original.subject_account_id,
                "review": plan.unrecovered > 0,
            },
        )
        if plan.qualifying_delta and original.qualifying_account_id:
            await self._tier(self.locked[original.qualifying_account_id], program.rules)
        return view

    async def transfer(
        self, source_id: str, destination_id: str, amount: int, *, asset_code: str, reason: str
    ) -> EntryView:
        r.require_amount(amount)
        source, destination = await self.lock(source_id, destination_id)
        program = await self.program(source.program_id)
        r.require_same_program(source.program_id, destination.program_id)
        r.require_asset(asset_code, program.rules.asset_code)
        plan = r.plan_transfer(await self.state(source), await self.state(destination), amount)
        view = await self.post(
            plan,
            source.program_id,
            amount=amount,
            reason=reason,
            subject_account_id=source_id,
            counter_account_id=destination_id,
        )
        await self.event(
            "points.transferred",
            source_id,
            {
                "entry_id": view.entry.entry_id,
                "source_account_id": source_id,
                "destination_account_id": destination_id,
                "amount": amount,
                "program_id": source.program_id,
            },
        )
        return view

    async def expire_account(self, account_id: str) -> RunResult:
        """Housekeeping plus expiry of due lots for one account (idempotent)."""
        rows = (
            (
                await self.session.execute(
                    select(Account)
                    .where(Account.tenant_id == self.tenant, Account.account_id == account_id)
                    .with_for_update()
                    .execution_options(populate_existing=True)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            return RunResult(run_time=self.now)
        account = rows[0]
        self.locked[account_id] = account
        result = await self._housekeep(account)
        program = await self.program(account.program_id)
        plan, lots = r.plan_expiry(
            await self.state(account),
            AccountState(program.system[AccountKind.EXPIRY], AccountKind.EXPIRY),
            self.now,
        )
        if plan is not None:
            view = await self.post(plan, account.program_id, reason="expired")
            result.expired_points, result.expired_lots = plan.postings[1].amount, lots
            await self.event(
                "points.expired",
                account_id,
                {
                    "entry_id": view.entry.entry_id,
                    "account_id": account_id,
                    "customer_id": account.customer_id,
                    "program_id": account.program_id,
                    "amount": result.expired_points,
                },
            )
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
                    select(Account.kind, Account.account_id).where(
                        Account.program_id == program_id, Account.customer_id.is_(None)
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

    async def account(self, account_id: str = "", program_id: str = "", customer_id: str = "") -> AccountView:
        tenant = current_tenant()
        async with self.database.transaction() as session:
            query = select(Account).where(Account.tenant_id == tenant)
            if account_id:
                query = query.where(Account.account_id == account_id)
            else:
                await self.program(session, tenant, r.require_id(program_id, "program_id"))
                query = query.where(
                    Account.program_id == program_id,
                    Account.customer_id == r.require_id(customer_id, "customer_id"),
                )
            account = (await session.execute(query)).scalar_one_or_none()
            if account is None:
                raise NotFound("ACCOUNT_NOT_FOUND", "account not found", field="account_id")
            if account.customer_id is None:
                total = (
                    await session.execute(
                        select(func.coalesce(func.sum(Posting.amount), 0)).where(
                            Posting.account_id == account.account_id
                        )
                    )
                ).scalar_one()
                account.posted = int(total)
                return AccountView(account)
            if account.held > 0 or account.pending > 0:
                tx = LedgerTx(self, session, self.clock(), None)
                (account,) = await tx.lock(account.account_id)
            expiring = (
                await session.execute(
                    select(Lot.expires_at, func.sum(Lot.remaining))
                    .where(
                        Lot.account_id == account.account_id,
                        Lot.remaining > 0,
                        Lot.pending.is_(False),
                        Lot.expires_at.is_not(None),
                    )
                    .group_by(Lot.expires_at)
                    .order_by(Lot.expires_at)
                    .limit(12)
                )
            ).all()
            return AccountView(account, [(e, int(a)) for e, a in expiring])

    async def hold(self, hold_id: str) -> Hold:
        async with self.database.transaction() as session:
            hold = (
                await session.execute(
                    select(Hold).where(Hold.tenant_id == current_tenant(), Hold.hold_id == hold_id)
                )
            ).scalar_one_or_none()
        if hold is None:
            raise NotFound("HOLD_NOT_FOUND", "hold not found", field="hold_id")
        if hold.state == HoldState.ACTIVE.value and hold.expires_at <= self.clock():
            hold.state = HoldState.EXPIRED.value  # voided lazily; shown as it is
        return hold

    async def entry(self, entry_id: str = "", idempotency_key: str = "") -> EntryView:
        tenant = current_tenant()
        async with self.database.transaction() as session:
            query = select(JournalEntry).where(JournalEntry.tenant_id == tenant)
            query = (
                query.where(JournalEntry.entry_id == entry_id)
                if entry_id
                else query.where(JournalEntry.idempotency_key == idempotency_key)
            )
            entry = (await session.execute(query.limit(1))).scalar_one_or_none()
            if entry is None:
                raise NotFound("ENTRY_NOT_FOUND", "entry not found", field="entry_id")
            postings = (
                (
                    await session.execute(
                        select(Posting).where(Posting.entry_id == entry.entry_id).order_by(Posting.id)
                    )
                )
                .scalars()
                .all()
            )
        return EntryView(entry, list(postings))

    async def statement(self, account_id: str, page_size: int, before: int | None):
        """Lines newest first: (entry, net amount, balance after, last posting id)."""
        tenant = current_tenant()
        async with self.database.transaction() as session:
            exists = (
                await session.execute(
                    select(Account.account_id).where(
                        Account.tenant_id == tenant, Account.account_id == account_id
                    )
                )
            ).first()
            if exists is None:
                raise NotFound("ACCOUNT_NOT_FOUND", "account not found", field="account_id")
            last_id = func.max(Posting.id).label("last_id")
            query = (
                select(
                    Posting.entry_id,
                    func.sum(Posting.amount).label("amount"),
                    func.max(Posting.balance_after).label("balance_after"),
                    last_id,
                )
                .where(Posting.tenant_id == tenant, Posting.account_id == account_id)
                .group_by(Posting.entry_id)
                .order_by(last_id.desc())
                .limit(page_size + 1)
            )
            if before is not None:
                query = query.having(func.max(Posting.id) < before)
            lines = (await session.execute(query)).all()
            entries = {
                e.entry_id: e
                for e in (
                    await session.execute(
                        select(JournalEntry).where(JournalEntry.entry_id.in_([x.entry_id for x in lines]))
                    )
                ).scalars()
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
                select(Lot.account_id).where(
                    Lot.tenant_id == tenant, Lot.remaining > 0, Lot.pending.is_(False), Lot.expires_at <= now
                ),
                select(Lot.account_id).where(
                    Lot.tenant_id == tenant, Lot.remaining > 0, Lot.pending.is_(True), Lot.available_at <= now
                ),
                select(Hold.account_id).where(
                    Hold.tenant_id == tenant, Hold.state == HoldState.ACTIVE.value, Hold.expires_at <= now
                ),
            ]
            account_ids: set[str] = set()
            for query in due:
                account_ids.update((await session.execute(query)).scalars().all())
            if program_id and account_ids:
                account_ids = set(
                    (
                        await session.execute(
                            select(Account.account_id).where(
                                Account.account_id.in_(account_ids), Account.program_id == program_id
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
                        JournalEntry.qualifying_account_id.label("account_id"),
                        func.sum(JournalEntry.qualifying_delta).label("points"),
                    )
                    .where(
                        JournalEntry.tenant_id == tenant,
                        JournalEntry.program_id == pid,
                        JournalEntry.qualifying_delta != 0,
                        JournalEntry.created_at >= start,
                    )
                    .group_by(JournalEntry.qualifying_account_id)
                    .subquery()
                )
                rows = (
                    await session.execute(
                        select(Account.account_id, Account.tier_code, func.coalesce(sums.c.points, 0))
                        .outerjoin(sums, sums.c.account_id == Account.account_id)
                        .where(
                            Account.tenant_id == tenant,
                            Account.program_id == pid,
                            Account.customer_id.is_not(None),
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
