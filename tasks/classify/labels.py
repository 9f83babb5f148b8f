"""The user's labelled segments (`classify --labels FILE`): a CSV with a header
``segment_id,class`` and one row per segment, checked line by line before anything runs."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

import numpy as np

from petavox.tasks.core.errors import InputError

CLASS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")


@dataclass(frozen=True)
class Labels:
    ids: np.ndarray  # uint64, ascending, distinct
    y: np.ndarray  # int64 index into `classes`, per id
    classes: tuple[str, ...]  # sorted


def parse_labels(text: str, source: str, folds: int) -> Labels:
    """The labels in `text` (from `source`, for messages); every class needs `folds` rows or more
    (the cross-validation's folds) and there must be two classes."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip().lower() for c in rows[0]] != ["segment_id", "class"]:
        raise InputError(f"{source}: the first line must be the header 'segment_id,class'")
    found: dict[int, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise InputError(f"{source} line {line}: expected segment_id,class, got {row!r}")
        sid, name = row[0].strip(), row[1].strip()
        if not sid.isdigit() or int(sid) == 0 or int(sid) >= 2**64:
            raise InputError(f"{source} line {line}: {sid!r} is not a segment id (1 to 2^64-1)")
        if not CLASS_NAME.fullmatch(name):
            raise InputError(
                f"{source} line {line}: class {name!r} must be a word (letters, digits, _ and -, "
                "starting with a letter)"
            )
        if found.get(int(sid), name) != name:
            raise InputError(f"{source} line {line}: segment {sid} is labelled twice, differently")
        found[int(sid)] = name
    classes = tuple(sorted(set(found.values())))
    if len(classes) < 2:
        raise InputError(f"{source}: labels of two classes at least are needed, got {classes}")
    counts = {c: sum(v == c for v in found.values()) for c in classes}
    few = {c: n for c, n in counts.items() if n < folds}
    if few:
        raise InputError(
            f"{source}: classes {few} have fewer than {folds} labelled segments; the "
            f"{folds}-fold cross-validation needs {folds} of each (label more, or lower folds)"
        )
    ids = np.array(sorted(found), np.uint64)
    y = np.array([classes.index(found[int(i)]) for i in ids], np.int64)
    return Labels(ids, y, classes)
