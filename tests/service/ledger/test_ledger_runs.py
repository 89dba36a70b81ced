"""Expiry and tier runs: declared as schedules (run once per period across replicas by the runtime's
scheduler), callable as RPCs, idempotent either way."""

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.ledger.v1 import events_pb2, ledger_pb2 as pb, ledger_service_pb2 as api
from loyalty_ledger import app
from loyalty_ledger.service import DEFINITION, LedgerSettings
from tests.conftest import rpc_failure
from tests.service.ledger.helpers import events_of, journal_checks, key


def soon(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(seconds=seconds))
    return stamp


def warning(days: int) -> pb.ExpiryPolicy:
    return pb.ExpiryPolicy(rule=pb.EXPIRY_RULE_MONTHS_AFTER_EARN, months=12, warning_days=days)


def test_the_runs_are_declared_as_schedules_every_their_interval():
    schedules = {s.name: s for s in DEFINITION.schedules}
    settings = LedgerSettings(expiry_interval_seconds=7, tier_interval_seconds=11)
    assert (
        schedules["ledger.expiry"].every(settings) == 7
        and schedules["ledger.expiry"].run is app.scheduled_expiry
    )
    assert (
        schedules["ledger.tiers"].every(settings) == 11
        and schedules["ledger.tiers"].run is app.scheduled_tiers
    )


async def test_the_scheduled_runs_expire_and_recompute_for_every_tenant(
    ledger, tenant, other_tenant, database_url
):
    accounts = []
    for client in (tenant, other_tenant):
        program = await client.program(
            tiers=[pb.Tier(code="SILVER", qualifying_points=50, earn_multiplier_bps=11_000)]
        )
        account = await client.account(program)
        await client.earn(account, 30, expire_time=soon(1))
        await client.earn(account, 40)
        accounts.append((client, account))
    await asyncio.sleep(1.1)
    await app.scheduled_expiry(ledger.server.resources)
    await app.scheduled_tiers(ledger.server.resources)
    for client, account in accounts:
        assert (await client.balance(account)).posted == 40
        # The expired points were earned and still count in the window: the tier stays.
        assert (
            await client.GetAccount(api.GetAccountRequest(account_id=account))
        ).account.tier_code == "SILVER"
    await journal_checks(database_url)


async def test_run_expiry_replays_its_first_answer(tenant):
    program = await tenant.program()
    account = await tenant.account(program)
    await tenant.earn(account, 25, expire_time=soon(1))
    await asyncio.sleep(1.1)
    request = api.RunExpiryRequest(program_id=program.program_id, idempotency_key=key())
    first = await tenant.RunExpiry(request)
    assert first.expired_points == 25 and first.expired_lot_count == 1
    assert await tenant.RunExpiry(request) == first
    assert (await tenant.RunExpiry(api.RunExpiryRequest(idempotency_key=key()))).expired_points == 0


async def test_points_about_to_expire_are_announced_once_per_lot_with_what_is_left(tenant, redis_url):
    program = await tenant.program(expiry_policy=warning(30))
    silent = await tenant.program(expiry_policy=warning(0))
    account, unwarned = await tenant.account(program), await tenant.account(silent)
    await tenant.earn(account, 100, expire_time=soon(10 * 86_400))
    await tenant.earn(account, 50, expire_time=soon(20 * 86_400))
    await tenant.earn(account, 70, expire_time=soon(60 * 86_400))  # outside the window
    await tenant.earn(unwarned, 80, expire_time=soon(10 * 86_400))
    hold = await tenant.HoldPoints(
        api.HoldPointsRequest(account_id=account, amount=30, idempotency_key=key())
    )
    await tenant.CaptureHold(api.CaptureHoldRequest(hold_id=hold.hold.hold_id, idempotency_key=key()))

    first = await tenant.RunExpiry(api.RunExpiryRequest(idempotency_key=key()))
    again = await tenant.RunExpiry(api.RunExpiryRequest(idempotency_key=key()))

    assert (first.warned_lot_count, again.warned_lot_count) == (2, 0)
    [(_, payload)] = await events_of(redis_url, tenant.tenant, 1, "points.expiring")
    expiring = events_pb2.PointsExpiring.FromString(payload)
    # The burn took the 30 from the lot that expires first.
    assert (expiring.account_id, expiring.program_id, expiring.amount) == (account, program.program_id, 120)
    assert abs(expiring.expire_time.ToDatetime(UTC) - soon(10 * 86_400).ToDatetime(UTC)) < timedelta(
        minutes=1
    )


async def test_a_warning_window_beyond_a_year_is_refused(tenant):
    failure = await rpc_failure(
        tenant.CreateProgram(
            api.CreateProgramRequest(
                program=pb.Program(
                    display_name="Club", asset_kind=pb.ASSET_KIND_POINTS, expiry_policy=warning(366)
                ),
                idempotency_key=key(),
            )
        )
    )
    assert (failure.code, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["program.expiry_policy.warning_days"],
    )
