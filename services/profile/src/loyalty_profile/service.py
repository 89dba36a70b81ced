"""The profile service as the runtime runs it: settings, servicer, outbox relay."""

import grpc
from pydantic_settings import SettingsConfigDict

from loyalty.profile.v1 import profile_service_pb2, profile_service_pb2_grpc
from loyalty_profile.models import SCHEMA, outbox
from loyalty_profile.servicer import ProfileServicer
from loyalty_runtime.events import OutboxRelay, RedisStreamsBroker
from loyalty_runtime.server import Resources, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings

EVENTS_STREAM = "profile.events"


class ProfileSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROFILE_")
    grpc_port: int = 50052
    metrics_port: int = 9452


def _add_servicers(server: grpc.aio.Server, resources: Resources) -> None:
    profile_service_pb2_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(resources.database), server)


async def _relay_events(resources: Resources) -> None:
    relay = OutboxRelay(
        resources.database.sessions, outbox, RedisStreamsBroker(resources.redis), EVENTS_STREAM
    )
    await relay.run()


DEFINITION = ServiceDefinition(
    name="profile",
    service_names=(profile_service_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name,),
    add_servicers=_add_servicers,
    background=(_relay_events,),
    migrations="loyalty_profile:migrations",
    schema=SCHEMA,
)
