"""The segmentation service as the runtime runs it."""

import grpc
from pydantic_settings import SettingsConfigDict

from loyalty.segmentation.v1 import segmentation_service_pb2, segmentation_service_pb2_grpc
from loyalty_runtime.server import Resources, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class SegmentationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SEGMENTATION_")
    grpc_port: int = 50053
    metrics_port: int = 9453


def _add_servicers(server: grpc.aio.Server, resources: Resources) -> None:
    # The generated base class answers every RPC with UNIMPLEMENTED: honest until the domain is built.
    segmentation_service_pb2_grpc.add_SegmentationServiceServicer_to_server(
        segmentation_service_pb2_grpc.SegmentationServiceServicer(), server
    )


DEFINITION = ServiceDefinition(
    name="segmentation",
    service_names=(segmentation_service_pb2.DESCRIPTOR.services_by_name["SegmentationService"].full_name,),
    add_servicers=_add_servicers,
)
