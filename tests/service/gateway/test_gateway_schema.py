"""The gateway's models describe exactly what its migrations create, and the audit log is append-only."""

import asyncpg

from loyalty_gateway.models import Base
from loyalty_gateway.repository import SCHEMA
from loyalty_runtime import append_only
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.testing import model_differences


async def test_models_match_migrations(gateway_settings):
    assert await model_differences(gateway_settings.database_url, SCHEMA, Base.metadata) == []


async def test_only_the_audit_log_is_append_only(gateway_settings):
    connection = await asyncpg.connect(asyncpg_dsn(gateway_settings.database_url))
    try:
        protected = [r["relname"] for r in await connection.fetch(append_only.PROTECTED_TABLES, SCHEMA)]
    finally:
        await connection.close()
    assert protected == ["audit_log"]
