"""0002 on a database at 0001: templates' variants and policies' caps stored the old way (a jsonb
string holding the document) become documents the service reads, and the downgrade restores them."""

import json
import uuid

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from loyalty.notification.v1 import notification_service_pb2 as api, notification_service_pb2_grpc
from loyalty_devstack.infra import create_database, drop_database
from loyalty_notification.service import DEFINITION
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.migrations import sqlalchemy_url
from loyalty_runtime.testing import running_service

VARIANTS = [{"channel": "sms", "locale": "en", "subject": "", "body": "Hi {{ x }}", "html_body": ""}]
CAPS = [{"channel": None, "max_messages": 3, "window_seconds": 86400}]


def _alembic(connection, step, revision: str) -> None:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{DEFINITION.schema}"'))
    config = Config()
    config.set_main_option("script_location", DEFINITION.migrations)
    config.attributes["connection"] = connection
    config.attributes["schema"] = DEFINITION.schema
    step(config, revision)


async def alembic(url: str, step, revision: str) -> None:
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_alembic, step, revision)
    finally:
        await engine.dispose()


async def _kinds(connection) -> tuple[str, str]:
    return (
        await connection.fetchval("SELECT jsonb_typeof(variants) FROM notification.templates"),
        await connection.fetchval("SELECT jsonb_typeof(caps) FROM notification.cap_policies"),
    )


async def test_0002_turns_stored_strings_into_documents_the_service_reads(
    infra, redis_url, notification_settings
):
    name = f"loyalty_notification_migration_{uuid.uuid4().hex[:8]}"
    await create_database(infra, name)
    url = infra.database_url(name)
    try:
        await alembic(url, command.upgrade, "0001")
        connection = await asyncpg.connect(asyncpg_dsn(url))
        template_id = str(uuid.uuid4())
        try:
            # As 0001's service wrote them: JSON text, sent as a jsonb string.
            await connection.execute(
                """INSERT INTO notification.templates (tenant_id, template_id, key, purpose, state, default_locale,
                       variants, create_time, update_time)
                   VALUES ('old', $1, 'hello', 'transactional', 'active', 'en', to_jsonb($2::text), now(), now())""",
                template_id,
                json.dumps(VARIANTS),
            )
            await connection.execute(
                """INSERT INTO notification.cap_policies (tenant_id, caps, update_time)
                   VALUES ('old', to_jsonb($1::text), now())""",
                json.dumps(CAPS),
            )
            assert await _kinds(connection) == ("string", "string")
            await alembic(url, command.upgrade, "head")
            assert await _kinds(connection) == ("array", "array")
        finally:
            await connection.close()

        settings = notification_settings.model_copy(update={"database_url": url})
        async with running_service(DEFINITION, settings) as service:
            stub = notification_service_pb2_grpc.NotificationServiceStub(service.channel)
            old = service.metadata("old")
            template = (await stub.GetTemplate(api.GetTemplateRequest(key="hello"), metadata=old)).template
            assert [(v.locale, v.body) for v in template.variants] == [("en", "Hi {{ x }}")]
            policy = (
                await stub.GetFrequencyCapPolicy(api.GetFrequencyCapPolicyRequest(), metadata=old)
            ).policy
            assert [(c.max_messages, c.window.seconds) for c in policy.caps] == [(3, 86400)]

        await alembic(url, command.downgrade, "0001")
        connection = await asyncpg.connect(asyncpg_dsn(url))
        try:
            assert await _kinds(connection) == ("string", "string")
            stored = await connection.fetchval("SELECT variants #>> '{}' FROM notification.templates")
            assert json.loads(stored) == VARIANTS
        finally:
            await connection.close()
    finally:
        await drop_database(infra, name)
