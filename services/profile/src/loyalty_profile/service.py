"""The profile service as the runtime runs it: one definition."""

from pydantic_settings import SettingsConfigDict

from loyalty.profile.v1 import profile_service_pb2
from loyalty_profile import app
from loyalty_profile.repository import SCHEMA
from loyalty_profile.servicer import ProfileServicer
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.privacy import CustomerData
from loyalty_runtime.server import Api, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class ProfileSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROFILE_")
    grpc_port: int = PORTS["profile"].grpc_port
    metrics_port: int = PORTS["profile"].metrics_port


DEFINITION = ServiceDefinition(
    name="profile",
    settings=ProfileSettings,
    apis=[
        Api(
            profile_service_pb2.DESCRIPTOR.services_by_name["ProfileService"],
            lambda resources: ProfileServicer(resources.units),
        )
    ],
    schema=SCHEMA,
    migrations="loyalty_profile:migrations",
    events="profile.events",
    # The profile is where erasure and merges start (its events), so it only exports.
    customer_data=CustomerData(export=app.export_customer_data),
)
