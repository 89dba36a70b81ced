"""LedgerService: protobuf in, domain/repository calls, protobuf out. No SQL, no business rule."""

import asyncio
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api, ledger_service_pb2_grpc
from loyalty_ledger.domain import rules as r
from loyalty_ledger.domain.model import AccountKind, AssetKind, ExpiryPolicy, ExpiryRule, ProgramRules, Tier
from loyalty_ledger.repository import (
    AccountRecord,
    AccountView,
    EntryView,
    HoldRecord,
    LedgerRepository,
    LedgerTx,
    ProgramView,
)
from loyalty_runtime.errors import InvalidArgument
from loyalty_runtime.protobuf import timestamp

MAX_PAGE_SIZE = 500


def _time(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


def encode_program(view: ProgramView) -> pb.Program:
    p, rules, system = view.program, view.rules, view.system
    program = pb.Program(
        program_id=p.program_id,
        display_name=p.display_name,
        asset_kind=pb.AssetKind.Value(f"ASSET_KIND_{rules.asset_kind}"),
        asset_code=rules.asset_code,
        allow_overdraft=rules.allow_overdraft,
        expiry_policy=pb.ExpiryPolicy(
            rule=pb.ExpiryRule.Value(f"EXPIRY_RULE_{rules.expiry_policy.rule}"),
            months=rules.expiry_policy.months,
        ),
        tiers=[
            pb.Tier(
                code=t.code,
                display_name=t.display_name,
                qualifying_points=t.qualifying_points,
                earn_multiplier_bps=t.earn_multiplier_bps,
            )
            for t in rules.tiers
        ],
        tier_window_days=rules.tier_window_days,
        system_accounts=pb.SystemAccounts(
            issuance_account_id=system[AccountKind.ISSUANCE],
            redemption_account_id=system[AccountKind.REDEMPTION],
            expiry_account_id=system[AccountKind.EXPIRY],
            adjustment_account_id=system[AccountKind.ADJUSTMENT],
            donation_account_id=system[AccountKind.DONATION],
        ),
        create_time=timestamp(p.created_at),
    )
    program.default_hold_ttl.FromSeconds(rules.default_hold_ttl_seconds)
    return program


def decode_rules(program: pb.Program) -> ProgramRules:
    def enum_name(enum, value: int, prefix: str, field: str) -> str:
        if value == 0 or value not in enum.values():
            raise InvalidArgument("INVALID_ARGUMENT", f"{field} is required", field=field)
        return enum.Name(value).removeprefix(prefix)

    asset_kind = AssetKind(enum_name(pb.AssetKind, program.asset_kind, "ASSET_KIND_", "program.asset_kind"))
    rule = (
        ExpiryRule.NEVER
        if program.expiry_policy.rule == 0
        else ExpiryRule(
            enum_name(pb.ExpiryRule, program.expiry_policy.rule, "EXPIRY_RULE_", "program.expiry_policy.rule")
        )
    )
    ttl = program.default_hold_ttl.ToSeconds() if program.HasField("default_hold_ttl") else 900
    return ProgramRules(
        asset_kind=asset_kind,
        asset_code=program.asset_code or ("POINTS" if asset_kind is AssetKind.POINTS else ""),
        allow_overdraft=program.allow_overdraft,
        expiry_policy=ExpiryPolicy(rule, program.expiry_policy.months),
        default_hold_ttl_seconds=ttl,
        tiers=tuple(
            Tier(t.code, t.display_name, t.qualifying_points, t.earn_multiplier_bps) for t in program.tiers
        ),
        tier_window_days=program.tier_window_days or 365,
    )


def encode_account(view: AccountView | AccountRecord, rules: ProgramRules | None = None) -> pb.Account:
    if not isinstance(view, AccountView):
        view = AccountView(view)
    a = view.account
    tier = next((t for t in (rules.tiers if rules else ()) if t.code == a.tier_code), None)
    return pb.Account(
        account_id=a.account_id,
        program_id=a.program_id,
        customer_id=a.customer_id or "",
        kind=pb.AccountKind.Value(f"ACCOUNT_KIND_{a.kind}"),
        asset_code=rules.asset_code if rules else "",
        balance=pb.Balance(
            posted=a.posted,
            pending=a.pending,
            held=a.held,
            available=a.posted - a.held,
            expiring=[
                pb.ExpiringPoints(amount=amount, expire_time=timestamp(at)) for at, amount in view.expiring
            ],
        ),
        tier_code=a.tier_code,
        earn_multiplier_bps=tier.earn_multiplier_bps if tier else 10_000,
        create_time=timestamp(a.created_at),
    )


def encode_entry(view: EntryView) -> pb.Entry:
    e = view.entry
    return pb.Entry(
        entry_id=e.entry_id,
        type=pb.EntryType.Value(f"ENTRY_TYPE_{e.entry_type}"),
        program_id=e.program_id,
        asset_code=e.asset_code,
        postings=[
            pb.Posting(
                account_id=p.account_id,
                amount=p.amount,
                bucket=pb.BalanceBucket.Value(f"BALANCE_BUCKET_{p.bucket}"),
            )
            for p in view.postings
        ],
        reason=e.reason,
        source_ref=e.source_ref,
        reversed_entry_id=e.reversed_entry_id or "",
        unrecovered_amount=e.unrecovered_amount,
        hold_id=e.hold_id or "",
        idempotency_key=e.idempotency_key or "",
        create_time=timestamp(e.created_at),
    )


def encode_hold(h: HoldRecord) -> pb.Hold:
    return pb.Hold(
        hold_id=h.hold_id,
        account_id=h.account_id,
        amount=h.amount,
        captured_amount=h.captured_amount,
        state=pb.HoldState.Value(f"HOLD_STATE_{h.state}"),
        expire_time=timestamp(h.expires_at),
        reason=h.reason,
        source_ref=h.source_ref,
        capture_entry_id=h.capture_entry_id or "",
        create_time=timestamp(h.created_at),
    )


class LedgerServicer(ledger_service_pb2_grpc.LedgerServiceServicer):
    def __init__(self, repository: LedgerRepository, *, pause_after_commit_seconds: float = 0.0) -> None:
        self.repository = repository
        self.pause_after_commit = pause_after_commit_seconds

    async def _committed(self, response):
        if self.pause_after_commit:  # test-only crash window between commit and answer
            await asyncio.sleep(self.pause_after_commit)
        return response

    async def _change(self, request, response_type, method, work):
        return await self._committed(await self.repository.idempotent(request, response_type, method, work))

    async def CreateProgram(self, request, context):
        rules = decode_rules(request.program)

        async def work(tx: LedgerTx):
            return api.CreateProgramResponse(
                program=encode_program(await tx.create_program(request.program.display_name, rules))
            )

        return await self._change(request, api.CreateProgramResponse, "CreateProgram", work)

    async def GetProgram(self, request, context):
        r.require_id(request.program_id, "program_id")

        async def work(tx: LedgerTx):
            return api.GetProgramResponse(program=encode_program(await tx.program(request.program_id)))

        return await self.repository.read(work)

    async def OpenAccount(self, request, context):
        r.require_id(request.program_id, "program_id")

        async def work(tx: LedgerTx):
            view, created = await tx.open_account(request.program_id, request.customer_id)
            rules = (await tx.program(request.program_id)).rules
            return api.OpenAccountResponse(account=encode_account(view, rules), created=created)

        return await self._change(request, api.OpenAccountResponse, "OpenAccount", work)

    async def GetAccount(self, request, context):
        view, rules = await self.repository.account(
            request.account_id, request.program_id, request.customer_id
        )
        return api.GetAccountResponse(account=encode_account(view, rules))

    async def EarnPoints(self, request, context):
        r.require_id(request.account_id, "account_id")
        r.require_amount(request.amount)

        async def work(tx: LedgerTx):
            view, account = await tx.earn(
                request.account_id,
                request.amount,
                asset_code=request.asset_code,
                reason=request.reason,
                source_ref=request.source_ref,
                available_at=_time(request.available_time, request.HasField("available_time")),
                expires_at=_time(request.expire_time, request.HasField("expire_time")),
                qualifying=not request.non_qualifying,
            )
            rules = (await tx.program(account.program_id)).rules
            return api.EarnPointsResponse(entry=encode_entry(view), account=encode_account(account, rules))

        return await self._change(request, api.EarnPointsResponse, "EarnPoints", work)

    async def HoldPoints(self, request, context):
        r.require_id(request.account_id, "account_id")
        r.require_amount(request.amount)

        async def work(tx: LedgerTx):
            ttl = request.ttl.ToSeconds() if request.HasField("ttl") else None
            hold, account = await tx.hold(
                request.account_id,
                request.amount,
                asset_code=request.asset_code,
                reason=request.reason,
                source_ref=request.source_ref,
                ttl_seconds=ttl,
            )
            rules = (await tx.program(account.program_id)).rules
            return api.HoldPointsResponse(hold=encode_hold(hold), account=encode_account(account, rules))

        return await self._change(request, api.HoldPointsResponse, "HoldPoints", work)

    async def CaptureHold(self, request, context):
        r.require_id(request.hold_id, "hold_id")
        amount = request.amount if request.HasField("amount") else None
        if amount is not None:
            r.require_amount(amount)

        async def work(tx: LedgerTx):
            hold, view, account = await tx.capture(request.hold_id, amount, request.reason)
            rules = (await tx.program(account.program_id)).rules
            return api.CaptureHoldResponse(
                hold=encode_hold(hold), entry=encode_entry(view), account=encode_account(account, rules)
            )

        return await self._change(request, api.CaptureHoldResponse, "CaptureHold", work)

    async def ReleaseHold(self, request, context):
        r.require_id(request.hold_id, "hold_id")

        async def work(tx: LedgerTx):
            hold, account = await tx.release(request.hold_id)
            rules = (await tx.program(account.program_id)).rules
            return api.ReleaseHoldResponse(hold=encode_hold(hold), account=encode_account(account, rules))

        return await self._change(request, api.ReleaseHoldResponse, "ReleaseHold", work)

    async def GetHold(self, request, context):
        r.require_id(request.hold_id, "hold_id")
        return api.GetHoldResponse(hold=encode_hold(await self.repository.hold(request.hold_id)))

    async def ReverseEntry(self, request, context):
        r.require_id(request.entry_id, "entry_id")
        amount = request.amount if request.HasField("amount") else None
        if amount is not None:
            r.require_amount(amount)

        async def work(tx: LedgerTx):
            view = await tx.reverse(request.entry_id, amount, request.reason, request.source_ref)
            return api.ReverseEntryResponse(entry=encode_entry(view))

        return await self._change(request, api.ReverseEntryResponse, "ReverseEntry", work)

    async def TransferPoints(self, request, context):
        r.require_id(request.source_account_id, "source_account_id")
        r.require_id(request.destination_account_id, "destination_account_id")
        r.require_amount(request.amount)

        async def work(tx: LedgerTx):
            view = await tx.transfer(
                request.source_account_id,
                request.destination_account_id,
                request.amount,
                asset_code=request.asset_code,
                reason=request.reason,
            )
            return api.TransferPointsResponse(entry=encode_entry(view))

        return await self._change(request, api.TransferPointsResponse, "TransferPoints", work)

    async def GetEntry(self, request, context):
        if not request.entry_id and not request.idempotency_key:
            raise InvalidArgument(
                "INVALID_ARGUMENT", "entry_id or idempotency_key is required", field="entry_id"
            )
        view = await self.repository.entry(request.entry_id, request.idempotency_key)
        return api.GetEntryResponse(entry=encode_entry(view))

    async def ListStatementLines(self, request, context):
        r.require_id(request.account_id, "account_id")
        if request.page_size < 0:
            raise InvalidArgument("INVALID_ARGUMENT", "page_size must not be negative", field="page_size")
        page_size = min(request.page_size or 50, MAX_PAGE_SIZE)
        before = None
        if request.page_token:
            try:
                before = int(request.page_token)
            except ValueError:
                raise InvalidArgument("INVALID_ARGUMENT", "bad page_token", field="page_token") from None
        lines, more = await self.repository.statement(request.account_id, page_size, before)
        return api.ListStatementLinesResponse(
            lines=[
                pb.StatementLine(
                    entry_id=e.entry_id,
                    type=pb.EntryType.Value(f"ENTRY_TYPE_{e.entry_type}"),
                    amount=amount,
                    running_balance=balance,
                    reason=e.reason,
                    source_ref=e.source_ref,
                    create_time=timestamp(e.created_at),
                )
                for e, amount, balance, _ in lines
            ],
            next_page_token=str(lines[-1][3]) if more and lines else "",
        )

    async def RunExpiry(self, request, context):
        # The run is idempotent by nature and spans one transaction per account, so the key only
        # makes a retried call answer what the first one did.
        replay = await self.repository.replay(request, api.RunExpiryResponse, "RunExpiry")
        if replay is not None:
            return replay
        result = await self.repository.run_expiry(request.program_id)
        response = api.RunExpiryResponse(
            expired_points=result.expired_points,
            expired_lot_count=result.expired_lots,
            voided_hold_count=result.voided_holds,
            matured_points=result.matured_points,
            run_time=timestamp(result.run_time),
        )
        return await self.repository.remember_answer(request, api.RunExpiryResponse, "RunExpiry", response)

    async def RecomputeTiers(self, request, context):
        replay = await self.repository.replay(request, api.RecomputeTiersResponse, "RecomputeTiers")
        if replay is not None:
            return replay
        checked, changed = await self.repository.recompute_tiers(request.program_id)
        response = api.RecomputeTiersResponse(accounts_checked=checked, accounts_changed=changed)
        return await self.repository.remember_answer(
            request, api.RecomputeTiersResponse, "RecomputeTiers", response
        )
