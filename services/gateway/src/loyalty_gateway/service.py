"""The gateway as the runtime runs it."""

import grpc
from pydantic_settings import SettingsConfigDict

from loyalty.gateway.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    checkout_service_pb2,
    checkout_service_pb2_grpc,
    customer_service_pb2,
    customer_service_pb2_grpc,
)
from loyalty_runtime.server import Resources, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")
    grpc_port: int = 50051
    metrics_port: int = 9451


def _add_servicers(server: grpc.aio.Server, resources: Resources) -> None:
    # The generated base classes answer every RPC with UNIMPLEMENTED: honest until the gateway is built.
    checkout_service_pb2_grpc.add_CheckoutServiceServicer_to_server(
        checkout_service_pb2_grpc.CheckoutServiceServicer(), server
    )
    customer_service_pb2_grpc.add_CustomerServiceServicer_to_server(
        customer_service_pb2_grpc.CustomerServiceServicer(), server
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        admin_service_pb2_grpc.AdminServiceServicer(), server
    )


DEFINITION = ServiceDefinition(
    name="gateway",
    service_names=(
        checkout_service_pb2.DESCRIPTOR.services_by_name["CheckoutService"].full_name,
        customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name,
        admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    ),
    add_servicers=_add_servicers,
)
