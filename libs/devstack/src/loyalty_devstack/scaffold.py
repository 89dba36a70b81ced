"""`make service NAME=<name>`: a new service in one step.

It writes services/<name> (its package with the `loyalty-<name>` entry point, and a `service.py` that
declares it: settings with the catalogue's ports, and one `Api` per gRPC service found in
protos/loyalty/<name>/v1/, none if that folder does not exist yet), then adds the service to the
catalogue with the next free ports, to the chart's values and schema, and to the README's table.
`make service` re-locks afterwards. Every RPC answers UNIMPLEMENTED until a servicer is declared.

The catalogue, chart and README are edited as text, so their comments and layout survive; the tests
in tests/deploy check that all of them still agree.
"""

import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Lower-case letters and digits: the name becomes a Python package, an environment prefix and part
# of Kubernetes object names, which allow neither hyphens in the first nor underscores in the last.
NAME = re.compile(r"[a-z][a-z0-9]{1,19}")

CATALOGUE = Path("libs/runtime/src/loyalty_runtime/catalogue.py")
VALUES = Path("deploy/helm/loyalty/values.yaml")
SCHEMA = Path("deploy/helm/loyalty/values.schema.json")
README = Path("README.md")

PYPROJECT = """\
[project]
name = "loyalty-{name}"
version = "0.1.0"
requires-python = ">=3.11,<3.12"
description = {description_toml}
dependencies = ["loyalty-runtime", "loyalty-contracts"]

[project.scripts]
loyalty-{name} = "loyalty_{name}.__main__:main"

[tool.uv.sources]
loyalty-runtime = {{ workspace = true, editable = true }}
loyalty-contracts = {{ workspace = true, editable = true }}

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/loyalty_{name}"]
"""

INIT = '''\
"""The {name} service: {description}.

Its RPCs answer UNIMPLEMENTED until they are built."""
'''

MAIN = """\
from loyalty_{name}.service import DEFINITION
from loyalty_runtime.cli import run_service_cli


def main() -> None:
    run_service_cli(DEFINITION)


if __name__ == "__main__":
    main()
"""

SERVICE = '''\
"""The {name} service as the runtime runs it. An API without a servicer answers UNIMPLEMENTED."""

from pydantic_settings import SettingsConfigDict

{imports}
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.server import {server_names}
from loyalty_runtime.settings import ServiceSettings


class {title}Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="{prefix}")
    grpc_port: int = PORTS["{name}"].grpc_port
    metrics_port: int = PORTS["{name}"].metrics_port


DEFINITION = ServiceDefinition(
    name="{name}",
    settings={title}Settings,
{apis}
)
'''

NO_CONTRACT = """\
    # No contract yet: write protos/loyalty/{name}/v1/, then declare each of its gRPC services
    # here as Api(<file>_pb2.DESCRIPTOR.services_by_name["<Service>"]).
    apis=[],"""


@dataclass(frozen=True)
class ContractService:
    """One `service` of the new service's protos: the generated module it is in, and its name."""

    module: str
    name: str


def load_catalogue(root: Path):
    """The catalogue as it is in `root` (not as the running interpreter imported it)."""
    spec = importlib.util.spec_from_file_location("_scaffold_catalogue", root / CATALOGUE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module.SERVICES


def contract_services(root: Path, name: str) -> list[ContractService]:
    found = []
    for proto in sorted((root / "protos" / "loyalty" / name / "v1").glob("*.proto")):
        for service in re.findall(r"^service\s+(\w+)", proto.read_text(), re.MULTILINE):
            found.append(ContractService(f"{proto.stem}_pb2", service))
    return found


def render_service(name: str, contract: list[ContractService]) -> str:
    if contract:
        modules = sorted({c.module for c in contract})
        imports = f"from loyalty.{name}.v1 import {', '.join(modules)}"
        lines = [f'        Api({c.module}.DESCRIPTOR.services_by_name["{c.name}"]),' for c in contract]
        apis = "    apis=[\n" + "\n".join(lines) + "\n    ],"
        server_names = "Api, ServiceDefinition"
    else:
        imports, apis, server_names = "", NO_CONTRACT.format(name=name), "ServiceDefinition"
    text = SERVICE.format(
        name=name,
        title=name.capitalize(),
        prefix=f"{name.upper()}_",
        imports=imports,
        server_names=server_names,
        apis=apis,
    )
    return text.replace("\n\n\nfrom loyalty_runtime", "\n\nfrom loyalty_runtime")


def add_to_catalogue(root: Path, name: str, grpc_port: int, metrics_port: int) -> None:
    path = root / CATALOGUE
    text = path.read_text()
    start = text.index("SERVICES: tuple[ServiceEntry, ...] = (")
    end = text.index("\n)\n", start) + 1
    entry = f'    ServiceEntry("{name}", {grpc_port}, {metrics_port}),\n'
    path.write_text(text[:end] + entry + text[end:])


def add_to_values(root: Path, name: str, grpc_port: int, metrics_port: int) -> None:
    """Append the service to the end of the top-level `services:` map."""
    path = root / VALUES
    lines = path.read_text().splitlines(keepends=True)
    start = lines.index("services:\n")
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i][0].isspace()),
        len(lines),
    )
    while not lines[end - 1].strip():
        end -= 1
    block = [f"  {name}:\n", "    ports:\n", f"      grpc: {grpc_port}\n", f"      metrics: {metrics_port}\n"]
    path.write_text("".join(lines[:end] + block + lines[end:]))


def add_to_schema(root: Path, name: str) -> None:
    """The strict schema names every service: as a key of `services` and as a possible caller."""
    path = root / SCHEMA
    schema = json.loads(path.read_text())
    schema["properties"]["services"]["properties"][name] = {"$ref": "#/definitions/service"}
    schema["definitions"]["service"]["properties"]["callers"]["items"]["enum"].append(name)
    path.write_text(json.dumps(schema, indent=2) + "\n")


def add_to_readme(root: Path, name: str, grpc_port: int, metrics_port: int, description: str) -> None:
    """A row at the end of the table under `## Services`."""
    path = root / README
    lines = path.read_text().splitlines(keepends=True)
    heading = lines.index("## Services\n")
    first = next(i for i in range(heading, len(lines)) if lines[i].startswith("|"))
    last = next(i for i in range(first, len(lines)) if not lines[i].startswith("|"))
    row = f"| {name} | {grpc_port} | {metrics_port} | {description} |\n"
    path.write_text("".join([*lines[:last], row, *lines[last:]]))


def write_package(root: Path, name: str, description: str) -> list[Path]:
    directory = root / "services" / name
    package = directory / "src" / f"loyalty_{name}"
    package.mkdir(parents=True)
    files = {
        directory / "pyproject.toml": PYPROJECT.format(name=name, description_toml=json.dumps(description)),
        package / "__init__.py": INIT.format(name=name, description=description),
        package / "__main__.py": MAIN.format(name=name),
        package / "service.py": render_service(name, contract_services(root, name)),
    }
    for path, text in files.items():
        path.write_text(text)
    return list(files)


def format_python(paths: list[Path]) -> None:
    """What `make format` does (with the configuration of the repository they are in), so that
    `make lint` passes on files this tool wrote."""
    files = [str(p) for p in paths if p.suffix == ".py"]
    subprocess.run([sys.executable, "-m", "ruff", "check", "--fix", "--quiet", *files], check=True)
    subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", *files], check=True)


def new_service(root: Path, name: str, description: str) -> list[Path]:
    """Scaffold `name` in the repository at `root`; returns the files written."""
    if not NAME.fullmatch(name):
        raise SystemExit(
            f"{name!r}: a service name is 2-20 lower-case letters and digits, starting with a letter"
        )
    services = load_catalogue(root)
    if any(entry.name == name for entry in services) or (root / "services" / name).exists():
        raise SystemExit(f"{name} exists already")
    description = description or f"the {name} service"
    if any(c in description for c in '|"\n'):
        raise SystemExit(
            'the description is one line without | or " (it goes into a table row and a docstring)'
        )
    grpc_port = max(entry.grpc_port for entry in services) + 1
    metrics_port = max(entry.metrics_port for entry in services) + 1
    written = write_package(root, name, description)
    format_python(written)
    add_to_catalogue(root, name, grpc_port, metrics_port)
    add_to_values(root, name, grpc_port, metrics_port)
    add_to_schema(root, name)
    add_to_readme(root, name, grpc_port, metrics_port, description)
    return [*written, root / CATALOGUE, root / VALUES, root / SCHEMA, root / README]
