"""How well a section's montage holds, without any truth: per tile and per pair, and a picture.

- a pair's `residual_px`: the RMS distance between where its matched points land from either
  tile after the solve (how far the solve had to disagree with the matches);
- a tile's `residual_px`: the same over all its pairs, and `matched`: its matched points;
- a pair's `step` and `noise` (`flatfield.seam_steps`): the mean brightness difference of the
  two corrected tiles over their overlap, and their pixel noise; `visible_seams` counts the
  pairs whose step is above their noise;
- flags: `disconnected` (matched no neighbour: placed at its stage position), `weak` (fewer than
  `WEAK_POINTS` matched points, or a residual above `LARGE_RESIDUAL_PX`), and `moved` (placed
  more than the matcher's search range from its stage position: check the stage positions).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from petavox.tasks.montage.tile_matches import TileMatches
from petavox.tasks.montage.tile_solve import match_residuals
from petavox.tasks.montage.tile_transforms import TileTransform

WEAK_POINTS = 3
LARGE_RESIDUAL_PX = 1.0


def _rms(values: np.ndarray) -> float | None:
    return round(float(np.sqrt((values**2).mean())), 3) if len(values) else None


def _tile_row(
    k: int,
    url: str,
    stage: np.ndarray,
    transform: TileTransform,
    residuals: list[np.ndarray],
    max_offset: float,
) -> dict[str, Any]:
    found = np.concatenate(residuals) if residuals else np.zeros(0)
    moved = float(np.linalg.norm(transform.forward(np.zeros((1, 2)))[0] - stage))
    flags = []
    if not len(found):
        flags.append("disconnected")
    elif len(found) < WEAK_POINTS or _rms(found) > LARGE_RESIDUAL_PX:  # type: ignore[operator]
        flags.append("weak")
    if moved > max_offset:
        flags.append("moved")
    return {
        "tile": k,
        "url": url,
        "stage": stage.round(2).tolist(),
        "matched": len(found),
        "residual_px": _rms(found),
        "moved_px": round(moved, 2),
        "flags": flags,
    }


def section_report(
    section: int,
    urls: list[str],
    stage: np.ndarray,
    matches: list[TileMatches],
    transforms: list[TileTransform],
    max_offset: float,
    seams: list[dict[str, Any]],
) -> dict[str, Any]:
    """The section's report: `tiles` and `pairs` rows and a `summary`."""
    residuals = match_residuals(matches, transforms)
    seam_of = {tuple(s["tiles"]): s for s in seams}
    per_tile: list[list[np.ndarray]] = [[] for _ in urls]
    pairs = []
    for m, r in zip(matches, residuals):
        per_tile[m.first].append(r)
        per_tile[m.second].append(r)
        pairs.append(
            {
                "tiles": [m.first, m.second],
                "matched": len(r),
                "residual_px": _rms(r),
                "coarse_score": round(m.score, 3),
                **{k: v for k, v in seam_of.get((m.first, m.second), {}).items() if k != "tiles"},
            }
        )
    tiles = [
        _tile_row(k, url, stage[k], transform, per_tile[k], max_offset)
        for k, (url, transform) in enumerate(zip(urls, transforms))
    ]
    every = np.concatenate(residuals) if residuals else np.zeros(0)
    summary = {
        "section": section,
        "tiles": len(urls),
        "pairs_matched": sum(1 for r in residuals if len(r)),
        "residual_px": _rms(every),
        "residual_max_px": round(float(every.max()), 3) if len(every) else None,
        "lens_px": round(transforms[0].lens.kappa, 3) if transforms else 0.0,
        "seam_step_max": max((s["step"] for s in seams), default=None),
        "visible_seams": sum(1 for s in seams if s["step"] > s["noise"]),
        "flagged": {str(t["tile"]): t["flags"] for t in tiles if t["flags"]},
    }
    return {"summary": summary, "tiles": tiles, "pairs": pairs}


def layout_png(report: dict[str, Any], transforms: list[TileTransform], title: str) -> bytes:
    """The section's tiles where the montage put them, coloured by residual; flagged tiles
    outlined in red and named."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Polygon

    fig, ax = plt.subplots(figsize=(6, 5.5), constrained_layout=True)
    cmap = plt.get_cmap("viridis")
    top = max(LARGE_RESIDUAL_PX, *(t["residual_px"] or 0 for t in report["tiles"]))
    for row, transform in zip(report["tiles"], transforms):
        w, h = transform.lens.shape
        corners = transform.forward(np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1.0]]))
        value = row["residual_px"]
        colour = "0.85" if value is None else cmap(value / top)
        edge = "tab:red" if row["flags"] else "0.2"
        ax.add_patch(Polygon(corners, closed=True, facecolor=colour, edgecolor=edge, alpha=0.6))
        label = f"{row['tile']}" + (f"\n{', '.join(row['flags'])}" if row["flags"] else "")
        ax.text(*corners.mean(axis=0), label, ha="center", va="center", fontsize=7)
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title(title, fontsize=9)
    scale = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, top))
    fig.colorbar(scale, ax=ax, label="match residual after the solve (px)", shrink=0.8)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()
