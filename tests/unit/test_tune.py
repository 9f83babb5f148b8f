"""Segment parameters chosen on held-out ground truth: the split, the sweep, the record in the
model, and `segment` taking them as its defaults (the config still wins)."""

from __future__ import annotations

import numpy as np
import pytest

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.layers import Layer
from petavox.tasks.evaluate.metrics import evaluate
from petavox.tasks.segment.tuning import Trial, best, size_floor, sweep
from petavox.tasks.segment.watershed import WatershedParams
from petavox.tasks.segment.whole_volume import segment_volume
from petavox.tasks.synthetic.generator import SyntheticParams, generate
from petavox.workflows.domain_fit import INFO_KEY
from petavox.workflows.stages.segment import SegmentParams, with_model_defaults
from petavox.workflows.tune import hold_out


def test_hold_out_keeps_the_end_of_the_longest_axis():
    raw = np.arange(50 * 100 * 200, dtype=np.uint32).reshape(50, 100, 200)
    raws, gts, held, where = hold_out([raw.astype(np.uint8)], [raw], 0.3, (32, 64, 64))
    assert raws[0].shape == gts[0].shape == (50, 100, 140)
    assert held[0][1].shape == (50, 100, 60) and held[0][1][0, 0, 0] == 140  # x from 140 on
    assert "x ≥ 140" in where
    with pytest.raises(InputError, match="--holdout 0"):
        small = raw[:, :40, :60]  # x is the longest; 70 % of it (42) holds no 64-voxel patch
        hold_out([small.astype(np.uint8)], [small], 0.3, (32, 64, 64))


@pytest.fixture(scope="module")
def volume():
    v = generate(SyntheticParams(shape=(64, 64, 32), seed=5))
    rng = np.random.default_rng(0)
    boundary = (v.labels == 0).astype(np.float32)
    holes = np.kron(rng.random((16, 16, 8)) < 0.15, np.ones((4, 4, 4))).astype(bool)
    boundary[holes] = 0  # gaps in the membranes, as a small CNN leaves them
    noisy = np.clip(boundary + rng.normal(0, 0.1, boundary.shape), 0, 1)
    return noisy.astype(np.float32), v.labels


def test_the_sweep_scores_every_setting_and_the_best_has_the_lowest_voi(volume):
    boundary, labels = volume
    floor = size_floor([labels])
    assert floor == round(1.5 * np.unique(labels[labels != 0], return_counts=True)[1].mean())
    trials = sweep(
        boundary, labels, floor=floor, seed_radii=(2.0,), merge_thresholds=(0.3, 0.6, 0.95)
    )
    assert len(trials) == 2 * 3 * 2  # seed thresholds × merge thresholds × size penalties
    chosen = best(trials)
    assert chosen.voi == min(t.voi for t in trials)
    unguarded = [t for t in trials if t.merge_threshold == 0.95 and t.merge_size_penalty == 0]
    assert all(t.largest_share > chosen.largest_share for t in unguarded)  # merged across gaps
    guarded = [t for t in trials if t.merge_threshold == 0.95 and t.merge_size_penalty > 0]
    assert all(g.largest_share < u.largest_share for g, u in zip(guarded, unguarded))
    # the trial's scores are what segmenting with its parameters gives
    params = WatershedParams(seeds="distance", seed_threshold=chosen.seed_threshold, seed_radius=2)
    seg = segment_volume(boundary, params, chosen.merge_threshold, chosen.merge_size_penalty, floor)
    assert evaluate(seg, labels).arand == pytest.approx(chosen.arand)


def test_ties_go_to_the_guarded_setting_then_the_lower_merge_threshold():
    def trial(merge: float, penalty: float, voi: float) -> Trial:
        return Trial("distance", 0.3, 2.0, merge, penalty, 100, 0.1, voi / 2, voi / 2, 0.1)

    assert best([trial(0.8, 0.0, 0.3), trial(0.8, 0.1, 0.3)]).merge_size_penalty == 0.1
    assert best([trial(0.8, 0.1, 0.3), trial(0.7, 0.1, 0.3)]).merge_threshold == 0.7
    assert best([trial(0.8, 0.0, 0.29), trial(0.7, 0.1, 0.3)]).merge_size_penalty == 0.0


def boundary_layer(segment: dict | None) -> Layer:
    info = {"scales": [], INFO_KEY: {"model": "m.onnx", "segment": segment}}
    return Layer("file:///nowhere/boundary", info)


def test_segment_takes_the_models_choice_for_what_the_config_leaves_unset():
    chosen = {
        "seeds": "distance",
        "seed_threshold": 0.5,
        "seed_radius": 4.0,
        "merge_threshold": 0.7,
        "merge_size_penalty": 0.1,
        "merge_size_floor": 900,
    }
    params, note = with_model_defaults(SegmentParams(), boundary_layer(chosen))
    assert (params.seeds, params.seed_threshold, params.seed_radius) == ("distance", 0.5, 4.0)
    assert params.merge_threshold == 0.7 and "merge_threshold 0.7" in note
    assert (params.merge_size_penalty, params.merge_size_floor) == (0.1, 900)
    assert note.endswith("from the model")
    mine = SegmentParams(merge_threshold=0.6)
    params, _ = with_model_defaults(mine, boundary_layer(chosen))
    assert params.merge_threshold == 0.6 and params.seeds == "distance"  # the config wins
    for layer in (boundary_layer(None), Layer("file:///nowhere/b", {"scales": []})):
        assert with_model_defaults(SegmentParams(), layer) == (SegmentParams(), "")
    cc = SegmentParams(mode="cc")
    assert with_model_defaults(cc, boundary_layer(chosen)) == (cc, "")


def test_predict_held_out_uses_the_intensity_map_it_is_given():
    """`predict_held_out(..., intensity=)` maps the input as asked (the model's domain is
    passed in) instead of from the volume's own statistics."""
    from petavox.tasks.infer.domain import IntensityMap, intensity_stats
    from petavox.tasks.infer.onnx_model import builtin_path
    from petavox.workflows.tune import predict_held_out

    model = builtin_path("synapses-synthetic.onnx")
    raw = generate(SyntheticParams(shape=(48, 48, 24), seed=5, bold_synapses=True)).raw
    raw = raw.transpose(2, 1, 0)  # z, y, x
    seen = []

    def own_statistics(domain):
        seen.append(domain.intensity)
        image = raw.transpose(2, 1, 0).astype(np.float32) / 255
        return IntensityMap.between(intensity_stats(image), domain.intensity)

    default = predict_held_out(model, raw)
    assert np.array_equal(predict_held_out(model, raw, intensity=own_statistics), default)
    assert seen and seen[0] is not None  # the built-in model records its training intensity
    darker = predict_held_out(model, raw, intensity=lambda d: IntensityMap(0.5, 0.0))
    assert darker.shape == default.shape and not np.allclose(darker, default, atol=0.05)
