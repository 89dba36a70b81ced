"""The README's configuration table is the settings every service has, with their defaults."""

from pydantic import SecretStr

from loyalty_runtime.migrations import SERVICE_ROLE_VARIABLE
from loyalty_runtime.settings import ServiceSettings
from tests.deploy.chart import ROOT

# Each service's own ports are in the Services table, not in ServiceSettings.
PER_SERVICE = {"GRPC_PORT", "METRICS_PORT"}


def configuration_table() -> dict[str, str]:
    """`| `VARIABLE` | default | meaning |` rows under `## Configuration`: variable -> default."""
    section = (ROOT / "README.md").read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {row.split("|")[1].strip(" `"): row.split("|")[2].strip(" `") for row in rows}


def documented(default) -> str:
    if isinstance(default, SecretStr):
        return default.get_secret_value()
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def test_every_setting_is_documented_with_its_default():
    table = configuration_table()
    fields = {name.upper(): field.default for name, field in ServiceSettings.model_fields.items()}
    assert set(table) == set(fields) | {SERVICE_ROLE_VARIABLE}, "documented, and nothing else"
    for variable, default in fields.items():
        if variable in PER_SERVICE:
            assert table[variable] == "the Services table"
        else:
            assert table[variable] == documented(default), variable
