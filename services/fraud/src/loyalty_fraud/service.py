"""The fraud service as the runtime runs it."""

import grpc
from pydantic_settings import SettingsConfigDict

from loyalty.fraud.v1 import fraud_service_pb2, fraud_service_pb2_grpc
from loyalty_runtime.server import Resources, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class FraudSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FRAUD_")
    grpc_port: int = 50056
    metrics_port: int = 9456


def _add_servicers(server: grpc.aio.Server, resources: Resources) -> None:
    # The generated base class answers every RPC with UNIMPLEMENTED: honest until the domain is built.
    fraud_service_pb2_grpc.add_FraudServiceServicer_to_server(
        fraud_service_pb2_grpc.FraudServiceServicer(), server
    )


DEFINITION = ServiceDefinition(
    name="fraud",
    service_names=(fraud_service_pb2.DESCRIPTOR.services_by_name["FraudService"].full_name,),
    add_servicers=_add_servicers,
)
