"""A proofreader's edits, applied on top of the automatic agglomeration.

The file (JSON)::

    {"join": [[sv_a, sv_b], ...],
     "split": [{"a": [sv, ...], "b": [sv, ...]}, ...]}

- a *split* removes every graph edge between a supervoxel of ``a`` and one of ``b`` before
  merging, so the two sides merge only if a path through other supervoxels joins them (the
  run says which splits did not separate their sides: give more supervoxels of each side);
- a *join* puts the segments of its two supervoxels together after merging (joins win over
  splits).

Ids are supervoxel ids (the supervoxel layer's, as Neuroglancer shows them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.segment.equivalence import components


@dataclass(frozen=True)
class Edits:
    joins: tuple[tuple[int, int], ...] = ()
    splits: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()

    @classmethod
    def parse(cls, text: str, source: str) -> Edits:
        """The edits in `text` (JSON, the module's layout); an `InputError` naming `source`
        and the problem otherwise."""

        def ids(value: object, what: str) -> tuple[int, ...]:
            if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
            ):
                raise InputError(f"{source}: {what} must be a list of supervoxel ids (> 0)")
            return tuple(value)

        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{source} is not JSON ({exc}); see README 'Proofreading'") from None
        if not isinstance(data, dict) or set(data) - {"join", "split"}:
            raise InputError(f'{source}: expected {{"join": [...], "split": [...]}}')
        joins = []
        for pair in data.get("join", []):
            if len(ids(pair, "a join")) != 2:
                raise InputError(f"{source}: a join is a pair of supervoxel ids, got {pair}")
            joins.append(tuple(pair))
        splits = []
        for cut in data.get("split", []):
            if not isinstance(cut, dict) or set(cut) != {"a", "b"}:
                raise InputError(f'{source}: a split is {{"a": [ids], "b": [ids]}}, got {cut}')
            a, b = ids(cut["a"], "a split side"), ids(cut["b"], "a split side")
            if not a or not b or set(a) & set(b):
                raise InputError(f"{source}: a split needs two non-empty, disjoint sides: {cut}")
            splits.append((a, b))
        return cls(joins=tuple(joins), splits=tuple(splits))  # type: ignore[arg-type]

    def __bool__(self) -> bool:
        return bool(self.joins or self.splits)

    def digest(self) -> str:
        blob = json.dumps([self.joins, self.splits]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def watched(self) -> np.ndarray:
        """Every supervoxel the edits name, sorted."""
        ids = [i for pair in self.joins for i in pair]
        ids += [i for a, b in self.splits for i in (*a, *b)]
        return np.unique(np.array(ids, dtype=np.uint64))

    def kept(self, edges: np.ndarray) -> np.ndarray:
        """Which of the (n, 2) supervoxel pairs no split removes."""
        keep = np.ones(len(edges), bool)
        for a, b in self.splits:
            side_a, side_b = np.isin(edges, a), np.isin(edges, b)
            keep &= ~((side_a[:, 0] & side_b[:, 1]) | (side_b[:, 0] & side_a[:, 1]))
        return keep

    def join_map(self, ids: np.ndarray, roots: np.ndarray) -> np.ndarray:
        """(segment, joined segment) rows, sorted, for the joins, given the watched
        supervoxels' segments after merging (`ids` → `roots`)."""
        segment = dict(zip(ids.tolist(), roots.tolist()))
        pairs = [(segment[a], segment[b]) for a, b in self.joins if a in segment and b in segment]
        members, joined = components(np.array(pairs, dtype=np.uint64).reshape(-1, 2))
        moved = members != joined
        return np.stack([members[moved], joined[moved]], axis=1).astype(np.uint64)

    def unseparated(self, ids: np.ndarray, roots: np.ndarray) -> list[int]:
        """Indices of the splits whose two sides still share a segment."""
        segment = dict(zip(ids.tolist(), roots.tolist()))
        found = []
        for k, (a, b) in enumerate(self.splits):
            if {segment.get(i) for i in a} & {segment.get(i) for i in b} - {None}:
                found.append(k)
        return found

    def missing(self, ids: np.ndarray) -> list[int]:
        """Named supervoxels that the graph does not hold."""
        return sorted(set(self.watched.tolist()) - set(ids.tolist()))
