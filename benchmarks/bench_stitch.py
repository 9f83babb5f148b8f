"""Stitch resolve: the octree union-find of chunk-face matches vs one flat union-find.

Synthesises the face-matching output of a chunk grid (default 64×64×32 = 131072 chunks): K
objects cross each + face between random local ids 1..N of the two chunks, and C "long
neurites" (local ids 1..C) run through every chunk along one axis each, so the random crossings
tie them into sets that span the grid. A chunk's edges are a pure function of its index (a
splitmix64 hash), made when a level-1 node reads them, never all held at once. The levels run
as `ResolveJob.run` does (same gather, same `inside` test, `resolve_node`, `sorted_map`), node
by node in one process; passed-up edges and maps go into dicts, the analogue of object storage,
measured apart. Per grid size, each in a fresh process: time per level, the largest node's
input edges, its bytes in+out and tracemalloc peak, storage totals and peak RSS, and the same
for a flat `components()` over all edges at once (one giant union-find on the driver). On the
smallest grid the final ids (chain of maps) must equal the flat union-find's.

    .venv/bin/python benchmarks/bench_stitch.py [--quick] [--grid 64,64,32] [-k 8] [-n 64]
"""

from __future__ import annotations

import argparse
import itertools
import math
import resource
import sys
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import common
import numpy as np

from petavox.tasks.equivalence import (
    IdSpace,
    apply_maps,
    components,
    resolve_node,
    sorted_map,
    unique_edges,
)

Grid = tuple[int, int, int]
FULL_GRID: Grid = (64, 64, 32)
QUICK_GRID: Grid = (16, 16, 8)
MB = 2**20
U = np.uint64


def splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + U(0x9E3779B97F4A7C15)
    x = (x ^ (x >> U(30))) * U(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> U(27))) * U(0x94D049BB133111EB)
    return x ^ (x >> U(31))


@dataclass(frozen=True)
class Model:
    ids: IdSpace
    k: int  # objects crossing each + face
    n: int  # local ids 1..n per chunk
    chains: int  # long neurites: local id j+1 crosses every face along axis j % 3

    def edges(self, lo: Any, hi: Any) -> np.ndarray:
        """The level-0 edge files (what `MatchJob` writes) of the chunks in [lo, hi), joined."""
        g = self.ids.grid_shape
        axes = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        c = np.stack(axes, -1).reshape(-1, 3)
        linear = (c[:, 0] + g[0] * (c[:, 1] + g[1] * c[:, 2])).astype(U)
        stride, parts = U(self.ids.stride), [np.zeros((0, 2), U)]
        for axis, step in enumerate((1, g[0], g[0] * g[1])):
            here = linear[c[:, axis] + 1 < g[axis]][:, None]
            there = here + U(step)
            slot = (here * U(3) + U(axis)) * U(self.k) + np.arange(self.k, dtype=U)
            h = splitmix64(slot)
            a, b = h % U(self.n) + U(1), (h >> U(32)) % U(self.n) + U(1)
            chain = np.arange(axis, self.chains, 3, dtype=U) + U(1)
            for x, y in ((a, b), (chain, chain)):
                pair = np.broadcast_arrays(here * stride + x, there * stride + y)
                parts.append(np.stack(pair, -1).reshape(-1, 2))
        return unique_edges(np.concatenate(parts))

    def labels(self) -> np.ndarray:
        chunks = np.arange(math.prod(self.ids.grid_shape), dtype=U)[:, None]
        return (chunks * U(self.ids.stride) + np.arange(1, self.n + 1, dtype=U)).ravel()


def faces(grid: Grid) -> int:
    return sum((grid[a] - 1) * math.prod(grid) // grid[a] for a in range(3))


def node_faces(grid: Grid, level: int, node: tuple[int, ...]) -> int:
    """Chunk faces on the node's children's boundaries with a side in it: what it must see."""
    lo = [i << level for i in node]
    hi = [min((i + 1) << level, n) for i, n in zip(node, grid)]
    child, total = 1 << (level - 1), 0
    for a in range(3):
        cuts = sum(1 for p in range(lo[a] - 1, hi[a]) if p >= 0 and p + 1 < grid[a] and (p + 1) % child == 0)  # fmt: skip
        total += cuts * math.prod(hi[b] - lo[b] for b in range(3) if b != a)
    return total


def run_node(m: Model, level: int, node: tuple[int, ...], child_shape: Any, passed: dict) -> tuple:
    """`ResolveJob.run` on in-memory storage: (input edges, map, passed up, read s, resolve s)."""
    t0 = time.perf_counter()
    reach = 1 if level == 1 else 0
    lo = [max(0, 2 * i - reach) for i in node]
    hi = [min(2 * i + 2, n) for i, n in zip(node, child_shape)]
    if level == 1:
        edges = m.edges(lo, hi)
    else:
        children = itertools.product(*(range(a, b) for a, b in zip(lo, hi)))
        edges = np.concatenate([np.zeros((0, 2), U)] + [passed[c] for c in children])
    t1 = time.perf_counter()
    chunks = m.ids.chunk_index(edges.ravel()).reshape(-1, 2, 3)
    inside = ((chunks >> level) == np.asarray(node)).all(axis=2)
    touching = inside.any(axis=1)
    mapping, up = resolve_node(edges[touching], inside[touching])
    mapping = sorted_map(mapping)
    return edges, mapping, up, t1 - t0, time.perf_counter() - t1


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def hierarchical(m: Model, verify: bool) -> dict[str, Any]:
    grid, rss0 = m.ids.grid_shape, rss_mb()
    passed: dict = {}
    maps: list[dict] = []
    out: dict[str, Any] = {"levels": []}
    for level in range(1, math.ceil(math.log2(max(grid))) + 1):
        shape = [-(-n >> level) for n in grid]
        child_shape = [-(-n >> (level - 1)) for n in grid]
        up: dict = {}
        level_maps: dict = {}
        read = resolve = 0.0
        big: tuple = (-1, None, 0)
        started = time.perf_counter()
        for node in itertools.product(*map(range, shape)):
            edges, level_maps[node], up[node], r, s = run_node(m, level, node, child_shape, passed)
            read, resolve = read + r, resolve + s
            if len(edges) > big[0]:
                big = (len(edges), node, edges.nbytes + level_maps[node].nbytes + up[node].nbytes)
        seconds = time.perf_counter() - started
        tracemalloc.start()  # the largest node again, alone: its working memory
        run_node(m, level, big[1], child_shape, passed)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        maps.append(level_maps)
        passed = up
        map_bytes = [a.nbytes for a in level_maps.values()]
        out["levels"].append(
            {"level": level, "nodes": len(up), "seconds": seconds, "read_s": read,
             "resolve_s": resolve, "node_edges": big[0], "node": list(big[1]),
             "node_faces": node_faces(grid, level, big[1]), "node_bytes": big[2],
             "node_peak_bytes": peak, "up_bytes": sum(a.nbytes for a in up.values()),
             "map_bytes": sum(map_bytes), "largest_map_bytes": max(map_bytes)}
        )  # fmt: skip
    top = max(out["levels"], key=lambda lv: lv["node_edges"])
    out.update(seconds=sum(lv["seconds"] for lv in out["levels"]), largest=top,
               storage_bytes=sum(lv["up_bytes"] + lv["map_bytes"] for lv in out["levels"]),
               rss_mb=rss_mb(), rss_start_mb=rss0)  # fmt: skip
    if verify:
        labels = m.labels()
        ids, roots = components(m.edges((0, 0, 0), grid), extra=labels)
        want = roots[np.searchsorted(ids, labels)]
        got = np.empty_like(labels)
        for c, node in enumerate(np.ndindex(*grid[::-1])):
            chain = [lm[tuple(i >> lv for i in node[::-1])] for lv, lm in enumerate(maps, 1)]
            got[c * m.n : (c + 1) * m.n] = apply_maps(labels[c * m.n : (c + 1) * m.n], chain)
        assert np.array_equal(got, want), "hierarchical ids differ from the flat union-find"
        roots_of, sizes = np.unique(want, return_counts=True)
        giant = labels[want == roots_of[sizes.argmax()]] // U(m.ids.stride)
        out["verified"] = {"labels": len(labels), "sets": len(roots_of),
                           "largest_set_chunks": len(np.unique(giant))}  # fmt: skip
    return out


def flat(m: Model) -> dict[str, Any]:
    rss0, started = rss_mb(), time.perf_counter()
    edges = m.edges((0, 0, 0), m.ids.grid_shape)
    made = time.perf_counter()
    components(edges)
    seconds = time.perf_counter() - made
    del edges
    tracemalloc.start()  # again, traced: the edges (its input) and the union-find
    components(m.edges((0, 0, 0), m.ids.grid_shape))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"seconds": seconds, "make_s": made - started, "peak_bytes": peak,
            "rss_mb": rss_mb(), "rss_start_mb": rss0}  # fmt: skip


def case(kind: str, grid: Grid, k: int, n: int, chains: int, verify: bool) -> dict[str, Any]:
    m = Model(IdSpace(grid, 2**20), k, n, chains)
    components(np.array([[1, 2]], U))  # warm up: scipy's first import is not the resolver's
    if kind == "flat":
        return flat(m)
    res = hierarchical(m, verify)
    res["edges"] = sum(len(m.edges((0, 0, z), (grid[0], grid[1], z + 1))) for z in range(grid[2]))
    return res


def in_fresh_process(*args: Any) -> dict[str, Any]:
    """Each case in its own process, so that its peak RSS is its own."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(case, *args).result()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"grid {QUICK_GRID}, not {FULL_GRID}")
    parser.add_argument("--grid", help="largest chunk grid x,y,z (also run at 1/2 and 1/4)")
    parser.add_argument("-k", type=int, default=8, help="objects crossing each face")
    parser.add_argument("-n", type=int, default=64, help="local ids per chunk")
    parser.add_argument("--chains", type=int, default=6, help="long neurites per chunk")
    parser.add_argument("--flat-max-chunks", type=int, default=2**18, help="flat baseline up to")
    args = parser.parse_args(argv)
    top = tuple(map(int, args.grid.split(","))) if args.grid else (QUICK_GRID if args.quick else FULL_GRID)  # fmt: skip
    sizes = sorted({tuple(max(1, g // d) for g in top) for d in (4, 2, 1)}, key=math.prod)
    results = []
    for i, grid in enumerate(sizes):
        chunks = math.prod(grid)
        res = {"grid": list(grid), "chunks": chunks, "faces": faces(grid)}
        res["hier"] = h = in_fresh_process("hier", grid, args.k, args.n, args.chains, i == 0)
        if chunks <= args.flat_max_chunks:
            res["flat"] = in_fresh_process("flat", grid, args.k, args.n, args.chains, False)
        results.append(res)
        print(f"\n{'x'.join(map(str, grid))}: {chunks} chunks, {res['faces']} faces, "
              f"{h['edges']} edges ({16 * h['edges'] / MB:.1f} MB level 0), "
              f"{len(h['levels'])} levels, {h['seconds']:.2f} s")  # fmt: skip
        if "verified" in h:
            print("  verified: final ids = flat components() for {labels} labels "
                  "({sets} sets, the largest spans {largest_set_chunks} chunks)".format(**h["verified"]))  # fmt: skip
        print("  level nodes   time s  read s  resolve s  big-node edges  faces  in+out KB  "
              "peak KB  passed-up MB  maps MB  big map KB")
        for lv in h["levels"]:
            print(f"  {lv['level']:5} {lv['nodes']:5} {lv['seconds']:8.2f} {lv['read_s']:7.2f} "
                  f"{lv['resolve_s']:10.2f} {lv['node_edges']:15} {lv['node_faces']:6} "
                  f"{lv['node_bytes'] / 1024:10.0f} {lv['node_peak_bytes'] / 1024:8.0f} "
                  f"{lv['up_bytes'] / MB:13.2f} {lv['map_bytes'] / MB:8.2f} "
                  f"{lv['largest_map_bytes'] / 1024:11.1f}")  # fmt: skip

    print("\n| grid | chunks | faces | big-node edges | big-node faces | in+out MB | node peak MB "
          "| storage MB | hier s | hier RSS MB | flat s | flat peak MB | flat RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        h, big, f = r["hier"], r["hier"]["largest"], r.get("flat")
        fl = f"{f['seconds']:.2f} | {f['peak_bytes'] / MB:.1f} | {f['rss_mb']:.0f}" if f else "- | - | -"  # fmt: skip
        print(f"| {'x'.join(map(str, r['grid']))} | {r['chunks']} | {r['faces']} | "
              f"{big['node_edges']} | {big['node_faces']} | {big['node_bytes'] / MB:.2f} | "
              f"{big['node_peak_bytes'] / MB:.2f} | {h['storage_bytes'] / MB:.1f} | "
              f"{h['seconds']:.2f} | {h['rss_mb']:.0f} | {fl} |")  # fmt: skip
    for a, b in itertools.pairwise(results):
        ba, bb = a["hier"]["largest"], b["hier"]["largest"]
        print(f"  {'x'.join(map(str, a['grid']))} → {'x'.join(map(str, b['grid']))}: chunks "
              f"×{b['chunks'] / a['chunks']:.1f}, faces ×{b['faces'] / a['faces']:.1f}, largest "
              f"node edges ×{bb['node_edges'] / ba['node_edges']:.2f}, its peak "
              f"×{bb['node_peak_bytes'] / ba['node_peak_bytes']:.2f}")  # fmt: skip
    last = results[-1]
    h, big, f = last["hier"], last["hier"]["largest"], last.get("flat")
    name = "x".join(map(str, last["grid"]))
    rows = [
        common.row("stitch", f"hierarchical resolve, {name} chunks", h["seconds"], "s",
                   note=f"{last['chunks']} chunks, {len(h['levels'])} levels, 1 process"),
        common.row("stitch", f"largest node peak (tracemalloc), {name}",
                   big["node_peak_bytes"] / MB, "MB",
                   note=f"level {big['level']}: {big['node_edges']} edges over "
                   f"{big['node_faces']} faces; in+out {big['node_bytes'] / MB:.2f} MB"),
    ]  # fmt: skip
    if f:
        rows += [
            common.row("stitch", f"flat components() on all edges, {name}", f["seconds"], "s",
                       note=f"peak {f['peak_bytes'] / MB:.0f} MB, RSS {f['rss_mb']:.0f} MB"),
            common.row("stitch", f"flat peak / largest node peak, {name}",
                       f["peak_bytes"] / big["node_peak_bytes"], "×"),
        ]  # fmt: skip
    common.write_results("stitch", {
        "quick": args.quick, "k": args.k, "n": args.n, "chains": args.chains,
        "workload": f"octree resolve of synthetic face matches, grids "
                    f"{', '.join('x'.join(map(str, s)) for s in sizes)}, K={args.k}, N={args.n}",
        "sizes": results, "rows": rows})  # fmt: skip
    common.print_rows(rows)
    return {"sizes": results, "rows": rows}


if __name__ == "__main__":
    main(sys.argv[1:])
