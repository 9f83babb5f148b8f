"""The "clefts" and "synapses" training targets: their targets, sampling and losses, `petavox
train --target clefts|synapses`, and what infer, segment and tune make of such a model (its
metadata, the layer's model record)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from petavox.tasks.core.errors import InputError, LayerMismatchError  # noqa: E402
from petavox.tasks.core.geometry import Vec3  # noqa: E402
from petavox.tasks.core.layers import Layer, LayerSpec  # noqa: E402
from petavox.tasks.infer.domain import ModelDomain  # noqa: E402
from petavox.tasks.infer.onnx_model import ModelError, inspect, open_session  # noqa: E402
from petavox.tasks.ml import examples  # noqa: E402  (after the skips)
from petavox.tasks.ml.examples import (  # noqa: E402
    cleft_voxels,
    loss_mask,
    make_target,
    random_example,
)
from petavox.tasks.ml.synapse_targets import volume_flags  # noqa: E402
from petavox.tasks.ml.training import CLEFT_POS_WEIGHT, loss_of, make_batch, weighted_bce  # noqa: E402
from petavox.tasks.synthetic.generator import SyntheticParams, generate  # noqa: E402
from petavox.workflows import segment_checks  # noqa: E402
from petavox.workflows.cli import build_parser  # noqa: E402
from petavox.workflows.train import run_train  # noqa: E402

TINY_PATCH = (8, 16, 16)


@pytest.fixture(scope="module")
def tiny_clefts() -> tuple[np.ndarray, np.ndarray]:
    """(raw, cleft labels) z,y,x of a small synthetic volume with the demo's bold synapses."""
    params = SyntheticParams(shape=(64, 64, 16), seed=7, bold_synapses=True, cleft_labels=True)
    v = generate(params)
    raw, clefts = (np.ascontiguousarray(a.transpose(2, 1, 0)) for a in (v.raw, v.clefts))
    assert clefts.any()
    return raw, clefts


def test_the_cleft_target_is_one_on_cleft_voxels_and_every_voxel_counts():
    clefts = np.zeros((2, 3, 4), np.uint32)
    clefts[1, 2, 3], clefts[0, 0, 0] = 5, 2
    target = make_target(clefts, "clefts")
    assert target.shape == (1, 2, 3, 4) and target.dtype == np.float32
    np.testing.assert_array_equal(target[0], clefts != 0)
    np.testing.assert_array_equal(loss_mask((2, 3, 4), "clefts"), np.ones((1, 2, 3, 4)))


def one_small_cleft() -> tuple[np.ndarray, np.ndarray]:
    shape = (16, 64, 64)
    raw = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    clefts = np.zeros(shape, np.uint32)
    clefts[3:6, 50:53, 7:10] = 9  # 27 of 65536 voxels, near a corner
    return raw, clefts


@pytest.mark.parametrize("zoom", [(1.0, 1.0), examples.ZOOM_RANGE])
def test_about_half_the_patches_are_placed_around_a_cleft(monkeypatch, zoom):
    """Without `focus` a patch of this volume hits its one small cleft about 3 % of the time;
    with it about half the time. Flips, transposes and the zoom (nearest) keep the label."""
    monkeypatch.setattr(examples, "augment_intensity", lambda _rng, r: r.astype(np.float32) / 255)
    raw, clefts = one_small_cleft()
    rng = np.random.default_rng(1)
    focus = cleft_voxels(clefts)
    assert len(focus) == 27
    hits = blind = 0
    for _ in range(300):
        x, g = random_example(rng, raw, clefts, TINY_PATCH, zoom=zoom, focus=focus)
        assert x.shape == g.shape == TINY_PATCH and set(np.unique(g)) <= {0, 9}
        hits += bool(g.any())
        blind += bool(random_example(rng, raw, clefts, TINY_PATCH, zoom=zoom)[1].any())
    assert 0.4 <= hits / 300 <= 0.65
    assert blind / 300 < 0.12


def test_a_cleft_batch_samples_around_clefts_by_itself():
    raw, clefts = one_small_cleft()
    rng = np.random.default_rng(2)
    found = [float(make_batch(rng, [(raw, clefts)], TINY_PATCH, 4, "clefts")[1].sum()) > 0]
    for _ in range(40):
        x, y, m = make_batch(rng, [(raw, clefts)], TINY_PATCH, 1, "clefts")
        assert x.shape == y.shape == m.shape == (1, 1, *TINY_PATCH)
        found.append(float(y.sum()) > 0)
    assert sum(found) >= 10  # blind sampling: about 1 in 30


def test_train_clefts_writes_a_cleft_model_that_infer_reads(tiny_clefts, tmp_path, capsys):
    """A few seconds of training: the model says it predicts clefts, records its intensity domain
    but no boundary share and no segment parameters (its held-out part is only a validation
    loss), returns one channel in [0, 1], and infer's model check reads it as a cleft model."""
    raw, clefts = tiny_clefts
    np.save(tmp_path / "raw.npy", raw)
    np.save(tmp_path / "clefts.npy", clefts)
    out = tmp_path / "clefts.onnx"
    inputs = ["--raw", str(tmp_path / "raw.npy"), "--gt", str(tmp_path / "clefts.npy")]
    options = ["--target", "clefts", "--patch", "16,16,8", "--minutes", "0.05"]
    options += ["--base-channels", "4", "--voxel-nm", "8,8,8", "--quiet"]
    args = build_parser().parse_args(["train", *inputs, "--out", str(out), *options])
    assert args.target == "clefts"
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "sha256: " in printed and "predicted boundary" not in printed
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["petavox.target"] == "clefts"
    domain = ModelDomain.from_metadata(meta)
    assert domain.voxel_nm == (8.0, 8.0, 8.0) and domain.intensity is not None
    assert domain.membrane_fraction is None and domain.segment is None
    info = inspect(open_session(out.read_bytes(), str(out)), str(out))
    assert (info.target, info.channels) == ("clefts", 1)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"raw": (raw[None, None, :8, :16, :16] / 255).astype(np.float32)})
    assert y.shape == (1, 1, 8, 16, 16) and y.min() >= 0 and y.max() <= 1
    tune = build_parser().parse_args(["tune", "--model", str(out), *inputs])
    with pytest.raises(InputError, match="predicts clefts; tune chooses segment's parameters"):
        tune.func(tune)


@pytest.mark.parametrize(("target", "value"), [("clefts", 0), ("synapses", 2 | 4)])
def test_cleft_labels_without_a_cleft_are_refused_before_training(tmp_path, target, value):
    """No nonzero voxel for clefts; sides but no cleft bit for synapses."""
    np.save(tmp_path / "raw.npy", np.zeros((8, 16, 16), np.uint8))
    np.save(tmp_path / "none.npy", np.full((8, 16, 16), value, np.uint32))
    with pytest.raises(InputError, match=rf"none\.npy.*no cleft voxel.*a {target} target"):
        run_train(
            str(tmp_path / "raw.npy"),
            str(tmp_path / "none.npy"),
            str(tmp_path / "m.onnx"),
            minutes=10,
            target=target,
            patch=TINY_PATCH,
        )
    assert not (tmp_path / "m.onnx").exists()


def test_a_model_whose_target_does_not_fit_its_channels_is_refused(tmp_path):
    """A 3-channel model that says it predicts clefts (one channel) is a ModelError."""
    from onnx_models import conv_model

    path = conv_model(tmp_path / "m.onnx", channels=3)
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {"petavox.target": "clefts"})
    onnx.save(proto, str(path))
    with pytest.raises(ModelError, match=r"'clefts'.*3 channel"):
        inspect(open_session(path.read_bytes(), str(path)), str(path))


def test_segment_refuses_a_cleft_probability_layer(tmp_path):
    """The layer infer writes with a cleft model records target "clefts": segment refuses it,
    naming the layer and what to give it instead; a boundary map's record passes."""
    spec = LayerSpec(
        layer_type="image",
        dtype="uint8",
        size=Vec3(16, 16, 8),
        resolution=Vec3(8, 8, 8),
        chunk_size=Vec3(16, 16, 8),
        voxel_offset=Vec3(0, 0, 0),
        encoding="raw",
        extra=(("petavox_model", {"model": "petavox:clefts-synthetic.onnx", "target": "clefts"}),),
    )
    layer = Layer.create(f"file://{tmp_path}/clefts", spec)
    with pytest.raises(LayerMismatchError, match=r"clefts is a cleft probability map.*boundary"):
        segment_checks.check_input(layer)
    layer.info["petavox_model"]["target"] = "boundary"
    segment_checks.check_input(layer)


def test_the_cleft_loss_weights_clefts_a_fixed_amount_not_by_their_rarity():
    """Weighted BCE: with weight 1 the plain mean; masked voxels do not count; a missed cleft
    voxel costs `CLEFT_POS_WEIGHT` times a false one, however rare clefts are (the balanced
    loss would weight it by the rarity and mark every dark structure as cleft)."""
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0]])
    target = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    mask = torch.ones_like(target)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(weighted_bce(logits, target, mask, 1.0)) == pytest.approx(float(plain))
    half = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    part = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :2], target[:, :2])
    assert float(weighted_bce(logits, target, half, 1.0)) == pytest.approx(float(part))
    zero = torch.zeros(1, 100)
    one_cleft = torch.zeros(1, 100)
    one_cleft[0, 0] = 1.0
    wrong = float(loss_of("clefts", zero, one_cleft, torch.ones_like(zero)))
    per_voxel = float(np.log(2))
    assert wrong == pytest.approx(per_voxel, rel=1e-5)  # every voxel at p = 0.5 costs log 2
    rare = torch.full((1, 100), -5.0)  # sure there is no cleft anywhere
    miss = float(loss_of("clefts", rare, one_cleft, torch.ones_like(rare)))
    cost_pos = float(torch.nn.functional.softplus(torch.tensor(5.0)))
    cost_neg = float(torch.nn.functional.softplus(torch.tensor(-5.0)))
    expected = (CLEFT_POS_WEIGHT * cost_pos + 99 * cost_neg) / (CLEFT_POS_WEIGHT + 99)
    assert miss == pytest.approx(expected, rel=1e-5)


def test_the_synapse_loss_charges_the_wrong_side_as_much_as_a_missed_side():
    """Sides P (presynaptic) and Q (postsynaptic) of equal size in a big background: marking Q
    in the presynaptic channel costs as much as missing P there (both weigh
    `CLEFT_POS_WEIGHT`); weighted as clefts are, marking the wrong side was nearly free."""
    target = torch.zeros(1, 3, 1000)
    target[0, 1, :10], target[0, 2, 10:20] = 1.0, 1.0
    mask = torch.ones_like(target)
    right = torch.where(target > 0, 8.0, -8.0)
    both = right.clone()
    both[0, 1, 10:20] = 8.0  # the presynaptic channel marks the other side too
    missed = right.clone()
    missed[0, 1, :10] = -8.0  # the presynaptic channel misses its side
    wrong_side = float(
        loss_of("synapses", both, target, mask) - loss_of("synapses", right, target, mask)
    )
    missed_side = float(
        loss_of("synapses", missed, target, mask) - loss_of("synapses", right, target, mask)
    )
    assert wrong_side == pytest.approx(missed_side, rel=1e-4) and wrong_side > 0
    as_clefts = [
        float(weighted_bce(x, target, mask, CLEFT_POS_WEIGHT)) for x in (both, missed, right)
    ]
    assert as_clefts[0] - as_clefts[2] < (as_clefts[1] - as_clefts[2]) / 3


def test_train_synapses_writes_a_three_channel_model(tiny_clefts, tmp_path):
    """`--target synapses` on flags (`synapse_flags`): a model of three channels that infer's
    model check reads as a synapse model; tune refuses it."""
    params = SyntheticParams(shape=(64, 64, 16), seed=7, bold_synapses=True, cleft_labels=True)
    flags = volume_flags(generate(params)).transpose(2, 1, 0)
    assert all(np.any(flags & bit) for bit in (1, 2, 4))
    np.save(tmp_path / "raw.npy", tiny_clefts[0])
    np.save(tmp_path / "flags.npy", np.ascontiguousarray(flags))
    out = tmp_path / "synapses.onnx"
    inputs = ["--raw", str(tmp_path / "raw.npy"), "--gt", str(tmp_path / "flags.npy")]
    options = ["--target", "synapses", "--patch", "16,16,8", "--minutes", "0.05"]
    options += ["--base-channels", "4", "--voxel-nm", "8,8,8", "--quiet"]
    args = build_parser().parse_args(["train", *inputs, "--out", str(out), *options])
    assert args.func(args) == 0
    info = inspect(open_session(out.read_bytes(), str(out)), str(out))
    assert (info.target, info.channels) == ("synapses", 3)
    assert (
        ModelDomain.from_metadata(
            {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        ).segment
        is None
    )
    tune = build_parser().parse_args(["tune", "--model", str(out), *inputs])
    with pytest.raises(InputError, match="predicts synapses; tune chooses segment's parameters"):
        tune.func(tune)


def test_the_builtin_recipes_train_on_each_volume_as_drawn_and_realigned():
    """`bold_volumes`: the drawn pair is the generator's image with its flags (z, y, x); the
    realigned pair has black margins where content left and its flags moved with it."""
    from petavox.workflows.train_builtin import bold_volumes

    (raw, flags), (moved, moved_flags) = bold_volumes(201, volume_flags)
    params = SyntheticParams(shape=(128, 128, 64), seed=201, bold_synapses=True, cleft_labels=True)
    volume = generate(params)
    np.testing.assert_array_equal(raw, volume.raw.transpose(2, 1, 0))
    np.testing.assert_array_equal(flags, volume_flags(volume).transpose(2, 1, 0))
    assert moved.shape == moved_flags.shape == raw.shape
    assert (moved == 0).mean() > 10 * (raw == 0).mean() + 0.001  # the margins
    assert all(np.any(moved_flags & bit) for bit in (1, 2, 4))
    assert not np.array_equal(moved_flags, flags)


def test_the_fill_recipe_sets_only_the_margins_to_the_drawn_mean():
    """`margins_filled`: the realigned copy's no-data voxels (its black margins) become the
    given value (with the one-voxel rim `detection.no_data` takes), as infer shows them to a
    synapse model; tissue, dark clefts included, stays."""
    from petavox.workflows.train_builtin import bold_volumes, margins_filled

    (raw, _), (moved, _) = bold_volumes(202, volume_flags)
    value = round(float(raw.mean()))
    out = margins_filled(moved, value)
    changed = out != moved
    black_or_rim = ndimage.binary_dilation(moved == 0, np.ones((1, 3, 3), bool))  # z, y, x
    assert changed.mean() > 0.01 and np.all(black_or_rim[changed]) and np.all(out[changed] == value)
    assert (out == 0).mean() < 0.2 * (moved == 0).mean()  # the margins are gone, clefts are not
    # as drawn: no margins (a black voxel at a corner of the faces counts, as in infer)
    assert (margins_filled(raw, value) != raw).mean() < 1e-4
