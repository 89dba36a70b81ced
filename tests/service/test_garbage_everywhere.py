"""Garbage into every RPC of every service, through a real server: random strings (control
characters, invalid lengths), numbers at their edges, undefined enum numbers, timestamps outside
protobuf's range. Whatever comes in, the answer is never INTERNAL or UNKNOWN, and a refused call
leaves every row of the caller's tenant as it was. (Profile has its own deeper version, with
mutants of valid requests: tests/service/profile/test_profile_edges.py.)"""

import importlib
import uuid
import zlib

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from loyalty_runtime.db import Database
from loyalty_runtime.testing import internal_metadata, migrated_settings, running_service
from tests.garbage import Garbage

SERVICES = ["ledger", "promotion", "fraud", "segmentation", "notification"]
REQUESTS_PER_RPC = 25
REFUSED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# The runtime's tables change behind the calls' backs (the relay deletes what it published, workers
# take jobs): a service's own tables are what a refusal must leave alone.
RUNTIME_TABLES = ("outbox", "jobs", "schedules", "processed_events", "idempotency_keys")


def definition_of(service: str):
    return importlib.import_module(f"loyalty_{service}.service").DEFINITION


def methods_of(service: str) -> list[MethodDescriptor]:
    return [method for api in definition_of(service).apis for method in api.descriptor.methods]


async def tenant_row_counts(database: Database, schema: str, tenant: str) -> dict[str, int]:
    """Rows of `tenant` in every table of `schema` that has a tenant_id, in one statement."""
    async with database.connection() as connection:
        tables = await connection.fetch(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = $1 AND column_name = 'tenant_id' AND table_name <> ALL($2::text[])"
            " ORDER BY table_name",
            schema,
            list(RUNTIME_TABLES),
        )
        counts = " UNION ALL ".join(
            f"SELECT '{t['table_name']}', count(*) FROM {schema}.{t['table_name']} WHERE tenant_id = $1"
            for t in tables
        )
        return dict(await connection.fetch(counts, tenant)) if tables else {}


@pytest.mark.parametrize("service", SERVICES)
async def test_garbage_never_answers_internal_and_a_refusal_writes_nothing(database_url, redis_url, service):
    definition = definition_of(service)
    settings = await migrated_settings(definition, database_url, redis_url)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    metadata = internal_metadata(settings, tenant, scopes=("admin",))
    failures: list[str] = []
    database = Database(database_url, pool_size=1)
    async with running_service(definition, settings) as running:
        for method in methods_of(service):
            request_class = message_factory.GetMessageClass(method.input_type)
            path = f"/{method.containing_service.full_name}/{method.name}"
            server_streaming = getattr(method, "server_streaming", False)
            if getattr(method, "client_streaming", False):
                continue  # none of the contracts' RPCs streams requests
            multicallable = (
                running.channel.unary_stream if server_streaming else running.channel.unary_unary
            )(path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=None)
            garbage = Garbage(zlib.crc32(path.encode()))
            for _ in range(REQUESTS_PER_RPC):
                request = garbage.fill(request_class())
                if "idempotency_key" in request.DESCRIPTOR.fields_by_name:
                    request.idempotency_key = uuid.uuid4().hex
                before = await tenant_row_counts(database, definition.schema, tenant)
                try:
                    call = multicallable(request, metadata=metadata, timeout=10)
                    if server_streaming:
                        async for _ in call:
                            pass
                    else:
                        await call
                except grpc.aio.AioRpcError as error:
                    if error.code() in REFUSED:
                        failures.append(f"{method.name}: {error.code().name} for {request}")
                    elif await tenant_row_counts(database, definition.schema, tenant) != before:
                        failures.append(f"{method.name}: refused with {error.code().name} but wrote rows")
    await database.close()
    assert not failures, "\n".join(failures[:20])
