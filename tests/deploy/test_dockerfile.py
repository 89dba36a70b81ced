"""The service image's Dockerfile, checked by its structure (no Docker engine needed)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest

from tests.deploy.chart import ROOT

DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Instructions (line continuations joined, comments dropped) and the stages they belong to."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "dangling line continuation"

    header: list[Instruction] = []
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            m = re.fullmatch(
                r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", instruction.args, re.IGNORECASE
            )
            assert m, f"cannot read FROM {instruction.args}"
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            header.append(instruction)
    return header, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[list[Instruction], list[Stage]]:
    return parse(DOCKERFILE.read_text())


def test_multi_stage_from_python_311(dockerfile):
    header, stages = dockerfile
    assert len(stages) >= 2, "a builder stage and a final stage"
    assert stages[0].name, "the builder stage is named, so the final stage copies from it by name"
    # both stages on the same interpreter: the venv's python links to it
    assert len({s.base for s in stages}) == 1
    base = stages[0].base
    if base.startswith("${"):
        arg = base.strip("${}")
        defaults = dict(i.args.split("=", 1) for i in header if i.keyword == "ARG" and "=" in i.args)
        base = defaults[arg]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]+)?", base), base


def test_service_is_a_build_argument_in_every_stage(dockerfile):
    _, stages = dockerfile
    for stage in stages:
        assert "SERVICE" in [a.split("=")[0] for a in stage.all("ARG")], f"stage {stage.name or 'final'}"


def test_venv_is_built_from_the_lock_file(dockerfile):
    builder = dockerfile[1][0]
    runs = " ".join(builder.all("RUN"))
    sync = re.search(r"uv sync ([^&;]*)", runs)
    assert sync, "the builder runs `uv sync`"
    flags = sync.group(1).split()
    for flag in ("--frozen", "--no-dev", "--no-editable"):
        assert flag in flags, f"uv sync needs {flag}"
    assert "--package" in flags
    assert flags[flags.index("--package") + 1].strip("\"'") == "loyalty-${SERVICE}"
    assert re.search(r"pip install [\"']?uv", runs), "uv is installed with pip"


def test_contracts_are_generated_in_the_builder_like_make_protos(dockerfile):
    _, stages = dockerfile
    builder_runs = " ".join(stages[0].all("RUN"))
    assert "grpc_tools.protoc" in builder_runs
    assert "-I protos" in builder_runs
    docker_outs = set(re.findall(r"--(\w+_out)=", builder_runs))
    make_protos = (ROOT / "Makefile").read_text()
    make_outs = set(re.findall(r"--(\w+_out)=", make_protos))
    assert make_outs, "the Makefile's protoc call has no --*_out flag"
    assert docker_outs == make_outs, "the image must generate what `make protos` generates"
    # and it happens before the service is installed from it
    assert builder_runs.index("grpc_tools.protoc") < builder_runs.index("uv sync")


def test_final_stage_has_only_the_venv_and_runs_as_non_root(dockerfile):
    _, stages = dockerfile
    final = stages[-1]
    copies = final.all("COPY")
    assert copies, "the final stage copies the venv"
    for copy in copies:
        assert copy.startswith(f"--from={stages[0].name} "), f"final stage copies from the context: {copy}"
        assert copy.split()[-1].startswith("/app/.venv"), copy
    assert not final.all("ADD")
    final_runs = " ".join(final.all("RUN"))
    for tool in ("grpc_tools", "pip install", "uv "):
        assert tool not in final_runs, f"{tool} in the final stage"

    users = final.all("USER")
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid == "10001" and gid in ("", "10001"), "numeric non-root uid 10001"
    # nothing after USER switches back or runs as root
    last_user = max(i for i, ins in enumerate(final.instructions) if ins.keyword == "USER")
    assert not [ins for ins in final.instructions[last_user + 1 :] if ins.keyword in ("RUN", "USER")]


def test_exec_form_entrypoint_serves_by_default(dockerfile):
    _, stages = dockerfile
    final = stages[-1]
    (entrypoint,) = final.all("ENTRYPOINT")
    argv = json.loads(entrypoint)  # exec form is a JSON array; shell form would not parse
    assert isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)
    assert argv[0].startswith("/app/.venv/bin/"), "the entry point lives in the copied venv"
    (cmd,) = final.all("CMD")
    assert json.loads(cmd) == ["serve"]
    # the entry point is the console script of the service chosen by --build-arg SERVICE
    link = argv[0].rsplit("/", 1)[1]
    builder_runs = " ".join(stages[0].all("RUN"))
    assert re.search(rf"ln -s \"?loyalty-\$\{{SERVICE\}}\"? \S*/{re.escape(link)}\b", builder_runs), (
        "the builder must point the entry point at loyalty-${SERVICE}"
    )


def test_dockerignore_sends_only_the_sources():
    patterns = [
        p.strip()
        for p in DOCKERIGNORE.read_text().splitlines()
        if p.strip() and not p.lstrip().startswith("#")
    ]
    assert patterns[0] == "*", "allow-list: ignore everything first"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert {"pyproject.toml", "uv.lock", "libs", "services", "protos"} <= allowed
    assert not allowed & {".git", ".venv", ".data", "tests", "deploy", ".tools"}
    # generated code is made in the image, never copied from a work tree
    assert "libs/contracts/src/loyalty" in patterns
    assert "**/.venv" in patterns and "**/__pycache__" in patterns
