"""The stage declarations: every stage is reachable from a YAML config, from the command line
and from the planner lookup, each from its one `Stage`; an unknown stage is a clear error."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from petavox.tasks.core.errors import InputError
from petavox.workflows import stages
from petavox.workflows.catalog import Catalog
from petavox.workflows.cli import StageRun, build_parser, main, stage_config, with_runtime
from petavox.workflows.cli_options import flag
from petavox.workflows.config import ConfigError, load_config, parse_config
from petavox.workflows.params import StageParams
from petavox.workflows.stage import Positional, Stage
from petavox.workflows.stages import STAGE_NAMES, STAGES, plan_stage, stage_named
from petavox.workflows.stages.ingest import IngestParams
from petavox.workflows.stages.mesh import format_fields

PIPELINE = (
    "ingest",
    "montage",
    "downsample",
    "normalize",
    "align",
    "infer",
    "segment",
    "agglomerate",
    "evaluate",
    "mesh",
    "skeletonize",
    "synapses",
    "connectome",
    "morphology",
    "classify",
    "export",
)
REQUIRED = {
    "input": "stack.npy",
    "resolution": [8, 8, 8],
    "ground_truth": "truth",
    "merge_threshold": "0.5",
    "output": "out.ome.zarr",
}
ROOT = "file:///petavox-stages/run"


def minimal(stage: Stage) -> dict:
    """The stage's entry in a config with only its required fields."""
    required = [n for n, f in stage.params.model_fields.items() if f.is_required()]
    return {"stage": stage.name, **{n: REQUIRED[n] for n in required}}


def by_name(stage: Stage) -> str:
    return stage.name


def test_the_declared_stages_are_the_pipeline_in_order():
    assert STAGE_NAMES == PIPELINE
    assert all(stage_named(s.name) is s for s in STAGES)


@pytest.mark.parametrize("stage", STAGES, ids=by_name)
def test_each_stage_is_reachable_from_yaml(stage):
    text = yaml.safe_dump({"output": ROOT, "stages": [minimal(stage)]})
    config = parse_config(yaml.safe_load(text))
    assert type(config.stages[0]) is stage.params


@pytest.mark.parametrize("stage", STAGES, ids=by_name)
def test_each_stage_is_reachable_from_the_command_line(stage):
    if stage.command is not None:  # evaluate: its own options
        argv = [stage.name, "--seg", "file:///a", "--gt", "file:///b"]
    else:
        argv = [stage.name, *(f"file:///p/{p.field}" for p in stage.positionals if p.required)]
        positional = {p.field for p in stage.positionals}
        for name, value in minimal(stage).items():
            if name not in positional | {"stage"}:
                argv += [
                    flag(name),
                    ",".join(map(str, value)) if isinstance(value, list) else value,
                ]
    args = build_parser().parse_args(argv)
    command = args.func.__self__
    if stage.command is not None:
        assert command is stage.command
        return
    assert isinstance(command, StageRun) and command.stage is stage
    config = stage_config(stage, args)
    assert type(config.stages[0]) is stage.params
    assert config.stages[0].input == "file:///p/input"


@pytest.mark.parametrize("stage", STAGES, ids=by_name)
def test_each_stage_is_planned_by_its_declared_planner(stage, monkeypatch):
    """`plan_stage` finds the planner through the declaration (the planners themselves run in
    test_stage_identities, on every stage)."""
    seen = []
    recording = dataclasses.replace(stage, planner=lambda p, c: seen.append((p, c)) or [])
    monkeypatch.setitem(stages._BY_NAME, stage.name, recording)
    params = parse_config({"output": ROOT, "stages": [minimal(stage)]}).stages[0]
    catalog = Catalog(ROOT)
    assert plan_stage(params, catalog) == []
    assert seen == [(params, catalog)]


def test_a_declaration_must_agree_with_its_params():
    with pytest.raises(TypeError, match=r'stage: Literal\["mesh"\]'):
        Stage(name="mesh", order=1, params=IngestParams, planner=lambda p, c: [])
    with pytest.raises(TypeError, match="positional bogus is not a params field"):
        Stage(
            name="ingest",
            order=1,
            params=IngestParams,
            planner=lambda p, c: [],
            positionals=(Positional(field="bogus", metavar="X", help="x"),),
        )
    with pytest.raises(TypeError, match="needs the field"):
        Stage(name="untagged", order=1, params=StageParams, planner=lambda p, c: [])


def test_an_unknown_stage_name_lists_the_stages():
    with pytest.raises(InputError, match="unknown stage 'segmentz'; stages are ingest, "):
        stage_named("segmentz")


def test_an_unknown_stage_in_a_config_is_exit_2_with_the_key(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"output": str(tmp_path), "stages": [{"stage": "segmentz"}]}))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "stages[0]: unknown stage; stages are ingest, montage, downsample" in err
    assert "Traceback" not in err


def test_an_unknown_stage_to_run_is_exit_2(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    stages = [{"stage": "ingest", "input": "stack.npy", "resolution": [8, 8, 8]}]
    path.write_text(yaml.safe_dump({"output": str(tmp_path), "stages": stages}))
    assert main(["run", str(path), "--stages", "ingest,bogus"]) == 2
    err = capsys.readouterr().err
    assert "unknown stage(s) bogus; stages are ingest" in err and "Traceback" not in err
    assert not (tmp_path / "raw").exists() and not (tmp_path / "ledger").exists()


def test_an_unknown_command_is_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["segmentz", "file:///a"])
    assert exit_.value.code == 2
    assert "invalid choice: 'segmentz'" in capsys.readouterr().err


def test_a_config_error_names_the_allowed_keys_of_the_stage():
    with pytest.raises(ConfigError, match=r"stages\[0\].bogus: unknown key; allowed keys: "):
        parse_config({"output": ROOT, "stages": [{**minimal(stage_named("mesh")), "bogus": 1}]})


def test_run_options_keep_the_stages_as_given(tmp_path):
    """`petavox run CONFIG --workers N` on a config with a (legacy) mesh stage: the stages are
    not re-dumped with their defaults, which would give the mesh the sharded format's options."""
    path = tmp_path / "run.yaml"
    stages = [{"stage": "mesh", "input": "segmentation"}]
    path.write_text(yaml.safe_dump({"output": str(tmp_path), "stages": stages}))
    args = build_parser().parse_args(["run", str(path), "--workers", "3", "--s3-endpoint", "x"])
    config = with_runtime(load_config(path), args)
    assert (config.ray.workers, config.storage.s3_endpoint) == (3, "x")
    assert config.stages[0].model_fields_set == {"stage", "input"}
    format_fields(config.stages[0])  # no "... is not an option of format: legacy"
    assert not config.overwrite
    forced = build_parser().parse_args(["run", str(path), "--overwrite"])
    assert with_runtime(load_config(path), forced).overwrite
