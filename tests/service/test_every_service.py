"""Every RPC of every service, through a real server, as attackers and bad days call it.

- Garbage: random strings (control characters, invalid lengths), numbers at their edges, undefined
  enum numbers, timestamps outside protobuf's range. Whatever comes in, the answer is never INTERNAL
  or UNKNOWN, and a refused call leaves every row of the caller's tenant as it was. (Profile has its
  own deeper version, with mutants of valid requests: tests/service/profile/test_profile_edges.py.)
- Outages: PostgreSQL, then Redis, lost while the service runs. Calls answer UNAVAILABLE (or refuse
  the request before needing either), never INTERNAL; readiness says NOT_SERVING while PostgreSQL is
  gone; both come back without a restart."""

import asyncio
import importlib
import uuid
import zlib
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loyalty_runtime.db import Database
from loyalty_runtime.testing import internal_metadata, migrated_settings, running_service
from tests.garbage import Garbage
from tests.proxy import TcpProxy

SERVICES = ["ledger", "promotion", "fraud", "segmentation", "notification"]
REQUESTS_PER_RPC = 25
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# The runtime's tables change behind the calls' backs (the relay deletes what it published, workers
# take jobs): a service's own tables are what a refusal must leave alone.
RUNTIME_TABLES = ("outbox", "jobs", "schedules", "processed_events", "idempotency_keys")


def definition_of(service: str):
    return importlib.import_module(f"loyalty_{service}.service").DEFINITION


def methods_of(service: str) -> list[MethodDescriptor]:
    """Every RPC of the service's APIs but those streaming requests (no contract has one)."""
    return [
        method
        for api in definition_of(service).apis
        for method in api.descriptor.methods
        if not getattr(method, "client_streaming", False)
    ]


def _serialized(request: Message) -> bytes:
    return request.SerializeToString()  # the base class's Message.SerializeToString raises


class Caller:
    """Calls any method of a running service by its descriptor, as a tenant with admin scope."""

    def __init__(self, running, settings, tenant: str) -> None:
        self.channel = running.channel
        self.metadata = internal_metadata(settings, tenant, scopes=("admin",))

    async def call(self, method: MethodDescriptor, request: Message) -> grpc.StatusCode:
        path = f"/{method.containing_service.full_name}/{method.name}"
        streaming = getattr(method, "server_streaming", False)
        kind = self.channel.unary_stream if streaming else self.channel.unary_unary
        multicallable = kind(path, request_serializer=_serialized, response_deserializer=None)
        try:
            call = multicallable(request, metadata=self.metadata, timeout=10)
            if streaming:
                async for _ in call:
                    pass
            else:
                await call
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK


def requests_for(method: MethodDescriptor, garbage: Garbage, count: int) -> Iterator[Message]:
    """An empty request (what reaches the database past validation most often), then garbage; each
    with a fresh idempotency key where the RPC takes one."""
    request_class = message_factory.GetMessageClass(method.input_type)
    for number in range(count):
        request = request_class() if number == 0 else garbage.fill(request_class())
        if "idempotency_key" in request.DESCRIPTOR.fields_by_name:
            request.idempotency_key = uuid.uuid4().hex
        yield request


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
    failures: list[str] = []
    database = Database(database_url, pool_size=1)
    try:
        async with running_service(definition, settings) as running:
            caller = Caller(running, settings, tenant)
            for method in methods_of(service):
                garbage = Garbage(zlib.crc32(method.full_name.encode()))
                for request in requests_for(method, garbage, REQUESTS_PER_RPC):
                    before = await tenant_row_counts(database, definition.schema, tenant)
                    code = await caller.call(method, request)
                    if code in NEVER:
                        failures.append(f"{method.name}: {code.name} for {request}")
                    elif code is not grpc.StatusCode.OK and before != await tenant_row_counts(
                        database, definition.schema, tenant
                    ):
                        failures.append(f"{method.name}: refused with {code.name} but wrote rows")
    finally:
        await database.close()
    assert not failures, "\n".join(failures[:20])


async def readiness(channel) -> int:
    health = health_pb2_grpc.HealthStub(channel)
    return (await health.Check(health_pb2.HealthCheckRequest(), timeout=2)).status


async def until_readiness(channel, expected: int, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while await readiness(channel) != expected:
            await asyncio.sleep(0.05)


async def codes_of_every_rpc(caller: Caller, service: str) -> dict[str, set[grpc.StatusCode]]:
    codes: dict[str, set[grpc.StatusCode]] = {}
    for method in methods_of(service):
        garbage = Garbage(zlib.crc32(method.full_name.encode()))
        for request in requests_for(method, garbage, 3):
            codes.setdefault(method.name, set()).add(await caller.call(method, request))
    return codes


@pytest.mark.parametrize("service", SERVICES)
async def test_lost_postgresql_and_redis_answer_unavailable_and_come_back_without_a_restart(
    database_url, redis_url, service
):
    definition = definition_of(service)
    postgres, redis = await TcpProxy.to(database_url).start(), await TcpProxy.to(redis_url).start()
    migrated = await migrated_settings(definition, database_url, redis_url, readiness_interval_seconds=0.2)
    settings = migrated.model_copy(
        update={"database_url": postgres.url_for(database_url), "redis_url": redis.url_for(redis_url)}
    )
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    try:
        async with running_service(definition, settings) as running:
            caller = Caller(running, settings, f"t-{uuid.uuid4().hex[:8]}")
            healthy = await codes_of_every_rpc(caller, service)

            await postgres.cut()
            await until_readiness(running.channel, not_serving)
            without_postgres = await codes_of_every_rpc(caller, service)
            await postgres.restore()
            await until_readiness(running.channel, serving)

            await redis.cut()
            without_redis = await codes_of_every_rpc(caller, service)
            await redis.restore()
            recovered = await codes_of_every_rpc(caller, service)
    finally:
        await postgres.close()
        await redis.close()

    for outage in (healthy, without_postgres, without_redis, recovered):
        assert not {name: codes & NEVER for name, codes in outage.items() if codes & NEVER}
    assert any(grpc.StatusCode.UNAVAILABLE in codes for codes in without_postgres.values()), {
        n: sorted(c.name for c in v) for n, v in without_postgres.items()
    }
    # What worked before the outages works after them.
    assert {n for n, c in recovered.items() if grpc.StatusCode.OK in c} == {
        n for n, c in healthy.items() if grpc.StatusCode.OK in c
    }
