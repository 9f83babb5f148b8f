"""How well an alignment holds, per section, without any truth: the quality report.

From the neighbour matches (section z against z − 1) and the solved transforms:

- `matched`: the fraction of the section's patches that matched a neighbour (confidence at
  least `min_confidence`), the better of its two neighbours;
- `confidence`: the mean confidence of those patches;
- `residual_px`: the RMS distance between what the matches measured and what the solved
  transforms say (before the content's motion is split off), over the matched patches of the
  neighbour that agrees best: how far the solve had to disagree with the data (a bad link
  shows in both of its sections, a bad section in both of its links);
- `content_motion_px`: the smooth motion kept as the content's own (`drift`), and
  `correction_px`: the translation undone.

Flags: `weak` (no neighbour matched over `WEAK_MATCHED` of the patches: blank, damaged or
noise), `bridged` (weak, and its two neighbours matched each other over it, so the rest of the
stack holds), `large residual` (above `LARGE_RESIDUAL_PX`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from petavox.tasks.align.render import SectionTransforms
from petavox.tasks.align.solve import Pair, SolveParams, aligned_points
from petavox.tasks.core.geometry import Box

WEAK_MATCHED = 0.25
LARGE_RESIDUAL_PX = 2.0


@dataclass(frozen=True)
class PairQuality:
    matched: float  # fraction of patches at or above min_confidence
    confidence: float  # mean confidence of those
    squared: np.ndarray  # squared residuals (px²) of those, after the solve


def pair_quality(pair: Pair, solved: SectionTransforms, min_confidence: float) -> PairQuality:
    flow = pair.flow
    ok = flow.confidence >= min_confidence
    if not ok.any():
        return PairQuality(0.0, 0.0, np.zeros(0))
    moving, reference = solved.first_section + pair.moving, solved.first_section + pair.reference
    aligned = aligned_points(flow.points[ok], partial(solved.at, reference))
    predicted = solved.at(moving, aligned) - solved.at(reference, aligned)
    squared = ((predicted - flow.displacement[ok]) ** 2).sum(axis=1)
    return PairQuality(float(ok.mean()), float(flow.confidence[ok].mean()), squared)


def _section_row(z: int, links: list[PairQuality], bridge: PairQuality | None) -> dict[str, Any]:
    matched = max((q.matched for q in links), default=0.0)
    used = [q for q in links if q.matched > 0]
    residual = min((float(np.sqrt(q.squared.mean())) for q in used), default=None)
    flags = []
    if matched < WEAK_MATCHED:
        flags.append("weak")
        if bridge is not None and bridge.matched >= WEAK_MATCHED:
            flags.append("bridged")
    if residual is not None and residual > LARGE_RESIDUAL_PX:
        flags.append("large residual")
    return {
        "z": z,
        "matched": round(matched, 3),
        "confidence": round(float(np.mean([q.confidence for q in used])), 3) if used else 0.0,
        "residual_px": None if residual is None else round(residual, 3),
        "flags": flags,
    }


def section_quality(
    pairs: list[Pair], solved: SectionTransforms, sections: int, min_confidence: float
) -> list[dict[str, Any]]:
    """One row per section (see the module doc), in section order."""
    by_link = {(p.moving, p.reference): pair_quality(p, solved, min_confidence) for p in pairs}
    rows = []
    for k in range(sections):
        links = [by_link[key] for key in ((k, k - 1), (k + 1, k)) if key in by_link]
        row = _section_row(solved.first_section + k, links, by_link.get((k + 1, k - 1)))
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    residuals = [r["residual_px"] for r in rows if r["residual_px"] is not None]
    return {
        "sections": len(rows),
        "residual_median_px": round(float(np.median(residuals)), 3) if residuals else None,
        "residual_max_px": round(float(np.max(residuals)), 3) if residuals else None,
        "matched_median": round(float(np.median([r["matched"] for r in rows])), 3),
        "flagged": {str(r["z"]): r["flags"] for r in rows if r["flags"]},
    }


def alignment_report(
    pairs: list[Pair],
    solved: SectionTransforms,
    kept: SectionTransforms,
    volume: Box,
    params: SolveParams,
    window: float | None,
) -> dict[str, Any]:
    """The report: per section (`section_quality`) with, at the volume's centre, the
    translation undone (`kept`, as rendered) and the content motion left (`solved` − `kept`),
    x and y in pixels; and its summary."""
    sections = volume.shape[2]
    rows = section_quality(pairs, solved, sections, params.min_confidence)
    centre = np.array([[(volume.start[a] + volume.stop[a]) / 2 for a in range(2)]])
    for row in rows:
        full, undone = solved.at(row["z"], centre)[0], kept.at(row["z"], centre)[0]
        row["correction_px"] = [round(float(v), 3) for v in undone]
        row["content_motion_px"] = [round(float(v), 3) for v in full - undone]
    summary = summarise(rows)
    summary["drift_window"] = None if window is None else round(window, 2)
    return {"summary": summary, "per_section": rows}
