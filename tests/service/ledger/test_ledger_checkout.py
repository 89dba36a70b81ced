"""The checkout's one ledger call and its per-line returns, end to end on the real server."""

import asyncio

import grpc

from loyalty.ledger.v1 import events_pb2, ledger_pb2 as pb, ledger_service_pb2 as api
from tests.conftest import rpc_failure
from tests.service.ledger.helpers import events_of, journal_checks, key, lines, settle


def returning(checkout: str, *specs) -> api.ReturnCheckoutLinesRequest:
    return api.ReturnCheckoutLinesRequest(
        checkout_id=checkout,
        lines=[pb.CheckoutLineReturn(line_id=line_id, quantity=quantity) for line_id, quantity in specs],
        idempotency_key=key(),
    )


async def test_settle_captures_the_burn_and_posts_the_earn_in_one_call(tenant, database_url, redis_url):
    program = await tenant.program()
    account = await tenant.account(program)
    await tenant.earn(account, 500)
    hold = await tenant.hold(account, 200)
    basket = lines(("shoes", 1, 120, 100), ("socks", 3, 30, 50))
    request = settle(account, "chk-1", basket, hold_id=hold.hold_id, burn_amount=150, reason="purchase")
    settled = await tenant.SettleCheckout(request)
    assert (settled.hold.state, settled.hold.captured_amount) == (pb.HOLD_STATE_CAPTURED, 150)
    assert settled.burn_entry.type == pb.ENTRY_TYPE_BURN and settled.earn_entry.type == pb.ENTRY_TYPE_EARN
    assert sorted(p.amount for p in settled.earn_entry.postings) == [-150, 150]
    assert settled.burn_entry.source_ref == settled.earn_entry.source_ref == "chk-1"
    balance = settled.account.balance
    assert (balance.posted, balance.held, balance.available) == (500 - 150 + 150, 0, 500)
    assert [(x.line_id, x.earn_points, x.burn_points) for x in settled.lines] == [
        ("shoes", 120, 100),
        ("socks", 30, 50),
    ]
    # One idempotent operation: the retry answers the same and writes nothing more.
    assert await tenant.SettleCheckout(request) == settled
    await events_of(redis_url, tenant.tenant, 3)  # the first earn, then the settle's burn and earn
    await asyncio.sleep(0.2)  # time enough for one published twice to show
    events = await events_of(redis_url, tenant.tenant, 3)
    types = [event_type for event_type, _ in events]
    assert types.count("points.burned") == 1 and types.count("points.earned") == 2
    burned = events_pb2.PointsBurned.FromString(
        next(payload for event_type, payload in events if event_type == "points.burned")
    )
    assert (burned.amount, burned.hold_id, burned.source_ref) == (150, hold.hold_id, "chk-1")
    by_key = await tenant.GetEntry(api.GetEntryRequest(idempotency_key=request.idempotency_key))
    assert by_key.entry.entry_id == settled.earn_entry.entry_id
    await journal_checks(database_url)


async def test_a_checkout_is_settled_once(tenant, database_url):
    program = await tenant.program()
    account = await tenant.account(program)
    await tenant.SettleCheckout(settle(account, "chk-once", lines(("a", 1, 10, 0))))
    again = await rpc_failure(tenant.SettleCheckout(settle(account, "chk-once", lines(("a", 1, 10, 0)))))
    assert (again.code, again.reason, again.fields) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "CHECKOUT_ALREADY_SETTLED",
        ["checkout_id"],
    )
    # Concurrent settles of one checkout under different keys: one wins.
    outcomes = await asyncio.gather(
        *(tenant.SettleCheckout(settle(account, "chk-race", lines(("a", 1, 10, 0)))) for _ in range(6)),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    assert all(o.code() == grpc.StatusCode.ALREADY_EXISTS for o in outcomes if isinstance(o, Exception))
    assert (await tenant.balance(account)).posted == 20
    await journal_checks(database_url)


async def test_refusals_write_nothing(tenant, other_tenant):
    program = await tenant.program()
    account, other = await tenant.account(program), await tenant.account(program)
    await tenant.earn(account, 100)
    hold = await tenant.hold(account, 50)
    cases = [
        (settle(other, "c1", lines(("a", 1, 5, 0)), hold_id=hold.hold_id), "INVALID_ARGUMENT", ["hold_id"]),
        (settle(account, "c2", lines(("a", 1, 5, 0)), burn_amount=5), "INVALID_ARGUMENT", ["burn_amount"]),
        (settle(account, "c3", []), "INVALID_ARGUMENT", ["lines"]),
        (settle(account, "c4", lines(("a", 0, 5, 0))), "INVALID_ARGUMENT", ["lines[0].quantity"]),
        (settle(account, "c5", lines(("a", 1, -5, 0))), "INVALID_AMOUNT", ["lines[0].earn_points"]),
        (
            settle(account, "c6", lines(("a", 1, 5, 10)), hold_id=hold.hold_id, burn_amount=20),
            "INVALID_ARGUMENT",
            ["lines"],
        ),
        (
            settle(account, "c7", lines(("a", 1, 5, 0)), hold_id=hold.hold_id, burn_amount=51),
            "CAPTURE_EXCEEDS_HOLD",
            ["amount"],
        ),
        (settle(account, "c8", lines(("a", 1, 5, 0)), asset_code="EUR"), "ASSET_MISMATCH", ["asset_code"]),
    ]
    for request, reason, fields in cases:
        failure = await rpc_failure(tenant.SettleCheckout(request))
        assert (failure.reason, failure.fields) == (reason, fields), request
    foreign = await rpc_failure(other_tenant.SettleCheckout(settle(account, "c9", lines(("a", 1, 5, 0)))))
    assert foreign.reason == "ACCOUNT_NOT_FOUND"
    missing = await rpc_failure(tenant.ReturnCheckoutLines(returning("never-settled", ("a", 1))))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "CHECKOUT_NOT_FOUND")
    balance = await tenant.balance(account)
    assert (balance.posted, balance.held) == (100, 50)
    assert (
        len((await tenant.ListStatementLines(api.ListStatementLinesRequest(account_id=account))).lines) == 1
    )


async def test_partial_returns_reverse_in_proportion_and_all_units_reverse_it_all(tenant, database_url):
    program = await tenant.program()
    account = await tenant.account(program)
    await tenant.earn(account, 1000)
    hold = await tenant.hold(account, 100)
    # The till allocated no burn: the ledger spreads the 100 over the 7 units.
    settled = await tenant.SettleCheckout(
        settle(account, "chk-r", lines(("a", 3, 100, 0), ("b", 4, 10, 0)), hold_id=hold.hold_id)
    )
    allocated = {x.line_id: x.burn_points for x in settled.lines}
    assert sum(allocated.values()) == 100 and allocated == {"a": 43, "b": 57}
    after_settle = (await tenant.balance(account)).posted
    assert after_settle == 1000 - 100 + 110

    first = await tenant.ReturnCheckoutLines(returning("chk-r", ("a", 1), ("b", 3)))
    assert [(x.line_id, x.earn_reversed, x.burn_restored) for x in first.lines] == [
        ("a", 33, 14),
        ("b", 7, 42),
    ]
    assert first.earn_reversal.reversed_entry_id == settled.earn_entry.entry_id
    assert first.burn_reversal.reversed_entry_id == settled.burn_entry.entry_id
    too_many = await rpc_failure(tenant.ReturnCheckoutLines(returning("chk-r", ("b", 2))))
    assert (too_many.code, too_many.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RETURN_EXCEEDS_LINE")
    unknown = await rpc_failure(tenant.ReturnCheckoutLines(returning("chk-r", ("zz", 1))))
    assert unknown.reason == "CHECKOUT_LINE_NOT_FOUND"
    await tenant.ReturnCheckoutLines(returning("chk-r", ("a", 1)))
    last = await tenant.ReturnCheckoutLines(returning("chk-r", ("a", 1), ("b", 1)))
    assert [(x.line_id, x.earn_reversed, x.burn_restored) for x in last.lines] == [
        ("a", 34, 15),
        ("b", 3, 15),
    ]
    # Every unit back: the whole earn reversed and the whole burn restored, exactly.
    balance = await tenant.balance(account)
    assert balance.posted == 1000
    statement = await tenant.ListStatementLines(api.ListStatementLinesRequest(account_id=account))
    reversals = [x for x in statement.lines if x.type == pb.ENTRY_TYPE_REVERSAL]
    assert sum(x.amount for x in reversals) == -110 + 100
    nothing_left = await rpc_failure(tenant.ReturnCheckoutLines(returning("chk-r", ("a", 1))))
    assert nothing_left.reason == "RETURN_EXCEEDS_LINE"
    await journal_checks(database_url)


async def test_a_return_after_the_points_were_spent_reports_them_unrecovered(tenant, database_url):
    program = await tenant.program()
    account = await tenant.account(program)
    settled = await tenant.SettleCheckout(settle(account, "chk-s", lines(("a", 2, 80, 0))))
    spend = await tenant.hold(account, 60)
    await tenant.capture(spend.hold_id)
    returned = await tenant.ReturnCheckoutLines(returning("chk-s", ("a", 2)))
    assert returned.earn_reversal.unrecovered_amount == 60 and not returned.HasField("burn_reversal")
    assert returned.earn_reversal.reversed_entry_id == settled.earn_entry.entry_id
    assert (await tenant.balance(account)).posted == 0
    await journal_checks(database_url)


async def test_concurrent_returns_never_return_more_units_than_a_line_has(tenant, database_url):
    program = await tenant.program()
    account = await tenant.account(program)
    await tenant.SettleCheckout(settle(account, "chk-c", lines(("a", 5, 101, 0))))
    outcomes = await asyncio.gather(
        *(tenant.ReturnCheckoutLines(returning("chk-c", ("a", 1))) for _ in range(9)), return_exceptions=True
    )
    done = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(done) == 5 and all(o.code() == grpc.StatusCode.FAILED_PRECONDITION for o in refused)
    assert sum(line.earn_reversed for o in done for line in o.lines) == 101
    assert (await tenant.balance(account)).posted == 0
    await journal_checks(database_url)
