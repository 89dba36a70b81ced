"""One catalogue (loyalty_runtime.catalogue) names the services and their ports; the chart's values
and schema, the README's table and each service's definition and settings must agree with it.

These checks read files only (no helm), so the scaffolding test runs them in a copy of the repository.
"""

import importlib
import json
import re

import pytest
import yaml

from loyalty_runtime.catalogue import SERVICES, ServiceEntry
from tests.deploy.chart import CHART, ROOT, catalogue_ports

NAMES = [entry.name for entry in SERVICES]


def readme_services_table() -> dict[str, tuple[int, int]]:
    """The rows of the table under `## Services`: name -> (gRPC, metrics)."""
    section = (ROOT / "README.md").read_text().split("\n## Services\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert rows[0].replace(" ", "").startswith("|service|gRPC|metrics|"), rows[0]
    table = {}
    for row in rows[2:]:  # the header and its |---| line
        name, grpc_port, metrics_port = (cell.strip() for cell in row.strip("|").split("|")[:3])
        assert name not in table, f"{name} twice in the README's table"
        table[name] = (int(grpc_port), int(metrics_port))
    return table


def test_names_and_ports_are_unique():
    ports = [port for entry in SERVICES for port in catalogue_ports(entry).values()]
    assert len(set(NAMES)) == len(NAMES)
    assert len(set(ports)) == len(ports), "two services (or two ports of one) share a port"
    for name in NAMES:
        assert re.fullmatch(r"[a-z][a-z0-9]{1,19}", name), name


def test_chart_values_list_the_catalogue():
    values = yaml.safe_load((CHART / "values.yaml").read_text())["services"]
    assert list(values) == NAMES, "values.yaml's services, in the catalogue's order"
    assert {name: values[name]["ports"] for name in values} == {
        entry.name: catalogue_ports(entry) for entry in SERVICES
    }


def test_chart_schema_knows_every_service_and_no_other():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert sorted(schema["properties"]["services"]["properties"]) == sorted(NAMES)
    callers = schema["definitions"]["service"]["properties"]["callers"]["items"]["enum"]
    assert sorted(callers) == sorted(NAMES)


def test_readme_table_is_the_catalogue():
    assert readme_services_table() == {e.name: (e.grpc_port, e.metrics_port) for e in SERVICES}


def test_readme_names_each_http_port():
    section = (ROOT / "README.md").read_text().split("\n## Services\n", 1)[1].split("\n## ", 1)[0]
    rows = {row.strip("|").split("|")[0].strip(): row for row in section.splitlines() if row.startswith("|")}
    for entry in SERVICES:
        if entry.http_port:
            assert f"HTTP on {entry.http_port}" in rows[entry.name], entry.name


@pytest.mark.parametrize("entry", SERVICES, ids=NAMES)
def test_each_definition_takes_its_name_prefix_and_ports_from_the_catalogue(entry: ServiceEntry):
    definition = importlib.import_module(f"{entry.package}.service").DEFINITION
    assert definition.name == entry.name
    settings = definition.settings
    assert settings.model_config["env_prefix"] == entry.env_prefix
    assert settings.model_fields["grpc_port"].default == entry.grpc_port
    assert settings.model_fields["metrics_port"].default == entry.metrics_port
    if "http_port" in settings.model_fields:
        assert settings.model_fields["http_port"].default == entry.http_port
    pyproject = (ROOT / "services" / entry.name / "pyproject.toml").read_text()
    assert f'{entry.command} = "{entry.package}.__main__:main"' in pyproject


def test_make_run_puts_working_notification_links_into_what_it_sends(monkeypatch):
    """The environment `make run` starts the services with: notification's links point at the
    port its links server listens on (tests/service/notification shows such links work)."""
    from loyalty_devstack.infra import Infra
    from loyalty_devstack.run import service_environment
    from loyalty_notification.service import NotificationSettings

    monkeypatch.delenv("NOTIFICATION_HTTP_PUBLIC_URL", raising=False)
    infra = Infra("postgresql://127.0.0.1:5432", "redis://127.0.0.1:6379/0")
    env = service_environment(infra, "postgresql+asyncpg://127.0.0.1:5432/loyalty")
    for name, value in env.items():
        if name.startswith("NOTIFICATION_"):
            monkeypatch.setenv(name, value)
    settings = NotificationSettings()
    port = next(entry.http_port for entry in SERVICES if entry.name == "notification")
    assert settings.http_enabled and settings.http_port == port
    assert settings.unsubscribe_url == f"http://127.0.0.1:{port}/unsubscribe"
    assert settings.tracking_url == f"http://127.0.0.1:{port}/open"
    # A developer who reaches the links another way (a tunnel) says so, and make run keeps it.
    monkeypatch.setenv("NOTIFICATION_HTTP_PUBLIC_URL", "https://tunnel.example")
    assert service_environment(infra, "")["NOTIFICATION_HTTP_PUBLIC_URL"] == "https://tunnel.example"
