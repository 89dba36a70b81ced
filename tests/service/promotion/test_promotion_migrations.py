"""The promotion schema the migrations build is exactly the one the models describe (so a model
change without its numbered migration fails here), on the session's migrated database; 0007 fills
each campaign's end from its stored payload."""

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from loyalty.promotion.v1 import campaign_pb2
from loyalty_devstack.infra import create_database, drop_database
from loyalty_promotion.models import Base
from loyalty_promotion.repository import SCHEMA
from loyalty_promotion.service import DEFINITION
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.migrations import sqlalchemy_url
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.testing import model_differences


async def test_the_migrated_schema_matches_the_models(promotion_settings):
    assert await model_differences(promotion_settings.database_url, SCHEMA, Base.metadata) == []


@pytest.fixture
async def scratch(infra):
    name = f"promotion_migrate_{uuid.uuid4().hex[:8]}"
    await create_database(infra, name)
    yield infra.database_url(name)
    await drop_database(infra, name)


def _upgrade(connection, revision: str) -> None:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
    config = Config()
    config.set_main_option("script_location", DEFINITION.migrations)
    config.attributes["connection"] = connection
    config.attributes["schema"] = SCHEMA
    command.upgrade(config, revision)


async def _sync(database_url: str, revision: str) -> None:
    engine = create_async_engine(sqlalchemy_url(asyncpg_dsn(database_url)))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, revision)
    finally:
        await engine.dispose()


async def test_0007_reads_each_campaigns_end_from_its_payload_and_announces_no_past_end(scratch):
    await _sync(scratch, "0005")
    now = datetime.now(UTC)
    campaigns = {
        "ended": campaign_pb2.Campaign(schedule={"end_time": timestamp(now - timedelta(days=1))}),
        "ending": campaign_pb2.Campaign(schedule={"end_time": timestamp(now + timedelta(days=1))}),
        "open": campaign_pb2.Campaign(),
    }
    ids = {name: str(uuid.uuid4()) for name in campaigns}
    connection = await asyncpg.connect(asyncpg_dsn(scratch))
    try:
        for name, campaign in campaigns.items():
            await connection.execute(
                "INSERT INTO promotion.campaigns (tenant_id, campaign_id, state, priority, version, payload)"
                " VALUES ('old', $1, 'active', 0, 1, $2)",
                ids[name],
                campaign.SerializeToString(),
            )
        await _sync(scratch, "head")
        rows = {
            str(r["campaign_id"]): (r["end_at"], r["ended_at"])
            for r in await connection.fetch("SELECT campaign_id, end_at, ended_at FROM promotion.campaigns")
        }
    finally:
        await connection.close()
    ended_at = campaigns["ended"].schedule.end_time.ToDatetime(tzinfo=UTC)
    ending_at = campaigns["ending"].schedule.end_time.ToDatetime(tzinfo=UTC)
    assert rows[ids["ended"]] == (ended_at, ended_at)
    assert rows[ids["ending"]] == (ending_at, None)
    assert rows[ids["open"]] == (None, None)
    assert await model_differences(scratch, SCHEMA, Base.metadata) == []
