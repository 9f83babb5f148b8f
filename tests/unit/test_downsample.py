import numpy as np
import pytest

from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.image.downsample_jobs import DownsampleJob, pyramid


def block_mean(a, f):
    x, y, z = (-(-s // k) for s, k in zip(a.shape, f))
    out = np.zeros((x, y, z))
    for i in range(x):
        for j in range(y):
            for k in range(z):
                block = a[
                    i * f[0] : (i + 1) * f[0], j * f[1] : (j + 1) * f[1], k * f[2] : (k + 1) * f[2]
                ]
                out[i, j, k] = block.mean()
    return out


@pytest.mark.parametrize("shape", [(9, 7, 3), (10, 7, 3), (9, 8, 3), (67, 33, 9), (8, 8, 2)])
@pytest.mark.parametrize("factor", [(2, 2, 1), (2, 2, 2)])
def test_average_matches_block_means_including_odd_edges(shape, factor):
    a = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    levels = pyramid(a, Vec3(*factor), 2, "average")
    previous = a.astype(float)
    for level in levels:
        expected = block_mean(previous, factor)
        assert level.shape == expected.shape
        assert np.abs(level.astype(float) - expected).max() <= 1.0
        previous = level.astype(float)


def test_mode_keeps_the_majority_label():
    a = np.zeros((4, 4, 1), np.uint32)
    a[:2, :2] = [[[7], [7]], [[7], [3]]]
    a[2:, 2:] = 5
    (level,) = pyramid(a, Vec3(2, 2, 1), 1, "mode")
    assert level[0, 0, 0] == 7 and level[1, 1, 0] == 5
    assert set(np.unique(level)) <= set(np.unique(a))


def test_several_mips_shrink_by_the_factor_each_time():
    a = np.ones((64, 40, 8), np.uint8)
    levels = pyramid(a, Vec3(2, 2, 2), 3, "average")
    assert [lv.shape for lv in levels] == [(32, 20, 4), (16, 10, 2), (8, 5, 1)]


@pytest.mark.parametrize("in_place", [True, False])
def test_job_writes_every_mip_and_chunking_does_not_matter(tmp_path, in_place):
    spec = LayerSpec(
        layer_type="image",
        dtype="uint8",
        size=Vec3(150, 90, 12),
        resolution=(4, 4, 40),
        chunk_size=Vec3(16, 16, 4),
    )
    data = np.random.default_rng(2).integers(0, 255, tuple(spec.size), dtype=np.uint8)
    results = []
    for task in ((64, 64, 4), (128, 64, 8)):
        src = Layer.create(f"file://{tmp_path}/src{task[0]}", spec)
        src.write(src.bounds(), data)
        dst = src if in_place else Layer.create(f"file://{tmp_path}/dst{task[0]}", spec)
        dst = dst.with_scales(Vec3(2, 2, 1), 2)
        job = DownsampleJob(source=src, target=dst, factor=Vec3(2, 2, 1), mips=2, method="average")
        for chunk in ChunkGrid(src.bounds(), task, 0):
            job.run(chunk)
        results.append([dst.read(dst.bounds(m), mip=m) for m in range(3)])
    whole = pyramid(data, Vec3(2, 2, 1), 2, "average")
    for levels in results:
        np.testing.assert_array_equal(levels[0], data)
        for m in (1, 2):
            np.testing.assert_array_equal(levels[m], whole[m - 1])
    assert results[0][2].shape == (38, 23, 12)
    assert Box.from_shape(results[0][1].shape) == Box((0, 0, 0), (75, 45, 12))


@pytest.mark.parametrize("offset, mips, refused", [((-7, -9, 0), 2, True), ((-8, 4, 0), 2, False)])
def test_a_layer_off_the_coarsest_grid_is_refused_before_any_task(tmp_path, offset, mips, refused):
    """Tasks start at the layer's first voxel: off the coarsest mip's grid (odd, here), two
    tasks would each write half of their border's coarse voxels. Refused, nothing written."""
    from petavox.tasks.core.errors import InputError
    from petavox.workflows.config import parse_config
    from petavox.workflows.pipeline import plan_stages

    spec = LayerSpec(
        layer_type="image",
        dtype="uint8",
        size=Vec3(100, 101, 3),
        resolution=(8, 8, 30),
        chunk_size=Vec3(32, 32, 1),
        voxel_offset=Vec3(*offset),
    )
    Layer.create(f"file://{tmp_path}/raw", spec)
    stage = {"stage": "downsample", "input": "raw", "mips": mips}
    config = parse_config({"output": f"file://{tmp_path}", "stages": [stage]})
    if not refused:
        assert plan_stages(config)
        return
    with pytest.raises(InputError, match=r"starts at voxel \(-7, -9, 0\).*factor \(4, 4, 1\)"):
        plan_stages(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
