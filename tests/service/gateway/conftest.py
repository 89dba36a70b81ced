"""A migrated gateway schema and a running gateway (its own authenticator, the production call
guard) per session; a fresh tenant with an admin user and an admin token per test."""

import uuid

import grpc
import pytest

from loyalty.gateway.v1 import admin_service_pb2 as admin_api, admin_service_pb2_grpc
from loyalty_gateway import bootstrap
from loyalty_gateway.service import DEFINITION
from loyalty_runtime.testing import migrated_settings, running_service

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
async def gateway_settings(database_url, redis_url):
    return await migrated_settings(
        DEFINITION, database_url, redis_url, rate_limit_per_second=1000.0, rate_limit_burst=1000
    )


@pytest.fixture(scope="session")
async def gateway(gateway_settings):
    async with running_service(DEFINITION, gateway_settings) as service:
        service.admin = admin_service_pb2_grpc.AdminServiceStub(service.channel)
        yield service


def bearer(token: str):
    return (("authorization", f"Bearer {token}"),)


class Tenant:
    def __init__(self, gateway, tenant_id: str, token: str) -> None:
        self.gateway = gateway
        self.tenant_id = tenant_id
        self.token = token

    @property
    def auth(self):
        return bearer(self.token)

    async def create_user(self, username: str, roles) -> str:
        await self.gateway.admin.CreateAdminUser(
            admin_api.CreateAdminUserRequest(
                idempotency_key=uuid.uuid4().hex,
                admin_user={"username": username, "roles": roles},
                password=PASSWORD,
            ),
            metadata=self.auth,
        )
        return await login(self.gateway, self.tenant_id, username)


async def login(gateway, tenant_id: str, username: str, password: str = PASSWORD) -> str:
    response = await gateway.admin.CreateAdminToken(
        admin_api.CreateAdminTokenRequest(username=username, password=password),
        metadata=(("x-loyalty-tenant", tenant_id),),
    )
    return response.token


async def new_tenant(gateway) -> Tenant:
    tenant_id = f"t-{uuid.uuid4().hex[:12]}"
    await bootstrap.create_admin_user(gateway.server.settings.database_url, tenant_id, "root", PASSWORD)
    return Tenant(gateway, tenant_id, await login(gateway, tenant_id, "root"))


@pytest.fixture
async def tenant(gateway) -> Tenant:
    return await new_tenant(gateway)


@pytest.fixture
async def other_tenant(gateway) -> Tenant:
    return await new_tenant(gateway)


def code_of(error: grpc.aio.AioRpcError) -> grpc.StatusCode:
    return error.code()
