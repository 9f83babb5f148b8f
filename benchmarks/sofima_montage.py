"""SOFIMA (Google's optical-flow + elastic-mesh montager) as a side-by-side reference for tile
montaging, run in its own virtualenv ($VENV below) as a subprocess:

    $VENV/bin/python benchmarks/sofima_montage.py in.npz out.npz [--warmup]

`in.npz` holds `tiles` ([rows, cols, h, w] uint8, tile (c, r) at [r, c]) and `overlap_px` (the
nominal overlap of neighbouring tiles). `out.npz` gets `image` (float32 [y, x], NaN where no tile
was rendered), `positions` ([rows, cols, 2]: the (x, y) of each tile's top-left pixel in
`image`), `coarse_positions` (the same after the rigid phase alone, up to a common offset),
`phase_seconds` (coarse, mesh, render; JAX compiles inside them unless --warmup ran the montage
once before) and `params` (mesh stride, flow patch, render margin).

Follows SOFIMA's EM stitching notebook (notebooks/em_stitching.ipynb): rigid offsets of
neighbouring tiles by masked cross-correlation of their overlap strips, a spring mesh of tiles
relaxed to coarse positions, then per-tile elastic meshes pulled together by whole-pixel flow
fields across each seam, and each tile warped into the section by its inverted mesh. Left out:
the notebook's `reconcile_flows` filter of small groups of flow vectors (it calls `np.in1d`,
gone in NumPy 2.4). Added: the global rotation of the meshes is taken out (`remove_rotation`).

Only numpy, jax and sofima are imported (never petavox). Install into a separate virtualenv; the
PyPI wheel of sofima 0.1 is empty, so its sdist's top-level modules are installed as a package,
and jax must be <= 0.9.2 (sofima 0.1 calls `jnp.clip(a_min=, a_max=)`, removed in jax 0.10):

    python3.11 -m venv $VENV
    $VENV/bin/pip install sofima==0.1 jax==0.9.2 jaxlib==0.9.2 numpy scipy
    $VENV/bin/pip download --no-deps --no-binary :all: sofima==0.1 -d $SRC
    tar xzf $SRC/sofima-0.1.tar.gz -C $SRC && mkdir $SRC/sofima-0.1/sofima
    mv $SRC/sofima-0.1/*.py $SRC/sofima-0.1/sofima/
    $VENV/bin/pip install --no-deps $SRC/sofima-0.1
"""

from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sofima import flow_utils, mesh, stitch_elastic, stitch_rigid, warp

TileKey = tuple[int, int]  # (column x, row y)
PHASES = ("coarse", "mesh", "render")

# Upper bounds for the mesh stride and the flow patch: the notebook's stride 20 / patch 120 are
# for ~2k px tiles with ~10% overlap; tiles here are ~100 px with 15-25% overlap.
MAX_STRIDE = 20
MAX_PATCH = 64
# flow_field's peak statistics read an 11 px window (peak_radius 5) of each patch pair's
# (2 * patch - 1) px cross-correlation: smaller patches fail inside JAX ("Slice size ... out of
# range").
MIN_PATCH = 6
STRIDE1_MAX_PX = 64 * 64


@dataclass(frozen=True)
class Params:
    """SOFIMA's parameters for one montage, all in pixels."""

    stride: int  # spacing of the elastic mesh nodes and of the flow vectors
    patch: int  # side of the square patches cross-correlated across a seam
    margin: int  # tile border left out when rendering (the next tile covers it)


def _grid_shape(tiles: dict[TileKey, np.ndarray]) -> tuple[int, int]:
    """(rows, cols) of the tile grid."""
    return max(y for _, y in tiles) + 1, max(x for x, _ in tiles) + 1


def coarse_offsets(
    tiles: dict[TileKey, np.ndarray], overlap_px: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase 1: rigid offsets of x and y neighbours ([2, rows, cols] each, xy, relative to the
    grid with no overlap, so about (-overlap, 0) and (0, -overlap)), and the coarse mesh
    ([2, rows, cols]: each tile's shift from (x * w, y * h) after relaxing the tile springs)."""
    h, w = next(iter(tiles.values())).shape

    # Strip widths to cross-correlate: wider than the nominal overlap so that a larger real one
    # still fits; SOFIMA prefers the estimate on which two consecutive widths agree.
    def widths(size: int) -> tuple[int, ...]:
        return tuple(sorted({min(size, overlap_px * 3 // 2), min(size, 2 * overlap_px)}))

    cx, cy = stitch_rigid.compute_coarse_offsets(
        _grid_shape(tiles),
        tiles,
        overlaps_xy=(widths(w), widths(h)),
        # An estimate is kept only if the overlap it implies is at least half the nominal one.
        min_overlap=max(1, overlap_px // 2),
    )
    cx = stitch_rigid.interpolate_missing_offsets(cx, -1)
    cy = stitch_rigid.interpolate_missing_offsets(cy, -2)
    if np.isinf(cx).any() or np.isinf(cy).any():
        raise RuntimeError(f"SOFIMA found no valid offset for some tile pairs:\n{cx}\n{cy}")
    coarse = stitch_rigid.optimize_coarse_mesh(cx, cy)
    return cx[:, 0], cy[:, 0], np.asarray(coarse)[:, 0]


def _residual(stride: int, pitches: np.ndarray, orthos: np.ndarray) -> int:
    """Largest shift that `compute_flow_map`'s stride-aligned strips leave to the flow."""
    along = pitches % stride  # strips start at a multiple of the stride in the first tile
    across = np.abs(orthos - stride * np.round(orthos / stride))
    return int(max(along.max(initial=0), across.max(initial=0)))


def _patch(stride: int, overlap: int) -> int:
    """Largest multiple of 2 * stride within [MIN_PATCH, min(overlap, MAX_PATCH)], or 0."""
    top = min(overlap, MAX_PATCH) // (2 * stride) * 2 * stride
    return top if top >= MIN_PATCH else 0


def choose_params(tile_shape: tuple[int, int], cx: np.ndarray, cy: np.ndarray) -> Params:
    """Mesh stride, flow patch and render margin for tiles of `tile_shape` (h, w), from the
    measured coarse offsets.

    `compute_flow_map` starts each seam's strip at a multiple of the stride inside the first
    tile, so a strip is wider than the real overlap by (w - overlap) mod stride pixels (and the
    ortho offset is rounded to the stride), which the flow must then recover. SOFIMA's flow is
    whole-pixel and, with no mask, its cross-correlation is not normalised for the shrinking
    overlap of shifted patches, so it leans towards zero shift: with 96 px tiles, a 1 px residual
    left tile errors of up to 0.9 px, a 5 px one 2-3 px (after `remove_rotation`). The stride is
    therefore the one with the smallest residual (0 when it divides every tile pitch w - overlap,
    h - overlap, and ortho offset; the tile side need not be a multiple), then the closest to a
    quarter of the overlap (about four mesh nodes across a seam), at most half of it. Stride 1
    always leaves 0 but costs ~1 min per 9 tiles of 96 px, so it is kept for tiles of at most
    STRIDE1_MAX_PX pixels.

    The patch is a multiple of 2 * stride (`compute_flow_map` pads the flow by
    patch // 2 // stride nodes a side, which puts each vector at its patch centre only then,
    and fails for patch < 2 * stride), at least MIN_PATCH and at most the overlap (the strip).
    """
    h, w = tile_shape
    # Offsets are whole pixels; x pairs overlap by -cx[0], y pairs by -cy[1].
    overlaps = np.concatenate([-cx[0][np.isfinite(cx[0])], -cy[1][np.isfinite(cy[1])]])
    pitches = np.concatenate([w + cx[0][np.isfinite(cx[0])], h + cy[1][np.isfinite(cy[1])]])
    orthos = np.concatenate([cx[1][np.isfinite(cx[1])], cy[0][np.isfinite(cy[0])]])
    pitches, orthos = pitches.round().astype(int), orthos.round().astype(int)
    overlap = int(overlaps.min())
    lowest = 1 if h * w <= STRIDE1_MAX_PX else 2
    strides = [s for s in range(lowest, min(MAX_STRIDE, overlap // 2) + 1) if _patch(s, overlap)]
    if not strides:
        raise ValueError(
            f"a measured overlap of {overlap} px leaves no stride >= {lowest} with a flow patch"
            f" of >= {MIN_PATCH} px (a multiple of 2 * stride) inside the overlap"
        )
    stride = min(strides, key=lambda s: (_residual(s, pitches, orthos), abs(s - overlap / 4), -s))
    if residual := _residual(stride, pitches, orthos):
        print(f"sofima: stride {stride} leaves the flow residual shifts of up to {residual} px")
    # The margin hides tile borders that real microscopes distort; it must stay below half the
    # overlap, or gaps open between tiles.
    return Params(stride=stride, patch=_patch(stride, overlap), margin=overlap // 4)


def _clean(flows: dict[TileKey, np.ndarray]) -> dict[TileKey, np.ndarray]:
    """Drop flow vectors with weak or ambiguous correlation peaks (the notebook's thresholds)."""
    clean = functools.partial(
        flow_utils.clean_flow,
        min_peak_ratio=1.4,
        min_peak_sharpness=1.4,
        max_magnitude=0,
        max_deviation=5,
    )
    return {key: clean(flow[:, np.newaxis])[:, 0] for key, flow in flows.items()}


def elastic_meshes(
    tiles: dict[TileKey, np.ndarray],
    cx: np.ndarray,
    cy: np.ndarray,
    coarse: np.ndarray,
    params: Params,
) -> dict[TileKey, np.ndarray]:
    """Phase 2: per tile, its relaxed mesh ([2, 1, ny, nx], each node's xy shift from its place
    on the tile grid with no overlap), from the flow across every seam."""
    stride = (params.stride, params.stride)
    kwargs = {"patch_size": (params.patch, params.patch), "stride": stride, "batch_size": 256}
    flow_x, offsets_x = stitch_elastic.compute_flow_map(tiles, cx, 0, **kwargs)
    flow_y, offsets_y = stitch_elastic.compute_flow_map(tiles, cy, 1, **kwargs)
    fx, fy, x, nbors, key_to_idx = stitch_elastic.aggregate_arrays(
        (cx, _clean(flow_x), offsets_x),
        (cy, _clean(flow_y), offsets_y),
        tiles,
        coarse,
        stride=stride,
    )

    @jax.jit
    def prev_fn(x: jnp.ndarray) -> jnp.ndarray:
        target = functools.partial(
            stitch_elastic.compute_target_mesh, x=x, fx=fx, fy=fy, stride=stride
        )
        return jnp.transpose(jax.vmap(target)(nbors), [1, 0, 2, 3])

    # The notebook's settings: k0 / k is how far a tile may deform towards its neighbours.
    config = mesh.IntegrationConfig(
        dt=0.001,
        gamma=0.0,
        k0=0.01,
        k=0.1,
        stride=float(params.stride),  # sofima 0.1 takes one spacing for both axes
        num_iters=1000,
        max_iters=20000,
        stop_v_max=0.001,
        dt_max=100,
        prefer_orig_order=True,
        start_cap=0.1,
        final_cap=10.0,
        remove_drift=True,
    )
    x, _, _ = mesh.relax_mesh(x, None, config, prev_fn=prev_fn)
    x = np.asarray(x)
    meshes = {key: x[:, i : i + 1] for key, i in key_to_idx.items()}
    return remove_rotation(meshes, coarse, tiles[next(iter(tiles))].shape, params.stride)


def _grid_nodes(
    key: TileKey, mesh_shape: tuple[int, ...], tile_shape: tuple[int, int], stride: int
) -> np.ndarray:
    """[2, ny, nx] xy of a tile's mesh nodes on the tile grid with no overlap (no mesh shift)."""
    ny, nx = mesh_shape[-2:]
    gy, gx = np.mgrid[:ny, :nx] * stride
    return np.stack([key[0] * tile_shape[1] + gx, key[1] * tile_shape[0] + gy]).astype(np.float64)


def remove_rotation(
    meshes: dict[TileKey, np.ndarray], coarse: np.ndarray, tile_shape: tuple[int, int], stride: int
) -> dict[TileKey, np.ndarray]:
    """Undo the global rotation of the relaxed meshes relative to the coarse (rigid) layout.

    Rotating every mesh together changes no spring length and no flow target, so it is a free
    mode of SOFIMA's solver, and torque from inconsistent whole-pixel flows can drive it: with a
    1 px flow residual, 96 px tiles came out rotated by 26 degrees (tile errors of 40 px). The
    best-fitting rotation about the centroid (2-D Procrustes) is taken out; nothing else."""
    keys = list(meshes)
    grid = [_grid_nodes(k, meshes[k].shape, tile_shape, stride).reshape(2, -1) for k in keys]
    after = np.concatenate([g + meshes[k][:, 0].reshape(2, -1) for k, g in zip(keys, grid)], 1)
    before = np.concatenate([g + coarse[:, k[1], k[0], None] for k, g in zip(keys, grid)], 1)
    valid = np.isfinite(after).all(0)
    centre = after[:, valid].mean(1, keepdims=True)
    a = after[:, valid] - centre
    b = before[:, valid] - before[:, valid].mean(1, keepdims=True)
    angle = math.atan2(float(np.sum(a[0] * b[1] - a[1] * b[0])), float(np.sum(a * b)))
    if abs(angle) < 1e-6:  # under 1e-3 px at 1000 px from the centre
        return meshes
    if abs(angle) > 1e-4:
        print(f"sofima: took out a global mesh rotation of {math.degrees(angle):.2f} degrees")
    cos, sin = math.cos(angle), math.sin(angle)
    rotated = np.array([[cos, -sin], [sin, cos]]) @ (after - centre) + centre
    out, start = {}, 0
    for key, g in zip(keys, grid):
        part = rotated[:, start : start + g.shape[1]] - g
        out[key], start = part.reshape(meshes[key].shape), start + g.shape[1]
    return out


def render(
    tiles: dict[TileKey, np.ndarray], meshes: dict[TileKey, np.ndarray], params: Params
) -> tuple[np.ndarray, dict[TileKey, np.ndarray]]:
    """Phase 3: the stitched section (float32, NaN where no tile) and each tile's top-left
    pixel (x, y) in it. Meshes are shifted together so that the section starts at (0, 0)."""
    h, w = next(iter(tiles.values())).shape
    s = params.stride
    nodes = np.concatenate(
        [(_grid_nodes(k, m.shape, (h, w), s) + m[:, 0]).reshape(2, -1) for k, m in meshes.items()],
        axis=1,
    )
    # 1e-3 px of slack keeps float noise from adding a row or column.
    x0, y0 = (math.floor(v + 1e-3) for v in np.nanmin(nodes, axis=1))
    x1, y1 = (math.ceil(v - 1e-3) for v in np.nanmax(nodes, axis=1))
    shifted = {key: m - np.array([x0, y0]).reshape(2, 1, 1, 1) for key, m in meshes.items()}
    ny, nx = next(iter(meshes.values())).shape[-2:]
    # A tile goes on for (side - 1) - (nodes - 1) * stride pixels past its last node.
    width, height = x1 - x0 + w - (nx - 1) * s, y1 - y0 + h - (ny - 1) * s
    image, mask = warp.render_tiles(
        tiles, shifted, stride=(s, s), margin=params.margin, width=width, height=height
    )
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size:
        image, mask = image[: rows[-1] + 1, : cols[-1] + 1], mask[: rows[-1] + 1, : cols[-1] + 1]
    stitched = np.where(mask, image.astype(np.float32), np.float32(np.nan))
    positions = {
        (tx, ty): np.array([tx * w + m[0, 0, 0, 0], ty * h + m[1, 0, 0, 0]], dtype=np.float64)
        for (tx, ty), m in shifted.items()
    }
    return stitched, positions


def montage_with_sofima(
    tiles: dict[tuple[int, int], np.ndarray],
    overlap_px: int,
    info: dict[str, object] | None = None,
) -> tuple[np.ndarray, dict[tuple[int, int], np.ndarray]]:
    """tiles keyed by (column x, row y) of a regular grid, each a 2-D uint8 array indexed [y, x]
    (all same shape). Returns the stitched section (2-D float32 [y, x], NaN where no tile) and,
    per tile, the position of its top-left pixel in the stitched image's frame (x, y).

    `info`, if given, receives "seconds" (wall time per phase of PHASES; JAX compiles on first
    use, within the phase), "params" (the chosen Params) and "coarse_positions" (each tile's
    top-left (x, y) after the rigid phase alone, up to a common offset from `positions`)."""
    tiles = {key: np.asarray(tile) for key, tile in tiles.items()}
    h, w = next(iter(tiles.values())).shape
    t0 = time.perf_counter()
    cx, cy, coarse = coarse_offsets(tiles, int(overlap_px))
    t1 = time.perf_counter()
    params = choose_params((h, w), cx, cy)
    meshes = elastic_meshes(tiles, cx, cy, coarse, params)
    t2 = time.perf_counter()
    image, positions = render(tiles, meshes, params)
    t3 = time.perf_counter()
    if info is not None:
        info["seconds"] = dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2)))
        info["params"] = params
        info["coarse_positions"] = {
            (x, y): np.array([x * w + coarse[0, y, x], y * h + coarse[1, y, x]]) for x, y in tiles
        }
    return image, positions


def _grid_array(values: dict[TileKey, np.ndarray], rows: int, cols: int) -> np.ndarray:
    """[rows, cols, 2] array of per-tile (x, y) values."""
    out = np.full((rows, cols, 2), np.nan)
    for (c, r), value in values.items():
        out[r, c] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: montage the tiles of an .npz, print the phase times, write the result .npz."""
    args = list(sys.argv[1:] if argv is None else argv)
    paths = [a for a in args if a != "--warmup"]
    if len(paths) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    with np.load(paths[0]) as data:
        grid, overlap_px = data["tiles"], int(data["overlap_px"])
    rows, cols = grid.shape[:2]
    tiles = {(c, r): grid[r, c] for r in range(rows) for c in range(cols)}
    if "--warmup" in args:  # compiles the cross-correlations (the mesh's jit is new each call)
        montage_with_sofima(tiles, overlap_px)
    info: dict[str, Any] = {}
    image, positions = montage_with_sofima(tiles, overlap_px, info)
    params, seconds = info["params"], info["seconds"]
    print(f"sofima: stride {params.stride} px, patch {params.patch} px, margin {params.margin} px")
    for phase in PHASES:
        print(f"{phase}: {seconds[phase]:.3f} s")
    np.savez(
        paths[1],
        image=image,
        positions=_grid_array(positions, rows, cols),
        coarse_positions=_grid_array(info["coarse_positions"], rows, cols),
        phase_seconds=np.array([seconds[p] for p in PHASES]),
        params=np.array([params.stride, params.patch, params.margin]),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
