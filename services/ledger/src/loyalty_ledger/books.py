"""What one use case works on inside its unit of work: the accounts it locked, as the rules see them
once tidied up, their live holds, the journal of what it changes, and the programmes (cached).

Locking an account tidies it up first, as every access to it does: holds that timed out are voided
and pending points whose time has come mature. That is written at once (it is rare, and later reads
must see it), so what a use case reads after locking is what its rules decide on. What the use case
itself stages is written by `write`, in one statement, when it is done.
"""

import uuid
from collections import OrderedDict
from dataclasses import replace

from loyalty.ledger.v1 import events_pb2
from loyalty_ledger import repository
from loyalty_ledger.domain import rules
from loyalty_ledger.domain.journal import Journal
from loyalty_ledger.domain.model import Account, Hold, HoldState, Program
from loyalty_runtime.errors import NotFound, Reason
from loyalty_runtime.uow import UnitOfWork


def new_id() -> str:
    return str(uuid.uuid4())


class ProgramCache:
    """Programmes never change after creation, so each process keeps the ones it reads (bounded,
    least recently used out). Keyed by tenant too: another tenant's id is never found here."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._programs: OrderedDict[tuple[str, str], Program] = OrderedDict()

    def get(self, tenant: str, program_id: str) -> Program | None:
        program = self._programs.get((tenant, program_id))
        if program is not None:
            self._programs.move_to_end((tenant, program_id))
        return program

    def put(self, tenant: str, program: Program) -> None:
        self._programs[(tenant, program.program_id)] = program
        if len(self._programs) > self.size:
            self._programs.popitem(last=False)


PROGRAMS = ProgramCache(10_000)


async def program(uow: UnitOfWork, program_id: str) -> Program:
    cached = PROGRAMS.get(uow.tenant, program_id)
    if cached is not None:
        return cached
    found = await repository.program(uow, program_id)
    if found is None:
        raise NotFound(Reason.PROGRAM_NOT_FOUND, "program not found", field="program_id")
    PROGRAMS.put(uow.tenant, found)
    return found


class Books:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.journal = Journal(uow.now, new_id)
        # The holds read under the locks: the locked accounts' active ones and any being settled.
        self.holds: dict[str, Hold] = {}
        # What tidying up did (RunExpiry reports it).
        self.timed_out_holds = 0
        self.matured_points = 0

    async def program(self, program_id: str) -> Program:
        return await program(self.uow, program_id)

    def account(self, account_id: str) -> Account:
        """A locked account as it stands after what is staged."""
        return self.journal.accounts[account_id]

    async def lock(self, *account_ids: str) -> list[Account]:
        """Lock accounts in id order (no deadlocks between transfers) and tidy them up."""
        wanted = sorted(set(account_ids) - set(self.journal.accounts))
        if wanted:
            locked = await repository.lock_accounts(self.uow, wanted)
            if len(locked) != len(wanted):
                raise NotFound(Reason.ACCOUNT_NOT_FOUND, "account not found", field="account_id")
            for account in locked:
                await self._tidy(account)
        return [self.account(a) for a in account_ids]

    async def lock_hold(self, hold_id: str) -> tuple[Hold, Account]:
        """Lock the hold's account, tidy it up, and return the hold as it is then."""
        account = await repository.lock_account_of_hold(self.uow, hold_id)
        if account is None:
            raise NotFound(Reason.HOLD_NOT_FOUND, "hold not found", field="hold_id")
        await self._tidy(account, settling=hold_id)
        return self.holds[hold_id], self.account(account.account_id)

    async def lock_checkout(self, checkout_id: str) -> Account:
        account = await repository.lock_account_of_checkout(self.uow, checkout_id)
        if account is None:
            raise NotFound(Reason.CHECKOUT_NOT_FOUND, "checkout not found", field="checkout_id")
        await self._tidy(account)
        return self.account(account.account_id)

    def live_holds(self) -> list[Hold]:
        """The locked accounts' active holds, as they stand after what is staged."""
        changed = self.journal.changed_holds
        return [h for h in self.holds.values() if changed.get(h.hold_id, h).state is HoldState.ACTIVE]

    async def _tidy(self, account: Account, settling: str | None = None) -> None:
        """Void the account's timed-out holds and mature its due pending points. Its holds are read
        only when it holds points (or a hold is being settled), its lots only when points are pending."""
        uow, journal = self.uow, self.journal
        journal.add(account)
        if not account.is_customer:
            return
        if account.held > 0 or settling:
            holds = await repository.account_holds(uow, account.account_id, settling)
            self.holds.update((h.hold_id, h) for h in holds)
            timed_out = rules.plan_void_expired_holds(holds, uow.now)
            if timed_out:
                self.timed_out_holds += len(timed_out)
                journal.change_holds(timed_out)
                journal.release(account.account_id, sum(h.amount for h in timed_out))
                self.holds.update((h.hold_id, h) for h in timed_out)
        if account.pending > 0:
            due = await repository.maturing_lots(uow, account.account_id)
            current = journal.add(replace(self.account(account.account_id), lots=due))
            plan = rules.plan_maturation(current, uow.now)
            if plan is not None:
                matured = plan.effects[0].d_posted
                self.matured_points += matured
                journal.post(
                    plan,
                    await self.program(account.program_id),
                    amount=matured,
                    reason="matured",
                    subject_account_id=account.account_id,
                )
        if not journal.empty:
            await self.write(await self.program(account.program_id))

    async def with_lots_to_debit(self, account: Account, amount: int, prefer: str | None = None) -> Account:
        """The account with the earliest-expiring spendable lots that cover `amount` (a debit of
        `amount` consumes no more, in this order) and the lot `prefer` names, pending or not. Read
        before the use case stages anything on the account."""
        if not account.is_customer:
            return account
        uow = self.uow
        lots = await repository.spendable_lots(uow, account.account_id, repository.FIRST_LOTS)
        if len(lots) == repository.FIRST_LOTS and sum(lot.remaining for lot in lots) < amount:
            lots = await repository.spendable_lots(uow, account.account_id, None)
        if prefer and all(lot.lot_id != prefer for lot in lots):
            lots += await repository.lot(uow, account.account_id, prefer)
        return self.journal.add(replace(account, lots=lots))

    async def with_all_lots(self, account: Account) -> Account:
        return self.journal.add(
            replace(account, lots=await repository.all_lots(self.uow, account.account_id))
        )

    async def write(self, program_: Program) -> None:
        """Write what is staged (one programme's), then record the tier changes it made."""
        journal = self.journal
        if journal.empty:
            return
        tiers = await repository.write(self.uow, journal, program_)
        for account_id, (tier_code, points) in tiers.items():
            account = journal.accounts[account_id]
            if tier_code != account.tier_code:
                self.uow.record(
                    events_pb2.TierChanged(
                        account_id=account_id,
                        customer_id=account.customer_id or "",
                        program_id=account.program_id,
                        from_tier=account.tier_code,
                        to_tier=tier_code,
                        qualifying_points=points,
                    ),
                    key=account_id,
                )
                journal.set_tier(account_id, tier_code)
        for hold in journal.changed_holds.values():
            self.holds[hold.hold_id] = hold
        journal.written()
