"""Image-stack sources for `ingest`: open a stack lazily and read any x,y,z box of it.

Supported: a folder of grayscale 2-D TIFF/PNG slices (one section per file, natural name order),
a multi-page TIFF, a ``.npy`` file (memory-mapped), an HDF5 dataset (``file.h5[:/dataset]``),
and any volume `Layer.open` reads (Zarr v2/v3, N5, OME-Zarr, precomputed; local, object storage
or http(s); see `foreign_volumes`), read through the layer.
Sources are picklable: they hold paths and parameters only, and (re)open files lazily in the
process that reads. One source object must not be read from several threads at once.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .geometry import Box, Vec3
from .storage import StorageContext

SLICE_SUFFIXES = (".tif", ".tiff", ".png")
SUPPORTED = (
    "a folder of .tif/.tiff/.png slices, a multi-page .tif/.tiff file, a .npy file, "
    "an HDF5 file 'file.h5[:/dataset]' (.h5/.hdf5/.hdf), or a Zarr/N5/OME-Zarr/precomputed "
    "volume (folder or URL; see README Formats)"
)
_H5 = re.compile(r"^(.*\.(?:h5|hdf5|hdf))(?::(.*))?$", re.IGNORECASE)
_PNG_DTYPES = {"L": "uint8", "I;16": "uint16", "I;16B": "uint16", "I": "int32", "F": "float32"}


def _h5py() -> Any:
    """Format libraries are imported when a source of that format is opened: a resumed run or
    `petavox status` should not pay for h5py, tifffile and Pillow."""
    import h5py

    return h5py


def _tifffile() -> Any:
    import tifffile

    return tifffile


def _pil_image() -> Any:
    from PIL import Image

    return Image


class SourceError(InputError, ValueError):
    """A source that cannot be opened or read as asked: the message names the source and problem."""


class VolumeSource(ABC):
    """A lazily read 3-D grayscale volume exposed in x, y, z order.

    `read` returns a new array (never a view on the file) indexed ``[x, y, z]`` with
    ``shape == box.shape``, in Fortran order (x fastest), which is both the layout of a z,y,x
    stack on disk and of a precomputed chunk.
    """

    url: str
    shape: Vec3
    dtype: np.dtype
    _handle: Any = None  # open file/mmap of this process only; never pickled
    _pid: int | None = None

    def read(self, box: Box) -> np.ndarray:
        """The voxels of `box` (inside ``Box.from_shape(shape)``) as an ``[x, y, z]`` array."""
        if not Box.from_shape(self.shape).contains(box):
            raise SourceError(
                f"source {self.url}: box {box} lies outside the volume of shape x,y,z = "
                f"{self.shape} (valid boxes are inside {Box.from_shape(self.shape)})"
            )
        if box.is_empty():
            return np.empty(box.shape, self.dtype, order="F")
        out = self._read(box)
        assert out.shape == box.shape, (out.shape, box.shape)
        return out

    @abstractmethod
    def _read(self, box: Box) -> np.ndarray: ...

    def _open(self) -> Any:
        raise NotImplementedError

    def _get_handle(self) -> Any:
        """The open handle of this process, (re)opened after unpickling or a fork."""
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = self._open(), os.getpid()
        return self._handle

    def close(self) -> None:
        """Close the open handle, if any; a later `read` reopens it."""
        handle, self._handle = self._handle, None
        if hasattr(handle, "close"):
            handle.close()

    @property
    def location(self) -> Path:
        """The file (or folder of files) the stack is read from."""
        return self.path  # type: ignore[attr-defined]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_handle", "_pid")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, shape={self.shape}, dtype={self.dtype})"


def _layout(
    axes: str, shape: tuple[int, ...], dtype: np.dtype, url: str
) -> tuple[str, Vec3, np.dtype]:
    """Checked on-disk axes, x,y,z shape and native dtype; a 2-D array drops 'z' ("zyx" → "yx")."""
    shape = tuple(shape)
    if len(shape) == 2 and len(axes) == 3:
        axes = axes.replace("z", "")
    if len(shape) not in (2, 3):
        raise SourceError(f"source {url}: expected a 2-D or 3-D array, got shape {shape}")
    if len(axes) != len(shape):
        raise SourceError(f"source {url}: axes {axes!r} do not fit a {len(shape)}-D array {shape}")
    if dtype.kind not in "biuf":
        raise SourceError(f"source {url}: unsupported dtype {dtype} (need integers or floats)")
    xyz = Vec3(*(shape[axes.index(a)] if a in axes else 1 for a in "xyz"))
    return axes, xyz, _native(dtype)


def _disk_key(box: Box, axes: str) -> tuple[slice, ...]:
    """The on-disk slices of `box` for an array in `axes` order."""
    return tuple(slice(box.start["xyz".index(a)], box.stop["xyz".index(a)]) for a in axes)


def _to_xyz(block: np.ndarray, axes: str, copy: bool) -> np.ndarray:
    """A block in on-disk `axes` order as an ``[x, y, z]`` Fortran-ordered array."""
    if len(axes) == 2:
        block, axes = block[..., np.newaxis], axes + "z"
    block = block.transpose([axes.index(a) for a in "xyz"])
    return np.array(block, order="F") if copy else np.asfortranarray(block)


def _native(dtype: np.dtype) -> np.dtype:
    return np.dtype(dtype).newbyteorder("=")


class NpySource(VolumeSource):
    """A ``.npy`` file, memory-mapped; only the box is copied out."""

    def __init__(self, url: str, path: Path, axes: str) -> None:
        self.url, self.path = url, path
        arr = self._open()
        self.axes, self.shape, self.dtype = _layout(axes, arr.shape, arr.dtype, url)

    def _open(self) -> np.ndarray:
        try:
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SourceError(f"source {self.url}: cannot read as .npy: {exc}") from exc

    def _read(self, box: Box) -> np.ndarray:
        block = self._get_handle()[_disk_key(box, self.axes)]
        return _to_xyz(block, self.axes, copy=True).astype(self.dtype, copy=False)


class Hdf5Source(VolumeSource):
    """A dataset in an HDF5 file, read by slicing."""

    def __init__(self, url: str, path: Path, dataset: str | None, axes: str) -> None:
        self.url, self.path = url, path
        if not path.is_file():
            raise SourceError(f"source {url}: no such HDF5 file: {path}")
        try:
            f = _h5py().File(path, "r")
        except OSError as exc:
            raise SourceError(f"source {url}: cannot open as HDF5: {exc}") from exc
        with f:
            names: list[str] = []
            f.visititems(
                lambda n, o: names.append("/" + n) if isinstance(o, _h5py().Dataset) else None
            )
            self.dataset = "/" + (dataset or (names[0] if len(names) == 1 else "")).lstrip("/")
            if self.dataset not in names:
                problem = f"no dataset {self.dataset} in" if dataset else "name the dataset of"
                raise SourceError(
                    f"source {url}: {problem} {path} as 'file.h5:/dataset'; its datasets: "
                    + (", ".join(names) or "none")
                )
            ds = f[self.dataset]
            self.axes, self.shape, self.dtype = _layout(axes, ds.shape, ds.dtype, url)

    def _open(self) -> Any:
        return _h5py().File(self.path, "r")

    def _read(self, box: Box) -> np.ndarray:
        block = self._get_handle()[self.dataset][_disk_key(box, self.axes)]
        return _to_xyz(block, self.axes, copy=False).astype(self.dtype, copy=False)


class TiffStackSource(VolumeSource):
    """A multi-page TIFF: memory-mapped when uncompressed and contiguous, else read page by page.

    The first on-disk axis is the page index; only the pages of the box are decoded.
    """

    def __init__(self, url: str, path: Path, axes: str) -> None:
        self.url, self.path = url, path
        try:
            with _tifffile().TiffFile(path) as tf:
                series = tf.series[0]
                shape, dtype, letters = series.shape, series.dtype, series.axes
                # decode page by page only if each page is one plane along the first axis
                self._by_page = len(shape) == 2 or (
                    len(series.pages) == shape[0] and tuple(series.pages[0].shape) == shape[1:]
                )
        except Exception as exc:
            raise SourceError(f"source {url}: cannot read as TIFF: {exc}") from exc
        if "S" in letters:
            raise SourceError(f"source {url}: {path} is RGB/RGBA {shape}; only grayscale works")
        self.axes, self.shape, self.dtype = _layout(axes, shape, dtype, url)

    def _open(self) -> Any:
        try:
            return _tifffile().memmap(self.path, mode="r")
        except ValueError:  # compressed or not contiguous
            return _tifffile().TiffFile(self.path)

    def _read(self, box: Box) -> np.ndarray:
        handle, key = self._get_handle(), _disk_key(box, self.axes)
        if isinstance(handle, np.ndarray):
            return _to_xyz(handle[key], self.axes, copy=True).astype(self.dtype, copy=False)
        series = handle.series[0]
        if not self._by_page:  # an unusual layout: the format forces a full read
            block = series.asarray()[key]
        elif len(self.axes) == 2:
            block = series.pages[0].asarray()[key]
        else:
            pages = range(key[0].start, key[0].stop)
            block = np.stack([series.pages[i].asarray()[key[1:]] for i in pages])
        return _to_xyz(block, self.axes, copy=False).astype(self.dtype, copy=False)


def _natural_key(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def _slice_info(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one slice file from its header; RGB and non-2-D files are refused."""
    try:
        if path.suffix.lower() == ".png":
            with _pil_image().open(path) as im:
                if im.mode not in _PNG_DTYPES:
                    raise SourceError(
                        f"slice {path} has image mode {im.mode}: not grayscale (RGB/RGBA/palette "
                        f"images are refused; supported modes: {', '.join(_PNG_DTYPES)})"
                    )
                return (im.height, im.width), np.dtype(_PNG_DTYPES[im.mode])
        with _tifffile().TiffFile(path) as tf:
            series = tf.series[0]
            if "S" in series.axes:
                raise SourceError(f"slice {path} is RGB/RGBA {series.shape}, not grayscale")
            if len(series.shape) != 2:
                raise SourceError(f"slice {path} is not a 2-D image: shape {series.shape}")
            return tuple(series.shape), series.dtype
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"cannot read slice {path}: {exc}") from exc


def _load_slice(path: Path) -> np.ndarray:
    """One slice as a (y, x) array: a TIFF memory map when possible, else decoded whole."""
    try:
        if path.suffix.lower() == ".png":
            with _pil_image().open(path) as im:
                return np.asarray(im)
        try:
            return _tifffile().memmap(path, mode="r")
        except ValueError:  # compressed or not contiguous
            return _tifffile().imread(path)
    except Exception as exc:
        raise SourceError(f"cannot read slice {path}: {exc}") from exc


class SliceFolderSource(VolumeSource):
    """A folder of 2-D slices, file index = z, each image (y, x); a read opens only its z range."""

    @property
    def location(self) -> Path:
        return self.folder

    def __init__(self, url: str, folder: Path, axes: str) -> None:
        self.url, self.folder = url, folder
        if axes != "zyx":
            raise SourceError(
                f"source {url}: a folder of slices is always z (file order), y, x (image rows, "
                f"columns), so axes must be 'zyx', not {axes!r}"
            )
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        files = [p for p in files if p.suffix.lower() in SLICE_SUFFIXES]
        if not files:
            raise SourceError(f"source {url}: folder {folder} holds no .tif/.tiff/.png slices")
        kinds = {"png" if p.suffix.lower() == ".png" else "tiff" for p in files}
        if len(kinds) > 1:
            raise SourceError(f"source {url}: folder {folder} mixes PNG and TIFF slices")
        self.names = sorted((p.name for p in files), key=_natural_key)
        (ny, nx), dtype = _slice_info(folder / self.names[0])
        last_shape, last_dtype = _slice_info(folder / self.names[-1])
        if (last_shape, last_dtype) != ((ny, nx), dtype):
            raise SourceError(
                f"source {url}: slice {folder / self.names[-1]} is {last_shape} {last_dtype} but "
                f"{self.names[0]} is {(ny, nx)} {dtype}; all slices must match"
            )
        _, self.shape, self.dtype = _layout("zyx", (len(self.names), ny, nx), dtype, url)

    def _read(self, box: Box) -> np.ndarray:
        out = np.empty(box.shape, self.dtype, order="F")
        (x0, y0, z0), (x1, y1, z1) = box.start, box.stop
        for k, name in enumerate(self.names[z0:z1]):
            path = self.folder / name
            img = _load_slice(path)
            if img.shape != (self.shape.y, self.shape.x) or _native(img.dtype) != self.dtype:
                raise SourceError(
                    f"source {self.url}: slice {path} is {img.shape} {img.dtype}, expected "
                    f"{(self.shape.y, self.shape.x)} {self.dtype} (y, x) like the other slices"
                )
            out[:, :, k] = img[y0:y1, x0:x1].T
            del img
        return out


def open_source(
    spec: str, axes: str = "zyx", context: StorageContext | None = None
) -> VolumeSource:
    """Open the stack at `spec` (a local path, optionally ``file://``; HDF5 as ``file.h5:/ds``).

    `axes` is the on-disk array order, a permutation of "xyz" (default "zyx"); a 2-D array is a
    single section and drops "z" from it. Raises `SourceError` for every problem a user can fix.
    """
    path_str = spec[len("file://") :] if spec.startswith("file://") else spec
    from .layer_sources import LayerSource, is_volume  # imports layers, which imports much

    if is_volume(spec, Path(path_str).expanduser()):
        return LayerSource(spec, context or StorageContext())
    norm = str(axes).lower()
    if sorted(norm) not in (list("xyz"), list("xy")):
        raise SourceError(
            f"source {spec}: bad axes {axes!r}; expected a permutation of 'xyz' such as 'zyx' "
            "(or of 'xy' for a 2-D array)"
        )
    # absolute here, on the driver: the tasks that read the source run in other directories
    h5 = _H5.match(path_str)
    if h5:
        return Hdf5Source(spec, Path(h5[1]).expanduser().absolute(), h5[2], norm)
    path = Path(path_str).expanduser().absolute()
    if not path.exists():
        raise SourceError(f"source {spec}: no such file or folder: {path}")
    if path.is_dir():
        return SliceFolderSource(spec, path, norm)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return TiffStackSource(spec, path, norm)
    if suffix == ".npy":
        return NpySource(spec, path, norm)
    fmt = suffix or path.name
    raise SourceError(f"source {spec}: unknown format {fmt!r}; supported: {SUPPORTED}")
