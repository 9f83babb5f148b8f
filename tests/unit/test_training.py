"""Tests of U-Net training targets, augmentation, the training loop, ONNX export and `train`."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from petavox.tasks.core.errors import InputError  # noqa: E402
from petavox.tasks.core.geometry import Vec3  # noqa: E402
from petavox.tasks.core.layers import Layer, LayerSpec  # noqa: E402
from petavox.tasks.infer.domain import ModelDomain  # noqa: E402
from petavox.tasks.ml import examples  # noqa: E402  (after the skips)
from petavox.tasks.ml.examples import (  # noqa: E402
    affinity_target,
    boundary_target,
    random_example,
)
from petavox.tasks.ml.onnx_export import export_onnx  # noqa: E402
from petavox.tasks.ml.training import balanced_bce, train_model  # noqa: E402
from petavox.tasks.ml.unet import UNet3d, divisor  # noqa: E402
from petavox.tasks.segment.tuning import MERGE_THRESHOLDS  # noqa: E402
from petavox.tasks.segment.watershed import affinities_from_boundary  # noqa: E402
from petavox.tasks.synthetic.generator import SyntheticParams, generate  # noqa: E402
from petavox.workflows.train import as_raw_uint8, load_volume, run_train  # noqa: E402
from petavox.workflows.tune import run_tune  # noqa: E402

TINY_PATCH = (8, 16, 16)


def synthetic_zyx(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw, labels) of a synthetic volume of `shape` (x,y,z), transposed to z,y,x."""
    v = generate(SyntheticParams(shape=shape, seed=seed))
    return (
        np.ascontiguousarray(v.raw.transpose(2, 1, 0)),
        np.ascontiguousarray(v.labels.transpose(2, 1, 0)),
    )


@pytest.fixture(scope="module")
def tiny() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_zyx((32, 32, 16), seed=0)


# ---- targets ----------------------------------------------------------------------------------
def test_boundary_target_is_one_on_label_zero():
    gt = np.array([[[0, 1, 1], [2, 0, 3]]], dtype=np.uint32)
    out = boundary_target(gt)
    assert out.dtype == np.float32 and out.shape == gt.shape
    np.testing.assert_array_equal(out, [[[1, 0, 0], [0, 1, 0]]])


def test_affinity_channels_link_to_the_predecessor_along_x_y_z():
    gt = np.zeros((2, 2, 3), dtype=np.uint64)  # z, y, x
    gt[0] = [[5, 5, 0], [5, 7, 7]]
    gt[1] = [[5, 4, 0], [6, 7, 7]]
    affs = affinity_target(gt)
    assert affs.dtype == np.float32 and affs.shape == (3, 2, 2, 3)
    x, y, z = affs
    # x: [z, y, x] links [z, y, x - 1]; first x plane is 0; label 0 never links
    np.testing.assert_array_equal(x[0], [[0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(x[1], [[0, 0, 0], [0, 0, 1]])
    # y: [z, y, x] links [z, y - 1, x]
    np.testing.assert_array_equal(y[0], [[0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(y[1], [[0, 0, 0], [0, 0, 0]])
    # z: [z, y, x] links [z - 1, y, x]
    np.testing.assert_array_equal(z[0], np.zeros((2, 3)))
    np.testing.assert_array_equal(z[1], [[1, 0, 0], [0, 1, 1]])


def test_affinity_target_matches_the_pipeline_convention():
    """With one label, the target equals the segment stage's affinities of the boundary target
    (x,y,z,c there, c,z,y,x here)."""
    gt = (np.random.default_rng(0).random((5, 6, 7)) > 0.3).astype(np.uint8)
    ours = affinity_target(gt)
    theirs = affinities_from_boundary(boundary_target(gt).transpose(2, 1, 0))
    np.testing.assert_array_equal(ours, theirs.transpose(3, 2, 1, 0))


def test_balanced_loss_weights_both_classes_equally():
    target = torch.zeros((1, 1, 1, 1, 10))
    target[..., 0] = 1  # one boundary voxel among ten
    logits = torch.zeros_like(target)
    logits[..., 0] = -3.0  # the minority class is wrong, the majority undecided
    lost = float(balanced_bce(logits, target))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    want = 0.5 * float(bce(torch.tensor(-3.0), torch.tensor(1.0))) + 0.5 * np.log(2)
    assert lost == pytest.approx(want, rel=1e-5)
    mask = torch.ones_like(target)
    mask[..., 0] = 0  # masked out: only the undecided majority is left
    assert float(balanced_bce(logits, target, mask)) == pytest.approx(np.log(2), rel=1e-5)


# ---- augmentation -----------------------------------------------------------------------------
def test_augmentation_keeps_raw_and_gt_aligned(monkeypatch):
    """gt holds each voxel's own index and raw a function of it: after flips and transposes they
    still agree, and neighbouring ids show the patch is a rigid flip/transpose of one crop."""
    shape = (6, 10, 12)
    gt = np.arange(np.prod(shape), dtype=np.int64).reshape(shape)
    raw = (gt % 251).astype(np.uint8)
    monkeypatch.setattr(examples, "augment_intensity", lambda _rng, r: r.astype(np.float32) / 255)
    monkeypatch.setattr(examples, "augment_resampling", lambda _rng, x: x)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        r, g = random_example(rng, raw, gt, (4, 6, 8), zoom=(1.0, 1.0))
        assert r.shape == g.shape == (4, 6, 8)
        np.testing.assert_array_equal(np.round(r * 255).astype(np.int64), g % 251)
        steps = tuple(np.unique(np.diff(g, axis=a)) for a in range(3))
        assert all(len(s) == 1 for s in steps)
        dz, dy, dx = (int(s[0]) for s in steps)
        assert abs(dz) == 10 * 12 and {abs(dy), abs(dx)} == {1, 12}
        seen.add((dz > 0, dy > 0, dx > 0, abs(dx) == 12))
    assert len(seen) == 16  # every flip and the xy transpose happen


def test_resampling_augmentation_jitters_each_section_by_under_a_pixel():
    x = np.zeros((3, 16, 16), np.float32)
    x[:, 8:, :] = 1.0  # an edge along y
    out = examples.augment_resampling(np.random.default_rng(0), x, chance=1.0)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    edges = [float(section[:, 4].sum()) for section in out]  # where the edge sits, per section
    assert all(abs(e - 8) <= 0.5 for e in edges) and len(set(edges)) == 3
    assert examples.augment_resampling(np.random.default_rng(0), x, chance=0.0) is x


def test_intensity_augmentation_stays_in_range_and_varies_the_contrast_widely():
    """A smooth image (blur keeps its structure): every draw stays in 0-1 and follows the image;
    the contrast varies well beyond ±20 % (a new microscope's differs by more)."""
    _, y, x = np.indices((4, 16, 16))
    raw = (60 + 8 * x + 2 * y).astype(np.uint8)
    rng = np.random.default_rng(2)
    ratios = []
    for _ in range(40):
        out = examples.augment_intensity(rng, raw)
        assert out.dtype == np.float32 and out.shape == raw.shape
        assert out.min() >= 0 and out.max() <= 1
        assert np.corrcoef(out.ravel(), raw.ravel())[0, 1] > 0.8
        ratios.append(out.std() / (raw.std() / 255))
    assert min(ratios) < 0.75 and max(ratios) > 1.3


# ---- training and export ----------------------------------------------------------------------
def test_model_keeps_the_spatial_size_and_anisotropic_pooling():
    model = UNet3d(3, base_channels=2, depth=3, pool=(1, 2, 2)).eval()
    assert model.divisor == divisor((1, 2, 2), 3) == (1, 4, 4)
    with torch.no_grad():
        out = model(torch.zeros((2, 1, 3, 8, 12)))
    assert out.shape == (2, 3, 3, 8, 12)


def test_training_is_reproducible_from_the_seed(tiny):
    raw, gt = tiny

    def weights(seed: int) -> torch.Tensor:
        model = train_model(
            raw,
            gt,
            target="affinities",
            minutes=5,
            max_steps=3,
            patch=TINY_PATCH,
            base_channels=2,
            seed=seed,
            progress=False,
        )
        assert model.train_log.steps == 3 and not model.training
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    first = weights(0)
    assert torch.equal(first, weights(0))
    assert not torch.equal(first, weights(1))


def _run_onnx(path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["raw"]
    (out,) = session.run(None, {"raw": x})
    return out


def test_tiny_training_run_exports_a_working_boundary_model(tiny, tmp_path):
    raw, gt = tiny
    model = train_model(
        raw,
        gt,
        target="boundary",
        minutes=0.05,
        patch=TINY_PATCH,
        base_channels=4,
        progress=False,
    )
    assert model.train_log.steps > 0 and np.isfinite(model.train_log.final_loss)
    path = export_onnx(
        model, tmp_path / "b.onnx", target="boundary", patch=TINY_PATCH, divisor=(4, 4, 4)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.onnx"]  # one self-contained file
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["petavox.target"] == "boundary"
    assert meta["petavox.patch"] == "8,16,16" and meta["petavox.divisor"] == "4,4,4"
    assert meta["petavox.axes"] == "zyx"
    x = (raw[None, None, :12, :20, :28] / 255).astype(np.float32)  # not the training patch
    out = _run_onnx(path, x)
    assert out.shape == (1, 1, 12, 20, 28) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1


def test_train_command_writes_an_affinity_model(tiny, tmp_path, capsys):
    raw, gt = tiny
    np.save(tmp_path / "raw.npy", raw.astype(np.float32) / 255)  # float raw in [0, 1] is fine
    np.save(tmp_path / "gt.npy", gt)
    out = tmp_path / "model" / "affs.onnx"
    code = run_train(
        str(tmp_path / "raw.npy"),
        str(tmp_path / "gt.npy"),
        str(out),
        minutes=0.05,
        target="affinities",
        seed=1,
        patch=TINY_PATCH,
        base_channels=4,
        holdout=0,
        progress=False,
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "sha256: " in printed and "final loss: " in printed
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["petavox.target"] == "affinities"
    domain = ModelDomain.from_metadata(meta)  # recorded: the intensities it saw, no voxel size
    assert domain.voxel_nm is None and "no voxel size" in printed
    assert domain.intensity == pytest.approx((raw.mean() / 255, raw.std() / 255), abs=2e-3)
    assert 0 <= domain.membrane_fraction <= 1
    y = _run_onnx(out, (raw[None, None, :8, :16, :16] / 255).astype(np.float32))
    assert y.shape == (1, 3, 8, 16, 16) and y.min() >= 0 and y.max() <= 1


# ---- input checks -----------------------------------------------------------------------------
def test_mismatched_shapes_are_an_input_error_before_training(tmp_path):
    np.save(tmp_path / "raw.npy", np.zeros((16, 32, 32), np.uint8))
    np.save(tmp_path / "gt.npy", np.zeros((16, 32, 30), np.uint32))
    with pytest.raises(InputError, match=r"\(16, 32, 32\).*\(16, 32, 30\)"):
        run_train(
            str(tmp_path / "raw.npy"),
            str(tmp_path / "gt.npy"),
            str(tmp_path / "m.onnx"),
            minutes=10,
            patch=TINY_PATCH,
        )
    assert not (tmp_path / "m.onnx").exists()


def test_other_input_errors_name_the_problem(tmp_path):
    np.save(tmp_path / "raw.npy", np.zeros((8, 16, 12), np.uint8))
    np.save(tmp_path / "gt.npy", np.zeros((8, 16, 12), np.uint32))
    np.save(tmp_path / "flat.npy", np.zeros((16, 12), np.uint8))
    args = (str(tmp_path / "raw.npy"), str(tmp_path / "gt.npy"), str(tmp_path / "m.onnx"))
    with pytest.raises(InputError, match=r"\(8, 16, 12\).*smaller than the patch \(8, 16, 16\)"):
        run_train(*args, minutes=10, patch=TINY_PATCH)
    with pytest.raises(InputError, match="multiples of"):
        run_train(*args, minutes=10, patch=(6, 16, 16))
    with pytest.raises(InputError, match="all 0"):
        run_train(*args, minutes=10, patch=(8, 16, 12))
    np.save(tmp_path / "ones.npy", np.ones((8, 16, 12), np.uint32))
    with pytest.raises(InputError, match="no label-0"):
        run_train(args[0], str(tmp_path / "ones.npy"), args[2], minutes=10, patch=(8, 16, 12))
    with pytest.raises(InputError, match=r"missing\.npy"):
        load_volume(str(tmp_path / "missing.npy"))
    with pytest.raises(InputError, match=r"flat\.npy.*not 3D"):
        load_volume(str(tmp_path / "flat.npy"))
    with pytest.raises(InputError, match=r"values -1\.\.1"):
        as_raw_uint8(np.array([-1.0, 1.0]), "r.npy")
    with pytest.raises(InputError, match="int16"):
        as_raw_uint8(np.zeros(3, np.int16), "r.npy")
    np.testing.assert_array_equal(as_raw_uint8(np.array([0.0, 0.5, 1.0]), "r"), [0, 128, 255])


def test_load_volume_reads_a_layer_as_zyx(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (20, 12, 6), dtype=np.uint8)  # x, y, z
    spec = LayerSpec(
        layer_type="image",
        dtype="uint8",
        size=Vec3(20, 12, 6),
        resolution=(8, 8, 8),
        chunk_size=Vec3(8, 8, 4),
    )
    layer = Layer.create(f"file://{tmp_path}/img", spec)
    layer.write(layer.bounds(), data)
    np.testing.assert_array_equal(load_volume(layer.url), data.transpose(2, 1, 0))


# ---- learning ---------------------------------------------------------------------------------
def test_training_learns_to_separate_boundary_from_inside():
    """100 steps on one synthetic volume: on another volume, the mean prediction on membrane
    beats the mean inside objects by a margin (measured 0.42-0.46 for 2 seeds; asked: 0.2).
    Takes about 7 s on an idle 2-core machine (steps are counted, so load slows, not fails)."""
    raw, gt = synthetic_zyx((64, 64, 32), seed=1)
    test_raw, test_gt = synthetic_zyx((64, 64, 32), seed=2)
    model = train_model(
        raw,
        gt,
        target="boundary",
        minutes=5,
        max_steps=100,
        patch=(16, 32, 32),
        seed=0,
        progress=False,
    )
    with torch.no_grad():
        x = torch.from_numpy(test_raw[None, None].astype(np.float32) / 255)
        pred = torch.sigmoid(model(x))[0, 0].numpy()
    membrane, inside = pred[test_gt == 0].mean(), pred[test_gt > 0].mean()
    assert membrane - inside > 0.2, (membrane, inside)


def test_training_holds_out_ground_truth_and_records_segment_parameters(tmp_path, capsys):
    """`train` keeps the end of the longest axis back, chooses segment's parameters there and
    records them in the model; `tune` redoes that on other ground truth into a new file."""
    raw, gt = synthetic_zyx((64, 32, 16), seed=2)  # z,y,x (16, 32, 64): x is the longest
    np.save(tmp_path / "raw.npy", raw)
    np.save(tmp_path / "gt.npy", gt)
    out = tmp_path / "m.onnx"
    common = {"minutes": 0.05, "patch": TINY_PATCH, "base_channels": 4, "progress": False}
    assert run_train(str(tmp_path / "raw.npy"), str(tmp_path / "gt.npy"), str(out), **common) == 0
    assert "chosen on the held-out 30% of the ground truth (x ≥ 45)" in capsys.readouterr().out
    chosen = ModelDomain.from_metadata(
        {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    ).segment
    assert chosen["seeds"] == "distance" and chosen["merge_threshold"] in MERGE_THRESHOLDS
    assert 0 <= chosen["held_out_arand"] <= 1 and chosen["held_out"].startswith("the held-out")
    other_raw, other_gt = synthetic_zyx((48, 48, 16), seed=3)
    np.save(tmp_path / "raw2.npy", other_raw)
    np.save(tmp_path / "gt2.npy", other_gt)
    before = out.read_bytes()
    tuned = tmp_path / "tuned.onnx"
    code = run_tune(
        str(out), [str(tmp_path / "raw2.npy")], [str(tmp_path / "gt2.npy")], out=str(tuned)
    )
    assert code == 0 and out.read_bytes() == before  # the original is left as it was
    meta = {p.key: p.value for p in onnx.load(str(tuned)).metadata_props}
    assert ModelDomain.from_metadata(meta).segment["held_out"] == "1 volume(s)"
    assert "adapted Rand" in capsys.readouterr().out
