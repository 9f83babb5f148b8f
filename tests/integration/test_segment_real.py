"""`segment` on real EM (gala `test`, its boundary map): quality and connected-components exactness.

The watershed defaults were chosen on gala `train` (README, "Segmentation").
"""

from __future__ import annotations

import numpy as np
import pytest

from petavox.tasks.core.layers import Layer
from petavox.tasks.evaluate.metrics import evaluate
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gala_test(gala_dir, tmp_path_factory):
    data = np.load(gala_dir / "test.npz")
    folder = tmp_path_factory.mktemp("gala")
    np.save(folder / "boundary.npy", data["boundary"])
    return folder, data["gt"].transpose(2, 1, 0), data["boundary"].transpose(2, 1, 0)


def segment_gala(tmp_path, folder, session, chunk_shape, **params) -> np.ndarray:
    stages = [
        {
            "stage": "ingest",
            "input": str(folder / "boundary.npy"),
            "output": "boundary",
            "resolution": [10, 10, 10],
            "storage_chunk": [16, 16, 16],
        },
        {"stage": "segment", "chunk_shape": chunk_shape, **params},
    ]
    run(
        parse_config({"output": f"file://{tmp_path}", "stages": stages}),
        session=session,
        progress=False,
    )
    layer = Layer.open(f"file://{tmp_path}/segmentation")
    return layer.read(layer.bounds(0))


def test_watershed_defaults_beat_gala_agglomeration_for_any_chunking(
    tmp_path, gala_test, ray_session
):
    folder, gt, _ = gala_test
    whole = segment_gala(tmp_path / "whole", folder, ray_session, [208, 112, 64])
    scores = evaluate(whole, gt)
    # gala's own agglomeration of this boundary map: 0.112, VOI 0.305 + 0.365
    assert scores.arand <= 0.10
    assert scores.voi_split + scores.voi_merge <= 0.60
    chunked = segment_gala(
        tmp_path / "chunked", folder, ray_session, [32, 32, 16], halo=[16, 16, 16]
    )
    between = evaluate(chunked, whole, ignore_gt=())
    assert between.voi_split + between.voi_merge <= 0.01


def test_cc_mode_on_gala_is_the_same_for_32x32x16_chunks_and_one_chunk(
    tmp_path, gala_test, ray_session
):
    folder, _, _ = gala_test
    params = {"mode": "cc", "boundary_threshold": 0.5}
    whole = segment_gala(tmp_path / "whole", folder, ray_session, [208, 112, 64], **params)
    chunked = segment_gala(tmp_path / "chunked", folder, ray_session, [32, 32, 16], **params)
    assert evaluate(chunked, whole, ignore_gt=()).voi_split == 0
    assert evaluate(whole, chunked, ignore_gt=()).voi_split == 0
    assert len(np.unique(whole)) > 50
