"""Readers for the deployment files (Dockerfile, compose, KubeRay, cluster launcher) shared by
the tests in tests/deploy."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
KUBERAY = REPO / "deploy" / "kuberay"
RAY_CLUSTER = REPO / "deploy" / "ray-cluster"
PYPROJECT = REPO / "pyproject.toml"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction; `comments` are the comment lines right above it."""

    keyword: str
    args: str
    comments: tuple[str, ...]


def dockerfile_instructions(text: str | None = None) -> list[Instruction]:
    """The instructions of the Dockerfile (continuation lines joined, comments kept apart)."""
    lines = (DOCKERFILE.read_text() if text is None else text).splitlines()
    result: list[Instruction] = []
    comments: list[str] = []
    current = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            if not current:
                comments.append(stripped.lstrip("#").strip())
            continue
        if not stripped and not current:
            comments = []
            continue
        current += " " + stripped.removesuffix("\\").strip()
        if stripped.endswith("\\"):
            continue
        keyword, _, args = current.strip().partition(" ")
        result.append(Instruction(keyword.upper(), args.strip(), tuple(comments)))
        current, comments = "", []
    return result


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by build stage (each group starts with its FROM)."""
    groups: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            groups.append([])
        if groups:
            groups[-1].append(ins)
    return groups


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """Every ARG with a default value, by name."""
    defaults = {}
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            defaults[name.strip()] = value.strip()
    return defaults


def ray_version() -> str:
    return arg_defaults(dockerfile_instructions())["RAY_VERSION"]


def project() -> dict[str, Any]:
    """pyproject.toml's [project] table."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
    return tomllib.loads(PYPROJECT.read_text())["project"]


def image_tag(gpu: bool = False) -> str:
    """The tag the deployment files use: <petavox version>-ray<Ray version>[-gpu]."""
    return f"{project()['version']}-ray{ray_version()}" + ("-gpu" if gpu else "")


def cuda_base() -> str:
    """The CUDA base of the documented GPU build command in the Dockerfile's header."""
    match = re.search(r"--build-arg BASE=(\S+)", DOCKERFILE.read_text())
    assert match, "the Dockerfile documents no CUDA build (--build-arg BASE=...)"
    return match.group(1)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")


def interpolate(value: str, environment: dict[str, str]) -> str:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR, $$."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(3)
        default = match.group(2)
        found = environment.get(name)
        if found is None or (found == "" and ":-" in match.group(0)):
            return default or ""
        return found

    return _VARIABLE.sub(substitute, value)


def documented_command(service: str) -> list[str]:
    """The command the compose file's header documents for `docker compose ... exec SERVICE`."""
    match = re.search(
        rf"^#\s+docker compose -f \S+ exec {service} (.+)$", COMPOSE.read_text(), re.MULTILINE
    )
    assert match, f"the compose file documents no `exec {service}` command"
    return shlex.split(match.group(1))
