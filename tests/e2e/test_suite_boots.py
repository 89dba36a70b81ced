"""Every service of the suite starts with health and reflection, as `make run` starts it."""

import importlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from loyalty.promotion.v1 import promotion_service_pb2, promotion_service_pb2_grpc
from loyalty_devstack.catalogue import SERVICES
from loyalty_runtime.migrations import migrate
from loyalty_runtime.testing import running_service
from tests.conftest import rpc_failure


def settings_for(name: str, database_url: str, redis_url: str):
    module = importlib.import_module(f"loyalty_{name}.service")
    settings_class = next(
        value for key, value in vars(module).items() if key.endswith("Settings") and key != "ServiceSettings"
    )
    return module.DEFINITION, settings_class(
        database_url=database_url, redis_url=redis_url, grpc_port=0, grpc_host="127.0.0.1"
    )


async def listed_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    return {service.name async for answer in answers for service in answer.list_services_response.service}


@pytest.mark.parametrize("name", [service.name for service in SERVICES])
async def test_each_service_serves_health_and_reflection(name, database_url, redis_url):
    definition, settings = settings_for(name, database_url, redis_url)
    if definition.migrations:
        await migrate(database_url, definition.migrations, definition.schema)
    async with running_service(definition, settings) as service:
        assert set(definition.service_names) <= await listed_services(service.channel)
        health = health_pb2_grpc.HealthStub(service.channel)
        for full_name in ("", *definition.service_names):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=full_name))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_rpc_not_built_yet_answers_unimplemented(database_url, redis_url):
    definition, settings = settings_for("promotion", database_url, redis_url)
    async with running_service(definition, settings) as service:
        stub = promotion_service_pb2_grpc.PromotionServiceStub(service.channel)
        failure = await rpc_failure(
            stub.EvaluateBasket(
                promotion_service_pb2.EvaluateBasketRequest(), metadata=service.metadata("t1")
            )
        )
        assert failure.code == grpc.StatusCode.UNIMPLEMENTED
        unauthenticated = await rpc_failure(
            stub.EvaluateBasket(promotion_service_pb2.EvaluateBasketRequest())
        )
        assert unauthenticated.code == grpc.StatusCode.UNAUTHENTICATED
