"""`petavox evaluate`: score a segmentation against ground truth, chunk by chunk, on Ray.

Each task returns the contingency table of its chunk; the driver merges tables as they arrive,
so memory holds one table of (segment, ground-truth object) pairs, never a volume.
"""

from __future__ import annotations

from petavox.tasks.core.errors import LayerMismatchError
from petavox.tasks.core.geometry import Chunk, ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.evaluate.evaluate_jobs import ContingencyJob
from petavox.tasks.evaluate.metrics import Contingency, Scores, merge_all, scores
from petavox.workflows.runner import RaySession, StagePlan, execute

DEFAULT_CHUNK = Vec3(256, 256, 64)


class TableSum:
    """Merges chunk tables in batches: memory holds one merged table plus a batch, no volume."""

    BATCH = 32

    def __init__(self) -> None:
        self.tables = [Contingency.empty()]

    def add(self, _chunk: Chunk, table: Contingency) -> None:
        self.tables.append(table)
        if len(self.tables) > self.BATCH:
            self.tables = [merge_all(self.tables)]

    def total(self) -> Contingency:
        self.tables = [merge_all(self.tables)]
        return self.tables[0]


def plan_evaluate(
    seg: Layer, gt: Layer, ignore_gt: tuple[int, ...], chunk_shape: Vec3 = DEFAULT_CHUNK
) -> StagePlan:
    for layer in (seg, gt):
        if layer.layer_type != "segmentation" and layer.dtype.kind not in "ui":
            raise LayerMismatchError(
                f"{layer.url} is a {layer.dtype} {layer.layer_type} layer; evaluate needs integer "
                "labels"
            )
    if seg.bounds(0) != gt.bounds(0):
        raise LayerMismatchError(
            f"segmentation {seg.url} covers {seg.bounds(0)} but ground truth {gt.url} covers "
            f"{gt.bounds(0)}; score layers of the same bounds"
        )
    if seg.resolution(0) != gt.resolution(0):
        raise LayerMismatchError(
            f"segmentation resolution {seg.resolution(0)} differs from ground truth "
            f"{gt.resolution(0)}"
        )
    chunk = gt.chunk_size(0)
    shape = Vec3(*(max(c, (s // c) * c) for s, c in zip(chunk_shape, chunk)))
    bounds = gt.bounds(0)
    return StagePlan(
        label="evaluate",
        stage="evaluate",
        identity="",
        spec={},
        grid=ChunkGrid(bounds, shape, 0, origin=bounds.start),
        job=ContingencyJob(seg, gt, ignore_gt),
        use_ledger=False,
    )


def evaluate_layers(
    seg_url: str,
    gt_url: str,
    session: RaySession,
    *,
    ignore_gt: tuple[int, ...] = (0,),
    context: StorageContext = StorageContext(),
    chunk_shape: Vec3 = DEFAULT_CHUNK,
    progress: bool = True,
) -> Scores:
    seg, gt = Layer.open(seg_url, context), Layer.open(gt_url, context)
    plan = plan_evaluate(seg, gt, ignore_gt, chunk_shape)
    tables = TableSum()
    execute(plan, None, session, on_result=tables.add, progress=progress)
    return scores(tables.total())
