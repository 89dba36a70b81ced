"""Every service a trigger reaches, on a database and a Redis server of this suite's own (their
consumer groups and job queues meet no other suite's servers): profile, segmentation, notification,
promotion (wired to segmentation and notification), ledger, fraud (the gateway assesses enrolments),
and the gateway in front."""

import uuid
from contextlib import AsyncExitStack

import pytest

from loyalty.gateway.v1 import admin_service_pb2_grpc, customer_service_pb2_grpc
from loyalty.notification.v1 import notification_service_pb2_grpc
from loyalty.promotion.v1 import promotion_service_pb2_grpc
from loyalty.segmentation.v1 import segmentation_service_pb2_grpc
from loyalty_devstack.infra import create_database, drop_database, private_redis
from loyalty_fraud.service import DEFINITION as FRAUD
from loyalty_gateway.service import DEFINITION as GATEWAY
from loyalty_ledger.service import DEFINITION as LEDGER
from loyalty_notification.service import DEFINITION as NOTIFICATION
from loyalty_profile.service import DEFINITION as PROFILE
from loyalty_promotion.service import DEFINITION as PROMOTION
from loyalty_runtime.testing import migrated_settings, running_service
from loyalty_segmentation.service import DEFINITION as SEGMENTATION

# Started in this order; each is given the addresses of those before it that it calls.
SERVICES = {
    "profile": (PROFILE, {}),
    "segmentation": (SEGMENTATION, {"job_poll_seconds": 0.05}),
    # No delivery workers: the tests read the messages triggers asked for, nobody is mailed.
    "notification": (NOTIFICATION, {"delivery_workers": 0, "http_enabled": False}),
    "promotion": (PROMOTION, {"job_poll_seconds": 0.05, "trigger_retry_seconds": 0.2}),
    "ledger": (LEDGER, {}),
    "fraud": (FRAUD, {}),
}


@pytest.fixture(scope="module")
async def trigger_database_url(infra):
    name = f"loyalty_test_triggers_{uuid.uuid4().hex[:8]}"
    await create_database(infra, name)
    yield infra.database_url(name)
    await drop_database(infra, name)


@pytest.fixture(scope="module")
def trigger_redis_url(tmp_path_factory):
    redis = private_redis(tmp_path_factory.mktemp("trigger-redis"))
    yield redis.redis_url + "/0"
    redis.stop()


@pytest.fixture(scope="module")
async def suite(trigger_database_url, trigger_redis_url):
    running = {}
    async with AsyncExitStack() as stack:
        for name, (definition, tuning) in SERVICES.items():
            fields = definition.settings.model_fields
            wired = {
                f"{other}_target": s.address for other, s in running.items() if f"{other}_target" in fields
            }
            settings = await migrated_settings(
                definition, trigger_database_url, trigger_redis_url, **wired, **tuning
            )
            running[name] = await stack.enter_async_context(running_service(definition, settings))
        running["promotion"].stub = promotion_service_pb2_grpc.PromotionServiceStub(
            running["promotion"].channel
        )
        running["segmentation"].stub = segmentation_service_pb2_grpc.SegmentationServiceStub(
            running["segmentation"].channel
        )
        running["notification"].stub = notification_service_pb2_grpc.NotificationServiceStub(
            running["notification"].channel
        )
        gateway_settings = await migrated_settings(
            GATEWAY,
            trigger_database_url,
            trigger_redis_url,
            rate_limit_per_second=1000.0,
            rate_limit_burst=1000,
            http_host="127.0.0.1",
            http_port=0,
            **{f"{name}_target": s.address for name, s in running.items()},
        )
        gateway = await stack.enter_async_context(running_service(GATEWAY, gateway_settings))
        gateway.admin = admin_service_pb2_grpc.AdminServiceStub(gateway.channel)
        gateway.customers = customer_service_pb2_grpc.CustomerServiceStub(gateway.channel)
        running["gateway"] = gateway
        yield running
