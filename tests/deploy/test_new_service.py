"""`make service NAME=giftcards`, the documented one step, in a copy of the repository (its tracked
and untracked files, no .venv, no .data, no generated code) holding the new service's contract: the
service is written and declared with that contract's API, the catalogue, chart, schema, README and
lock file take it, the consistency checks pass there, the chart renders it, and it starts as
`make run` starts it, answers health, and answers its RPC UNIMPLEMENTED (UNAUTHENTICATED without
the internal token)."""

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loyalty_devstack.infra import free_port
from loyalty_devstack.scaffold import new_service
from loyalty_runtime.catalogue import SERVICES
from tests.deploy.chart import ROOT

NAME = "giftcards"
DESCRIPTION = "gift cards: balances, top-ups and redemptions"
# Its contract, written before `make service` (which then declares its API).
CONTRACT = """\
syntax = "proto3";

package loyalty.giftcards.v1;

// Gift cards: balances, top-ups and redemptions.
service GiftCardService {
  // One gift card and its balance.
  rpc GetGiftCard(GetGiftCardRequest) returns (GetGiftCardResponse);
}

message GetGiftCardRequest {
  string gift_card_id = 1;
}

message GetGiftCardResponse {
  int64 balance = 1;
}
"""
METHOD = "/loyalty.giftcards.v1.GiftCardService/GetGiftCard"
GRPC_PORT = max(entry.grpc_port for entry in SERVICES) + 1
METRICS_PORT = max(entry.metrics_port for entry in SERVICES) + 1

# One worker makes the copy once for all of these tests.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("new-service")]


def copy_repository(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split(b"\0")):
        source = ROOT / os.fsdecode(name)
        if source.is_file():  # a file deleted in the work tree is still listed
            destination = target / os.fsdecode(name)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def uv() -> str:
    """The uv the Makefile would use; the copy gets it as UV= so it does not install its own."""
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "no uv: run `make setup` first"
    return found


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without pytest-xdist's worker variables (the inner run is its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    return env | extra


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    copy_repository(root)
    assert not (root / ".venv").exists() and not (root / ".data").exists()
    contract = root / "protos" / "loyalty" / NAME / "v1" / f"{NAME}_service.proto"
    contract.parent.mkdir(parents=True)
    contract.write_text(CONTRACT)
    # Not offline: `make setup` installs from the lock (`uv sync --frozen`), which leaves the
    # registry's index pages out of uv's cache, and re-locking with a new member reads them.
    env = clean_environment()
    step = subprocess.run(
        ["make", "service", f"NAME={NAME}", f"DESCRIPTION={DESCRIPTION}", f"UV={uv()}"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert step.returncode == 0, step.stdout + step.stderr
    protos = subprocess.run(
        ["make", "protos", f"UV={uv()}"], cwd=root, env=env, capture_output=True, text=True
    )
    assert protos.returncode == 0, protos.stdout + protos.stderr
    return root


def test_the_service_is_written_and_declared(repository: Path):
    package = repository / "services" / NAME / "src" / f"loyalty_{NAME}"
    pyproject = (repository / "services" / NAME / "pyproject.toml").read_text()
    assert f'name = "loyalty-{NAME}"' in pyproject
    assert f'loyalty-{NAME} = "loyalty_{NAME}.__main__:main"' in pyproject
    assert DESCRIPTION in (package / "__init__.py").read_text()
    assert "run_service_cli(DEFINITION)" in (package / "__main__.py").read_text()
    service = (package / "service.py").read_text()
    assert f'env_prefix="{NAME.upper()}_"' in service
    assert f'grpc_port: int = PORTS["{NAME}"].grpc_port' in service
    assert "settings=GiftcardsSettings" in service
    assert f"from loyalty.{NAME}.v1 import {NAME}_service_pb2" in service
    assert f'Api({NAME}_service_pb2.DESCRIPTOR.services_by_name["GiftCardService"])' in service

    catalogue = (repository / "libs/runtime/src/loyalty_runtime/catalogue.py").read_text()
    assert f'ServiceEntry("{NAME}", {GRPC_PORT}, {METRICS_PORT}),\n)' in catalogue
    values = yaml.safe_load((repository / "deploy/helm/loyalty/values.yaml").read_text())
    assert values["services"][NAME] == {"ports": {"grpc": GRPC_PORT, "metrics": METRICS_PORT}}
    assert (
        f"| {NAME} | {GRPC_PORT} | {METRICS_PORT} | {DESCRIPTION} |" in (repository / "README.md").read_text()
    )
    assert f'name = "loyalty-{NAME}"' in (repository / "uv.lock").read_text(), "make service re-locks"
    assert (repository / ".venv" / "bin" / f"loyalty-{NAME}").exists(), "... and installs it"
    # the root pyproject needs no line for it
    assert NAME not in (repository / "pyproject.toml").read_text()


def test_what_was_written_passes_lint(repository: Path):
    files = [str(p) for p in (repository / "services" / NAME).rglob("*.py")]
    for args in (["check", *files], ["format", "--check", *files]):
        result = subprocess.run(
            [repository / ".venv/bin/ruff", *args], cwd=repository, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_consistency_checks_pass_there(repository: Path):
    result = subprocess.run(
        [
            repository / ".venv/bin/python",
            "-m",
            "pytest",
            "-v",
            "-p",
            "no:cacheprovider",
            "tests/deploy/test_catalogue.py",
        ],
        cwd=repository,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"test_each_definition_takes_its_name_prefix_and_ports_from_the_catalogue[{NAME}] PASSED"
        in result.stdout
    )


def test_the_chart_renders_it(repository: Path, helm: str):
    chart = repository / "deploy/helm/loyalty"
    rendered = subprocess.run(
        [helm, "template", "loyalty", chart, "-f", chart / "ci/test-values.yaml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"loyalty-{NAME}"
    )
    ports = {
        p["name"]: p["containerPort"]
        for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}


def health(port: int, service: str) -> int | None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            request = health_pb2.HealthCheckRequest(service=service)
            return health_pb2_grpc.HealthStub(channel).Check(request, timeout=1).status
        except grpc.RpcError:
            return None


def unary_call_code(port: int, *, authenticated: bool) -> grpc.StatusCode:
    """The status of an empty GetGiftCard (raw bytes: the generated code lives in the copy only)."""
    metadata = (("authorization", "Bearer dev-internal-token"), ("x-loyalty-tenant", "t1"))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            channel.unary_unary(METHOD)(b"", metadata=metadata if authenticated else (), timeout=5)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_it_starts_as_make_run_starts_it(repository: Path, database_url: str, redis_url: str):
    port = free_port()
    prefix = f"{NAME.upper()}_"
    env = clean_environment(
        **{
            f"{prefix}GRPC_PORT": str(port),
            f"{prefix}GRPC_HOST": "127.0.0.1",
            f"{prefix}DATABASE_URL": database_url,
            f"{prefix}REDIS_URL": redis_url,
        }
    )
    process = subprocess.Popen([repository / ".venv/bin" / f"loyalty-{NAME}", "serve"], env=env)
    try:
        deadline = time.monotonic() + 30
        while health(port, "") != health_pb2.HealthCheckResponse.SERVING:
            assert process.poll() is None, "the service exited"
            assert time.monotonic() < deadline, "not SERVING after 30 s"
            time.sleep(0.2)
        assert health(port, "liveness") == health_pb2.HealthCheckResponse.SERVING
        assert unary_call_code(port, authenticated=True) == grpc.StatusCode.UNIMPLEMENTED
        assert unary_call_code(port, authenticated=False) == grpc.StatusCode.UNAUTHENTICATED
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()


@pytest.mark.parametrize(
    ("name", "refusal"),
    [("Gift-Cards", "lower-case letters and digits"), ("ledger", "exists already"), (NAME, "exists already")],
)
def test_a_bad_or_taken_name_is_refused_before_anything_is_written(repository: Path, name: str, refusal: str):
    before = (repository / "libs/runtime/src/loyalty_runtime/catalogue.py").read_text()
    with pytest.raises(SystemExit, match=refusal):
        new_service(repository, name, "")
    assert (repository / "libs/runtime/src/loyalty_runtime/catalogue.py").read_text() == before
