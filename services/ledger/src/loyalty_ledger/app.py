"""The ledger's use cases: one `async def` per RPC taking the unit of work and a command.

The unit of work brings the transaction, the tenant, `now` and the outbox (`uow.record`); `Books`
the locks, housekeeping and the journal of what changes; the rules decide; the repository reads and
writes. An earn is: the runtime's BEGIN and idempotency claim, the account's lock, one statement
writing the entry, and the runtime's one statement for the answer and the events, then COMMIT.

Runs over many accounts (expiry, tiers) commit account by account or programme by programme, so a
long run never holds many locks; they take the factory of units of work instead of one unit.
"""

import logging
from dataclasses import replace
from datetime import timedelta

from google.protobuf.message import Message

from loyalty.fraud.v1 import (
    assessment_pb2 as fraud_assessment,
    events_pb2 as fraud_events,
    review_pb2 as fraud_review,
)
from loyalty.ledger.v1 import events_pb2
from loyalty.promotion.v1 import events_pb2 as promotion_events
from loyalty_ledger import books as ledger_books, repository
from loyalty_ledger.books import Books, new_id
from loyalty_ledger.commands import (
    AccountResult,
    Captured,
    CaptureHold,
    CreateProgram,
    Earned,
    EarnPoints,
    ExpiryRun,
    GetAccount,
    GetEntry,
    GetHold,
    GetProgram,
    Held,
    HoldPoints,
    ListStatementLines,
    OpenAccount,
    RecomputeTiers,
    ReleaseHold,
    ReturnCheckoutLines,
    Returned,
    ReverseEntry,
    RunExpiry,
    SettleCheckout,
    Settled,
    StatementLine,
    StatementPage,
    TierRun,
    TransferPoints,
)
from loyalty_ledger.domain import rules
from loyalty_ledger.domain.model import (
    SYSTEM_KINDS,
    Account,
    AccountKind,
    Bucket,
    Checkout,
    Entry,
    EntryType,
    Hold,
    HoldState,
    Program,
    ReversibleEntry,
)
from loyalty_ledger.encoding import encode_account, encode_entry, encode_hold
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.errors import AlreadyExists, InvalidArgument, NotFound, Reason
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork, UnitsOfWork

log = logging.getLogger("loyalty.ledger")


# --- programmes and accounts ---------------------------------------------------------------------


async def create_program(uow: UnitOfWork, command: CreateProgram) -> Program:
    rules.validate_rules(command.rules)
    program = Program(
        new_id(), command.display_name, command.rules, {kind: new_id() for kind in SYSTEM_KINDS}, uow.now
    )
    await repository.create_program(uow, program)
    return program


async def get_program(uow: UnitOfWork, command: GetProgram) -> Program:
    return await ledger_books.program(uow, command.program_id)


async def open_account(uow: UnitOfWork, command: OpenAccount) -> AccountResult:
    program = await ledger_books.program(uow, command.program_id)
    uow.concerns(command.customer_id)
    return await _account_in(uow, program, command.customer_id)


async def _account_in(uow: UnitOfWork, program: Program, customer_id: str) -> AccountResult:
    """The customer's account in the programme, opened if they have none."""
    opened = await repository.open_account(uow, new_id(), program.program_id, customer_id)
    if opened is not None:
        return AccountResult(opened, program)
    # The customer has one already (perhaps opened by a concurrent call, committed as this waited).
    existing = await repository.account_of_customer(uow, program.program_id, customer_id)
    return AccountResult(existing, program, created=False)


async def get_account(uow: UnitOfWork, command: GetAccount) -> AccountResult:
    """The balance as of `now`: timed-out holds count as voided, due pending points as matured, as
    the next change to the account will record them (a read writes nothing)."""
    if command.account_id:
        found = await repository.read_account(uow, account_id=command.account_id)
    else:
        await ledger_books.program(uow, command.program_id)  # an unknown programme says so
        found = await repository.read_account(
            uow, program_id=command.program_id, customer_id=command.customer_id
        )
    if found is None:
        raise NotFound(Reason.ACCOUNT_NOT_FOUND, "account not found", field="account_id")
    account, expiring, unsettled = found
    program = await ledger_books.program(uow, account.program_id)
    if unsettled:
        account, expiring = _settled(*await repository.account_snapshot(uow, account.account_id), uow)
    return AccountResult(account, program, tuple(expiring))


def _settled(account: Account, holds: list[Hold], uow: UnitOfWork) -> tuple[Account, list]:
    timed_out = rules.plan_void_expired_holds(holds, uow.now)
    account = replace(account, held=account.held - sum(h.amount for h in timed_out))
    plan = rules.plan_maturation(account, uow.now)
    if plan is not None:
        account = rules.apply_effect(account, plan.effects[0], (), 0)
    expiring: dict = {}
    for lot in account.lots:
        if not lot.pending and lot.expires_at is not None:
            expiring[lot.expires_at] = expiring.get(lot.expires_at, 0) + lot.remaining
    return account, sorted(expiring.items())[: repository.EXPIRING_SHOWN]


# --- earning and burning ------------------------------------------------------------------------


def _answer_concerns(uow: UnitOfWork, account: Account) -> None:
    """The stored answer shows the customer's account: erasing the customer forgets it."""
    if account.customer_id:
        uow.concerns(account.customer_id)


async def earn_points(uow: UnitOfWork, command: EarnPoints) -> Earned:
    books = Books(uow)
    (account,) = await books.lock(command.account_id)
    program = await books.program(account.program_id)
    rules.require_asset(command.asset_code, program.rules.asset_code)
    entry = _earn(
        books,
        program,
        account,
        command.amount,
        idempotency_key=command.idempotency_key,
        reason=command.reason,
        source_ref=command.source_ref,
        available_at=command.available_at,
        expires_at=command.expires_at,
        qualifying=command.qualifying,
    )
    await books.write(program)
    _answer_concerns(uow, account)
    return Earned(entry, AccountResult(books.account(account.account_id), program))


async def resolve_review(uow: UnitOfWork, event: fraud_events.CaseResolved) -> None:
    """A fraud review of a checkout was resolved: the points its settlement left pending mature now
    (approved) or are taken back (rejected). Once: the consumer handles each event once, an approved
    entry has nothing pending left, and a rejection's reversal is keyed by the case."""
    if event.kind != fraud_assessment.ASSESSMENT_KIND_CHECKOUT:
        return
    checkout = await repository.checkout(uow, event.subject_id)
    if checkout is None or checkout.earn_entry_id is None:
        return  # nothing was earned, or the checkout never settled here
    if event.resolution == fraud_review.REVIEW_CASE_STATE_APPROVED:
        # The account is locked before its lots, as every use case does; locking it again tidies
        # it up, which matures the points just made due.
        await Books(uow).lock(checkout.account_id)
        if await repository.make_available_now(uow, checkout.earn_entry_id):
            await Books(uow).lock(checkout.account_id)
    elif event.resolution == fraud_review.REVIEW_CASE_STATE_REJECTED:
        await reverse_entry(
            uow,
            ReverseEntry(
                entry_id=checkout.earn_entry_id,
                idempotency_key=f"fraud:{event.review_case_id}",
                reason="fraud review rejected",
                source_ref=event.review_case_id,
            ),
        )


async def post_reward(uow: UnitOfWork, event: promotion_events.RewardGranted) -> None:
    """A trigger's points reward (promotion's `reward.granted`), posted to the customer's account in
    its programme, opened if they have none. Posted once: the consumer handles each event once, and
    the entry carries the grant id as its source."""
    if event.reward.WhichOneof("kind") != "points":
        return  # code rewards are the promotion service's own
    program = await ledger_books.program(uow, event.program_id)
    account = (await _account_in(uow, program, event.customer_id)).account
    reward = event.reward.points
    expires_after = reward.expires_after.ToTimedelta() if reward.HasField("expires_after") else None
    await earn_points(
        uow,
        EarnPoints(
            account_id=account.account_id,
            amount=reward.points,
            idempotency_key=f"reward:{event.grant_id}",
            reason="reward",
            source_ref=event.grant_id,
            expires_at=uow.now + expires_after if expires_after else None,
        ),
    )


async def reverse_reward(uow: UnitOfWork, event: promotion_events.RewardReversed) -> None:
    """A trigger's reward taken back (promotion's `reward.reversed`, its clawback policy after a
    return): the entry that posted it is reversed, once (the consumer handles each event once, and
    the reversal's key is the grant's). A reward never posted (none was for that grant) is left."""
    earned = await repository.entry_by_key(uow, f"reward:{event.grant_id}")
    if earned is None:
        return
    await reverse_entry(
        uow,
        ReverseEntry(
            entry_id=earned.entry_id,
            idempotency_key=f"reward-reversal:{event.grant_id}",
            reason="reward clawed back",
            source_ref=event.grant_id,
        ),
    )


def _earn(
    books: Books,
    program: Program,
    account: Account,
    amount: int,
    *,
    available_at,
    expires_at,
    qualifying,
    **entry_fields,
) -> Entry:
    uow = books.uow
    plan = rules.plan_earn(
        account,
        program.system_account(AccountKind.ISSUANCE),
        amount,
        program.rules,
        uow.now,
        available_at=available_at,
        expires_at=expires_at,
        qualifying=qualifying,
    )
    entry = books.journal.post(
        plan,
        program,
        amount=amount,
        subject_account_id=account.account_id,
        qualifying_account_id=account.account_id if qualifying else None,
        **entry_fields,
    )
    uow.record(
        events_pb2.PointsEarned(
            entry_id=entry.entry_id,
            account_id=account.account_id,
            customer_id=account.customer_id or "",
            program_id=program.program_id,
            amount=amount,
            pending=plan.postings[0].bucket is Bucket.PENDING,
            source_ref=entry.source_ref,
        ),
        key=account.account_id,
    )
    return entry


async def hold_points(uow: UnitOfWork, command: HoldPoints) -> Held:
    books = Books(uow)
    (account,) = await books.lock(command.account_id)
    program = await books.program(account.program_id)
    rules.require_asset(command.asset_code, program.rules.asset_code)
    effect = rules.plan_hold(account, command.amount, program.rules)
    ttl = rules.hold_ttl(program.rules, command.ttl_seconds)
    hold = Hold(
        new_id(),
        account.account_id,
        command.amount,
        uow.now + timedelta(seconds=ttl),
        reason=command.reason,
        source_ref=command.source_ref,
        created_at=uow.now,
    )
    books.journal.place_hold(hold, effect.d_held)
    await books.write(program)
    _answer_concerns(uow, account)
    return Held(hold, AccountResult(books.account(account.account_id), program))


async def capture_hold(uow: UnitOfWork, command: CaptureHold) -> Captured:
    books = Books(uow)
    hold, account = await books.lock_hold(command.hold_id)
    program = await books.program(account.program_id)
    captured, entry = await _capture(
        books,
        program,
        hold,
        command.amount,
        reason=command.reason,
        source_ref=hold.source_ref,
        idempotency_key=command.idempotency_key,
    )
    await books.write(program)
    _answer_concerns(uow, account)
    return Captured(captured, entry, AccountResult(books.account(account.account_id), program))


async def _capture(
    books: Books, program: Program, hold: Hold, amount: int | None, **entry_fields
) -> tuple[Hold, Entry]:
    uow = books.uow
    # A capture takes at most the hold, so the lots that cover the hold are all it can consume.
    account = await books.with_lots_to_debit(books.account(hold.account_id), hold.amount)
    plan, captured = rules.plan_capture(
        account, program.system_account(AccountKind.REDEMPTION), hold, amount, uow.now
    )
    entry = books.journal.post(
        plan,
        program,
        amount=captured.captured_amount,
        hold_id=hold.hold_id,
        subject_account_id=account.account_id,
        **entry_fields,
    )
    captured = replace(captured, capture_entry_id=entry.entry_id)
    books.journal.change_holds([captured])
    uow.record(
        events_pb2.PointsBurned(
            entry_id=entry.entry_id,
            account_id=account.account_id,
            customer_id=account.customer_id or "",
            program_id=program.program_id,
            amount=captured.captured_amount,
            hold_id=hold.hold_id,
            source_ref=entry.source_ref,
        ),
        key=account.account_id,
    )
    return captured, entry


async def release_hold(uow: UnitOfWork, command: ReleaseHold) -> Held:
    books = Books(uow)
    hold, account = await books.lock_hold(command.hold_id)
    program = await books.program(account.program_id)
    effect, released = rules.plan_release(hold, uow.now)
    if effect is not None:
        books.journal.change_holds([released])
        books.journal.release(account.account_id, hold.amount)
    await books.write(program)
    _answer_concerns(uow, account)
    return Held(released, AccountResult(books.account(account.account_id), program))


async def get_hold(uow: UnitOfWork, command: GetHold) -> Hold:
    hold = await repository.hold(uow, command.hold_id)
    if hold is None:
        raise NotFound(Reason.HOLD_NOT_FOUND, "hold not found", field="hold_id")
    if hold.state is HoldState.ACTIVE and hold.expires_at <= uow.now:
        hold = replace(hold, state=HoldState.EXPIRED)  # voided lazily; shown as it is
    return hold


# --- reversals and transfers --------------------------------------------------------------------


async def reverse_entry(uow: UnitOfWork, command: ReverseEntry) -> Entry:
    original = await repository.entry(uow, command.entry_id)
    if original is None:
        raise NotFound(Reason.ENTRY_NOT_FOUND, "entry not found", field="entry_id")
    books = Books(uow)
    await books.lock(*(a for a in (original.subject_account_id, original.counter_account_id) if a))
    program = await books.program(original.program_id)
    reversed_so_far = await repository.reversed_amounts(uow, [original.entry_id])
    entry = await _reverse(
        books,
        program,
        original,
        reversed_so_far.get(original.entry_id, 0),
        command.amount,
        reason=command.reason,
        source_ref=command.source_ref or original.source_ref,
        idempotency_key=command.idempotency_key,
    )
    await books.write(program)
    if original.subject_account_id:
        _answer_concerns(uow, books.account(original.subject_account_id))
    return entry


async def _reverse(
    books: Books, program: Program, original: Entry, reversed_so_far: int, amount: int | None, **entry_fields
) -> Entry:
    """Plan and stage the reversal of `original`, its accounts locked and `reversed_so_far` read
    under those locks."""
    debited = {EntryType.EARN: original.subject_account_id, EntryType.TRANSFER: original.counter_account_id}
    taken_from = debited.get(original.entry_type)
    if taken_from:
        prefer = original.lot_id if original.entry_type is EntryType.EARN else None
        await books.with_lots_to_debit(books.account(taken_from), original.amount, prefer)
    plan = rules.plan_reversal(
        ReversibleEntry.of(original, reversed_so_far),
        amount,
        dict(books.journal.accounts),
        {kind: program.system_account(kind) for kind in program.system},
        program.rules,
        books.live_holds(),
    )
    entry = books.journal.post(
        plan,
        program,
        amount=plan.reversed_amount,
        reversed_entry_id=original.entry_id,
        subject_account_id=original.subject_account_id,
        counter_account_id=original.counter_account_id,
        qualifying_account_id=original.qualifying_account_id if plan.qualifying_delta else None,
        **entry_fields,
    )
    subject = books.account(original.subject_account_id) if original.subject_account_id else None
    books.uow.record(
        events_pb2.PointsReversed(
            entry_id=entry.entry_id,
            reversed_entry_id=original.entry_id,
            account_id=original.subject_account_id or "",
            customer_id=(subject.customer_id if subject else None) or "",
            program_id=program.program_id,
            amount=plan.reversed_amount,
            unrecovered_amount=plan.unrecovered,
        ),
        key=original.subject_account_id or original.entry_id,
    )
    return entry


async def transfer_points(uow: UnitOfWork, command: TransferPoints) -> Entry:
    books = Books(uow)
    source, destination = await books.lock(command.source_account_id, command.destination_account_id)
    program = await books.program(source.program_id)
    rules.require_same_program(source.program_id, destination.program_id)
    rules.require_asset(command.asset_code, program.rules.asset_code)
    source = await books.with_lots_to_debit(source, command.amount)
    plan = rules.plan_transfer(source, destination, command.amount, program.rules, uow.now)
    entry = books.journal.post(
        plan,
        program,
        amount=command.amount,
        reason=command.reason,
        idempotency_key=command.idempotency_key,
        subject_account_id=source.account_id,
        counter_account_id=destination.account_id,
    )
    uow.record(
        events_pb2.PointsTransferred(
            entry_id=entry.entry_id,
            source_account_id=source.account_id,
            destination_account_id=destination.account_id,
            program_id=program.program_id,
            amount=command.amount,
        ),
        key=source.account_id,
    )
    await books.write(program)
    _answer_concerns(uow, source)
    _answer_concerns(uow, destination)
    return entry


# --- reads --------------------------------------------------------------------------------------


async def get_entry(uow: UnitOfWork, command: GetEntry) -> Entry:
    if command.entry_id:
        entry = await repository.entry(uow, command.entry_id)
    else:
        entry = await repository.entry_by_key(uow, command.idempotency_key)
    if entry is None:
        raise NotFound(Reason.ENTRY_NOT_FOUND, "entry not found", field="entry_id")
    return entry


async def list_statement_lines(uow: UnitOfWork, command: ListStatementLines) -> StatementPage:
    if not await repository.account_exists(uow, command.account_id):
        raise NotFound(Reason.ACCOUNT_NOT_FOUND, "account not found", field="account_id")
    rows = await repository.statement_lines(uow, command.account_id, command.before, command.page_size + 1)
    page = rows[: command.page_size]
    lines = tuple(
        StatementLine(
            row["entry_id"],
            row["entry_type"],
            row["amount"],
            row["balance_after"] or 0,
            row["reason"],
            row["source_ref"],
            row["created_at"],
        )
        for row in page
    )
    more = len(rows) > command.page_size
    return StatementPage(lines, page[-1]["last_id"] if more and page else None)


# --- runs (RPCs and schedules) ------------------------------------------------------------------


async def run_expiry(units: UnitsOfWork, command: RunExpiry) -> ExpiryRun:
    """Expire due lots, void timed-out holds and mature pending points, one unit of work per account
    that has something due. Idempotent by nature: a second run at the same time finds nothing due."""
    async with units.read() as uow:
        if command.program_id:
            await ledger_books.program(uow, command.program_id)
        due = await repository.due_accounts(uow, command.program_id)
        run = ExpiryRun(run_time=uow.now)
    for account_id in due:
        async with units.change() as uow:
            done = await expire_account(uow, account_id)
        run = ExpiryRun(
            run.run_time,
            run.expired_points + done.expired_points,
            run.expired_lots + done.expired_lots,
            run.voided_holds + done.voided_holds,
            run.matured_points + done.matured_points,
        )
    return replace(run, warned_lots=await warn_expiring(units))


async def warn_expiring(units: UnitsOfWork) -> int:
    """points.expiring for every account with lots newly inside their programme's warning window,
    chunk by chunk, each lot once (marked in the transaction that records its event)."""
    warned = 0
    while True:
        async with units.change() as uow:
            accounts = await repository.warn_expiring_lots(uow)
            for row in accounts:
                uow.record(
                    events_pb2.PointsExpiring(
                        account_id=row["account_id"],
                        customer_id=row["customer_id"] or "",
                        program_id=row["program_id"],
                        amount=row["amount"],
                        expire_time=timestamp(row["expires_at"]),
                    ),
                    key=row["account_id"],
                )
        lots = sum(row["lots"] for row in accounts)
        warned += lots
        if lots < repository.WARN_CHUNK:
            return warned


async def answer_run(uow: UnitOfWork, run: ExpiryRun | TierRun) -> ExpiryRun | TierRun:
    """The answer stored under a run's idempotency key: the run itself already committed, unit by
    unit (`run_expiry`, `recompute_tiers`), and a repeat of it changes nothing."""
    return run


async def expire_account(uow: UnitOfWork, account_id: str) -> ExpiryRun:
    books = Books(uow)
    (account,) = await books.lock(account_id)
    program = await books.program(account.program_id)
    account = books.journal.add(replace(account, lots=await repository.due_lots(uow, account_id)))
    plan, lots = rules.plan_expiry(account, program.system_account(AccountKind.EXPIRY), uow.now)
    expired = 0
    if plan is not None:
        expired = plan.postings[1].amount
        entry = books.journal.post(
            plan, program, amount=expired, reason="expired", subject_account_id=account_id
        )
        uow.record(
            events_pb2.PointsExpired(
                entry_id=entry.entry_id,
                account_id=account_id,
                customer_id=account.customer_id or "",
                program_id=program.program_id,
                amount=expired,
            ),
            key=account_id,
        )
    await books.write(program)
    return ExpiryRun(uow.now, expired, lots, books.timed_out_holds, books.matured_points)


async def recompute_tiers(units: UnitsOfWork, command: RecomputeTiers) -> TierRun:
    """Tiers as the rolling window moves on (downgrades), one unit of work per programme."""
    async with units.read() as uow:
        if command.program_id:
            program_ids = [(await ledger_books.program(uow, command.program_id)).program_id]
        else:
            program_ids = await repository.program_ids(uow)
    run = TierRun()
    for program_id in program_ids:
        async with units.change() as uow:
            done = await recompute_program_tiers(uow, program_id)
        run = TierRun(
            run.accounts_checked + done.accounts_checked, run.accounts_changed + done.accounts_changed
        )
    return run


async def recompute_program_tiers(uow: UnitOfWork, program_id: str) -> TierRun:
    program = await ledger_books.program(uow, program_id)
    if not program.rules.tiers:
        return TierRun()
    accounts = await repository.qualifying_in_program(uow, program)
    moves = {}
    for row in accounts:
        tier = rules.tier_for(program.rules.tiers, row["points"])
        new = tier.code if tier else ""
        if new != row["tier_code"]:
            moves[row["account_id"]] = (row["customer_id"], row["tier_code"], new, row["points"])
    changed = await repository.set_tiers(uow, [(a, old, new) for a, (_, old, new, _) in moves.items()])
    for account_id in sorted(changed):
        customer_id, old, new, points = moves[account_id]
        uow.record(
            events_pb2.TierChanged(
                account_id=account_id,
                customer_id=customer_id,
                program_id=program_id,
                from_tier=old,
                to_tier=new,
                qualifying_points=points,
            ),
            key=account_id,
        )
    return TierRun(len(accounts), len(changed))


async def _for_every_tenant(units: UnitsOfWork, run) -> None:
    async with units.database.connection() as connection:
        tenants = await repository.tenants(connection)
    for tenant in tenants:
        token = bind_call(CallContext(tenant_id=tenant, principal="ledger-scheduler"))
        try:
            await run(units)
        except Exception:
            log.exception("scheduled run failed for a tenant", extra={"fields": {"tenant": tenant}})
        finally:
            unbind_call(token)


async def scheduled_expiry(resources) -> None:
    """The expiry schedule: every tenant's RunExpiry."""
    await _for_every_tenant(resources.units, lambda units: run_expiry(units, RunExpiry()))


async def scheduled_tiers(resources) -> None:
    """The tier schedule: every tenant's RecomputeTiers."""
    await _for_every_tenant(resources.units, lambda units: recompute_tiers(units, RecomputeTiers()))


# --- checkouts ----------------------------------------------------------------------------------


async def settle_checkout(uow: UnitOfWork, command: SettleCheckout) -> Settled:
    lines = rules.validate_lines(command.lines)
    books = Books(uow)
    if command.hold_id:
        hold, account = await books.lock_hold(command.hold_id)
        if account.account_id != command.account_id:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, "the hold is on another account", field="hold_id")
    elif command.burn_amount is not None:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "burn_amount needs a hold_id", field="burn_amount")
    else:
        (account,) = await books.lock(command.account_id)
    if await repository.checkout_exists(uow, command.checkout_id):  # read under the account's lock
        raise AlreadyExists(
            Reason.CHECKOUT_ALREADY_SETTLED, "this checkout was already settled", field="checkout_id"
        )
    program = await books.program(account.program_id)
    rules.require_asset(command.asset_code, program.rules.asset_code)
    earned = sum(line.earn_points for line in lines)
    captured = burn = earn = None
    if command.hold_id:
        captured, burn = await _capture(
            books,
            program,
            hold,
            command.burn_amount,
            reason=command.reason,
            source_ref=command.checkout_id,
            idempotency_key=None if earned else command.idempotency_key,
        )
    lines = rules.allocate_burn(lines, captured.captured_amount if captured else 0)
    if earned:
        earn = _earn(
            books,
            program,
            books.account(account.account_id),
            earned,
            idempotency_key=command.idempotency_key,
            reason=command.reason,
            source_ref=command.checkout_id,
            available_at=command.available_at,
            expires_at=command.expires_at,
            qualifying=command.qualifying,
        )
    await books.write(program)
    checkout = Checkout(
        command.checkout_id,
        account.account_id,
        program.program_id,
        earn.entry_id if earn else None,
        burn.entry_id if burn else None,
        lines,
    )
    await repository.insert_checkout(uow, checkout, command.hold_id)
    _answer_concerns(uow, account)
    return Settled(AccountResult(books.account(account.account_id), program), lines, captured, burn, earn)


async def return_checkout_lines(uow: UnitOfWork, command: ReturnCheckoutLines) -> Returned:
    books = Books(uow)
    account = await books.lock_checkout(command.checkout_id)
    checkout = await repository.checkout(uow, command.checkout_id)
    program = await books.program(checkout.program_id)
    returns = rules.plan_line_returns(checkout, command.lines)
    originals = [e for e in (checkout.earn_entry_id, checkout.burn_entry_id) if e]
    reversed_so_far = await repository.reversed_amounts(uow, originals)
    reversals = []
    # The earn first: taking points back reads the lots, giving the burn back only adds one.
    for entry_id, amount in (
        (checkout.earn_entry_id, sum(r.earn_reversed for r in returns)),
        (checkout.burn_entry_id, sum(r.burn_restored for r in returns)),
    ):
        original = await repository.entry(uow, entry_id) if entry_id and amount else None
        left = original.amount - reversed_so_far.get(entry_id, 0) if original else 0
        if min(amount, left) <= 0:
            reversals.append(None)
            continue
        key = command.idempotency_key if not any(reversals) else None
        reversals.append(
            await _reverse(
                books,
                program,
                original,
                reversed_so_far.get(entry_id, 0),
                min(amount, left),
                reason=command.reason,
                source_ref=command.checkout_id,
                idempotency_key=key,
            )
        )
    await books.write(program)
    earn_reversal, burn_reversal = reversals
    await repository.insert_returns(
        uow,
        command.checkout_id,
        returns,
        earn_reversal.entry_id if earn_reversal else None,
        burn_reversal.entry_id if burn_reversal else None,
    )
    _answer_concerns(uow, account)
    return Returned(
        AccountResult(books.account(account.account_id), program), returns, earn_reversal, burn_reversal
    )


# --- customer data (profile's export, customer.erased, customer.merged) -------------------------


async def export_customer_data(uow: UnitOfWork, customer_id: str) -> list[Message]:
    """The customer's accounts, every entry that touched them and their holds, as the contract's
    messages (Account, Entry, Hold)."""
    accounts = await repository.accounts_of_customer(uow, customer_id)
    ids = [a.account_id for a in accounts]
    records: list[Message] = [
        encode_account(AccountResult(a, await ledger_books.program(uow, a.program_id))) for a in accounts
    ]
    records += [encode_entry(e) for e in await repository.entries_of_accounts(uow, ids)]
    records += [encode_hold(h) for h in await repository.holds_of_accounts(uow, ids)]
    return records


async def erase_customer(uow: UnitOfWork, customer_id: str) -> None:
    """Nothing of the ledger's own to erase: a customer is an id on their accounts and the journal
    stays, as the books must. The runtime forgets the stored answers about them in the same unit of
    work (privacy.py), so replaying one says CUSTOMER_ERASED."""


async def merge_customers(uow: UnitOfWork, survivor_id: str, merged_id: str) -> None:
    """In each programme where the merged customer has an account, move its balance and lots (with
    their expiry dates) to the survivor's account there, opening it if needed (`rules.plan_merge`).
    A second delivery finds nothing left to move."""
    if survivor_id == merged_id:
        return
    for merged in await repository.accounts_of_customer(uow, merged_id):
        program = await ledger_books.program(uow, merged.program_id)
        survivor = await _account_in(uow, program, survivor_id)
        books = Books(uow)
        source, destination = await books.lock(merged.account_id, survivor.account.account_id)
        source = await books.with_all_lots(source)
        if source.posted < 0:
            destination = await books.with_lots_to_debit(destination, -source.posted)
        plan = rules.plan_merge(source, destination, books.live_holds())
        if plan is None:
            continue
        moved = abs(source.posted) + source.pending
        entry = books.journal.post(
            plan,
            program,
            amount=moved,
            reason="customer merged",
            subject_account_id=source.account_id,
            counter_account_id=destination.account_id,
        )
        uow.record(
            events_pb2.PointsTransferred(
                entry_id=entry.entry_id,
                source_account_id=source.account_id,
                destination_account_id=destination.account_id,
                program_id=program.program_id,
                amount=moved,
            ),
            key=source.account_id,
        )
        await books.write(program)
