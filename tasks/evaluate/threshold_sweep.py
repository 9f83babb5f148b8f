"""Scores of several agglomerations of one set of supervoxels, from one contingency table.

The table of (supervoxel, ground-truth object) voxel counts is measured once; each merge
threshold's supervoxel → segment mapping turns it into that segmentation's table, summed by
(segment, object). No segmentation is written to be scored.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from petavox.tasks.evaluate.metrics import Contingency, merge_all, scores


def remapped(table: Contingency, svs: np.ndarray, segments: np.ndarray) -> Contingency:
    """The table with each supervoxel replaced by its segment (ids missing from `svs`, such as
    0, stay as they are)."""
    order = np.argsort(svs)
    svs, segments = np.asarray(svs, np.uint64)[order], np.asarray(segments, np.uint64)[order]
    seg = table.seg.copy()
    if len(svs):
        at = np.minimum(np.searchsorted(svs, seg), len(svs) - 1)
        hit = svs[at] == seg
        seg[hit] = segments[at[hit]]
    moved = Contingency(seg=seg, gt=table.gt, count=table.count, n_ignored=table.n_ignored)
    return merge_all([moved])


def sweep_row(threshold: float, table: Contingency, svs, segments) -> dict[str, Any]:
    """One threshold's scores, and how many segments it leaves among the scored voxels."""
    merged = remapped(table, svs, segments)
    return {
        "merge_threshold": threshold,
        **scores(merged).to_dict(),
        "segments": len(np.unique(merged.seg[merged.seg != 0])),
    }


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The scores as a text table, the best ARAND marked."""
    best = min(range(len(rows)), key=lambda i: rows[i]["arand"])
    lines = ["threshold   ARAND   VOI split   VOI merge   VOI sum   segments"]
    for i, r in enumerate(rows):
        voi = r["voi_split"] + r["voi_merge"]
        lines.append(
            f"{r['merge_threshold']:9.3f}   {r['arand']:.3f}   {r['voi_split']:9.3f}   "
            f"{r['voi_merge']:9.3f}   {voi:7.3f}   {r['segments']:8d}"
            + ("   ← best ARAND" if i == best else "")
        )
    return "\n".join(lines)


def sweep_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """ARAND and VOI split / merge against the threshold, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    t = [r["merge_threshold"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.88, wspace=0.25)
    fig.suptitle(title, fontsize=10)
    left.plot(t, [r["arand"] for r in rows], "o-", color="tab:purple")
    left.set_xlabel("merge threshold")
    left.set_ylabel("adapted Rand error")
    right.plot(t, [r["voi_split"] for r in rows], "o-", label="VOI split (over-segmentation)")
    right.plot(t, [r["voi_merge"] for r in rows], "o-", label="VOI merge (under-segmentation)")
    right.set_xlabel("merge threshold")
    right.set_ylabel("bits")
    right.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
