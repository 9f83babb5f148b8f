"""How strong the connections are: the distribution of synapses per connected pair of segments
(most pairs share one synapse; H01's rare strong pairs share ten or more), read one edge file
at a time, with the strongest pairs kept."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

Table = dict[str, np.ndarray]


def strengths(edge_tables: Iterable[Table], top: int = 20) -> dict:
    """Pairs per synapse count, totals, and the `top` strongest pairs (pre, post, synapses),
    over the connectome's edge tables (pre_id, post_id, synapses)."""
    histogram: dict[int, int] = {}
    best = np.zeros(0, [("pre", np.uint64), ("post", np.uint64), ("synapses", np.int64)])
    pairs = synapses = 0
    for edges in edge_tables:
        counts = np.asarray(edges["synapses"], np.int64)
        values, times = np.unique(counts, return_counts=True)
        for v, t in zip(values.tolist(), times.tolist()):
            histogram[v] = histogram.get(v, 0) + t
        pairs, synapses = pairs + len(counts), synapses + int(counts.sum())
        rows = np.zeros(len(counts), best.dtype)
        rows["pre"], rows["post"], rows["synapses"] = edges["pre_id"], edges["post_id"], counts
        merged = np.concatenate([best, rows])
        best = merged[np.lexsort((merged["post"], merged["pre"], -merged["synapses"]))[:top]]
    tail = {k: sum(n for v, n in histogram.items() if v >= k) for k in (2, 5, 10)}
    return {
        "pairs": pairs,
        "synapses": synapses,
        "mean": synapses / pairs if pairs else 0.0,
        "pairs_by_synapses": {str(k): histogram[k] for k in sorted(histogram)},
        "pairs_with_at_least": {str(k): n for k, n in tail.items()},
        "strongest": [
            {"pre": int(r["pre"]), "post": int(r["post"]), "synapses": int(r["synapses"])}
            for r in best
        ],
    }
