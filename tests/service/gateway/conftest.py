"""A migrated gateway schema and a running gateway (its own authenticator, the production call
guard) per session; a fresh tenant with an admin user and an admin token per test."""

import uuid

import grpc
import pytest
from redis.asyncio import Redis

from loyalty.gateway.v1 import admin_service_pb2 as admin_api, admin_service_pb2_grpc
from loyalty_devstack.infra import create_database, drop_database
from loyalty_gateway import bootstrap
from loyalty_gateway.service import DEFINITION
from loyalty_runtime.testing import migrated_settings, running_service

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
async def shop_database_url(infra):
    """A PostgreSQL database of the gateway tests' own: their services run the same schemas, job
    queues and schedules as every other suite's server of the same service (other clocks, other
    settings), and sharing them either could take the other's jobs."""
    name = f"loyalty_test_shop_{uuid.uuid4().hex[:8]}"
    await create_database(infra, name)
    yield infra.database_url(name)
    await drop_database(infra, name)


@pytest.fixture(scope="session")
async def shop_redis_url(redis_url):
    """A Redis database of the gateway tests' own, for the same reason: their services consume each
    other's streams in consumer groups every other suite's server of the same service reads too."""
    base, _, index = redis_url.rpartition("/")
    url = f"{base}/{(int(index) + 8) % 16}"
    client = Redis.from_url(url)
    await client.flushdb()  # emptied at the start, as the worker's own
    await client.aclose()
    return url


@pytest.fixture(scope="session")
async def gateway_settings(shop_database_url, shop_redis_url):
    return await migrated_settings(
        DEFINITION,
        shop_database_url,
        shop_redis_url,
        rate_limit_per_second=1000.0,
        rate_limit_burst=1000,
        http_host="127.0.0.1",
        http_port=0,
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
        timeout=60,  # argon2 by design costs CPU; the default deadline ran out on a loaded machine
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


# --- the services behind the gateway, for checkout tests ---

from loyalty.gateway.v1 import checkout_service_pb2_grpc, customer_service_pb2_grpc  # noqa: E402
from loyalty.ledger.v1 import ledger_pb2, ledger_service_pb2 as ledger_api, ledger_service_pb2_grpc  # noqa: E402
from loyalty_fraud.service import DEFINITION as FRAUD  # noqa: E402
from loyalty_ledger.service import DEFINITION as LEDGER  # noqa: E402
from loyalty_profile.service import DEFINITION as PROFILE  # noqa: E402
from loyalty_promotion.service import DEFINITION as PROMOTION  # noqa: E402
from loyalty_runtime.testing import internal_metadata  # noqa: E402
from loyalty_segmentation.service import DEFINITION as SEGMENTATION  # noqa: E402

DOWNSTREAM = {
    "profile": PROFILE,
    "segmentation": SEGMENTATION,
    "promotion": PROMOTION,
    "ledger": LEDGER,
    "fraud": FRAUD,
}


@pytest.fixture(scope="session")
async def services(shop_database_url, shop_redis_url):
    """Every service the gateway calls, each a real server on its own port."""
    from contextlib import AsyncExitStack

    running = {}
    async with AsyncExitStack() as stack:
        for name, definition in DOWNSTREAM.items():
            settings = await migrated_settings(definition, shop_database_url, shop_redis_url)
            running[name] = await stack.enter_async_context(running_service(definition, settings))
        yield running


@pytest.fixture(scope="session")
async def shop_settings(gateway_settings, services):
    targets = {f"{name}_target": service.address for name, service in services.items()}
    return gateway_settings.model_copy(update=targets)


@pytest.fixture(scope="session")
async def shop(shop_settings):
    """A gateway wired to the real services."""
    async with running_service(DEFINITION, shop_settings) as service:
        service.admin = admin_service_pb2_grpc.AdminServiceStub(service.channel)
        service.checkout = checkout_service_pb2_grpc.CheckoutServiceStub(service.channel)
        service.customers = customer_service_pb2_grpc.CustomerServiceStub(service.channel)
        yield service


class Shop(Tenant):
    """A provisioned tenant: a ledger programme, EUR, a till with a checkout key."""

    program_id: str
    key: str
    till: str

    @property
    def till_auth(self):
        return bearer(self.key)


def settings_of(tenant, **changes) -> dict:
    """The settings a provisioned tenant has, with `changes`."""
    return {
        "default_program_id": tenant.program_id,
        "currency_code": "EUR",
        "time_zone": "Europe/Vienna",
        "default_locale": "de-AT",
        **changes,
    }


async def provision(
    shop, services, *, store_id: str = "s1", tiers=(), time_zone: str = "Europe/Vienna"
) -> Shop:
    base = await new_tenant(shop)
    tenant = Shop(shop, base.tenant_id, base.token)
    ledger = ledger_service_pb2_grpc.LedgerServiceStub(services["ledger"].channel)
    program = await ledger.CreateProgram(
        ledger_api.CreateProgramRequest(
            program=ledger_pb2.Program(
                display_name="Club",
                asset_kind=ledger_pb2.ASSET_KIND_POINTS,
                asset_code="POINTS",
                tiers=tiers,
            ),
            idempotency_key=uuid.uuid4().hex,
        ),
        metadata=internal_metadata(services["ledger"].server.settings, tenant.tenant_id),
    )
    tenant.program_id = program.program.program_id
    await shop.admin.UpdateTenantSettings(
        admin_api.UpdateTenantSettingsRequest(
            idempotency_key=uuid.uuid4().hex,
            settings=settings_of(tenant, time_zone=time_zone),
        ),
        metadata=tenant.auth,
    )
    till = await shop.admin.CreateTerminal(
        admin_api.CreateTerminalRequest(
            idempotency_key=uuid.uuid4().hex, terminal={"display_name": "till", "store_id": store_id}
        ),
        metadata=tenant.auth,
    )
    tenant.till = till.terminal.terminal_id
    key = await shop.admin.CreateApiKey(
        admin_api.CreateApiKeyRequest(
            idempotency_key=uuid.uuid4().hex,
            api_key={"display_name": "till", "scopes": [1, 2, 3], "terminal_id": tenant.till},
        ),
        metadata=tenant.auth,
    )
    tenant.key = key.secret
    return tenant
