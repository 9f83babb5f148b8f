"""The Python API without Ray: `petavox.__version__`, a package that imports nothing heavy,
stage functions with their stage's signature and docs that build the command's run config,
`plan` as `petavox plan --json` prints it, and the README's example."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import yaml

import petavox
from petavox.workflows import cli
from petavox.workflows.cli import build_parser, main
from petavox.workflows.config import ConfigError, RunConfig, StorageConfig
from petavox.workflows.params import StageParams
from petavox.workflows.stages import STAGES, stage_named

README = Path(__file__).resolve().parents[2] / "README.md"
RUNTIME = ["output_root", "ray", "storage", "overwrite", "progress"]


def test_version_is_the_installed_distributions():
    assert petavox.__version__ == version("petavox")
    from petavox import __version__

    assert __version__ == petavox.__version__


def test_importing_the_tasks_loads_neither_the_workflows_nor_ray():
    """Every Ray worker imports `petavox.tasks.*`, and `petavox` before it: a real package
    (not a namespace) whose __init__ loads no dependency; the API loads on first use."""
    code = (
        "import sys, petavox.tasks.core.geometry, petavox\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pydantic', 'numpy')"
        " or m.startswith('petavox.workflows'))\n"
        "print(petavox.__file__, loaded)\n"
        "petavox.segment\n"  # the first use loads the API and the stage declarations
        "print('petavox.workflows.api' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, second = done.stdout.split("\n")[:2]
    init, loaded = first.split(" ", 1)
    assert init.endswith("__init__.py") and loaded == "[]"
    assert second == "True"


def test_the_package_is_listed_for_installation_once():
    import tomllib

    setuptools = tomllib.loads((README.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "petavox" in setuptools["packages"]
    assert (README.parent / setuptools["package-dir"]["petavox"] / "__init__.py").is_file()
    assert Path(petavox.__file__) == README.parent / "workflows" / "petavox" / "__init__.py"


def test_the_api_is_what_dir_lists():
    names = set(dir(petavox))
    assert {"__version__", "run", "plan", "status", "ConfigError", "RunConfig"} <= names
    assert {s.name for s in STAGES} <= names
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        petavox.nonsense  # noqa: B018


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_each_stage_function_has_its_models_fields_as_parameters(stage):
    function = getattr(petavox, stage.name)
    assert function.__name__ == stage.name and callable(function)
    params = inspect.signature(function).parameters
    fields = {n: f for n, f in stage.params.model_fields.items() if n != "stage"}
    assert list(params)[-len(RUNTIME) :] == RUNTIME
    assert set(params) - set(RUNTIME) == set(fields)
    positional = [p.field for p in stage.positionals]
    assert [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD] == positional
    for name, field in fields.items():
        if name in positional:
            continue
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
        default = params[name].default
        if field.is_required():
            assert default is inspect.Parameter.empty, name
        else:
            assert default == field.get_default(call_default_factory=True), name
    doc = inspect.getdoc(function)
    assert doc.startswith(inspect.cleandoc(stage.params.__doc__))
    assert all(f"    {name}: " in doc for name in fields)
    # the fields every stage has come after the stage's own, as the command's options do
    shared = [n for n in params if n in StageParams.model_fields]
    assert list(params)[len(params) - len(RUNTIME) - len(shared) : -len(RUNTIME)] == shared


def command_config(argv: list[str]) -> RunConfig:
    return cli.stage_config(stage_named(argv[0]), build_parser().parse_args(argv))


@pytest.mark.parametrize(
    ("argv", "args", "kwargs"),
    [
        (["downsample", "run1/raw", "--mips", "1"], ["run1/raw"], {"mips": 1}),
        (
            ["downsample", "raw", "--bounds", "0,0,0,64,32,16", "--fill-missing"],
            ["raw"],
            {"bounds": [[0, 0, 0], [64, 32, 16]], "fill_missing": True},
        ),
        (
            ["ingest", "stack.npy", "out/raw", "--resolution", "8,8,33", "--sharding", "4"],
            [Path("stack.npy")],
            {"output": "out/raw", "resolution": (8, 8, 33), "sharding": 4},
        ),
        (
            ["align", "raw", "s3://b/out", "--carry", "gt=gt_al", "--s3-endpoint", "http://h:9"],
            ["raw", "s3://b/out"],
            {"carry": {"gt": "gt_al"}, "storage": {"s3_endpoint": "http://h:9"}},
        ),
        (
            ["segment", "b", "s", "--chunk-shape", "64,64,32", "--workers", "3", "--overwrite"],
            [],
            {"input": "b", "output": "s", "chunk_shape": (64, 64, 32), "ray": {"workers": 3}}
            | {"overwrite": True},
        ),
        (
            ["synapses", "raw", "seg", "syn", "--max-failures", "0.1%"],
            ["raw", "seg", "syn"],
            {"max_failures": "0.1%"},
        ),
    ],
)
def test_a_stage_function_builds_the_config_its_command_builds(
    tmp_path, monkeypatch, argv, args, kwargs
):
    monkeypatch.chdir(tmp_path)  # paths are relative to the current directory in both
    built = getattr(petavox, argv[0]).config(*args, **kwargs)
    assert built == command_config(argv)
    assert built.model_dump() == command_config(argv).model_dump()


def test_the_output_root_and_models_as_runtime(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = petavox.mesh.config(
        "seg", output_root="run1", storage=StorageConfig(s3_region="eu-west-1")
    )
    assert config.output == f"file://{tmp_path}/run1"
    assert config.stages[0].input == f"file://{tmp_path}/seg"  # a positional is a path
    assert config.storage.s3_region == "eu-west-1"
    config = petavox.evaluate.config(ground_truth="gt", output_root="s3://b/run")
    assert (config.output, config.stages[0].ground_truth) == ("s3://b/run", "gt")  # a layer name


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: petavox.downsample("raw", mips=0), "mips: Input should be greater"),
        (lambda: petavox.segment("b", "s", mode="voronoi"), "mode: Input should be"),
        (lambda: petavox.downsample("raw", ray={"workerz": 2}), "ray.workerz: unknown key"),
        (lambda: petavox.downsample("raw", mipz=2), "unexpected keyword argument 'mipz'"),
        (lambda: petavox.ingest(output="raw"), "missing a required argument: 'input'"),
        (lambda: petavox.evaluate(ground_truth="gt"), "give output_root"),
    ],
)
def test_a_bad_parameter_is_a_config_error_naming_it_and_nothing_is_written(
    tmp_path, monkeypatch, call, named
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        call()
    assert named in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_bad_parameter_is_the_commands_config_error():
    """The same check and message; the command names the option, the function the keyword."""
    with pytest.raises(ConfigError) as command:
        command_config(["align", "raw", "out", "--mips", "99"])
    with pytest.raises(ConfigError) as function:
        petavox.align("raw", "out", mips=99)
    said = str(command.value).splitlines()
    assert said[0] == "invalid run config for petavox align:"
    assert str(function.value).splitlines() == [
        "invalid run config for petavox.align():",
        said[1].replace("--mips: ", "mips: ").replace("(got '99')", "(got 99)"),
    ]


def small_run(tmp_path: Path) -> dict:
    np.save(tmp_path / "stack.npy", np.zeros((16, 100, 120), np.uint8))
    ingest = {"stage": "ingest", "input": str(tmp_path / "stack.npy"), "resolution": [4, 4, 40]}
    ingest |= {"storage_chunk": [32, 32, 8], "chunk_shape": [64, 64, 8]}
    downsample = {"stage": "downsample", "input": "raw", "mips": 2}
    return {"output": str(tmp_path / "run"), "stages": [ingest, downsample]}


def test_plan_is_what_plan_json_prints_and_writes_nothing(tmp_path, capsys):
    data = small_run(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["plan", str(path), "--json", "--workers", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    del printed["planning_seconds"]
    for config in (path, str(path)):
        report = petavox.plan(config, workers=3)
        assert report.pop("planning_seconds") >= 0
        assert report == printed
    from_dict = petavox.plan(data, "ingest")
    assert from_dict["config"] is None and [s["name"] for s in from_dict["stages"]] == [
        report["stages"][0]["name"]
    ]
    assert from_dict["cluster"]["source"] == "this machine's cores"
    assert not (tmp_path / "run").exists()


def readme_example() -> str:
    """The first Python block after the heading `## Python API`."""
    text = README.read_text()
    section = text.index("\n## Python API")
    start = text.index("```python\n", section) + len("```python\n")
    return text[start : text.index("```", start)]


def test_the_readme_example_uses_the_api_as_it_is():
    """Its run is tests/integration/test_python_api_run.py's; here, every name it takes from
    `petavox` is there, and each call's keywords are the function's parameters."""
    used = 0
    for node in ast.walk(ast.parse(readme_example())):
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "petavox":
            assert hasattr(petavox, node.attr), node.attr
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "petavox":
            params = inspect.signature(getattr(petavox, func.attr)).parameters
            assert {k.arg for k in node.keywords} <= set(params), func.attr
            used += 1
    assert used == 4  # ingest, plan, run, status
