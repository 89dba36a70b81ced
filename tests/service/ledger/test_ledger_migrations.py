"""`loyalty-ledger migrate` upgrades a fresh database and one at the old head (0002) with data in it:
the tables end up exactly as the models describe them, append-only; old reversals keep what they
reversed; stored answers still replay; unpublished events survive as protobuf."""

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from loyalty.ledger.v1 import events_pb2, ledger_pb2 as pb, ledger_service_pb2 as api, ledger_service_pb2_grpc
from loyalty_devstack.infra import create_database, drop_database
from loyalty_ledger.models import APPEND_ONLY_TABLES, SCHEMA, Base
from loyalty_ledger.service import DEFINITION
from loyalty_runtime import append_only
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.migrations import sqlalchemy_url
from loyalty_runtime.testing import model_differences, running_service
from loyalty_runtime.uow import fingerprint
from tests.conftest import rpc_failure

TENANT = "old"
# The ids the API is called with are UUIDs, as every id 0002 issued.
ACCOUNT, EARN = "0b5f2d1e-8c41-4f6a-9e0d-6a1b2c3d4e5f", "1c6e3f2a-9d52-4a7b-8f1e-7b2c3d4e5f60"


@pytest.fixture
async def scratch(infra):
    name = f"ledger_migrate_{uuid.uuid4().hex[:8]}"
    await create_database(infra, name)
    yield infra.database_url(name)
    await drop_database(infra, name)


def migrate_command(database_url: str) -> None:
    """What the Helm migration Job runs."""
    env = {**os.environ, "LEDGER_DATABASE_URL": asyncpg_dsn(database_url)}
    done = subprocess.run(
        [sys.executable, "-m", "loyalty_ledger", "migrate"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


async def _sync(database_url: str, step) -> object:
    engine = create_async_engine(sqlalchemy_url(asyncpg_dsn(database_url)))
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(step)
    finally:
        await engine.dispose()


def _upgrade_to_old_head(connection) -> None:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
    config = Config()
    config.set_main_option("script_location", DEFINITION.migrations)
    config.attributes["connection"] = connection
    config.attributes["schema"] = SCHEMA
    command.upgrade(config, "0002")


async def _at_head(database_url: str) -> None:
    assert await model_differences(database_url, SCHEMA, Base.metadata) == []
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        assert await connection.fetchval("SELECT version_num FROM ledger.alembic_version") == "0004"
        protected = [row["relname"] for row in await connection.fetch(append_only.PROTECTED_TABLES, SCHEMA)]
        assert protected == sorted(APPEND_ONLY_TABLES)
    finally:
        await connection.close()


async def test_migrate_upgrades_a_fresh_database(scratch):
    await asyncio.to_thread(migrate_command, scratch)
    await _at_head(scratch)
    await asyncio.to_thread(migrate_command, scratch)  # a second run has nothing to do


OLD_DATA = """
INSERT INTO ledger.programs VALUES ('p', 'old', 'Old', 'POINTS', 'POINTS', false, 'NEVER', 0, 900, 365, '[]', $1);
INSERT INTO ledger.accounts VALUES
    ('issuance', 'old', 'p', NULL, 'ISSUANCE', 0, 0, 0, '', $1),
    ('redemption', 'old', 'p', NULL, 'REDEMPTION', 0, 0, 0, '', $1),
    ('expiry', 'old', 'p', NULL, 'EXPIRY', 0, 0, 0, '', $1),
    ('adjustment', 'old', 'p', NULL, 'ADJUSTMENT', 0, 0, 0, '', $1),
    ('donation', 'old', 'p', NULL, 'DONATION', 0, 0, 0, '', $1),
    ('a', 'old', 'p', 'c', 'CUSTOMER', 80, 0, 0, '', $1);
-- An earn of 100, of which a reversal took back 20 and left 10 unrecovered (30 reversed).
INSERT INTO ledger.journal_entries (entry_id, tenant_id, program_id, entry_type, asset_code, amount,
    reversed_amount, unrecovered_amount, reason, source_ref, idempotency_key, subject_account_id, lot_id,
    qualifying_delta, created_at) VALUES
    ('e1', 'old', 'p', 'EARN', 'POINTS', 100, 30, 0, '', '', 'earn-1', 'a', 'l1', 100, $1);
INSERT INTO ledger.journal_entries (entry_id, tenant_id, program_id, entry_type, asset_code, amount,
    reversed_amount, unrecovered_amount, reason, source_ref, reversed_entry_id, qualifying_delta, created_at) VALUES
    ('e2', 'old', 'p', 'REVERSAL', 'POINTS', 0, 0, 10, '', '', 'e1', -30, $1);
INSERT INTO ledger.postings (entry_id, tenant_id, account_id, amount, bucket, balance_after) VALUES
    ('e1', 'old', 'a', 100, 'POSTED', 100), ('e1', 'old', 'issuance', -100, 'POSTED', NULL),
    ('e2', 'old', 'a', -20, 'POSTED', 80), ('e2', 'old', 'issuance', 20, 'POSTED', NULL);
INSERT INTO ledger.lots (lot_id, tenant_id, account_id, entry_id, amount, remaining, expires_at, pending)
    VALUES ('l1', 'old', 'a', 'e1', 100, 80, NULL, false);
INSERT INTO ledger.holds (hold_id, tenant_id, account_id, amount, captured_amount, state, expires_at, reason,
    source_ref, created_at) VALUES ('h1', 'old', 'a', 5, 0, 'RELEASED', $1, '', '', $1);
"""


async def _old_head_with_data(database_url: str) -> tuple[api.EarnPointsRequest, api.EarnPointsResponse]:
    await _sync(database_url, _upgrade_to_old_head)
    request = api.EarnPointsRequest(account_id=ACCOUNT, amount=100, idempotency_key="earn-1")
    answer = api.EarnPointsResponse(
        entry=pb.Entry(entry_id=EARN, type=pb.ENTRY_TYPE_EARN, idempotency_key="earn-1")
    )
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        data = OLD_DATA.replace("$1", "'2026-11-30T12:00:00Z'").replace("'a'", f"'{ACCOUNT}'")
        await connection.execute(data.replace("'e1'", f"'{EARN}'"))
        # 0002's idempotency keys: the hex SHA-256 of the request without its key.
        assert (
            fingerprint(request).hex()
            == hashlib.sha256(
                api.EarnPointsRequest(account_id=ACCOUNT, amount=100).SerializeToString(deterministic=True)
            ).hexdigest()
        )
        await connection.execute(
            "INSERT INTO ledger.idempotency_keys (tenant_id, key, method, fingerprint, response) VALUES ($1, $2, $3, $4, $5)",
            TENANT,
            "earn-1",
            "EarnPoints",
            fingerprint(request).hex(),
            answer.SerializeToString(deterministic=True),
        )
        payload = {
            "entry_id": EARN,
            "account_id": ACCOUNT,
            "customer_id": None,
            "program_id": "p",
            "amount": 100,
        }
        await connection.execute(
            """INSERT INTO ledger.outbox (tenant_id, event_type, key, payload, trace_context, published_at) VALUES
               ('old', 'points.earned', 'a', $1::jsonb, $2::jsonb, NULL),
               ('old', 'points.earned', 'a', $1::jsonb, '{}'::jsonb, now())""",
            json.dumps(payload),
            json.dumps({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}),
        )
    finally:
        await connection.close()
    return request, answer


async def test_migrate_upgrades_a_database_at_the_old_head(scratch, ledger_settings):
    request, answer = await _old_head_with_data(scratch)
    await asyncio.to_thread(migrate_command, scratch)
    await _at_head(scratch)
    connection = await asyncpg.connect(asyncpg_dsn(scratch))
    try:
        # The old reversal now carries what it reversed: 20 taken back + 10 unrecovered.
        assert (
            await connection.fetchval("SELECT amount FROM ledger.journal_entries WHERE entry_id = 'e2'") == 30
        )
        events = await connection.fetch("SELECT event_type, payload, trace_parent FROM ledger.outbox")
        assert [e["event_type"] for e in events] == ["points.earned"]  # the published one is gone
        earned = events_pb2.PointsEarned.FromString(events[0]["payload"])
        assert (earned.entry_id, earned.account_id, earned.amount, earned.customer_id) == (
            EARN,
            ACCOUNT,
            100,
            "",
        )
        assert events[0]["trace_parent"].startswith("00-0af7651916cd43dd")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("UPDATE ledger.journal_entries SET amount = 0 WHERE entry_id = $1", EARN)
    finally:
        await connection.close()
    # A retry of a call answered before the upgrade still replays its answer.
    settings = ledger_settings.model_copy(update={"database_url": asyncpg_dsn(scratch)})
    async with running_service(DEFINITION, settings) as service:
        stub = ledger_service_pb2_grpc.LedgerServiceStub(service.channel)
        md = service.metadata(TENANT)
        assert await stub.EarnPoints(request, metadata=md) == answer
        # 30 of the earn was reversed before: 70 are left to reverse, not 71.
        too_much = await rpc_failure(
            stub.ReverseEntry(
                api.ReverseEntryRequest(entry_id=EARN, amount=71, idempotency_key="r1"), metadata=md
            )
        )
        assert too_much.reason == "REVERSAL_EXCEEDS_ENTRY"
        rest = await stub.ReverseEntry(
            api.ReverseEntryRequest(entry_id=EARN, amount=70, idempotency_key="r2"), metadata=md
        )
        assert rest.entry.reversed_entry_id == EARN and rest.entry.unrecovered_amount == 0
