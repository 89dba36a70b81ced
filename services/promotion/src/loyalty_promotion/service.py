"""The promotion service as the runtime runs it."""

import grpc
from pydantic_settings import SettingsConfigDict

from loyalty.promotion.v1 import promotion_service_pb2, promotion_service_pb2_grpc
from loyalty_runtime.server import Resources, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class PromotionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROMOTION_")
    grpc_port: int = 50054
    metrics_port: int = 9454


def _add_servicers(server: grpc.aio.Server, resources: Resources) -> None:
    # The generated base class answers every RPC with UNIMPLEMENTED: honest until the domain is built.
    promotion_service_pb2_grpc.add_PromotionServiceServicer_to_server(
        promotion_service_pb2_grpc.PromotionServiceServicer(), server
    )


DEFINITION = ServiceDefinition(
    name="promotion",
    service_names=(promotion_service_pb2.DESCRIPTOR.services_by_name["PromotionService"].full_name,),
    add_servicers=_add_servicers,
)
