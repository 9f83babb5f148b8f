"""The analysis's figures as PNG bytes (matplotlib, Agg): class sizes, the orientation of the
neurons' axes, and the connection strengths."""

from __future__ import annotations

import io

import numpy as np


def _figure(width: float = 6.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt, plt.subplots(figsize=(width, height), dpi=100)


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def class_sizes_png(sizes: dict[str, np.ndarray]) -> bytes:
    """A histogram of log10 volume per class."""
    plt, (fig, ax) = _figure()
    for name, volumes in sizes.items():
        v = volumes[volumes > 0]
        if len(v):
            ax.hist(np.log10(v), bins=30, histtype="step", label=f"{name} ({len(v)})")
    ax.set_xlabel("log10 volume (µm³)")
    ax.set_ylabel("segments")
    ax.legend()
    return _png(plt, fig)


def orientation_png(axes: np.ndarray, direction: np.ndarray, aligned: np.ndarray) -> bytes:
    """The axes on an equal-area map of the upper hemisphere (an axis and its opposite are one
    point), the aligned subset in red and the preferred direction as a cross."""
    plt, (fig, ax) = _figure(5.0, 5.0)

    def project(v: np.ndarray) -> np.ndarray:
        v = np.where(v[:, 2:3] < 0, -v, v)
        r = np.sqrt(2 * (1 - np.clip(v[:, 2], -1, 1)))  # Lambert: equal area
        phi = np.arctan2(v[:, 1], v[:, 0])
        return np.column_stack([r * np.cos(phi), r * np.sin(phi)])

    if len(axes):
        xy = project(axes)
        ax.scatter(*xy[~aligned].T, s=8, c="0.5", label="other")
        ax.scatter(*xy[aligned].T, s=12, c="tab:red", label="aligned")
    if np.all(np.isfinite(direction)):
        ax.scatter(*project(np.asarray(direction)[None]).T, marker="x", s=80, c="k")
    ax.add_patch(plt.Circle((0, 0), np.sqrt(2), fill=False, color="0.7"))
    ax.set_aspect("equal")
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-1.5, 1.5)
    ax.set_title("neurons' principal axes (equal-area, z up)")
    ax.legend(loc="lower right")
    return _png(plt, fig)


def strengths_png(pairs_by_synapses: dict[str, int]) -> bytes:
    """Connected pairs by their number of synapses, log scale."""
    plt, (fig, ax) = _figure()
    counts = sorted((int(k), v) for k, v in pairs_by_synapses.items())
    if counts:
        ax.bar([k for k, _ in counts], [v for _, v in counts], color="tab:blue")
        ax.set_yscale("log")
    ax.set_xlabel("synapses per connected pair")
    ax.set_ylabel("pairs")
    return _png(plt, fig)
