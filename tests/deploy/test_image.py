"""The container image, without a Docker engine: hadolint, the Dockerfile's structure, the build
context (.dockerignore), one Ray version across every deployment file, and the image's pip
requirement set resolved by pip (dry run) for the CPU and the CUDA variant."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_files import (
    COMPOSE,
    DOCKERFILE,
    DOCKERIGNORE,
    KUBERAY,
    RAY_CLUSTER,
    REPO,
    arg_defaults,
    cuda_base,
    dockerfile_instructions,
    image_tag,
    load_yaml,
    project,
    ray_version,
    stages,
)
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REQUIREMENTS_SCRIPT = REPO / "deploy" / "image_requirements.py"
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL", re.IGNORECASE)
SECRET_FILE = re.compile(r"\.pem$|\.key$|(^|/)\.aws|(^|/)\.env|credential|secret", re.IGNORECASE)
#: glibc of the distributions the image may be built on (manylinux wheels must not need more)
GLIBC_MINOR = {"bookworm": 36, "ubuntu24.04": 39}
#: Python of the distributions whose own Python the Dockerfile installs (NVIDIA's CUDA images)
DISTRO_PYTHON = {"ubuntu24.04": "3.12"}


def tool(name: str) -> str:
    """A command-line tool of the test extra, next to the interpreter or on PATH; its absence
    is a broken setup, a failure, not a skip."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    found = str(candidate) if candidate.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (bash .ci/setup, or pip install -e '.[test]')")
    return found


# ---- lint and structure --------------------------------------------------------------------
def test_hadolint_finds_nothing_and_each_ignore_is_justified():
    proc = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
    for ins in dockerfile_instructions():
        for comment in ins.comments:
            if comment.startswith("hadolint ignore="):
                rules = comment.removeprefix("hadolint ignore=").split(",")
                reasons = " ".join(c for c in ins.comments if not c.startswith("hadolint"))
                for rule in rules:
                    assert rule in reasons, f"`{ins.keyword}` ignores {rule} without a reason"


def test_dockerfile_is_multi_stage_with_a_lean_non_root_final_stage():
    instructions = dockerfile_instructions()
    builder, final = stages(instructions)
    assert builder[0].args.endswith(" AS builder")
    assert final[0].args == builder[0].args.removesuffix(" AS builder"), "one base for both"
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/petavox /opt/petavox"], "final stage copies the venv"
    final_runs = " ".join(i.args for i in final if i.keyword == "RUN")
    for build_tool in ("gcc", "g++", "build-essential", "python3-dev", "python3-venv", "pip "):
        assert build_tool not in final_runs, f"{build_tool} in the final stage"
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "USER must be a numeric non-root uid (runAsNonRoot)"
    assert [i.args for i in final if i.keyword == "ENTRYPOINT"] == ['["petavox"]']
    assert [i.args for i in final if i.keyword == "CMD"] == ['["--help"]']
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "PATH=/opt/petavox/bin:" in env and "HOME=/home/petavox" in env


def test_no_credentials_in_the_dockerfile():
    for ins in dockerfile_instructions():
        if ins.keyword in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"(\w+)=", ins.args) or [ins.args.split()[0]]
            assert not [n for n in names if SECRET_NAME.search(n)], ins
        if ins.keyword in ("COPY", "ADD"):
            sources = [s for s in ins.args.split()[:-1] if not s.startswith("--")]
            assert not [s for s in sources if SECRET_FILE.search(s)], ins
    assert not re.search(r"AKIA[0-9A-Z]{16}|BEGIN [A-Z ]*PRIVATE KEY", DOCKERFILE.read_text())


def test_versions_are_pinned_and_pip_installs_only_pinned_or_local_requirements():
    instructions = dockerfile_instructions()
    args = arg_defaults(instructions)
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", args["BASE"]), "base pinned to a patch"
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", cuda_base())
    deps = {
        canonicalize_name(Requirement(d).name): Requirement(d) for d in project()["dependencies"]
    }
    for arg, dependency in (("RAY_VERSION", "ray"), ("ONNXRUNTIME_VERSION", "onnxruntime")):
        assert re.fullmatch(r"\d+\.\d+\.\d+", args[arg]), f"{arg} is not an exact version"
        assert deps[dependency].specifier.contains(args[arg]), f"{arg} outside pyproject's range"
    pip_installs = [
        cmd
        for i in instructions
        if i.keyword == "RUN"
        for cmd in re.split(r"&&|;", i.args)
        if "pip install" in cmd
    ]
    assert len(pip_installs) == 2
    deps_install, project_install = pip_installs
    assert deps_install.split()[-2:] == ["-r", "requirements.txt"]
    assert "--only-binary=:all:" in deps_install, "the image must not compile anything"
    assert project_install.split()[-2:] == ["--no-deps", "."]
    assert all("--no-cache-dir" in cmd for cmd in pip_installs)


# ---- build context -------------------------------------------------------------------------
def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = re.escape(pattern.lstrip("!").strip("/"))
        regex = regex.replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negated
    return excluded


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_secrets():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    sources = [
        s
        for i in dockerfile_instructions()
        if i.keyword == "COPY" and not i.args.startswith("--from")
        for s in i.args.split()[:-1]
    ]
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert not dockerignore_excludes(source, patterns), f"COPY {source} is ignored"
    for model in ("boundary-synthetic.onnx", "clefts-synthetic.onnx", "synapses-synthetic.onnx"):
        assert not dockerignore_excludes(f"tasks/infer/models/{model}", patterns)
    assert not dockerignore_excludes("tasks/synapse/models/partner-ranker-synthetic.json", patterns)
    for path in (
        ".git/config",
        ".venv/bin/python",
        "artifacts/x.npy",
        "benchmarks/results/a",
        "infra/aws/terraform.tfstate",
        "tasks/server.pem",
        "workflows/.env",
        "tasks/__pycache__/x.pyc",
        ".aws/credentials",
        "tests/conftest.py",
    ):
        assert dockerignore_excludes(path, patterns), f"{path} would be sent to the build"


def test_the_wheel_the_image_installs_holds_every_module_and_the_model(tmp_path):
    """The Dockerfile copies pyproject, README, tasks/ and workflows/ and pip-installs them (not
    editable): the wheel built from exactly that must hold every module of every package (a
    package missing from pyproject's list was left out before), the built-in models and the
    partner ranker."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md", "tasks", "workflows"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, context / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet"]
    built = subprocess.run(
        [*pip, "--wheel-dir", str(tmp_path / "wheel"), str(context)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("petavox-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = {n for n in archive.namelist() if n.startswith("petavox/")}
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
    folders = tomllib.loads((context / "pyproject.toml").read_text())["tool"]["setuptools"]
    expected = {
        wheel_name(p.relative_to(context), folders["package-dir"])
        for top in ("tasks", "workflows")
        for p in (context / top).rglob("*")
        if p.suffix in (".py", ".onnx") or p.parent.name == "models"
    }
    assert "petavox/tasks/infer/models/boundary-synthetic.onnx" in expected
    assert "petavox/tasks/infer/models/clefts-synthetic.onnx" in expected
    assert "petavox/tasks/infer/models/synapses-synthetic.onnx" in expected
    assert "petavox/tasks/synapse/models/partner-ranker-synthetic.json" in expected
    assert "petavox/__init__.py" in expected  # workflows/petavox/__init__.py: `petavox` itself
    assert expected - packed == set()


def wheel_name(source: Path, package_dir: dict[str, str]) -> str:
    """Where a source file lands in the wheel: under the package whose folder (pyproject's
    package-dir, the deepest that holds it) it is in."""
    name, folder = max(
        ((n, Path(f)) for n, f in package_dir.items() if source.is_relative_to(f)),
        key=lambda item: len(item[1].parts),
    )
    return "/".join([*name.split("."), *source.relative_to(folder).parts])


# ---- one Ray version -----------------------------------------------------------------------
def test_one_ray_version_in_the_image_pyproject_and_every_deployment_file():
    import ray

    version = ray_version()
    assert ray.__version__ == version, "the Dockerfile's Ray is not the Ray tests run against"
    ray_dep = next(Requirement(d) for d in project()["dependencies"] if d.startswith("ray"))
    assert ray_dep.specifier.contains(Version(version))
    docs = [load_yaml(COMPOSE)]
    for path in sorted(KUBERAY.glob("*.yaml")) + sorted(RAY_CLUSTER.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert [v for d in docs for v in values_of(d, "rayVersion")] == [version]
    images = [v for d in docs for key in ("image", "worker_image") for v in values_of(d, key)]
    images = [i for i in images if not i.startswith("minio/")]
    assert len(images) == 11  # compose 3 (with its anchor), KubeRay 4, cluster launcher 4
    for image in images:
        assert image.rsplit(":", 1)[1] in (image_tag(), image_tag(gpu=True)), image


def values_of(node: Any, key: str) -> list[Any]:
    """Every value of `key` anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        found = [node[key]] if key in node else []
        return found + [v for child in node.values() for v in values_of(child, key)]
    if isinstance(node, list):
        return [v for child in node for v in values_of(child, key)]
    return []


# ---- what the image installs ---------------------------------------------------------------
def image_requirements(*pins: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(REQUIREMENTS_SCRIPT), str(REPO / "pyproject.toml"), *pins],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the requirement script needs tomllib")
def test_the_requirement_script_swaps_in_the_pins():
    reqs = image_requirements("ray[default]==2.60.0", "onnxruntime-gpu==1.26.0")
    names = [canonicalize_name(Requirement(r).name) for r in reqs]
    assert "onnxruntime" not in names and names.count("ray") == 1
    assert reqs[-2:] == ["ray[default]==2.60.0", "onnxruntime-gpu==1.26.0"]
    assert len(reqs) == len(project()["dependencies"])
    for bad in ("ray>=2", "torch==2.13.0"):
        proc = subprocess.run(
            [sys.executable, str(REQUIREMENTS_SCRIPT), "pyproject.toml", bad],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0 and bad in proc.stderr


def variant(base: str) -> tuple[str, int, str]:
    """(Python version, glibc minor version, onnxruntime distribution) of an image base."""
    distro = (
        next(d for d in GLIBC_MINOR if base.endswith(d))
        if "cuda" in base
        else base.rsplit("-", 1)[1]
    )
    assert distro in GLIBC_MINOR, f"unknown distribution of {base}: add its glibc above"
    if "cuda" in base:
        return DISTRO_PYTHON[distro], GLIBC_MINOR[distro], "onnxruntime-gpu"
    python = re.match(r"python:(\d+\.\d+)", base)
    assert python
    return python.group(1), GLIBC_MINOR[distro], "onnxruntime"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the requirement script needs tomllib")
def test_the_image_requirement_sets_resolve_from_wheels(tmp_path):
    """`pip install --dry-run` of the Dockerfile's requirement set, for the CPU base and the CUDA
    base (their Python and glibc), wheels only, as the Dockerfile installs it. Downloads only
    package metadata; both resolutions run at once (about 30 s)."""
    args = arg_defaults(dockerfile_instructions())
    runs = {}
    for base in (args["BASE"], cuda_base()):
        python, glibc, ort = variant(base)
        requirements = tmp_path / f"{ort}.txt"
        requirements.write_text(
            "\n".join(
                image_requirements(
                    f"ray[default]=={args['RAY_VERSION']}", f"{ort}=={args['ONNXRUNTIME_VERSION']}"
                )
            )
        )
        platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(glibc, 16, -1)]
        platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
        report = tmp_path / f"{ort}.json"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(tmp_path / "target"),
            "--python-version",
            python,
            "--only-binary=:all:",
            "--report",
            str(report),
            "-r",
            str(requirements),
        ] + [f"--platform={p}" for p in platforms]
        runs[base] = (
            ort,
            report,
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        )
    for base, (ort, report, proc) in runs.items():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{base}:\n{output}"
        installed = {
            canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]
        }
        assert installed["ray"] == args["RAY_VERSION"]
        assert installed[ort] == args["ONNXRUNTIME_VERSION"]
        other = "onnxruntime" if ort == "onnxruntime-gpu" else "onnxruntime-gpu"
        assert other not in installed and "torch" not in installed, base
        for dependency in project()["dependencies"]:
            name = canonicalize_name(Requirement(dependency).name)
            assert name in installed or name == "onnxruntime", f"{base}: {name} missing"
