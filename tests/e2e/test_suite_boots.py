"""Every service of the catalogue starts as `make run` starts it, from its definition and settings
class alone: health (readiness, liveness) and reflection; every RPC not built yet answers
UNIMPLEMENTED, and nothing answers a caller without the internal token."""

import asyncio
import importlib

import grpc
import pytest
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from loyalty_runtime.catalogue import PORTS, SERVICES, ServiceEntry
from loyalty_runtime.migrations import migrate
from loyalty_runtime.server import LIVENESS, ServiceDefinition, ServiceServer
from loyalty_runtime.testing import running_service
from tests.conftest import rpc_failure

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def definition_of(entry: ServiceEntry) -> ServiceDefinition:
    return importlib.import_module(f"{entry.package}.service").DEFINITION


def local_settings(definition: ServiceDefinition, database_url: str, redis_url: str):
    return definition.settings(
        database_url=database_url, redis_url=redis_url, grpc_port=0, grpc_host="127.0.0.1"
    )


async def listed_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    return {service.name async for answer in answers for service in answer.list_services_response.service}


async def health_of(channel: grpc.aio.Channel, names) -> dict[str, int]:
    health = health_pb2_grpc.HealthStub(channel)
    return {
        name: (await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)).status
        for name in names
    }


@pytest.mark.parametrize("entry", SERVICES, ids=[entry.name for entry in SERVICES])
async def test_each_service_serves_health_and_reflection(entry, database_url, redis_url):
    definition = definition_of(entry)
    if definition.migrations:
        await migrate(database_url, definition.migrations, definition.schema)
    async with running_service(definition, local_settings(definition, database_url, redis_url)) as service:
        assert set(definition.service_names) <= await listed_services(service.channel)
        names = ("", *definition.service_names, LIVENESS)
        assert await health_of(service.channel, names) == dict.fromkeys(names, SERVING)


def declared_only(entry: ServiceEntry) -> list:
    return [api.descriptor for api in definition_of(entry).apis if api.servicer is None]


NOT_BUILT = [entry for entry in SERVICES if declared_only(entry)]


@pytest.mark.parametrize("entry", NOT_BUILT, ids=[entry.name for entry in NOT_BUILT])
async def test_every_rpc_not_built_yet_answers_unimplemented(entry, database_url, redis_url):
    definition = definition_of(entry)
    async with running_service(definition, local_settings(definition, database_url, redis_url)) as service:
        for method in (method for api in declared_only(entry) for method in api.methods):
            call = service.channel.unary_unary(
                f"/{method.containing_service.full_name}/{method.name}",
                request_serializer=lambda message: message.SerializeToString(),
                response_deserializer=GetMessageClass(method.output_type).FromString,
            )
            request = GetMessageClass(method.input_type)()
            failure = await rpc_failure(call(request, metadata=service.metadata("t1"), timeout=5))
            assert failure.code == grpc.StatusCode.UNIMPLEMENTED, method.full_name
            unauthenticated = await rpc_failure(call(request, timeout=5))
            assert unauthenticated.code == grpc.StatusCode.UNAUTHENTICATED, method.full_name


async def test_a_draining_server_fails_readiness_but_not_liveness(database_url, redis_url):
    definition = definition_of(PORTS["fraud"])
    server = ServiceServer(definition, local_settings(definition, database_url, redis_url))
    await server.start()
    await server.wait_until_ready()
    readiness = ("", *definition.service_names)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stopping = asyncio.create_task(server.stop(grace=1.0, drain=1.0))
        await asyncio.sleep(0.3)  # inside the drain: calls are still accepted
        during_drain = await health_of(channel, (*readiness, LIVENESS))
        await stopping
    assert during_drain == {**dict.fromkeys(readiness, NOT_SERVING), LIVENESS: SERVING}
