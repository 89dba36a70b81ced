"""The notification service as the runtime runs it."""

import grpc
from pydantic_settings import SettingsConfigDict

from loyalty.notification.v1 import notification_service_pb2, notification_service_pb2_grpc
from loyalty_runtime.server import Resources, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class NotificationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATION_")
    grpc_port: int = 50057
    metrics_port: int = 9457


def _add_servicers(server: grpc.aio.Server, resources: Resources) -> None:
    # The generated base class answers every RPC with UNIMPLEMENTED: honest until the domain is built.
    notification_service_pb2_grpc.add_NotificationServiceServicer_to_server(
        notification_service_pb2_grpc.NotificationServiceServicer(), server
    )


DEFINITION = ServiceDefinition(
    name="notification",
    service_names=(notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name,),
    add_servicers=_add_servicers,
)
