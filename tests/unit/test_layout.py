"""The shape of the code base, checked: `tasks/` never imports Ray or `workflows/`, planning
never imports the executor, modules and functions stay small, and every package is installed."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (REPO / f).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_tasks_import_neither_ray_nor_workflows():
    offenders = {
        str(p.relative_to(REPO)): sorted(
            m for m in imported(p) if m.split(".")[0] == "ray" or m.startswith("petavox.workflows")
        )
        for p in modules("tasks")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_planning_loads_neither_ray_nor_the_runner():
    """Importing every stage (params, planners, declarations) and planning a stage in a fresh
    interpreter loads neither Ray nor the executor."""
    code = (
        "import sys, petavox.workflows.stages, petavox.workflows.config, petavox.workflows.plan\n"
        "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')"
        " or m == 'petavox.workflows.runner']\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_planners_do_not_import_the_runner():
    planning = modules("workflows/stages") + [
        REPO / "workflows" / name
        for name in ("plan.py", "stage.py", "params.py", "catalog.py", "sizing.py")
    ]
    offenders = {
        str(p.relative_to(REPO))
        for p in planning
        if {"ray", "petavox.workflows.runner"} & imported(p)
    }
    assert offenders == set()


@pytest.mark.parametrize("folder", ["tasks", "workflows"])
def test_no_module_is_over_the_limit(folder):
    long = {
        str(p.relative_to(REPO)): n
        for p in modules(folder)
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


@pytest.mark.parametrize("folder", ["tasks", "workflows", "tests"])
def test_no_function_is_over_the_limit(folder):
    long = {}
    for p in modules(folder):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{p.relative_to(REPO)}:{node.lineno} {node.name}"] = n
    assert long == {}


def package_folders() -> dict[str, Path]:
    """Each package pyproject lists, and its folder as setuptools finds it: under the folder
    `package-dir` gives its longest listed prefix (`petavox` itself is workflows/petavox/)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools["package-dir"]
    folders = {}
    for package in setuptools["packages"]:
        prefix = max((p for p in mapped if package == p or package.startswith(p + ".")), key=len)
        rest = package.removeprefix(prefix).split(".")[1:]
        folders[package] = REPO.joinpath(mapped[prefix], *rest)
    return folders


def test_every_package_folder_is_listed_for_installation():
    """A folder missing from pyproject's list installs everywhere but from a wheel (the image);
    and each folder is one package (a folder under two names would be two modules)."""
    listed = sorted(package_folders().values())
    found = sorted(
        init.parent for top in ("tasks", "workflows") for init in (REPO / top).rglob("__init__.py")
    )
    assert listed == found


def test_every_tasks_package_says_what_it_holds():
    for init in (REPO / "tasks").rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()) == 1, f"{init.relative_to(REPO)}: a one-line docstring"


def layout_section() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("\n## Layout\n")
    return readme[start : readme.index("\n## ", start + 1)]


def test_the_readme_layout_names_every_module_and_folder():
    """The Layout section is the tree's map: a module or folder it does not name is missing."""
    named = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", layout_section()))
    unnamed = [
        str(path.relative_to(REPO))
        for top in ("tasks", "workflows")
        for path in sorted((REPO / top).rglob("*"))
        if "__pycache__" not in path.parts
        and (path.is_dir() or (path.suffix == ".py" and path.name != "__init__.py"))
        and path.stem not in named
    ]
    assert unnamed == []
