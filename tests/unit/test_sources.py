"""Tests of `petavox.tasks.core.sources`: every format read lazily as x,y,z boxes, and the
errors."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Box
from petavox.tasks.core.sources import SourceError, VolumeSource, open_source

NX, NY, NZ = 13, 7, 5


def stack_zyx(dtype: str, seed: int = 0, shape: tuple[int, int, int] = (NZ, NY, NX)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)


def random_boxes(shape: tuple[int, int, int], n: int, seed: int = 1) -> list[Box]:
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n):
        start = [int(rng.integers(0, s)) for s in shape]
        stop = [int(rng.integers(a + 1, s + 1)) for a, s in zip(start, shape)]
        boxes.append(Box(start, stop))
    return boxes


def assert_reads(src: VolumeSource, xyz: np.ndarray) -> None:
    """Full and random sub-box reads of `src` equal the x,y,z truth."""
    assert tuple(src.shape) == xyz.shape
    assert src.dtype == xyz.dtype
    full = src.read(Box.from_shape(src.shape))
    assert full.shape == xyz.shape and full.dtype == xyz.dtype
    assert full.flags.f_contiguous and full.flags.writeable
    np.testing.assert_array_equal(full, xyz)
    for box in random_boxes(xyz.shape, 25):
        out = src.read(box)
        assert out.shape == tuple(box.shape)
        np.testing.assert_array_equal(out, xyz[box.slices()], err_msg=str(box))


def write_slices(folder: Path, zyx: np.ndarray, fmt: str, **kw: object) -> None:
    folder.mkdir(exist_ok=True)
    for z, img in enumerate(zyx):
        if fmt == "png":
            Image.fromarray(img).save(folder / f"s{z}.png")
        else:
            tifffile.imwrite(folder / f"s{z}.{fmt}", img, **kw)


def make_source(kind: str, tmp: Path, zyx: np.ndarray) -> str:
    """Write `zyx` (z,y,x on disk) in one of the formats; return the spec that opens it."""
    if kind in ("png", "tif", "tif-zlib"):
        write_slices(
            tmp / "slices", zyx, kind[:3], **({"compression": "zlib"} if "zlib" in kind else {})
        )
        return str(tmp / "slices")
    if kind in ("stack", "stack-zlib"):
        tifffile.imwrite(tmp / "stack.tiff", zyx, compression="zlib" if "zlib" in kind else None)
        return str(tmp / "stack.tiff")
    if kind == "npy":
        np.save(tmp / "a.npy", zyx)
        return str(tmp / "a.npy")
    if kind in ("h5", "h5-named"):
        with h5py.File(tmp / "a.h5", "w") as f:
            f.create_dataset("em/raw", data=zyx, chunks=(2, 4, 4))
        return str(tmp / "a.h5") + (":/em/raw" if kind == "h5-named" else "")
    raise AssertionError(kind)


KINDS = ["png", "tif", "tif-zlib", "stack", "stack-zlib", "npy", "h5", "h5-named"]


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_format_reads_boxes_in_xyz(tmp_path: Path, kind: str, dtype: str) -> None:
    zyx = stack_zyx(dtype)
    src = open_source(make_source(kind, tmp_path, zyx))
    assert_reads(src, zyx.transpose(2, 1, 0))


@pytest.mark.parametrize("kind", KINDS)
def test_pickled_source_reads_after_reopening(tmp_path: Path, kind: str) -> None:
    zyx = stack_zyx("uint16", seed=3)
    src = open_source(make_source(kind, tmp_path, zyx))
    box = Box((2, 1, 1), (11, 6, 4))
    first = src.read(box)  # opens any handle: it must not travel with the pickle
    clone = pickle.loads(pickle.dumps(src))
    assert clone.url == src.url and clone.shape == src.shape and clone.dtype == src.dtype
    np.testing.assert_array_equal(clone.read(box), first)
    np.testing.assert_array_equal(clone.read(box), zyx.transpose(2, 1, 0)[box.slices()])
    src.close()
    np.testing.assert_array_equal(src.read(box), first)  # reopens after close


@pytest.mark.parametrize("kind", KINDS)
def test_a_relative_path_is_read_from_where_it_was_given(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config's `./stack.npy` means the driver's directory; its tasks run elsewhere."""
    zyx = stack_zyx("uint8", seed=4)
    spec = make_source(kind, tmp_path, zyx)
    monkeypatch.chdir(tmp_path)
    src = open_source("./" + spec[len(str(tmp_path)) + 1 :])
    clone = pickle.loads(pickle.dumps(src))  # as a task gets it
    monkeypatch.chdir(tmp_path.parent)
    np.testing.assert_array_equal(clone.read(Box((0, 0, 0), (NX, NY, NZ))), zyx.transpose(2, 1, 0))


def test_open_handles_stay_out_of_pickles_and_reopen_after_a_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = open_source(make_source("h5-named", tmp_path, stack_zyx("uint8")))
    src.read(Box((0, 0, 0), (1, 1, 1)))
    handle = src._handle
    assert handle is not None
    assert vars(pickle.loads(pickle.dumps(src))).get("_handle") is None
    src.read(Box((0, 0, 0), (1, 1, 1)))
    assert src._handle is handle  # reused within one process
    monkeypatch.setattr("petavox.tasks.core.sources.os.getpid", lambda: -1)  # as in a forked child
    src.read(Box((0, 0, 0), (1, 1, 1)))
    assert src._handle is not handle


def test_big_endian_npy_reads_as_native(tmp_path: Path) -> None:
    zyx = stack_zyx("uint16")
    np.save(tmp_path / "be.npy", zyx.astype(">u2"))
    src = open_source(str(tmp_path / "be.npy"))
    assert src.dtype == np.dtype("uint16") and src.dtype.isnative
    assert_reads(src, zyx.transpose(2, 1, 0))


def test_file_url_prefix_is_stripped(tmp_path: Path) -> None:
    zyx = stack_zyx("uint8")
    np.save(tmp_path / "a.npy", zyx)
    src = open_source("file://" + str(tmp_path / "a.npy"))
    assert_reads(src, zyx.transpose(2, 1, 0))


def test_read_returns_a_copy_not_a_view_of_the_file(tmp_path: Path) -> None:
    zyx = stack_zyx("uint8")
    np.save(tmp_path / "a.npy", zyx)
    src = open_source(str(tmp_path / "a.npy"))
    out = src.read(Box.from_shape(src.shape))
    out[:] = 0
    np.testing.assert_array_equal(src.read(Box.from_shape(src.shape)), zyx.transpose(2, 1, 0))


def test_empty_box_reads_an_empty_array(tmp_path: Path) -> None:
    src = open_source(make_source("png", tmp_path, stack_zyx("uint8")))
    out = src.read(Box((3, 2, 1), (3, 5, 4)))
    assert out.shape == (0, 3, 3) and out.dtype == np.uint8


def test_slices_sort_in_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "nat"
    folder.mkdir()
    order = [1, 2, 3, 9, 10, 11, 20]
    for i in order:  # each slice is filled with its number
        Image.fromarray(np.full((NY, NX), i, np.uint8)).save(folder / f"s{i}.png")
    (folder / "notes.txt").write_text("not a slice")
    src = open_source(str(folder))
    assert tuple(src.shape) == (NX, NY, len(order))
    got = src.read(Box.from_shape(src.shape))[0, 0, :].tolist()
    assert got == order  # lexicographic order would put s10 before s2


def test_folder_reads_only_the_files_of_the_box_z_range(tmp_path: Path) -> None:
    zyx = stack_zyx("uint8")
    folder = Path(make_source("tif", tmp_path, zyx))
    src = open_source(str(folder))
    (folder / "s3.tif").write_bytes(b"garbage")  # breaks z=3 after opening
    box = Box((0, 0, 0), (NX, NY, 3))
    np.testing.assert_array_equal(src.read(box), zyx.transpose(2, 1, 0)[box.slices()])
    with pytest.raises(SourceError, match=r"s3\.tif"):
        src.read(Box((0, 0, 2), (NX, NY, 4)))


@pytest.mark.parametrize("axes", ["".join(p) for p in itertools.permutations("xyz")])
def test_npy_axes_permutations(tmp_path: Path, axes: str) -> None:
    xyz = stack_zyx("uint16", shape=(NX, NY, NZ))
    disk = xyz.transpose(["xyz".index(a) for a in axes])  # the same volume stored in `axes` order
    np.save(tmp_path / "a.npy", disk)
    src = open_source(str(tmp_path / "a.npy"), axes=axes)
    assert_reads(src, xyz)
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.read(Box((1, 2, 3), (9, 7, 5))), xyz[1:9, 2:7, 3:5])


@pytest.mark.parametrize("kind", ["stack", "stack-zlib", "h5-named"])
@pytest.mark.parametrize("axes", ["xyz", "zxy"])
def test_tiff_and_h5_axes(tmp_path: Path, kind: str, axes: str) -> None:
    xyz = stack_zyx("uint8", shape=(NX, NY, NZ))
    disk = np.ascontiguousarray(xyz.transpose(["xyz".index(a) for a in axes]))
    src = open_source(make_source(kind, tmp_path, disk), axes=axes)
    assert_reads(src, xyz)


def test_2d_arrays_are_a_single_section(tmp_path: Path) -> None:
    yx = stack_zyx("uint8", shape=(NY, NX))
    np.save(tmp_path / "a.npy", yx)
    src = open_source(str(tmp_path / "a.npy"))
    assert tuple(src.shape) == (NX, NY, 1)
    assert_reads(src, yx.T[:, :, np.newaxis])
    src_xy = open_source(str(tmp_path / "a.npy"), axes="xy")
    assert tuple(src_xy.shape) == (NY, NX, 1)
    assert_reads(src_xy, yx[:, :, np.newaxis])
    tifffile.imwrite(tmp_path / "one.tif", yx, compression="zlib")
    assert_reads(open_source(str(tmp_path / "one.tif")), yx.T[:, :, np.newaxis])


def test_h5_without_name_needs_a_single_dataset(tmp_path: Path) -> None:
    path = tmp_path / "two.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=stack_zyx("uint8"))
        f.create_dataset("labels/seg", data=stack_zyx("uint16"))
    with pytest.raises(SourceError, match="name the dataset") as err:
        open_source(str(path))
    assert "/raw" in str(err.value) and "/labels/seg" in str(err.value)
    with pytest.raises(SourceError, match="no dataset /nope") as err:
        open_source(f"{path}:nope")
    assert "/labels/seg" in str(err.value)
    src = open_source(f"{path}:labels/seg")
    assert src.dtype == np.uint16
    assert_reads(src, stack_zyx("uint16").transpose(2, 1, 0))


# --- errors ---------------------------------------------------------------------------------------


def test_source_error_is_a_value_error_and_an_input_error() -> None:
    assert issubclass(SourceError, ValueError) and issubclass(SourceError, InputError)


@pytest.mark.parametrize("spec", ["missing", "missing.npy", "missing.h5:/raw"])
def test_missing_path(tmp_path: Path, spec: str) -> None:
    with pytest.raises(SourceError, match="no such"):
        open_source(str(tmp_path / spec))


def test_empty_folder_and_folder_without_slices(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"no \.tif/\.tiff/\.png slices"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.jpg").write_bytes(b"x")
    with pytest.raises(SourceError, match=r"no \.tif/\.tiff/\.png slices"):
        open_source(str(tmp_path / "other"))


def test_unknown_format_lists_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "a.zarr").write_text("{}")
    with pytest.raises(SourceError, match=r"unknown format '\.zarr'.*\.npy"):
        open_source(str(tmp_path / "a.zarr"))


def test_remote_urls_without_a_volume_are_refused(tmp_path: Path) -> None:
    # remote sources are volumes read through Layer (issue 23); an empty folder is none
    with pytest.raises(InputError, match=r"no precomputed layer.*nor Zarr or N5"):
        open_source(f"zarr://{tmp_path}")


@pytest.mark.parametrize("axes", ["xxz", "zy", "zyxw", "abc", ""])
def test_bad_axes(tmp_path: Path, axes: str) -> None:
    np.save(tmp_path / "a.npy", stack_zyx("uint8"))
    with pytest.raises(SourceError, match=f"bad axes '{axes}'"):
        open_source(str(tmp_path / "a.npy"), axes=axes)


def test_axes_must_fit_the_array(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", stack_zyx("uint8"))
    with pytest.raises(SourceError, match="do not fit a 3-D array"):
        open_source(str(tmp_path / "a.npy"), axes="yx")
    np.save(tmp_path / "b.npy", np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(SourceError, match=r"2-D or 3-D array, got shape \(2, 3, 4, 5\)"):
        open_source(str(tmp_path / "b.npy"))


def test_folder_mixing_png_and_tiff_is_refused(tmp_path: Path) -> None:
    spec = make_source("png", tmp_path, stack_zyx("uint8"))
    tifffile.imwrite(Path(spec) / "s5.tif", np.zeros((NY, NX), np.uint8))
    with pytest.raises(SourceError, match="mixes PNG and TIFF"):
        open_source(spec)


def test_folder_axes_must_be_zyx(tmp_path: Path) -> None:
    spec = make_source("png", tmp_path, stack_zyx("uint8"))
    with pytest.raises(SourceError, match="axes must be 'zyx'"):
        open_source(spec, axes="xyz")


def test_last_slice_of_another_shape_fails_at_open(tmp_path: Path) -> None:
    spec = make_source("tif", tmp_path, stack_zyx("uint8"))
    tifffile.imwrite(Path(spec) / "s4.tif", np.zeros((NY, NX + 1), np.uint8))
    with pytest.raises(SourceError, match=r"s4\.tif is \(7, 14\)"):
        open_source(spec)


def test_last_slice_of_another_dtype_fails_at_open(tmp_path: Path) -> None:
    spec = make_source("png", tmp_path, stack_zyx("uint8"))
    Image.fromarray(np.zeros((NY, NX), np.uint16)).save(Path(spec) / "s4.png")
    with pytest.raises(SourceError, match=r"s4\.png is \(7, 13\) uint16"):
        open_source(spec)


def test_middle_slice_of_another_shape_fails_at_read_naming_it(tmp_path: Path) -> None:
    spec = make_source("png", tmp_path, stack_zyx("uint8"))
    Image.fromarray(np.zeros((NY + 2, NX), np.uint8)).save(Path(spec) / "s2.png")
    src = open_source(spec)  # only the first and last slices are checked when opening
    src.read(Box((0, 0, 0), (NX, NY, 2)))
    with pytest.raises(SourceError, match=r"s2\.png is \(9, 13\)"):
        src.read(Box((0, 0, 1), (4, 4, 3)))


@pytest.mark.parametrize("fmt", ["png", "tif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_rgb_slices_are_refused(tmp_path: Path, fmt: str, channels: int) -> None:
    folder = tmp_path / "rgb"
    write_slices(folder, np.zeros((2, NY, NX, channels), np.uint8), fmt)
    with pytest.raises(SourceError, match="not grayscale") as err:
        open_source(str(folder))
    assert "s0." in str(err.value)


def test_rgb_tiff_stack_is_refused(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((NY, NX, 3), np.uint8), photometric="rgb")
    with pytest.raises(SourceError, match="RGB"):
        open_source(str(tmp_path / "rgb.tif"))


def test_corrupt_files_raise_source_errors(tmp_path: Path) -> None:
    for name in ("bad.npy", "bad.tif", "bad.h5"):
        (tmp_path / name).write_bytes(b"not really")
        with pytest.raises(SourceError, match="cannot"):
            open_source(str(tmp_path / name))


@pytest.mark.parametrize("kind", ["png", "npy", "h5"])
@pytest.mark.parametrize(
    "box",
    [Box((0, 0, 0), (NX + 1, NY, NZ)), Box((0, 0, NZ), (1, 1, NZ + 1)), Box((-1, 0, 0), (2, 2, 2))],
)
def test_box_outside_the_shape(tmp_path: Path, kind: str, box: Box) -> None:
    src = open_source(make_source(kind, tmp_path, stack_zyx("uint8")))
    with pytest.raises(SourceError, match="outside the volume") as err:
        src.read(box)
    message = str(err.value)
    assert src.url in message and str(box) in message and "13,7,5" in message
