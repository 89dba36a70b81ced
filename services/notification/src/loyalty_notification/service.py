"""The notification service as the runtime runs it. An API without a servicer answers UNIMPLEMENTED."""

from pydantic_settings import SettingsConfigDict

from loyalty.notification.v1 import notification_service_pb2
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.server import Api, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class NotificationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATION_")
    grpc_port: int = PORTS["notification"].grpc_port
    metrics_port: int = PORTS["notification"].metrics_port


DEFINITION = ServiceDefinition(
    name="notification",
    settings=NotificationSettings,
    apis=[
        Api(notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"]),
    ],
)
