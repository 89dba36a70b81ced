"""The ledger end to end: real server, production interceptors, real PostgreSQL."""

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api
from tests.conftest import rpc_failure
from tests.service.ledger.helpers import journal_checks, key


async def test_earn_hold_capture_release_and_statement(tenant, database_url):
    program = await tenant.program()
    account = await tenant.account(program)
    earned = await tenant.earn(account, 500, reason="purchase", source_ref="chk-1")
    assert earned.account.balance.posted == 500
    assert sorted(p.amount for p in earned.entry.postings) == [-500, 500]
    hold = await tenant.hold(account, 200, source_ref="chk-2")
    assert (await tenant.balance(account)).available == 300
    captured = await tenant.capture(hold.hold_id, amount=150)
    assert captured.hold.state == pb.HOLD_STATE_CAPTURED and captured.hold.captured_amount == 150
    assert captured.account.balance.posted == 350 and captured.account.balance.held == 0
    second = await tenant.hold(account, 100)
    released = await tenant.ReleaseHold(api.ReleaseHoldRequest(hold_id=second.hold_id, idempotency_key=key()))
    assert released.hold.state == pb.HOLD_STATE_RELEASED and released.account.balance.available == 350

    statement = await tenant.ListStatementLines(
        api.ListStatementLinesRequest(account_id=account, page_size=1)
    )
    assert [(x.amount, x.running_balance) for x in statement.lines] == [(-150, 350)]
    rest = await tenant.ListStatementLines(
        api.ListStatementLinesRequest(account_id=account, page_token=statement.next_page_token)
    )
    assert [(x.amount, x.running_balance) for x in rest.lines] == [(500, 500)] and not rest.next_page_token
    by_key = await tenant.GetEntry(api.GetEntryRequest(idempotency_key=earned.entry.idempotency_key))
    assert by_key.entry.entry_id == earned.entry.entry_id
    await journal_checks(database_url)


async def test_idempotent_replay_and_key_reuse(tenant):
    program = await tenant.program()
    account = await tenant.account(program)
    k = key()
    first = await tenant.earn(account, 70, idempotency_key=k)
    again = await tenant.earn(account, 70, idempotency_key=k)
    assert again == first
    assert (await tenant.balance(account)).posted == 70
    failure = await rpc_failure(tenant.earn(account, 71, idempotency_key=k))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
    # Concurrent retries of one call apply it once.
    k2 = key()
    results = await asyncio.gather(*(tenant.earn(account, 5, idempotency_key=k2) for _ in range(8)))
    assert len({r.entry.entry_id for r in results}) == 1
    assert (await tenant.balance(account)).posted == 75


@pytest.mark.parametrize("amount", [0, -10])
async def test_bad_amounts_are_refused_and_write_nothing(tenant, amount):
    program = await tenant.program()
    account = await tenant.account(program)
    await tenant.earn(account, 100)
    failure = await rpc_failure(tenant.earn(account, amount))
    assert (failure.code, failure.reason, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_AMOUNT",
        ["amount"],
    )
    failure = await rpc_failure(
        tenant.HoldPoints(api.HoldPointsRequest(account_id=account, amount=amount, idempotency_key=key()))
    )
    assert failure.reason == "INVALID_AMOUNT"
    balance = await tenant.balance(account)
    assert (balance.posted, balance.held) == (100, 0)


async def test_refusals_have_stable_reasons(tenant, other_tenant, database_url):
    program = await tenant.program(default_hold_ttl=Duration(seconds=60))
    account = await tenant.account(program)
    await tenant.earn(account, 100)
    cases = []
    unknown = await rpc_failure(tenant.earn(str(uuid.uuid4()), 10))
    cases.append((unknown, grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND"))
    foreign = await rpc_failure(other_tenant.earn(account, 10))
    cases.append((foreign, grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND"))
    assert (foreign.code, foreign.reason, foreign.message, foreign.fields) == (
        unknown.code,
        unknown.reason,
        unknown.message,
        unknown.fields,
    )
    cases.append(
        (
            await rpc_failure(other_tenant.GetAccount(api.GetAccountRequest(account_id=account))),
            grpc.StatusCode.NOT_FOUND,
            "ACCOUNT_NOT_FOUND",
        )
    )
    cases.append(
        (
            await rpc_failure(
                tenant.OpenAccount(
                    api.OpenAccountRequest(
                        program_id=str(uuid.uuid4()), customer_id="c", idempotency_key=key()
                    )
                )
            ),
            grpc.StatusCode.NOT_FOUND,
            "PROGRAM_NOT_FOUND",
        )
    )
    cases.append(
        (
            await rpc_failure(tenant.earn(account, 10, asset_code="EUR")),
            grpc.StatusCode.FAILED_PRECONDITION,
            "ASSET_MISMATCH",
        )
    )
    cases.append(
        (
            await rpc_failure(tenant.hold(account, 101)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "INSUFFICIENT_BALANCE",
        )
    )
    hold = await tenant.hold(account, 40)
    cases.append(
        (
            await rpc_failure(tenant.capture(hold.hold_id, amount=41)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "CAPTURE_EXCEEDS_HOLD",
        )
    )
    cases.append(
        (await rpc_failure(other_tenant.capture(hold.hold_id)), grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND")
    )
    await tenant.ReleaseHold(api.ReleaseHoldRequest(hold_id=hold.hold_id, idempotency_key=key()))
    cases.append(
        (
            await rpc_failure(tenant.capture(hold.hold_id)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "HOLD_NOT_ACTIVE",
        )
    )
    short = await tenant.hold(account, 10, ttl=Duration(seconds=1))
    await asyncio.sleep(1.1)
    cases.append(
        (
            await rpc_failure(tenant.capture(short.hold_id)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "HOLD_NOT_ACTIVE",
        )
    )
    other_program = await tenant.program(asset_kind=pb.ASSET_KIND_STORED_VALUE, asset_code="EUR")
    other_account = await tenant.account(other_program)
    cases.append(
        (
            await rpc_failure(
                tenant.TransferPoints(
                    api.TransferPointsRequest(
                        source_account_id=account,
                        destination_account_id=other_account,
                        amount=1,
                        idempotency_key=key(),
                    )
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "ASSET_MISMATCH",
        )
    )
    cases.append(
        (
            await rpc_failure(
                tenant.ReverseEntry(
                    api.ReverseEntryRequest(entry_id=str(uuid.uuid4()), idempotency_key=key())
                )
            ),
            grpc.StatusCode.NOT_FOUND,
            "ENTRY_NOT_FOUND",
        )
    )
    cases.append(
        (
            await rpc_failure(tenant.EarnPoints(api.EarnPointsRequest(account_id=account, amount=1))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
    )
    for failure, code, reason in cases:
        assert (failure.code, failure.reason) == (code, reason), failure.message
    balance = await tenant.balance(account)
    assert (balance.posted, balance.held, balance.available) == (100, 0, 100)
    statement = await tenant.ListStatementLines(api.ListStatementLinesRequest(account_id=account))
    assert len(statement.lines) == 1  # nothing but the first earn was written
    await journal_checks(database_url)


async def test_pending_expiry_reversal_transfer_and_tiers(tenant, database_url):
    program = await tenant.program(
        tiers=[
            pb.Tier(code="SILVER", qualifying_points=100, earn_multiplier_bps=12_000),
            pb.Tier(code="GOLD", qualifying_points=1000, earn_multiplier_bps=15_000),
        ],
        expiry_policy=pb.ExpiryPolicy(rule=pb.EXPIRY_RULE_MONTHS_AFTER_EARN, months=12),
    )
    alice, bob = await tenant.account(program), await tenant.account(program)
    soon = Timestamp()
    soon.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
    short_lived = await tenant.earn(alice, 60, expire_time=soon)
    later = await tenant.earn(alice, 200, available_time=soon)
    assert later.account.balance.pending == 200 and later.account.tier_code == "SILVER"
    big = await tenant.earn(alice, 800)
    assert big.account.tier_code == "GOLD" and big.account.earn_multiplier_bps == 15_000
    await asyncio.sleep(1.1)
    run = await tenant.RunExpiry(api.RunExpiryRequest(program_id=program.program_id, idempotency_key=key()))
    assert (run.expired_points, run.matured_points) == (60, 200)
    again = await tenant.RunExpiry(api.RunExpiryRequest(idempotency_key=key()))
    assert again.expired_points == 0
    balance = await tenant.balance(alice)
    assert (balance.posted, balance.pending) == (1000, 0)
    assert sum(x.amount for x in balance.expiring) == 1000
    assert short_lived.entry.entry_id

    reversal = await tenant.ReverseEntry(
        api.ReverseEntryRequest(entry_id=big.entry.entry_id, amount=300, idempotency_key=key())
    )
    assert (
        reversal.entry.type == pb.ENTRY_TYPE_REVERSAL
        and reversal.entry.reversed_entry_id == big.entry.entry_id
    )
    assert (await tenant.GetAccount(api.GetAccountRequest(account_id=alice))).account.tier_code == "SILVER"
    too_much = await rpc_failure(
        tenant.ReverseEntry(
            api.ReverseEntryRequest(entry_id=big.entry.entry_id, amount=501, idempotency_key=key())
        )
    )
    assert too_much.reason == "REVERSAL_EXCEEDS_ENTRY"

    await tenant.TransferPoints(
        api.TransferPointsRequest(
            source_account_id=alice, destination_account_id=bob, amount=650, idempotency_key=key()
        )
    )
    # The rest of the big earn was spent (transferred): reversing it without overdraft is capped.
    rest = await tenant.ReverseEntry(
        api.ReverseEntryRequest(entry_id=big.entry.entry_id, idempotency_key=key())
    )
    assert rest.entry.unrecovered_amount == 450
    assert (await tenant.balance(alice)).posted == 0
    assert (await tenant.balance(bob)).posted == 650
    donation = program.system_accounts.donation_account_id
    await tenant.TransferPoints(
        api.TransferPointsRequest(
            source_account_id=bob, destination_account_id=donation, amount=50, idempotency_key=key()
        )
    )
    pool = await tenant.GetAccount(api.GetAccountRequest(account_id=donation))
    assert pool.account.balance.posted == 50
    tiers = await tenant.RecomputeTiers(api.RecomputeTiersRequest(idempotency_key=key()))
    assert tiers.accounts_checked == 2
    await journal_checks(database_url)


async def test_concurrent_burns_never_exceed_the_balance(tenant, database_url):
    program = await tenant.program()
    account = await tenant.account(program)
    await tenant.earn(account, 1000)

    async def burn() -> int:
        try:
            hold = await tenant.hold(account, 30)
            return (await tenant.capture(hold.hold_id)).hold.captured_amount
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            return 0

    captured = await asyncio.gather(*(burn() for _ in range(50)))
    assert sum(captured) == 990 and captured.count(30) == 33
    balance = await tenant.balance(account)
    assert (balance.posted, balance.held, balance.available) == (10, 0, 10)
    await journal_checks(database_url)


async def test_reversing_an_earn_takes_back_the_points_held_from_it(tenant, database_url):
    """Issue 6: held but not captured points are taken back by the reversal (the hold is voided),
    not reported unrecovered and left for the customer to capture."""
    program = await tenant.program()
    account = await tenant.account(program)
    earned = await tenant.earn(account, 100)
    hold = await tenant.hold(account, 80)
    reversal = await tenant.ReverseEntry(
        api.ReverseEntryRequest(entry_id=earned.entry.entry_id, idempotency_key=key())
    )
    assert reversal.entry.unrecovered_amount == 0
    balance = await tenant.balance(account)
    assert (balance.posted, balance.held, balance.available) == (0, 0, 0)
    voided = await tenant.GetHold(api.GetHoldRequest(hold_id=hold.hold_id))
    assert voided.hold.state == pb.HOLD_STATE_VOIDED
    capture = await rpc_failure(tenant.capture(hold.hold_id))
    assert (capture.code, capture.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_NOT_ACTIVE")
    released = await tenant.ReleaseHold(api.ReleaseHoldRequest(hold_id=hold.hold_id, idempotency_key=key()))
    assert released.hold.state == pb.HOLD_STATE_VOIDED  # releasing it is harmless
    await journal_checks(database_url)


async def test_bad_ids_and_overlong_fields_are_invalid_argument(tenant):
    program = await tenant.program()
    account = await tenant.account(program)
    cases = [
        (tenant.earn("not-a-uuid", 1), ["account_id"]),
        (tenant.earn(account, 1, reason="r" * 501), ["reason"]),
        (tenant.earn(account, 1, asset_code="A" * 17), ["asset_code"]),
        (tenant.earn(account, 1, source_ref="s" * 201), ["source_ref"]),
        (tenant.GetAccount(api.GetAccountRequest(account_id=account + "x")), ["account_id"]),
        (tenant.capture("1234"), ["hold_id"]),
        (tenant.ReverseEntry(api.ReverseEntryRequest(entry_id="e", idempotency_key=key())), ["entry_id"]),
        (
            tenant.CreateProgram(
                api.CreateProgramRequest(
                    program=pb.Program(asset_kind=pb.ASSET_KIND_POINTS, tiers=[pb.Tier(code="G" * 65)]),
                    idempotency_key=key(),
                )
            ),
            ["program.tiers[0].code"],
        ),
    ]
    for call, fields in cases:
        failure = await rpc_failure(call)
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, fields), failure.message
    huge = await rpc_failure(tenant.earn(account, 10**15 + 1))
    assert (huge.code, huge.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AMOUNT")
    # A 64-character tier code is fine, and earns reaching the tier go on working.
    tiered = await tenant.program(
        tiers=[pb.Tier(code="G" * 64, qualifying_points=10, earn_multiplier_bps=12_000)]
    )
    reached = await tenant.earn(await tenant.account(tiered), 10)
    assert reached.account.tier_code == "G" * 64
    assert (await tenant.earn(reached.account.account_id, 10)).account.balance.posted == 20


async def test_page_tokens_it_did_not_issue_are_invalid_argument(tenant):
    program = await tenant.program()
    account = await tenant.account(program)
    for token in (
        base64.urlsafe_b64encode(b"abc").decode(),
        base64.urlsafe_b64encode(b"9" * 40).decode(),
        base64.urlsafe_b64encode(b"-1").decode(),
    ):
        failure = await rpc_failure(
            tenant.ListStatementLines(api.ListStatementLinesRequest(account_id=account, page_token=token))
        )
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"]), token
    negative = await rpc_failure(
        tenant.ListStatementLines(api.ListStatementLinesRequest(account_id=account, page_size=-1))
    )
    assert negative.fields == ["page_size"]
