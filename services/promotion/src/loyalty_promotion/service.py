"""The promotion service as the runtime runs it. An API without a servicer answers UNIMPLEMENTED."""

from pydantic_settings import SettingsConfigDict

from loyalty.promotion.v1 import promotion_service_pb2
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.server import Api, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class PromotionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROMOTION_")
    grpc_port: int = PORTS["promotion"].grpc_port
    metrics_port: int = PORTS["promotion"].metrics_port


DEFINITION = ServiceDefinition(
    name="promotion",
    settings=PromotionSettings,
    apis=[
        Api(promotion_service_pb2.DESCRIPTOR.services_by_name["PromotionService"]),
    ],
)
