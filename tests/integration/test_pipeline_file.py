"""The runner and ledger on a real local Ray against file:// layers."""

from __future__ import annotations

import numpy as np
import pytest
from tree_compare import layer_files

from petavox.tasks.core.errors import (
    InputError,
    LayerMismatchError,
    LayerNotFoundError,
    ValueRangeError,
)
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import local_path
from petavox.workflows.cli import exit_status
from petavox.workflows.config import RunConfig, parse_config
from petavox.workflows.failures import RunIncompleteError
from petavox.workflows.pipeline import ledger_for, plan_run, run, status
from petavox.workflows.runner import ChunkFailedError

pytestmark = pytest.mark.integration


def make_stack(path, shape_zyx=(24, 150, 130), seed=0, dtype=np.uint8):
    data = np.random.default_rng(seed).integers(0, 255, shape_zyx).astype(dtype)
    np.save(path, data)
    return data.transpose(2, 1, 0)  # x, y, z


def config_for(tmp_path, stack, **downsample):
    downsample.setdefault("chunk_shape", [128, 128, 8])
    return parse_config(
        {
            "output": f"file://{tmp_path}/out",
            "stages": [
                {
                    "stage": "ingest",
                    "input": str(stack),
                    "resolution": [4, 4, 40],
                    "storage_chunk": [32, 32, 8],
                    "chunk_shape": [64, 64, 8],
                },
                {"stage": "downsample", "input": "raw", "mips": 2, **downsample},
            ],
        }
    )


def test_ingest_and_downsample_write_the_pyramid(tmp_path, ray_session):
    truth = make_stack(tmp_path / "stack.npy")
    config = config_for(tmp_path, tmp_path / "stack.npy")
    reports = run(config, session=ray_session, progress=False)
    assert [r.ran for r in reports] == [3 * 3 * 3, 2 * 2 * 3]
    raw = Layer.open(f"{config.output}/raw")
    assert raw.num_mips == 3
    np.testing.assert_array_equal(raw.read(raw.bounds()), truth)
    mip2 = raw.read(raw.bounds(2), mip=2)
    assert mip2.shape == (33, 38, 24)
    block = truth[:4, :4, 5].astype(float).mean()
    assert abs(int(mip2[0, 0, 5]) - block) <= 1.5
    assert [(r.done, r.total) for r in status(config)] == [(27, 27), (12, 12)]


def test_rerun_skips_finished_chunks_and_a_changed_parameter_recomputes(tmp_path, ray_session):
    make_stack(tmp_path / "stack.npy")
    config = config_for(tmp_path, tmp_path / "stack.npy")
    run(config, session=ray_session, progress=False)
    again = run(config, session=ray_session, progress=False)
    assert [r.ran for r in again] == [0, 0]
    assert [r.skipped for r in again] == [27, 12]
    # the same stage with a different parameter is a different identity: everything reruns
    changed = config_for(tmp_path, tmp_path / "stack.npy", chunk_shape=[256, 256, 8])
    reports = run(changed, only=["downsample"], session=ray_session, progress=False)
    assert reports[0].skipped == 0 and reports[0].ran == reports[0].total


def test_resources_do_not_change_identity(tmp_path, ray_session):
    make_stack(tmp_path / "stack.npy")
    config = config_for(tmp_path, tmp_path / "stack.npy")
    run(config, session=ray_session, progress=False)
    more = config_for(tmp_path, tmp_path / "stack.npy", resources={"num_cpus": 0.5})
    reports = run(more, only=["downsample"], session=ray_session, progress=False)
    assert reports[0].ran == 0


def test_invalid_input_writes_nothing(tmp_path, ray_session):
    config = parse_config(
        {
            "output": f"file://{tmp_path}/out",
            "stages": [{"stage": "downsample", "input": "missing-layer"}],
        }
    )
    with pytest.raises(LayerNotFoundError, match="missing-layer"):
        run(config, session=ray_session, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_later_invalid_stage_stops_the_run_before_the_first_starts(tmp_path, ray_session):
    make_stack(tmp_path / "stack.npy")
    config = config_for(tmp_path, tmp_path / "stack.npy", chunk_shape=[100, 100, 8])
    with pytest.raises(InputError, match="must be a multiple of"):
        run(config, session=ray_session, progress=False)
    assert not (tmp_path / "out").exists()


def test_bounds_outside_the_volume(tmp_path, ray_session):
    make_stack(tmp_path / "stack.npy")
    config = config_for(tmp_path, tmp_path / "stack.npy", bounds=[[0, 0, 0], [500, 64, 8]])
    with pytest.raises(InputError, match=r"bounds .* lie outside layer file://.*/raw"):
        run(config, session=ray_session, progress=False)
    assert not (tmp_path / "out").exists()


def test_bounds_restrict_the_work(tmp_path, ray_session):
    make_stack(tmp_path / "stack.npy")
    config = config_for(tmp_path, tmp_path / "stack.npy", bounds=[[0, 0, 0], [10, 10, 1]])
    reports = run(config, session=ray_session, progress=False)
    assert reports[1].total == 1


def test_wrong_dtype(tmp_path, ray_session):
    make_stack(tmp_path / "stack.npy")
    np.save(tmp_path / "wide.npy", np.full((24, 150, 130), 300, np.uint16))
    run(
        config_for(tmp_path, tmp_path / "stack.npy"),
        only=["ingest"],
        session=ray_session,
        progress=False,
    )
    # a uint16 stack into the existing uint8 layer: refused before any task runs
    with pytest.raises(LayerMismatchError, match="uint16"):
        run(config_for(tmp_path, tmp_path / "wide.npy"), session=ray_session, progress=False)

    # values that do not fit the requested dtype: the planner's sample of the source sees them
    def narrow(source: str) -> RunConfig:
        ingest = {"stage": "ingest", "input": source, "dtype": "uint8", "resolution": [4, 4, 40]}
        ingest |= {"storage_chunk": [32, 32, 8], "chunk_shape": [256, 256, 8]}
        return parse_config({"output": f"file://{tmp_path}/out2", "stages": [ingest]})

    with pytest.raises(ValueRangeError, match=r"do not fit the layer dtype uint8.*normalize"):
        run(narrow(str(tmp_path / "wide.npy")), session=ray_session, progress=False)
    assert not (tmp_path / "out2").exists()
    # one value the sample misses: the task's own check names the chunk, writes nothing of it
    rare = np.full((16, 512, 512), 7, np.uint16)
    rare[0, 0, 0] = 300  # a corner: the sample's boxes are spread around the middle
    np.save(tmp_path / "rare.npy", rare)
    with pytest.raises(ChunkFailedError, match=r"chunk 0_0_0: .*do not fit the layer dtype"):
        run(narrow(str(tmp_path / "rare.npy")), session=ray_session, progress=False)
    assert not list((tmp_path / "out2" / "raw").glob("4_4_40/0-32_0-32_0-8"))


def test_missing_and_corrupt_input_chunks_name_layer_and_chunk(tmp_path, ray_session):
    make_stack(tmp_path / "stack.npy")
    config = config_for(tmp_path, tmp_path / "stack.npy")
    run(config, only=["ingest"], session=ray_session, progress=False)
    chunk_dir = tmp_path / "out" / "raw" / "4_4_40"
    (chunk_dir / "32-64_0-32_8-16").unlink()
    with pytest.raises(ChunkFailedError) as err:
        run(config, only=["downsample"], session=ray_session, progress=False)
    message = str(err.value)
    assert "chunk 0_0_1" in message and "raw: chunk 4_4_40/32-64_0-32_8-16 is missing" in message
    plan = plan_run(config, ["downsample"])[0]
    finished = ledger_for(config).finished("downsample", plan.identity, plan.grid.grid_shape)
    assert not finished.mask[plan.grid.index_of("0_0_1")]

    (chunk_dir / "32-64_0-32_8-16").write_bytes(b"garbage")
    with pytest.raises(ChunkFailedError, match="4_4_40/32-64_0-32_8-16 is truncated/corrupt"):
        run(config, only=["downsample"], session=ray_session, progress=False)

    zeros = config_for(tmp_path, tmp_path / "stack.npy", fill_missing=True)
    (chunk_dir / "32-64_0-32_8-16").unlink()
    reports = run(zeros, only=["downsample"], session=ray_session, progress=False)
    assert reports[0].ran == reports[0].total


def test_chunking_does_not_change_the_output(tmp_path, ray_session):
    make_stack(tmp_path / "stack.npy")
    a = config_for(tmp_path / "a", tmp_path / "stack.npy")
    b = config_for(tmp_path / "b", tmp_path / "stack.npy", chunk_shape=[256, 256, 8])
    run(a, session=ray_session, progress=False)
    run(b, session=ray_session, progress=False)
    files_a = layer_files(local_path(a.output) + "/raw")
    files_b = layer_files(local_path(b.output) + "/raw")
    assert files_a.keys() == files_b.keys() and files_a == files_b


@pytest.mark.parametrize("kind", ["png-folder", "tif-folder", "tif-stack", "h5", "npy-xyz"])
def test_ingest_every_source_format(tmp_path, ray_session, kind):
    import h5py
    import tifffile
    from PIL import Image

    zyx = np.random.default_rng(5).integers(0, 255, (10, 70, 90), dtype=np.uint8)
    axes = "zyx"
    if kind.endswith("folder"):
        src = tmp_path / "slices"
        src.mkdir()
        for z, section in enumerate(zyx):
            if kind == "png-folder":
                Image.fromarray(section).save(src / f"s{z}.png")
            else:
                tifffile.imwrite(src / f"s{z}.tif", section)
    elif kind == "tif-stack":
        src = tmp_path / "stack.tif"
        tifffile.imwrite(src, zyx)
    elif kind == "h5":
        src = tmp_path / "stack.h5"
        with h5py.File(src, "w") as f:
            f["volumes/raw"] = zyx
        src = f"{src}:/volumes/raw"
    else:
        src = tmp_path / "xyz.npy"
        np.save(src, zyx.transpose(2, 1, 0))
        axes = "xyz"
    config = parse_config(
        {
            "output": f"file://{tmp_path}/out",
            "stages": [
                {
                    "stage": "ingest",
                    "input": str(src),
                    "axes": axes,
                    "resolution": [4, 4, 40],
                    "storage_chunk": [32, 32, 4],
                    "chunk_shape": [64, 64, 8],
                }
            ],
        }
    )
    run(config, session=ray_session, progress=False)
    raw = Layer.open(f"{config.output}/raw")
    assert tuple(raw.bounds().shape) == (90, 70, 10)
    np.testing.assert_array_equal(raw.read(raw.bounds()), zyx.transpose(2, 1, 0))


@pytest.mark.parametrize(("bad", "said"), [(np.nan, "1 NaN value"), (np.inf, "1 infinite value")])
def test_nan_or_inf_in_a_source_is_named_at_ingest(tmp_path, ray_session, bad, said):
    """Before: a NaN into a uint8 layer was reported as 'fractional values'."""
    stack = np.random.default_rng(0).integers(0, 255, (24, 150, 130)).astype(np.float32)
    stack[13, 40, 70] = bad  # z, y, x on disk
    np.save(tmp_path / "stack.npy", stack)
    config = config_for(tmp_path, tmp_path / "stack.npy")
    config.stages[0] = config.stages[0].model_copy(update={"dtype": "uint8"})
    with pytest.raises(ChunkFailedError) as err:
        run(config, only=["ingest"], session=ray_session, progress=False)
    text = str(err.value)
    assert err.value.bad_input and "chunk 1_0_1: ValueRangeError: source " in text
    assert f"stack.npy: {said} in section 13 (first at voxel x,y,z 70,40,13)" in text
    assert "fractional" not in text and "clean them in the source" in text


def test_a_stage_goes_on_through_failed_chunks_within_its_budget(tmp_path, ray_session):
    """A missing input chunk under max_failures 2: the other chunks are done, the failure is in
    the ledger and in `status`, the stage that reads the output does not start, exit 1; once the
    input is back, the rerun runs that chunk and the stage that waited, nothing else."""
    make_stack(tmp_path / "stack.npy")
    config = config_for(tmp_path, tmp_path / "stack.npy", max_failures=2)
    after = {"stage": "downsample", "input": "raw", "output": "small", "mips": 1}
    data = config.model_dump(mode="json", exclude_unset=True)
    config = parse_config({**data, "stages": [*data["stages"], after]})
    run(config, only=["ingest"], session=ray_session, progress=False)
    (tmp_path / "out" / "raw" / "4_4_40" / "32-64_0-32_8-16").unlink()
    with pytest.raises(RunIncompleteError) as err:
        run(config, only=["downsample"], session=ray_session, progress=False)
    message = str(err.value)
    assert "downsample raw: 1 of 12 chunks failed (max_failures allows 2)" in message
    assert "chunk 0_0_1" in message and "4_4_40/32-64_0-32_8-16 is missing" in message
    assert "not started (they read a failed stage's output): downsample" in message
    assert exit_status(err.value) == 1
    rows = status(config)
    assert [(r.done, r.total) for r in rows[:2]] == [(26, 27), (11, 12)]  # ingest lost a chunk
    assert rows[1].failed == 1 and "is missing" in rows[1].last_error
    assert rows[2].done == 0
    assert not (tmp_path / "out" / "small" / "info").exists()  # claimed, never written

    reports = run(config, session=ray_session, progress=False)  # ingest rewrites the chunk
    assert [(r.ran, r.skipped) for r in reports] == [(1, 26), (1, 11), (reports[2].total, 0)]
    assert [(r.done, r.total) for r in status(config)][:2] == [(27, 27), (12, 12)]
    assert "failed" not in status(config)[1].note
