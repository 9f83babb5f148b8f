"""Byte-level comparison of layer folders (the ledger, which records timings, is left out)."""

from __future__ import annotations

from pathlib import Path


def layer_files(root: str | Path) -> dict[str, bytes]:
    root = Path(root)
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "ledger" not in p.relative_to(root).parts
    }
