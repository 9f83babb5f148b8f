"""Stitch resolve: the octree union-find of chunk-face matches vs one flat union-find.

Synthetic face matches of a chunk grid (default 64×64×32 = 131072 chunks): K objects cross each
+ face between random local ids 1..N of the two chunks, and C "long neurites" (local ids 1..C)
cross every face along one axis each, so that sets span the grid. A chunk's edges are a pure
function of its index (splitmix64), made when a level-1 node reads them, never all held. Levels
run as `ResolveJob.run` does (same gather, `inside` test, `resolve_node`, `sorted_map`), node by
node in one process; passed-up edges and maps go to dicts (the analogue of object storage,
measured apart). Per grid size, each in a fresh process: time per level, the largest node's
input edges, bytes in+out and tracemalloc peak, storage totals, peak RSS; and the same for one
flat `components()` over all edges. On the smallest grid the final ids must equal the flat ones.

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

from petavox.tasks.segment import equivalence as eq

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
    ids: eq.IdSpace
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
            h = splitmix64((here * U(3) + U(axis)) * U(self.k) + np.arange(self.k, dtype=U))
            a, b = h % U(self.n) + U(1), (h >> U(32)) % U(self.n) + U(1)
            chain = np.arange(axis, self.chains, 3, dtype=U) + U(1)
            for x, y in ((a, b), (chain, chain)):
                pair = np.broadcast_arrays(here * stride + x, (here + U(step)) * stride + y)
                parts.append(np.stack(pair, -1).reshape(-1, 2))
        return eq.unique_edges(np.concatenate(parts))


def faces(grid: Grid) -> int:
    return sum((grid[a] - 1) * math.prod(grid) // grid[a] for a in range(3))


def node_faces(grid: Grid, level: int, node: tuple[int, ...]) -> int:
    """Chunk faces on the node's children's boundaries with a side in it: what it must see."""
    lo = [i << level for i in node]
    hi = [min((i + 1) << level, n) for i, n in zip(node, grid)]
    total, child = 0, 1 << (level - 1)
    for a in range(3):
        cuts = [p for p in range(max(lo[a], 1), min(hi[a] + 1, grid[a])) if p % child == 0]
        total += len(cuts) * math.prod(hi[b] - lo[b] for b in range(3) if b != a)
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
    mapping, up = eq.resolve_node(edges[touching], inside[touching])
    return edges, eq.sorted_map(mapping), up, t1 - t0, time.perf_counter() - t1


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def hierarchical(m: Model, verify: bool) -> dict[str, Any]:
    grid, passed, maps, levels = m.ids.grid_shape, {}, [], []
    for level in range(1, math.ceil(math.log2(max(grid))) + 1):
        shape, child_shape = ([-(-n >> lv) for n in grid] for lv in (level, level - 1))
        up, lmaps, read, resolve, big = {}, {}, 0.0, 0.0, (-1, (0, 0, 0), 0)
        started = time.perf_counter()
        for node in itertools.product(*map(range, shape)):
            edges, lmaps[node], up[node], r, s = run_node(m, level, node, child_shape, passed)
            read, resolve = read + r, resolve + s
            if len(edges) > big[0]:
                big = (len(edges), node, edges.nbytes + lmaps[node].nbytes + up[node].nbytes)
        seconds = time.perf_counter() - started
        tracemalloc.start()  # the largest node again, alone: its working memory
        run_node(m, level, big[1], child_shape, passed)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        maps.append(lmaps)
        passed = up
        map_bytes = [a.nbytes for a in lmaps.values()]
        levels.append(
            {
                "level": level,
                "nodes": len(up),
                "seconds": seconds,
                "read_s": read,
                "resolve_s": resolve,
                "node_edges": big[0],
                "node": list(big[1]),
                "node_faces": node_faces(grid, level, big[1]),
                "node_bytes": big[2],
                "node_peak_bytes": peak,
                "up_bytes": sum(a.nbytes for a in up.values()),
                "map_bytes": sum(map_bytes),
                "largest_map_bytes": max(map_bytes),
            }
        )
    out = {
        "levels": levels,
        "seconds": sum(lv["seconds"] for lv in levels),
        "rss_mb": rss_mb(),
        "largest": max(levels, key=lambda lv: lv["node_edges"]),
        "storage_bytes": sum(lv["up_bytes"] + lv["map_bytes"] for lv in levels),
    }
    if verify:  # every label of every chunk: its chain of maps vs one flat union-find
        labels = (
            np.arange(math.prod(grid), dtype=U)[:, None] * U(m.ids.stride)
            + np.arange(1, m.n + 1, dtype=U)
        ).ravel()
        ids, roots = eq.components(m.edges((0, 0, 0), grid), extra=labels)
        want, got = roots[np.searchsorted(ids, labels)], np.empty_like(labels)
        for c, zyx in enumerate(np.ndindex(*grid[::-1])):  # linear chunk order
            chain = [lm[tuple(i >> lv for i in zyx[::-1])] for lv, lm in enumerate(maps, 1)]
            got[c * m.n : (c + 1) * m.n] = eq.apply_maps(labels[c * m.n : (c + 1) * m.n], chain)
        assert np.array_equal(got, want), "hierarchical ids differ from the flat union-find"
        sets, sizes = np.unique(want, return_counts=True)
        giant = labels[want == sets[sizes.argmax()]] // U(m.ids.stride)
        out["verified"] = {
            "labels": len(labels),
            "sets": len(sets),
            "largest_set_chunks": len(np.unique(giant)),
        }
    return out


def flat(m: Model) -> dict[str, Any]:
    started = time.perf_counter()
    edges = m.edges((0, 0, 0), m.ids.grid_shape)
    made = time.perf_counter()
    eq.components(edges)
    seconds = time.perf_counter() - made
    tracemalloc.start()  # again, traced; its input (all edges) counts as a node's does
    eq.components(edges)
    peak = tracemalloc.get_traced_memory()[1] + edges.nbytes
    tracemalloc.stop()
    return {"seconds": seconds, "make_s": made - started, "peak_bytes": peak, "rss_mb": rss_mb()}


def case(kind: str, grid: Grid, k: int, n: int, chains: int, verify: bool) -> dict[str, Any]:
    m = Model(eq.IdSpace(grid, 2**20), k, n, chains)
    eq.components(np.array([[1, 2]], U))  # warm up: scipy's first import is not the resolver's
    if kind == "flat":
        return flat(m)
    res = hierarchical(m, verify)
    res["edges"] = sum(len(m.edges((0, 0, z), (grid[0], grid[1], z + 1))) for z in range(grid[2]))
    return res


def in_fresh_process(*args: Any) -> dict[str, Any]:
    """Each case in its own process, so that its peak RSS is its own."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(case, *args).result()


def name(grid: Any) -> str:
    return "x".join(map(str, grid))


def table(head: str, rows: list[list[Any]]) -> None:
    print("\n| " + head.replace(",", " | ") + " |\n|" + "---:|" * (head.count(",") + 1))
    for r in rows:
        cells = (f"{v:.2f}" if isinstance(v, float) else str(v) for v in r)
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"grid {QUICK_GRID}, not {FULL_GRID}")
    parser.add_argument("--grid", help="largest chunk grid x,y,z (also run at 1/2 and 1/4)")
    parser.add_argument("-k", type=int, default=8, help="objects crossing each face")
    parser.add_argument("-n", type=int, default=64, help="local ids per chunk")
    parser.add_argument("--chains", type=int, default=6, help="long neurites per chunk")
    parser.add_argument("--flat-max-chunks", type=int, default=2**18, help="flat baseline up to")
    args = parser.parse_args(argv)
    top = QUICK_GRID if args.quick else FULL_GRID
    top = tuple(map(int, args.grid.split(","))) if args.grid else top
    sizes = sorted({tuple(max(1, g // d) for g in top) for d in (4, 2, 1)}, key=math.prod)
    results = []
    for i, grid in enumerate(sizes):
        chunks, params = math.prod(grid), (grid, args.k, args.n, args.chains)
        res = {"grid": list(grid), "chunks": chunks, "faces": faces(grid)}
        res["hier"] = h = in_fresh_process("hier", *params, i == 0)
        res["level0_bytes"] = 16 * h["edges"]
        if chunks <= args.flat_max_chunks:
            res["flat"] = in_fresh_process("flat", *params, False)
        results.append(res)
        print(
            f"\n{name(grid)}: {chunks} chunks, {res['faces']} faces, {h['edges']} edges "
            f"({res['level0_bytes'] / MB:.1f} MB level 0), "
            f"{len(h['levels'])} levels"
        )
        if "verified" in h:
            v = h["verified"]
            print(
                f"verified: final ids = flat components() for {v['labels']} labels "
                f"({v['sets']} sets, the largest spans {v['largest_set_chunks']} "
                "chunks)"
            )
        table(
            "level,nodes,time s,read s,resolve s,big node edges,its faces,in+out KB,peak KB,"
            "passed-up MB,maps MB,big map KB",
            [
                [
                    lv["level"],
                    lv["nodes"],
                    lv["seconds"],
                    lv["read_s"],
                    lv["resolve_s"],
                    lv["node_edges"],
                    lv["node_faces"],
                    lv["node_bytes"] / 1024,
                    lv["node_peak_bytes"] / 1024,
                    lv["up_bytes"] / MB,
                    lv["map_bytes"] / MB,
                    lv["largest_map_bytes"] / 1024,
                ]
                for lv in h["levels"]
            ],
        )

    table(
        "grid,chunks,faces,big node edges,its faces,in+out MB,node peak MB,storage MB,hier s,"
        "hier RSS MB,flat s,flat peak MB,flat RSS MB",
        [
            [
                name(r["grid"]),
                r["chunks"],
                r["faces"],
                b["node_edges"],
                b["node_faces"],
                b["node_bytes"] / MB,
                b["node_peak_bytes"] / MB,
                r["hier"]["storage_bytes"] / MB,
                r["hier"]["seconds"],
                r["hier"]["rss_mb"],
                *([f["seconds"], f["peak_bytes"] / MB, f["rss_mb"]] if f else ["-"] * 3),
            ]
            for r in results
            for b, f in [(r["hier"]["largest"], r.get("flat"))]
        ],
    )
    print(
        "hier RSS includes the storage dicts (all maps, passed-up edges of two levels); node "
        "peak: tracemalloc, the largest node's task, its input included"
    )
    for a, b in itertools.pairwise(results):
        x, y = a["hier"]["largest"], b["hier"]["largest"]
        print(
            f"{name(a['grid'])} → {name(b['grid'])}: chunks ×{b['chunks'] / a['chunks']:.1f}, "
            f"faces ×{b['faces'] / a['faces']:.1f}; largest node: its faces "
            f"×{y['node_faces'] / x['node_faces']:.2f}, edges "
            f"×{y['node_edges'] / x['node_edges']:.2f}, "
            f"peak ×{y['node_peak_bytes'] / x['node_peak_bytes']:.2f}"
        )
    last, where = results[-1], name(top)
    h, big, f = last["hier"], last["hier"]["largest"], last.get("flat")
    rows = [
        common.row(
            "stitch",
            f"hierarchical resolve, {where} chunks, 1 process",
            h["seconds"],
            "s",
            note=f"{len(h['levels'])} levels",
        ),
        common.row(
            "stitch",
            f"largest node peak (tracemalloc), {where}",
            big["node_peak_bytes"] / MB,
            "MB",
            note=f"level {big['level']}: {big['node_edges']} edges, {big['node_faces']} faces",
        ),
    ]
    if f:
        rows += [
            common.row(
                "stitch",
                f"flat components() on all edges, {where}",
                f["seconds"],
                "s",
                note=f"RSS {f['rss_mb']:.0f} MB",
            ),
            common.row(
                "stitch",
                f"flat peak / largest node peak, {where}",
                f["peak_bytes"] / big["node_peak_bytes"],
                "×",
                note=f"{f['peak_bytes'] / MB:.0f} MB flat",
            ),
        ]
    common.write_results(
        "stitch",
        {
            "quick": args.quick,
            "k": args.k,
            "n": args.n,
            "chains": args.chains,
            "sizes": results,
            "workload": f"octree resolve of synthetic face matches, grids "
            f"{', '.join(map(name, sizes))}, K={args.k}, N={args.n}",
            "rows": rows,
        },
    )
    common.print_rows(rows)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
