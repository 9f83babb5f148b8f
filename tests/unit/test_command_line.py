"""Command-line rough edges: the version, X,Y,Z options of train, status options, and paths
relative to the current directory."""

from __future__ import annotations

import json
import os
import time

import pytest

from petavox.workflows import cli
from petavox.workflows.cli import build_parser, from_cwd, main
from petavox.workflows.train_cli import zyx_of_xyz


def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("petavox ") and out.split()[1][0].isdigit()


def test_train_takes_patch_and_pool_as_x_y_z():
    files = ["--raw", "r.npy", "--gt", "g.npy", "--out", "m.onnx"]
    args = build_parser().parse_args(["train", *files, "--patch", "64,48,32", "--pool", "2,2,1"])
    assert args.patch == (32, 48, 64) and args.pool == (1, 2, 2)  # the trainer's Z,Y,X
    with pytest.raises(Exception, match="X,Y,Z"):
        zyx_of_xyz("64,48")


def test_paths_on_the_command_line_are_relative_to_the_current_directory(tmp_path):
    here = f"file://{os.getcwd()}"
    assert from_cwd("run1/raw", positional=True) == f"{here}/run1/raw"
    assert from_cwd("raw", positional=True) == f"{here}/raw"  # a positional is a path
    assert from_cwd("./gt", positional=False) == f"{here}/gt"
    assert from_cwd("gt", positional=False) == "gt"  # a bare name: a layer under the output
    assert from_cwd("s3://bucket/raw", positional=True) == "s3://bucket/raw"
    assert from_cwd(0.5, positional=False) == 0.5
    args = build_parser().parse_args(["downsample", "run1/raw", "--mips", "1"])
    config = cli.stage_config(cli.STAGES[[s.name for s in cli.STAGES].index("downsample")], args)
    assert config.stages[0].input == f"{here}/run1/raw"  # not run1/raw under itself
    assert config.output == f"{here}/run1/raw"


def test_status_takes_an_s3_endpoint_and_prints_json(tmp_path, monkeypatch, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        json.dumps(
            {"output": "s3://bucket/run", "stages": [{"stage": "downsample", "input": "raw"}]}
        )
    )
    seen = {}

    def status(config):  # what the command hands the pipeline
        seen["endpoint"] = config.storage.s3_endpoint
        from petavox.workflows.pipeline import StageStatus

        return [StageStatus(label="downsample raw", done=1, total=2)]

    monkeypatch.setattr("petavox.workflows.pipeline.status", status)
    assert main(["status", str(config), "--s3-endpoint", "http://127.0.0.1:9", "--json"]) == 0
    assert seen["endpoint"] == "http://127.0.0.1:9"
    (row,) = json.loads(capsys.readouterr().out)["stages"]
    assert {k: row[k] for k in ("label", "done", "total", "eta_seconds", "failed")} == {
        "label": "downsample raw",
        "done": 1,
        "total": 2,
        "eta_seconds": None,
        "failed": 0,
    }


def test_status_shows_the_pace_the_eta_and_the_last_error(tmp_path, monkeypatch, capsys):
    from petavox.workflows.pipeline import StageStatus

    config = tmp_path / "run.yaml"
    stages = [{"stage": "downsample", "input": "raw"}]
    config.write_text(json.dumps({"output": str(tmp_path / "run"), "stages": stages}))
    now = time.time()
    rows = [
        StageStatus(
            label="downsample raw",
            done=100,
            total=400,
            rate=0.5,
            eta_seconds=600.0,
            last_finished=now - 30,
            failed=2,
            last_error="ChunkDataError: chunk 0_0_0 is truncated",
        ),
        StageStatus(label="mesh seg", done=9, total=9, rate=20.0, last_finished=now - 5),
    ]
    monkeypatch.setattr("petavox.workflows.pipeline.status", lambda config: rows)
    assert main(["status", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        "  downsample raw: 100/400 chunks incomplete (30 chunks/min, ETA 10 min at that pace, "
        "last chunk finished 30 s ago, 2 chunk(s) failed, last error: ChunkDataError: chunk "
        "0_0_0 is truncated)"
    )
    assert out[2] == "  mesh seg: 9/9 chunks done (20 chunks/s)"


def test_status_into_a_closed_pipe_ends_quietly(tmp_path):
    """`petavox status CONFIG | head` when head has gone: no traceback, SIGPIPE's status."""
    import subprocess
    import sys

    config = tmp_path / "run.yaml"
    stages = [{"stage": "downsample", "input": "raw"}]
    config.write_text(json.dumps({"output": str(tmp_path / "run"), "stages": stages}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "petavox.workflows.cli", "status", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first line
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert proc.returncode == 141


def stage_named(name: str):
    return next(s for s in cli.STAGES if s.name == name)


def test_bounds_and_carry_are_given_on_the_command_line():
    args = build_parser().parse_args(["downsample", "raw", "--bounds", "0,0,0,64,32,16"])
    config = cli.stage_config(stage_named("downsample"), args)
    assert config.stages[0].bounds == ((0, 0, 0), (64, 32, 16))
    args = build_parser().parse_args(["align", "raw", "out", "--carry", "gt=gt_al,syn=syn_al"])
    config = cli.stage_config(stage_named("align"), args)
    assert config.stages[0].carry == {"gt": "gt_al", "syn": "syn_al"}
    with pytest.raises(SystemExit):  # five values are not two corners
        build_parser().parse_args(["downsample", "raw", "--bounds", "0,0,0,64,32"])


def test_errors_name_the_option_and_echo_the_value_unchanged():
    args = build_parser().parse_args(["align", "raw", "out", "--carry", "gt=gt_al", "--mips", "99"])
    with pytest.raises(cli.ConfigError) as err:
        cli.stage_config(stage_named("align"), args)
    assert "--mips" in str(err.value) and "99" in str(err.value)
    args = build_parser().parse_args(["downsample", "raw", "--bounds", "0,0,0,0,32,16"])
    with pytest.raises(cli.ConfigError) as err:
        cli.stage_config(stage_named("downsample"), args)
    assert "--bounds" in str(err.value) and "stop must exceed its start" in str(err.value)
    args = build_parser().parse_args(["segment", "a", "b", "--storage-chunk", "six_4,1,1"])
    with pytest.raises(cli.ConfigError) as err:
        cli.stage_config(stage_named("segment"), args)
    assert "--storage-chunk" in str(err.value) and "six_4" in str(err.value)  # not six-4
