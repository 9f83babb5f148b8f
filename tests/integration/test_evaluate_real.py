"""`evaluate` on real EM ground truth (gala), streamed chunk by chunk on Ray."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest

from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.evaluate.metrics import evaluate
from petavox.workflows.pipeline import evaluate_layers
from petavox.workflows.stages.evaluate import TableSum, plan_scores

pytestmark = pytest.mark.integration


def as_layer(url: str, labels_zyx: np.ndarray) -> Layer:
    xyz = np.asfortranarray(labels_zyx.transpose(2, 1, 0).astype(np.uint32))
    spec = LayerSpec(
        layer_type="segmentation",
        dtype="uint32",
        size=Vec3.of(xyz.shape),
        resolution=(10, 10, 10),
        chunk_size=Vec3(32, 32, 16),
        encoding="compressed_segmentation",
    )
    layer = Layer.create(url, spec)
    layer.write(layer.bounds(), xyz)
    return layer


def test_streamed_scores_equal_whole_volume_scores_on_gala(tmp_path, gala_dir, ray_session):
    data = np.load(gala_dir / "test.npz")
    gt = data["gt"]
    seg = cc3d.connected_components(data["boundary"] < 0.5, connectivity=6)
    gt_layer = as_layer(f"file://{tmp_path}/gt", gt)
    seg_layer = as_layer(f"file://{tmp_path}/seg", seg)
    plan = plan_scores(seg_layer, gt_layer, (0,), TableSum(), chunk_shape=Vec3(64, 64, 32))
    assert len(plan.grid) > 1
    streamed = evaluate_layers(
        seg_layer.url, gt_layer.url, ray_session, chunk_shape=Vec3(64, 64, 32), progress=False
    )
    whole = evaluate(seg, gt)
    assert streamed.arand == pytest.approx(whole.arand, abs=1e-12)
    assert streamed.voi_split == pytest.approx(whole.voi_split, abs=1e-12)
    assert streamed.voi_merge == pytest.approx(whole.voi_merge, abs=1e-12)
    assert 0.05 < whole.arand < 0.95  # a crude segmentation: neither perfect nor random
    perfect = evaluate_layers(gt_layer.url, gt_layer.url, ray_session, progress=False)
    assert perfect.arand == pytest.approx(0, abs=1e-12)
