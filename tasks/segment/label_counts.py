"""A chunk's largest labels by voxel count: what the final relabel returns so the driver can say
how big the largest segment is without any task or the driver holding the volume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOP_K = 16  # labels a chunk reports


@dataclass(frozen=True)
class LabelCounts:
    """The `top` labels of one chunk with their voxel counts (largest first), the chunk's
    labelled (non-zero) voxels and its number of distinct non-zero labels.

    Not a dict on purpose: the ledger keeps a task's dict result for every chunk, and these
    are for the driver's summary only."""

    ids: tuple[int, ...]
    counts: tuple[int, ...]
    labelled: int
    distinct: int

    @property
    def complete(self) -> bool:
        """Every label of the chunk is listed."""
        return len(self.ids) == self.distinct


def top_counts(ids: np.ndarray, counts: np.ndarray, k: int = TOP_K) -> LabelCounts:
    """Sum `counts` per id (ids may repeat: several fragments map to one segment), drop 0, keep
    the `k` largest (ties: the smaller id first)."""
    uniq, inverse = np.unique(np.asarray(ids, np.uint64), return_inverse=True)
    sums = np.zeros(len(uniq), np.int64)
    np.add.at(sums, inverse.ravel(), np.asarray(counts, np.int64))
    keep = uniq != 0
    uniq, sums = uniq[keep], sums[keep]
    order = np.lexsort((uniq, -sums))[:k]
    return LabelCounts(
        ids=tuple(uniq[order].tolist()),
        counts=tuple(sums[order].tolist()),
        labelled=int(sums.sum()),
        distinct=len(uniq),
    )
