"""LedgerService: each method decodes its request into a command, runs one use case in a unit of
work (`units.idempotent` for state changes: the claim, the replay and the stored answer), and
encodes the result. No SQL, no business rule, no transaction of its own.

The runtime's call guard has already authenticated the caller and validated the request against
the contract (lengths, control characters, enums, time ranges) before a method runs; decoding here
adds what a field means: ids are UUIDs this ledger issued, amounts are in range.
"""

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api
from loyalty_ledger import app
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
    StatementPage,
    TierRun,
    TransferPoints,
)
from loyalty_ledger.domain.model import EntryType
from loyalty_ledger.domain.rules import require_amount, require_id, require_text
from loyalty_ledger.encoding import (
    ENTRY_TYPES,
    decode_line,
    decode_return,
    decode_rules,
    encode_account,
    encode_entry,
    encode_hold,
    encode_line,
    encode_program,
    encode_return,
)
from loyalty_runtime import paging
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.protobuf import moment, timestamp
from loyalty_runtime.uow import UnitsOfWork, require_key

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500


def _optional_amount(request, field: str = "amount") -> int | None:
    return require_amount(getattr(request, field), field) if request.HasField(field) else None


def _before(token: str) -> int | None:
    last = paging.decode_token(token)
    if not last:
        return None
    if not (last.isdigit() and int(last) < 2**63):  # a posting id
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "page_token is not one this service issued", field="page_token"
        )
    return int(last)


# --- encoders of results ---


def _program(program) -> api.CreateProgramResponse:
    return api.CreateProgramResponse(program=encode_program(program))


def _opened(result: AccountResult) -> api.OpenAccountResponse:
    return api.OpenAccountResponse(account=encode_account(result), created=result.created)


def _earned(result: Earned) -> api.EarnPointsResponse:
    return api.EarnPointsResponse(entry=encode_entry(result.entry), account=encode_account(result.account))


def _held(result: Held) -> api.HoldPointsResponse:
    return api.HoldPointsResponse(hold=encode_hold(result.hold), account=encode_account(result.account))


def _released(result: Held) -> api.ReleaseHoldResponse:
    return api.ReleaseHoldResponse(hold=encode_hold(result.hold), account=encode_account(result.account))


def _captured(result: Captured) -> api.CaptureHoldResponse:
    return api.CaptureHoldResponse(
        hold=encode_hold(result.hold),
        entry=encode_entry(result.entry),
        account=encode_account(result.account),
    )


def _reversed(entry) -> api.ReverseEntryResponse:
    return api.ReverseEntryResponse(entry=encode_entry(entry))


def _transferred(entry) -> api.TransferPointsResponse:
    return api.TransferPointsResponse(entry=encode_entry(entry))


def _expiry_run(run: ExpiryRun) -> api.RunExpiryResponse:
    return api.RunExpiryResponse(
        expired_points=run.expired_points,
        expired_lot_count=run.expired_lots,
        voided_hold_count=run.voided_holds,
        matured_points=run.matured_points,
        run_time=timestamp(run.run_time),
        warned_lot_count=run.warned_lots,
    )


def _tier_run(run: TierRun) -> api.RecomputeTiersResponse:
    return api.RecomputeTiersResponse(
        accounts_checked=run.accounts_checked, accounts_changed=run.accounts_changed
    )


def _settled(result: Settled) -> api.SettleCheckoutResponse:
    return api.SettleCheckoutResponse(
        burn_entry=encode_entry(result.burn_entry) if result.burn_entry else None,
        hold=encode_hold(result.hold) if result.hold else None,
        earn_entry=encode_entry(result.earn_entry) if result.earn_entry else None,
        account=encode_account(result.account),
        lines=[encode_line(line) for line in result.lines],
    )


def _returned(result: Returned) -> api.ReturnCheckoutLinesResponse:
    return api.ReturnCheckoutLinesResponse(
        earn_reversal=encode_entry(result.earn_reversal) if result.earn_reversal else None,
        burn_reversal=encode_entry(result.burn_reversal) if result.burn_reversal else None,
        account=encode_account(result.account),
        lines=[encode_return(line) for line in result.lines],
    )


def _statement(page: StatementPage) -> api.ListStatementLinesResponse:
    return api.ListStatementLinesResponse(
        lines=[
            pb.StatementLine(
                entry_id=line.entry_id,
                type=ENTRY_TYPES.encode(EntryType(line.entry_type)),
                amount=line.amount,
                running_balance=line.running_balance,
                reason=line.reason,
                source_ref=line.source_ref,
                create_time=timestamp(line.created_at),
            )
            for line in page.lines
        ],
        next_page_token=paging.encode_token(str(page.next_before)) if page.next_before is not None else "",
    )


class LedgerServicer:
    def __init__(self, units: UnitsOfWork) -> None:
        self.units = units

    # --- programmes and accounts ---

    async def CreateProgram(self, request: api.CreateProgramRequest, context) -> api.CreateProgramResponse:
        command = CreateProgram(request.program.display_name, decode_rules(request.program))
        return await self.units.idempotent(request, app.create_program, command, _program)

    async def GetProgram(self, request: api.GetProgramRequest, context) -> api.GetProgramResponse:
        command = GetProgram(require_id(request.program_id, "program_id"))
        async with self.units.read() as uow:
            return api.GetProgramResponse(program=encode_program(await app.get_program(uow, command)))

    async def OpenAccount(self, request: api.OpenAccountRequest, context) -> api.OpenAccountResponse:
        command = OpenAccount(
            require_id(request.program_id, "program_id"), require_text(request.customer_id, "customer_id")
        )
        return await self.units.idempotent(request, app.open_account, command, _opened)

    async def GetAccount(self, request: api.GetAccountRequest, context) -> api.GetAccountResponse:
        if request.account_id:
            command = GetAccount(account_id=require_id(request.account_id, "account_id"))
        else:
            command = GetAccount(
                program_id=require_id(request.program_id, "program_id"),
                customer_id=require_text(request.customer_id, "customer_id"),
            )
        async with self.units.read() as uow:
            return api.GetAccountResponse(account=encode_account(await app.get_account(uow, command)))

    # --- earning and burning ---

    async def EarnPoints(self, request: api.EarnPointsRequest, context) -> api.EarnPointsResponse:
        command = EarnPoints(
            account_id=require_id(request.account_id, "account_id"),
            amount=require_amount(request.amount),
            idempotency_key=request.idempotency_key,
            asset_code=request.asset_code,
            reason=request.reason,
            source_ref=request.source_ref,
            available_at=moment(request, "available_time"),
            expires_at=moment(request, "expire_time"),
            qualifying=not request.non_qualifying,
        )
        return await self.units.idempotent(request, app.earn_points, command, _earned)

    async def HoldPoints(self, request: api.HoldPointsRequest, context) -> api.HoldPointsResponse:
        command = HoldPoints(
            account_id=require_id(request.account_id, "account_id"),
            amount=require_amount(request.amount),
            asset_code=request.asset_code,
            reason=request.reason,
            source_ref=request.source_ref,
            ttl_seconds=request.ttl.ToSeconds() if request.HasField("ttl") else None,
        )
        return await self.units.idempotent(request, app.hold_points, command, _held)

    async def CaptureHold(self, request: api.CaptureHoldRequest, context) -> api.CaptureHoldResponse:
        command = CaptureHold(
            hold_id=require_id(request.hold_id, "hold_id"),
            idempotency_key=request.idempotency_key,
            amount=_optional_amount(request),
            reason=request.reason,
        )
        return await self.units.idempotent(request, app.capture_hold, command, _captured)

    async def ReleaseHold(self, request: api.ReleaseHoldRequest, context) -> api.ReleaseHoldResponse:
        command = ReleaseHold(require_id(request.hold_id, "hold_id"))
        return await self.units.idempotent(request, app.release_hold, command, _released)

    async def GetHold(self, request: api.GetHoldRequest, context) -> api.GetHoldResponse:
        command = GetHold(require_id(request.hold_id, "hold_id"))
        async with self.units.read() as uow:
            return api.GetHoldResponse(hold=encode_hold(await app.get_hold(uow, command)))

    # --- reversals and transfers ---

    async def ReverseEntry(self, request: api.ReverseEntryRequest, context) -> api.ReverseEntryResponse:
        command = ReverseEntry(
            entry_id=require_id(request.entry_id, "entry_id"),
            idempotency_key=request.idempotency_key,
            amount=_optional_amount(request),
            reason=request.reason,
            source_ref=request.source_ref,
        )
        return await self.units.idempotent(request, app.reverse_entry, command, _reversed)

    async def TransferPoints(self, request: api.TransferPointsRequest, context) -> api.TransferPointsResponse:
        command = TransferPoints(
            source_account_id=require_id(request.source_account_id, "source_account_id"),
            destination_account_id=require_id(request.destination_account_id, "destination_account_id"),
            amount=require_amount(request.amount),
            idempotency_key=request.idempotency_key,
            asset_code=request.asset_code,
            reason=request.reason,
        )
        return await self.units.idempotent(request, app.transfer_points, command, _transferred)

    async def GetEntry(self, request: api.GetEntryRequest, context) -> api.GetEntryResponse:
        if request.entry_id:
            command = GetEntry(entry_id=require_id(request.entry_id, "entry_id"))
        else:
            command = GetEntry(idempotency_key=require_text(request.idempotency_key, "entry_id"))
        async with self.units.read() as uow:
            return api.GetEntryResponse(entry=encode_entry(await app.get_entry(uow, command)))

    async def ListStatementLines(
        self, request: api.ListStatementLinesRequest, context
    ) -> api.ListStatementLinesResponse:
        command = ListStatementLines(
            account_id=require_id(request.account_id, "account_id"),
            page_size=paging.page_size(request.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE),
            before=_before(request.page_token),
        )
        async with self.units.read() as uow:
            return _statement(await app.list_statement_lines(uow, command))

    # --- runs ---

    async def RunExpiry(self, request: api.RunExpiryRequest, context) -> api.RunExpiryResponse:
        command = RunExpiry(require_id(request.program_id, "program_id") if request.program_id else None)
        # The run commits account by account and is idempotent by nature (a repeat finds nothing
        # due); the key makes a retried call answer what the first one did. Checked before it runs.
        require_key(request.idempotency_key)
        run = await app.run_expiry(self.units, command)
        return await self.units.idempotent(request, app.answer_run, run, _expiry_run)

    async def RecomputeTiers(self, request: api.RecomputeTiersRequest, context) -> api.RecomputeTiersResponse:
        command = RecomputeTiers(require_id(request.program_id, "program_id") if request.program_id else None)
        require_key(request.idempotency_key)
        run = await app.recompute_tiers(self.units, command)
        return await self.units.idempotent(request, app.answer_run, run, _tier_run)

    # --- checkouts ---

    async def SettleCheckout(self, request: api.SettleCheckoutRequest, context) -> api.SettleCheckoutResponse:
        command = SettleCheckout(
            account_id=require_id(request.account_id, "account_id"),
            checkout_id=require_text(request.checkout_id, "checkout_id"),
            lines=tuple(decode_line(line) for line in request.lines),
            idempotency_key=request.idempotency_key,
            hold_id=require_id(request.hold_id, "hold_id") if request.hold_id else None,
            burn_amount=_optional_amount(request, "burn_amount"),
            asset_code=request.asset_code,
            reason=request.reason,
            available_at=moment(request, "available_time"),
            expires_at=moment(request, "expire_time"),
            qualifying=not request.non_qualifying,
        )
        return await self.units.idempotent(request, app.settle_checkout, command, _settled)

    async def ReturnCheckoutLines(
        self, request: api.ReturnCheckoutLinesRequest, context
    ) -> api.ReturnCheckoutLinesResponse:
        command = ReturnCheckoutLines(
            checkout_id=require_text(request.checkout_id, "checkout_id"),
            lines=tuple(decode_return(line) for line in request.lines),
            idempotency_key=request.idempotency_key,
            reason=request.reason,
        )
        return await self.units.idempotent(request, app.return_checkout_lines, command, _returned)
