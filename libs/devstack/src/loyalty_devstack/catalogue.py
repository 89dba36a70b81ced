"""The seven services and their local ports (DESIGN.md's table)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    grpc_port: int
    metrics_port: int

    @property
    def env_prefix(self) -> str:
        return f"{self.name.upper()}_"

    @property
    def command(self) -> str:
        return f"loyalty-{self.name}"


SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry("profile", 50052, 9452),
    ServiceEntry("segmentation", 50053, 9453),
    ServiceEntry("promotion", 50054, 9454),
    ServiceEntry("ledger", 50055, 9455),
    ServiceEntry("fraud", 50056, 9456),
    ServiceEntry("notification", 50057, 9457),
    ServiceEntry("gateway", 50051, 9451),
)
