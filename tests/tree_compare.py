"""Byte-level comparison of layer folders. Left out: the ledger (timings), `provenance` files
(dates, source paths and epochs of the run that wrote the layer) and the ``.tmp-`` files a
killed task leaves (never read as data: a write goes to one and is renamed into place)."""

from __future__ import annotations

from pathlib import Path


def layer_files(root: str | Path) -> dict[str, bytes]:
    root = Path(root)
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and "ledger" not in p.relative_to(root).parts
        and p.name != "provenance"
        and not p.name.startswith(".tmp-")
    }
