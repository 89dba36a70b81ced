"""The ledger's protobuf messages <-> the domain's shapes, for the servicer (and the customer-data
export, whose records are the contract's messages). Enums through the runtime's codec, times through
loyalty_runtime.protobuf."""

from loyalty.ledger.v1 import ledger_pb2 as pb
from loyalty_ledger.commands import AccountResult
from loyalty_ledger.domain.model import (
    AccountKind,
    AssetKind,
    Bucket,
    CheckoutLine,
    Entry,
    EntryType,
    ExpiryPolicy,
    ExpiryRule,
    Hold,
    HoldState,
    LineReturn,
    Program,
    ProgramRules,
    Tier,
)
from loyalty_runtime.enums import EnumCodec
from loyalty_runtime.protobuf import timestamp

ASSET_KINDS = EnumCodec(pb.AssetKind, AssetKind)
EXPIRY_RULES = EnumCodec(pb.ExpiryRule, ExpiryRule)
ACCOUNT_KINDS = EnumCodec(pb.AccountKind, AccountKind)
BUCKETS = EnumCodec(pb.BalanceBucket, Bucket)
ENTRY_TYPES = EnumCodec(pb.EntryType, EntryType)
HOLD_STATES = EnumCodec(pb.HoldState, HoldState)

DEFAULT_HOLD_TTL_SECONDS = 900
DEFAULT_TIER_WINDOW_DAYS = 365
NO_TIER_MULTIPLIER_BPS = 10_000


def decode_rules(program: pb.Program) -> ProgramRules:
    asset_kind = ASSET_KINDS.decode(program.asset_kind, "program.asset_kind")
    rule = EXPIRY_RULES.decode_or(program.expiry_policy.rule, ExpiryRule.NEVER)
    ttl = (
        program.default_hold_ttl.ToSeconds()
        if program.HasField("default_hold_ttl")
        else DEFAULT_HOLD_TTL_SECONDS
    )
    return ProgramRules(
        asset_kind=asset_kind,
        asset_code=program.asset_code or ("POINTS" if asset_kind is AssetKind.POINTS else ""),
        allow_overdraft=program.allow_overdraft,
        expiry_policy=ExpiryPolicy(rule, program.expiry_policy.months, program.expiry_policy.warning_days),
        default_hold_ttl_seconds=ttl,
        tiers=tuple(
            Tier(t.code, t.display_name, t.qualifying_points, t.earn_multiplier_bps) for t in program.tiers
        ),
        tier_window_days=program.tier_window_days or DEFAULT_TIER_WINDOW_DAYS,
    )


def encode_program(program: Program) -> pb.Program:
    rules, system = program.rules, program.system
    message = pb.Program(
        program_id=program.program_id,
        display_name=program.display_name,
        asset_kind=ASSET_KINDS.encode(rules.asset_kind),
        asset_code=rules.asset_code,
        allow_overdraft=rules.allow_overdraft,
        expiry_policy=pb.ExpiryPolicy(
            rule=EXPIRY_RULES.encode(rules.expiry_policy.rule),
            months=rules.expiry_policy.months,
            warning_days=rules.expiry_policy.warning_days,
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
        create_time=timestamp(program.created_at),
    )
    message.default_hold_ttl.FromSeconds(rules.default_hold_ttl_seconds)
    return message


def encode_account(result: AccountResult) -> pb.Account:
    a, rules = result.account, result.program.rules
    tier = next((t for t in rules.tiers if t.code == a.tier_code), None)
    return pb.Account(
        account_id=a.account_id,
        program_id=a.program_id,
        customer_id=a.customer_id or "",
        kind=ACCOUNT_KINDS.encode(a.kind),
        asset_code=rules.asset_code,
        balance=pb.Balance(
            posted=a.posted,
            pending=a.pending,
            held=a.held,
            available=a.available,
            expiring=[
                pb.ExpiringPoints(amount=amount, expire_time=timestamp(at)) for at, amount in result.expiring
            ],
        ),
        tier_code=a.tier_code,
        earn_multiplier_bps=tier.earn_multiplier_bps if tier else NO_TIER_MULTIPLIER_BPS,
        create_time=timestamp(a.created_at),
    )


def encode_entry(entry: Entry) -> pb.Entry:
    return pb.Entry(
        entry_id=entry.entry_id,
        type=ENTRY_TYPES.encode(entry.entry_type),
        program_id=entry.program_id,
        asset_code=entry.asset_code,
        postings=[
            pb.Posting(account_id=p.account_id, amount=p.amount, bucket=BUCKETS.encode(p.bucket))
            for p in entry.postings
        ],
        reason=entry.reason,
        source_ref=entry.source_ref,
        reversed_entry_id=entry.reversed_entry_id or "",
        unrecovered_amount=entry.unrecovered_amount,
        hold_id=entry.hold_id or "",
        idempotency_key=entry.idempotency_key or "",
        create_time=timestamp(entry.created_at),
    )


def encode_hold(hold: Hold) -> pb.Hold:
    return pb.Hold(
        hold_id=hold.hold_id,
        account_id=hold.account_id,
        amount=hold.amount,
        captured_amount=hold.captured_amount,
        state=HOLD_STATES.encode(hold.state),
        expire_time=timestamp(hold.expires_at),
        reason=hold.reason,
        source_ref=hold.source_ref,
        capture_entry_id=hold.capture_entry_id or "",
        create_time=timestamp(hold.created_at),
    )


def decode_line(line: pb.CheckoutLine) -> CheckoutLine:
    return CheckoutLine(line.line_id, line.quantity, line.earn_points, line.burn_points)


def encode_line(line: CheckoutLine) -> pb.CheckoutLine:
    return pb.CheckoutLine(
        line_id=line.line_id,
        quantity=line.quantity,
        earn_points=line.earn_points,
        burn_points=line.burn_points,
    )


def decode_return(line: pb.CheckoutLineReturn) -> LineReturn:
    return LineReturn(line.line_id, line.quantity)


def encode_return(line: LineReturn) -> pb.CheckoutLineReturn:
    return pb.CheckoutLineReturn(
        line_id=line.line_id,
        quantity=line.quantity,
        earn_reversed=line.earn_reversed,
        burn_restored=line.burn_restored,
    )
