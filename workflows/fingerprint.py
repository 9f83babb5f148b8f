"""A fingerprint of an ingest source's files, so an input edited under the same path is
ingested again (and everything downstream recomputed).

Per file, sorted by name: its name, size, modification time (ns) and a SHA-256 of its first and
last 64 KiB. Reading every byte of a petabyte stack to plan a run is not an option; an edit
changes the modification time, and the sampled hash catches a copy that kept the time but not
the content at either end. A slice folder counts every file in it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SAMPLE = 64 * 1024


def _file_digest(path: Path, digest: hashlib._Hash) -> None:
    stat = path.stat()
    digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    with open(path, "rb") as f:
        digest.update(f.read(SAMPLE))
        if stat.st_size > 2 * SAMPLE:
            f.seek(-SAMPLE, os.SEEK_END)
            digest.update(f.read(SAMPLE))
        elif stat.st_size > SAMPLE:
            digest.update(f.read())


def source_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return [path]


def fingerprint(path: Path) -> str:
    """Hex digest over `path` (a file, or every file of a folder); see the module doc."""
    digest = hashlib.sha256()
    for file in source_files(path):
        _file_digest(file, digest)
    return digest.hexdigest()[:32]
