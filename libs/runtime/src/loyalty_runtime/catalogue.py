"""The platform's services: names and local ports, in one place. `make run`, the README's table and
the chart's values are checked against it (tests/deploy, tests/unit/runtime), the e2e tests start
every service listed here, and each service's settings take their default ports from it.

Adding a service: `make service NAME=<name>` appends its entry here and scaffolds the rest."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    grpc_port: int
    metrics_port: int
    http_port: int | None = None

    @property
    def env_prefix(self) -> str:
        return f"{self.name.upper()}_"

    @property
    def package(self) -> str:
        return f"loyalty_{self.name}"

    @property
    def command(self) -> str:
        return f"loyalty-{self.name}"


SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry("gateway", 50051, 9451, http_port=8080),
    ServiceEntry("profile", 50052, 9452),
    ServiceEntry("segmentation", 50053, 9453),
    ServiceEntry("promotion", 50054, 9454),
    ServiceEntry("ledger", 50055, 9455),
    ServiceEntry("fraud", 50056, 9456),
    ServiceEntry("notification", 50057, 9457, http_port=8057),
)

PORTS: dict[str, ServiceEntry] = {entry.name: entry for entry in SERVICES}
