"""The chart under test and helpers to look into what `helm template` renders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loyalty_runtime.catalogue import SERVICES as CATALOGUE, ServiceEntry

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "loyalty"
TEST_VALUES = CHART / "ci" / "test-values.yaml"
RELEASE = "loyalty"
NAMESPACE = "shop"


def catalogue_ports(entry: ServiceEntry) -> dict[str, int]:
    """A catalogue entry's ports as the chart names them: grpc, metrics, and http where it has one."""
    ports = {"grpc": entry.grpc_port, "metrics": entry.metrics_port}
    return ports | ({"http": entry.http_port} if entry.http_port else {})


# The services and their ports come from the one catalogue; the chart must agree with it.
PORTS: dict[str, dict[str, int]] = {entry.name: catalogue_ports(entry) for entry in CATALOGUE}
SERVICES = sorted(PORTS)

Manifest = dict[str, Any]


@dataclass
class Rendered:
    """The objects of one `helm template`, with the look-ups the tests need."""

    docs: list[Manifest]
    stdout: str = field(repr=False, default="")

    def of_kind(self, kind: str) -> list[Manifest]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> Manifest:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def find(self, kind: str, name: str) -> Manifest | None:
        return next((d for d in self.of_kind(kind) if d["metadata"]["name"] == name), None)

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.of_kind(kind)}


def container(workload: Manifest) -> Manifest:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per pod"
    return containers[0]


def env_of(workload: Manifest) -> dict[str, Any]:
    """Environment of the workload's container: plain values as str, references as dicts."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(workload).get("env", [])}


def hook_of(doc: Manifest) -> str | None:
    return (doc["metadata"].get("annotations") or {}).get("helm.sh/hook")


@dataclass
class HelmResult:
    returncode: int
    stdout: str
    stderr: str
