"""The alignment quality report as a picture: per section, the residual of the matches, the
fraction matched, and the motion undone and kept; flagged sections in red."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from petavox.tasks.align.quality import LARGE_RESIDUAL_PX, WEAK_MATCHED


def report_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """A PNG of the per-section `rows` of `quality.section_quality` (with motions added)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    z = np.array([r["z"] for r in rows])
    residual = np.array([np.nan if r["residual_px"] is None else r["residual_px"] for r in rows])
    fig, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True, constrained_layout=True)
    fig.suptitle(title, fontsize=10)
    axes[0].plot(z, residual, ".-", lw=0.8, ms=3)
    axes[0].axhline(LARGE_RESIDUAL_PX, color="0.6", ls="--", lw=0.8)
    axes[0].set_ylabel("match residual (px)")
    axes[1].plot(z, [r["matched"] for r in rows], ".-", lw=0.8, ms=3, color="tab:green")
    axes[1].axhline(WEAK_MATCHED, color="0.6", ls="--", lw=0.8)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_ylabel("patches matched")
    for k, (name, colour) in enumerate((("x", "tab:blue"), ("y", "tab:orange"))):
        undone = [r["correction_px"][k] for r in rows]
        kept = [r["content_motion_px"][k] for r in rows]
        axes[2].plot(z, undone, lw=0.8, color=colour, label=f"undone {name}")
        axes[2].plot(z, kept, lw=1.6, ls="--", color=colour, label=f"content motion kept {name}")
    axes[2].set_ylabel("translation (px)")
    axes[2].set_xlabel("section z")
    axes[2].legend(fontsize=7, ncol=2)
    for row in rows:
        if row["flags"]:
            for ax in axes:
                ax.axvline(row["z"], color="tab:red", alpha=0.35, lw=1.5)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()
