"""The segmentation service as the runtime runs it. An API without a servicer answers UNIMPLEMENTED."""

from pydantic_settings import SettingsConfigDict

from loyalty.segmentation.v1 import segmentation_service_pb2
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.server import Api, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class SegmentationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SEGMENTATION_")
    grpc_port: int = PORTS["segmentation"].grpc_port
    metrics_port: int = PORTS["segmentation"].metrics_port


DEFINITION = ServiceDefinition(
    name="segmentation",
    settings=SegmentationSettings,
    apis=[
        Api(segmentation_service_pb2.DESCRIPTOR.services_by_name["SegmentationService"]),
    ],
)
