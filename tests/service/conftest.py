import uuid

import pytest

from loyalty.profile.v1 import profile_service_pb2_grpc
from loyalty_profile.service import DEFINITION, ProfileSettings
from loyalty_runtime.migrations import migrate
from loyalty_runtime.testing import running_service


@pytest.fixture(scope="session")
async def profile_settings(database_url, redis_url):
    await migrate(database_url, DEFINITION.migrations, DEFINITION.schema)
    return ProfileSettings(database_url=database_url, redis_url=redis_url, grpc_port=0, grpc_host="127.0.0.1")


@pytest.fixture(scope="session")
async def profile(profile_settings):
    async with running_service(DEFINITION, profile_settings) as service:
        yield service


@pytest.fixture
def stub(profile):
    return profile_service_pb2_grpc.ProfileServiceStub(profile.channel)


@pytest.fixture
def tenant(profile):
    """A fresh tenant per test, so tests never see each other's customers."""
    return profile.metadata(f"tenant-{uuid.uuid4().hex[:10]}")
