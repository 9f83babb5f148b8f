"""Default task sizes: big enough that Ray's per-task cost is noise, small enough for memory."""

from __future__ import annotations

import math

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer

TARGET_VOXELS = 2**26  # ~64 M voxels: about a second of work per task at ~100 MVx/s
TARGET_BYTES = 2**28  # 256 MiB of input per task


def auto_task_shape(step: Vec3, extent: Vec3, bytes_per_voxel: int) -> Vec3:
    """Multiples of `step` grown (z, then y, then x) towards the target, never past `extent`.

    `step` is the smallest task that writes whole storage chunks (at every mip, for pyramids);
    `extent` is the volume's shape, beyond which a bigger task only holds empty space.
    """
    budget = max(1, min(TARGET_VOXELS, TARGET_BYTES // max(1, bytes_per_voxel)))
    shape = list(step)
    grew = True
    while grew:
        grew = False
        for axis in (2, 1, 0):
            if shape[axis] >= extent[axis]:
                continue
            if Vec3(*shape).prod() * 2 > budget:
                return Vec3(*shape)
            shape[axis] *= 2
            grew = True
    return Vec3(*shape)


def task_shape(
    requested: tuple[int, int, int] | None,
    step: Vec3,
    extent: Vec3,
    bytes_per_voxel: int,
    *,
    name: str,
    step_name: str,
    writes: str = "storage chunks",
) -> Vec3:
    """The configured task shape (checked to be a multiple of `step`), or `auto_task_shape`."""
    if requested is None:
        return auto_task_shape(step, extent, bytes_per_voxel)
    shape = Vec3.of(requested)
    check_multiple(name, shape, step, step_name, writes)
    return shape


def layer_grid(
    layer: Layer,
    requested: tuple[int, int, int] | None,
    bytes_per_voxel: int,
    *,
    name: str,
    halo: int | Vec3 = 0,
) -> ChunkGrid:
    """Tasks over a layer's mip 0 that write whole storage chunks: `task_shape` with the layer's
    chunk size as the step, aligned to its voxel offset. When the task shape is not given and
    the layer's shards are boxes, tasks are whole shards: each reads its shard file in one GET
    instead of chunk by chunk in byte ranges."""
    bounds, step = layer.bounds(0), layer.chunk_size(0)
    sharding = layer.sharding(0)
    if requested is None and sharding is not None and sharding.problem() is None:
        step = sharding.shape
    shape = task_shape(
        requested,
        step,
        bounds.shape,
        bytes_per_voxel,
        name=name,
        step_name="storage chunk",
    )
    return ChunkGrid(bounds, shape, halo, origin=bounds.start)


def writing_task_shape(
    requested: tuple[int, int, int] | None,
    target: Layer,
    extent: Vec3,
    bytes_per_voxel: int,
    *,
    name: str,
) -> Vec3:
    """`task_shape` for tasks that write `target`'s mip 0: whole storage chunks, or whole
    shards of a sharded scale (one petavox can write: checked here, before any task runs)."""
    sharding = target.sharding(0)
    if sharding is None:
        return task_shape(
            requested,
            target.chunk_size(0),
            extent,
            bytes_per_voxel,
            name=name,
            step_name="storage chunk",
        )
    key = target.scale(0)["key"]
    sharding.check_writable(f"{target.url} scale {key}")
    return task_shape(
        requested,
        sharding.shape,
        extent,
        bytes_per_voxel,
        name=name,
        step_name=f"the shard shape of {target.url} scale {key}",
        writes="shards",
    )


def check_multiple(
    name: str, shape: Vec3, of: Vec3, of_name: str, writes: str = "storage chunks"
) -> None:
    if any(s % o for s, o in zip(shape, of)):
        raise InputError(
            f"{name} {tuple(shape)} must be a multiple of {of_name} {tuple(of)} so that each task "
            f"writes whole {writes}"
        )


def default_shard_bits(requested: int | None, grid: ChunkGrid) -> int:
    """`requested`, or shard bits that give one per-shard merge task per ~8 chunk tasks."""
    if requested is not None:
        return requested
    return max(0, math.ceil(math.log2(len(grid))) - 3)
