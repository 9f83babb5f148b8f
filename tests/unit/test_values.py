"""Value checks: NaN/Inf and out-of-range floats are refused with counts, place and fix."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from petavox.tasks.align.align_jobs import EstimateJob
from petavox.tasks.align.flow import FlowParams
from petavox.tasks.core.errors import InputError, ValueRangeError
from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.values import (
    check_finite,
    check_unit_range,
    check_values,
    describe_nonfinite,
    nonfinite_counts,
)
from petavox.tasks.image.downsample_jobs import DownsampleJob
from petavox.tasks.image.ingest_jobs import cast_checked
from petavox.tasks.synapse.detection import DetectorParams
from petavox.tasks.synapse.synapse_jobs import SynapseJob

BOX = Box((100, 200, 10), (108, 206, 20))  # an 8 × 6 × 10 block at an offset


class Untouchable(np.ndarray):
    """An array whose values must not be read (any ufunc or reduction on it fails)."""

    def __array_ufunc__(self, *args, **kwargs):
        raise AssertionError("the values were read")


def untouchable(dtype) -> np.ndarray:
    return np.zeros(BOX.shape, dtype).view(Untouchable)


def test_counts_sections_and_first_voxel_are_right():
    data = np.random.default_rng(0).random(BOX.shape, dtype=np.float32)
    data[3, 1, 0] = data[5, 5, 7] = data[0, 0, 7] = np.nan
    data[2, 2, 4] = -np.inf
    assert nonfinite_counts(data) == (3, 1)
    text = describe_nonfinite(data, BOX)
    assert text == (
        "3 NaN and 1 infinite values in 3 sections between 10 and 17 "
        "(first at voxel x,y,z 103,201,10)"
    )
    one = np.zeros(BOX.shape, np.float64)
    one[1, 2, 3:5] = np.inf
    assert describe_nonfinite(one, BOX) == (
        "2 infinite values in sections 13-14 (first at voxel x,y,z 101,202,13)"
    )
    one[1, 2, 4] = 0
    assert describe_nonfinite(one, BOX).startswith("1 infinite value in section 13 ")
    affs = np.zeros((*BOX.shape, 3), np.float32)
    affs[4, 4, 9, 2] = np.nan  # a channel of x,y,z,c affinities: the voxel is named
    assert (
        describe_nonfinite(affs, BOX)
        == "1 NaN value in section 19 (first at voxel x,y,z 104,204,19)"
    )


def test_clean_data_passes_and_0_and_1_are_inside():
    data = np.random.default_rng(1).random(BOX.shape).astype(np.float32)
    data[0, 0, 0], data[-1, -1, -1] = 0.0, 1.0
    check_finite(data * 1000 - 5, "x", BOX, "fix")
    check_unit_range(data, "x", BOX, "fix")
    check_unit_range(data.astype(np.float64), "x", BOX, "fix")
    check_unit_range(np.zeros((0, 0, 0), np.float32), "x", Box((0, 0, 0), (0, 0, 0)), "fix")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint64, np.int32])
def test_integer_data_passes_without_being_read(dtype):
    check_finite(untouchable(dtype), "x", BOX, "fix")
    check_unit_range(untouchable(dtype), "x", BOX, "fix")
    check_values(untouchable(dtype), "file:///l", BOX, "infer", unit_range=True)
    assert nonfinite_counts(untouchable(dtype)) == (0, 0)
    assert cast_checked(untouchable(dtype), np.dtype(dtype), "source s", BOX).dtype == dtype
    with pytest.raises(AssertionError, match="read"):  # the guard works: floats are read
        check_finite(untouchable(np.float32), "x", BOX, "fix")


def test_out_of_range_names_min_max_count_and_fix():
    data = np.full(BOX.shape, 0.5, np.float32)
    data[0, 0, 0], data[1, 0, 0], data[2, 0, 0] = -0.25, 254.5, 3
    with pytest.raises(ValueRangeError) as err:
        check_values(data, "file:///run/boundary", BOX, "segment", unit_range=True)
    assert str(err.value) == (
        f"segment input file:///run/boundary: 3 of 480 values in box {BOX} lie outside 0-1 "
        "(min -0.25, max 254.5); segment reads float values as 0-1 (uint8 as 0-255): "
        "rescale the layer to 0-1, or write it as uint8"
    )
    data[3, 3, 3] = np.nan  # not finite is said first, with its own fix
    with pytest.raises(ValueRangeError, match=r"1 NaN value in section 13 .*clean the layer"):
        check_values(data, "file:///run/boundary", BOX, "segment", unit_range=True)
    check_values(data[4:], "file:///run/raw", BOX, "align")  # any finite range is fine for align


def test_the_error_is_bad_input_and_survives_pickling():
    err = ValueRangeError("layer x: 1 NaN value")
    assert isinstance(err, InputError)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is ValueRangeError and str(again) == str(err)


@pytest.mark.parametrize(
    ("value", "dtype", "said"),
    [
        (np.nan, "uint8", "1 NaN value in section 12"),
        (np.inf, "uint8", "1 infinite value in section 12"),
        (-np.inf, "float32", "1 infinite value in section 12"),
        (np.nan, "float32", "1 NaN value in section 12"),
    ],
)
def test_ingest_names_nan_and_inf_whatever_the_layer_dtype(value, dtype, said):
    data = np.full(BOX.shape, 7.0)
    data[4, 3, 2] = value
    with pytest.raises(ValueRangeError) as err:
        cast_checked(data, np.dtype(dtype), "source stack.npy", BOX)
    assert str(err.value).startswith(f"source stack.npy: {said} (first at voxel x,y,z 104,203,12)")
    assert "fractional" not in str(err.value) and "clean them in the source" in str(err.value)


def test_ingest_still_refuses_what_does_not_fit_the_dtype():
    with pytest.raises(ValueRangeError, match="fractional values"):
        cast_checked(np.full(BOX.shape, 0.5), np.dtype("uint8"), "source s", BOX)
    with pytest.raises(ValueRangeError, match=r"values 0\.0\.\.300\.0 .* do not fit .* uint8"):
        cast_checked(np.arange(301.0).reshape(301, 1, 1), np.dtype("uint8"), "source s", BOX)
    big = np.full(BOX.shape, 1e39)
    with pytest.raises(ValueRangeError, match=r"1e\+39 .* do not fit the layer dtype float32"):
        cast_checked(big, np.dtype("float32"), "source s", BOX)
    assert cast_checked(np.full(BOX.shape, 3.0), np.dtype("uint8"), "source s", BOX).max() == 3


def float_layer(url: str, data: np.ndarray) -> Layer:
    spec = LayerSpec(
        layer_type="image", dtype="float32", size=Vec3.of(data.shape), resolution=(8, 8, 8)
    )
    layer = Layer.create(url, spec)
    layer.write(layer.bounds(0), data)
    return layer


def test_downsample_align_and_synapses_refuse_bad_float_input(tmp_path):
    """The jobs that read float image layers check them (infer and segment: integration)."""
    data = np.full((64, 64, 4), 0.5, np.float32)
    data[10, 20, 2] = np.nan
    raw = float_layer(f"file://{tmp_path}/raw", data)
    chunk = ChunkGrid(raw.bounds(0), (64, 64, 4), 0).chunk((0, 0, 0))
    down = DownsampleJob(source=raw, target=raw, factor=Vec3(2, 2, 1), mips=1, method="average")
    with pytest.raises(ValueRangeError, match=rf"downsample input {raw.url}: 1 NaN value"):
        down.run(chunk)
    section = ChunkGrid(raw.bounds(0), (64, 64, 1), 0).chunk((0, 0, 2))
    flow = EstimateJob(source=raw, params=FlowParams(), margin=0, backs=(1,), work_url="")
    with pytest.raises(ValueRangeError, match=r"align input .*first at voxel x,y,z 10,20,2"):
        flow.run(section)
    bright = float_layer(f"file://{tmp_path}/bright", np.full((64, 64, 4), 200, np.float32))
    seg = Layer.create(
        f"file://{tmp_path}/seg",
        LayerSpec(
            layer_type="segmentation", dtype="uint32", size=Vec3(64, 64, 4), resolution=(8, 8, 8)
        ),
    )
    job = SynapseJob(raw=bright, segmentation=seg, output_url="", params=DetectorParams())
    with pytest.raises(ValueRangeError, match=r"synapses input .* \(min 200, max 200\)"):
        job.run(chunk)
