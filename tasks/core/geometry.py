"""Integer geometry in voxels: `Vec3`, half-open `Box`, and the `ChunkGrid` that splits a volume.

Everything is in x, y, z order, as Neuroglancer precomputed stores it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple


class Vec3(NamedTuple):
    """An integer triple in x, y, z order."""

    x: int
    y: int
    z: int

    @classmethod
    def of(cls, value: int | Iterable[int]) -> Vec3:
        """A `Vec3` from a scalar (broadcast) or any 3-sequence of integers."""
        if isinstance(value, int):
            return cls(value, value, value)
        items = [int(v) for v in value]
        if len(items) != 3:
            raise ValueError(f"expected 3 values (x, y, z), got {len(items)}: {items}")
        return cls(*items)

    def __add__(self, other: object) -> Vec3:  # type: ignore[override]
        o = Vec3.of(other)  # type: ignore[arg-type]
        return Vec3(self.x + o.x, self.y + o.y, self.z + o.z)

    def __sub__(self, other: object) -> Vec3:
        o = Vec3.of(other)  # type: ignore[arg-type]
        return Vec3(self.x - o.x, self.y - o.y, self.z - o.z)

    def __mul__(self, other: object) -> Vec3:  # type: ignore[override]
        o = Vec3.of(other)  # type: ignore[arg-type]
        return Vec3(self.x * o.x, self.y * o.y, self.z * o.z)

    def __floordiv__(self, other: object) -> Vec3:
        o = Vec3.of(other)  # type: ignore[arg-type]
        return Vec3(self.x // o.x, self.y // o.y, self.z // o.z)

    def ceildiv(self, other: int | Iterable[int]) -> Vec3:
        o = Vec3.of(other)
        return Vec3(-(-self.x // o.x), -(-self.y // o.y), -(-self.z // o.z))

    def __pow__(self, n: int) -> Vec3:  # type: ignore[override]
        """Each component to the power `n` (a downsample factor at mip `n`)."""
        return Vec3(self.x**n, self.y**n, self.z**n)

    def __mod__(self, other: object) -> Vec3:
        o = Vec3.of(other)  # type: ignore[arg-type]
        return Vec3(self.x % o.x, self.y % o.y, self.z % o.z)

    def prod(self) -> int:
        return self.x * self.y * self.z

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.z}"


@dataclass(frozen=True)
class Box:
    """A half-open box of voxels, ``start <= p < stop`` on every axis."""

    start: Vec3
    stop: Vec3

    def __init__(self, start: Iterable[int], stop: Iterable[int]) -> None:
        object.__setattr__(self, "start", Vec3.of(start))
        object.__setattr__(self, "stop", Vec3.of(stop))
        if any(b < a for a, b in zip(self.start, self.stop)):
            raise ValueError(f"box stop {self.stop} is before its start {self.start}")

    @classmethod
    def from_shape(cls, shape: Iterable[int], offset: Iterable[int] = (0, 0, 0)) -> Box:
        off = Vec3.of(offset)
        return cls(off, off + Vec3.of(shape))

    @property
    def shape(self) -> Vec3:
        return self.stop - self.start

    @property
    def size(self) -> int:
        return self.shape.prod()

    def is_empty(self) -> bool:
        return self.size == 0

    def intersection(self, other: Box) -> Box:
        start = Vec3(*(max(a, b) for a, b in zip(self.start, other.start)))
        stop = Vec3(*(min(a, b) for a, b in zip(self.stop, other.stop)))
        stop = Vec3(*(max(s, e) for s, e in zip(start, stop)))
        return Box(start, stop)

    def contains(self, other: Box) -> bool:
        return all(a <= b for a, b in zip(self.start, other.start)) and all(
            a >= b for a, b in zip(self.stop, other.stop)
        )

    def grow(self, amount: int | Iterable[int]) -> Box:
        a = Vec3.of(amount)
        return Box(self.start - a, self.stop + a)

    def translate(self, offset: Iterable[int]) -> Box:
        o = Vec3.of(offset)
        return Box(self.start + o, self.stop + o)

    def scale_down(self, factor: Iterable[int]) -> Box:
        """The box at a coarser mip: start floored, stop rounded up (as precomputed scales are)."""
        f = Vec3.of(factor)
        return Box(self.start // f, self.stop.ceildiv(f))

    def slices(self, origin: Iterable[int] = (0, 0, 0)) -> tuple[slice, slice, slice]:
        """Slices that cut this box out of an x,y,z array whose voxel [0,0,0] sits at `origin`."""
        o = Vec3.of(origin)
        return tuple(slice(a - c, b - c) for a, b, c in zip(self.start, self.stop, o))  # type: ignore[return-value]

    def is_aligned(self, chunk: Iterable[int], offset: Iterable[int], bounds: Box) -> bool:
        """True if the box covers only whole storage chunks of a layer (clipped at `bounds`)."""
        c, o = Vec3.of(chunk), Vec3.of(offset)
        start_ok = all(
            (s - oo) % cc == 0 or s == bs for s, oo, cc, bs in zip(self.start, o, c, bounds.start)
        )
        stop_ok = all(
            (e - oo) % cc == 0 or e == be for e, oo, cc, be in zip(self.stop, o, c, bounds.stop)
        )
        return start_ok and stop_ok and bounds.contains(self)

    def cells(self, cell: Iterable[int], bounds: Box) -> list[Box]:
        """The cells of a grid of `cell`-sized boxes aligned to `bounds.start` (storage chunks,
        shards) that this box touches, each clipped to `bounds`, x fastest."""
        inner, c = self.intersection(bounds), Vec3.of(cell)
        if inner.is_empty():
            return []
        first = (inner.start - bounds.start) // c
        last = (inner.stop - bounds.start).ceildiv(c)
        found = []
        for z in range(first.z, last.z):
            for y in range(first.y, last.y):
                for x in range(first.x, last.x):
                    lo = bounds.start + Vec3(x, y, z) * c
                    found.append(Box(lo, lo + c).intersection(bounds))
        return found

    def __str__(self) -> str:
        return f"[{self.start}]..[{self.stop})"


ChunkId = str
"""A stable chunk name: its grid index as ``"gx_gy_gz"``."""


@dataclass(frozen=True)
class Chunk:
    """One unit of work: the box it writes and the (larger) box it may read."""

    index: Vec3
    write_box: Box
    read_box: Box

    @property
    def id(self) -> ChunkId:
        return f"{self.index.x}_{self.index.y}_{self.index.z}"


@dataclass(frozen=True)
class ChunkGrid:
    """Splits `bounds` into chunks of `chunk_shape` aligned to an origin, each with a `halo`.

    Write boxes start at ``origin + k * chunk_shape`` and are clipped to `bounds`, so when
    `chunk_shape` is a multiple of a layer's storage chunk size and `origin` is the layer's voxel
    offset, every write box covers whole storage chunks only. Read boxes are the write box grown
    by the halo and clipped to `bounds`. Chunk ids are grid indices counted from the first chunk
    that touches `bounds`, so they do not change between runs.
    """

    bounds: Box
    chunk_shape: Vec3
    halo: Vec3
    origin: Vec3

    def __init__(
        self,
        bounds: Box,
        chunk_shape: Iterable[int],
        halo: int | Iterable[int] = 0,
        origin: Iterable[int] | None = None,
    ) -> None:
        object.__setattr__(self, "bounds", bounds)
        object.__setattr__(self, "chunk_shape", Vec3.of(chunk_shape))
        object.__setattr__(self, "halo", Vec3.of(halo))
        object.__setattr__(self, "origin", Vec3.of(bounds.start if origin is None else origin))
        if any(c <= 0 for c in self.chunk_shape):
            raise ValueError(f"chunk shape must be positive, got {self.chunk_shape}")
        if any(h < 0 for h in self.halo):
            raise ValueError(f"halo must be non-negative, got {self.halo}")

    @property
    def _first(self) -> Vec3:
        return (self.bounds.start - self.origin) // self.chunk_shape

    @property
    def grid_shape(self) -> Vec3:
        """Number of chunks along x, y, z."""
        if self.bounds.is_empty():
            return Vec3(0, 0, 0)
        last = (self.bounds.stop - self.origin).ceildiv(self.chunk_shape)
        return last - self._first

    def __len__(self) -> int:
        return self.grid_shape.prod()

    def chunk(self, index: Iterable[int]) -> Chunk:
        idx = Vec3.of(index)
        if not all(0 <= i < n for i, n in zip(idx, self.grid_shape)):
            raise IndexError(f"chunk index {idx} outside grid of shape {self.grid_shape}")
        start = self.origin + (self._first + idx) * self.chunk_shape
        write = Box(start, start + self.chunk_shape).intersection(self.bounds)
        read = write.grow(self.halo).intersection(self.bounds)
        return Chunk(idx, write, read)

    def chunk_by_id(self, chunk_id: ChunkId) -> Chunk:
        try:
            parts = [int(p) for p in chunk_id.split("_")]
        except ValueError:
            raise ValueError(f"not a chunk id: {chunk_id!r}") from None
        return self.chunk(parts)

    def index_of(self, chunk_id: ChunkId) -> int:
        """The chunk's position in iteration order (z outermost, x fastest): 0 to len - 1."""
        x, y, z = self.chunk_by_id(chunk_id).index
        gx, gy, _ = self.grid_shape
        return x + gx * (y + gy * z)

    def chunk_at(self, position: int) -> Chunk:
        """The chunk at `position` in iteration order (the inverse of `index_of`)."""
        gx, gy, gz = self.grid_shape
        if not 0 <= position < gx * gy * gz:
            raise IndexError(f"chunk position {position} outside a grid of {gx * gy * gz}")
        return self.chunk((position % gx, position // gx % gy, position // (gx * gy)))

    def __iter__(self) -> Iterator[Chunk]:
        gx, gy, gz = self.grid_shape
        # z outermost: chunks of neighbouring sections are dispatched together.
        for z, y, x in itertools.product(range(gz), range(gy), range(gx)):
            yield self.chunk((x, y, z))

    def ids(self) -> list[ChunkId]:
        return [c.id for c in self]


def index_grid(n: int) -> ChunkGrid:
    """A grid of `n` tasks that are not boxes of a volume (id ranges, shards): chunk k's write
    box starts at x = k."""
    return ChunkGrid(Box((0, 0, 0), (n, 1, 1)), (1, 1, 1))


def task_index(chunk: Chunk) -> int:
    """Which task of an `index_grid` `chunk` is (0 to n - 1)."""
    return chunk.write_box.start[0]


def octree_levels(grid: ChunkGrid) -> int:
    """Levels above the chunks of an octree over `grid` (level L nodes span 2^L chunks a side)."""
    return math.ceil(math.log2(max(grid.grid_shape)))


def octree_level_grid(grid: ChunkGrid, level: int) -> ChunkGrid:
    """The nodes of `level` of the octree over `grid` (no halo), as a chunk grid."""
    return ChunkGrid(grid.bounds, grid.chunk_shape * 2**level, 0, origin=grid.origin)
