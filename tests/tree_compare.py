"""Byte-level comparison of layer folders. Left out: the ledger (timings) and `provenance`
files (dates, source paths and epochs of the run that wrote the layer)."""

from __future__ import annotations

from pathlib import Path


def layer_files(root: str | Path) -> dict[str, bytes]:
    root = Path(root)
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "ledger" not in p.relative_to(root).parts and p.name != "provenance"
    }
