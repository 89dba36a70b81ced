"""The gateway service as the runtime runs it. An API without a servicer answers UNIMPLEMENTED."""

from pydantic_settings import SettingsConfigDict

from loyalty.gateway.v1 import admin_service_pb2, checkout_service_pb2, customer_service_pb2
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.server import Api, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")
    grpc_port: int = PORTS["gateway"].grpc_port
    metrics_port: int = PORTS["gateway"].metrics_port


DEFINITION = ServiceDefinition(
    name="gateway",
    settings=GatewaySettings,
    apis=[
        Api(admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"]),
        Api(checkout_service_pb2.DESCRIPTOR.services_by_name["CheckoutService"]),
        Api(customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"]),
    ],
)
