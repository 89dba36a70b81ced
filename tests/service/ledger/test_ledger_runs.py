"""Expiry and tier runs: declared as schedules (run once per period across replicas by the runtime's
scheduler), callable as RPCs, idempotent either way."""

import asyncio
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api
from loyalty_ledger import app
from loyalty_ledger.service import DEFINITION, LedgerSettings
from tests.service.ledger.helpers import journal_checks, key


def soon(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(seconds=seconds))
    return stamp


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
