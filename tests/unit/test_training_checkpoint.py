"""Training checkpoints (`ml.checkpoint`): a run saves its state and goes on from it where it
stopped (the same weights, log and random state, then more steps), refuses a checkpoint made
with other settings or one that already holds the minutes asked for, and `petavox train
--checkpoint` writes one beside the model."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from petavox.tasks.core.errors import InputError  # noqa: E402  (after the skip)
from petavox.tasks.ml.training import train_model  # noqa: E402
from petavox.tasks.synthetic.generator import SyntheticParams, generate  # noqa: E402
from petavox.workflows.cli import main  # noqa: E402
from petavox.workflows.train import run_train  # noqa: E402

PATCH = (8, 16, 16)


@pytest.fixture(scope="module")
def tiny() -> tuple[np.ndarray, np.ndarray]:
    v = generate(SyntheticParams(shape=(32, 32, 16), seed=0))
    return v.raw.transpose(2, 1, 0).copy(), v.labels.transpose(2, 1, 0).copy()


def train(tiny, path, steps: int, minutes: float = 60.0, **settings):
    return train_model(
        *tiny,
        target="boundary",
        minutes=minutes,
        max_steps=steps,
        patch=PATCH,
        base_channels=settings.pop("base_channels", 2),
        progress=False,
        checkpoint=path,
        **settings,
    )


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()])


def test_a_run_goes_on_from_its_checkpoint(tiny, tmp_path):
    path = tmp_path / "run.pt"
    first = train(tiny, path, steps=3)
    assert path.exists() and first.train_log.steps == 3
    again = train(tiny, path, steps=3)  # nothing left to do: the saved run, as it was
    assert torch.equal(weights(again), weights(first))
    assert again.train_log.losses == first.train_log.losses
    more = train(tiny, path, steps=5)
    assert more.train_log.steps == 5 and more.train_log.losses[:3] == first.train_log.losses
    assert not torch.equal(weights(more), weights(first))
    assert more.train_log.seconds >= first.train_log.seconds


def test_a_checkpoint_of_other_settings_or_spent_minutes_is_refused(tiny, tmp_path):
    path = tmp_path / "run.pt"
    train(tiny, path, steps=2)
    with pytest.raises(InputError, match=r"other settings: architecture .*train on"):
        train(tiny, path, steps=4, base_channels=4)
    spent = tmp_path / "spent.pt"
    train(tiny, spent, steps=None, minutes=0.002)
    with pytest.raises(InputError, match=r"holds 0\.0 minutes of training.*ask for more"):
        train(tiny, spent, steps=None, minutes=0.002)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read the training checkpoint"):
        train(tiny, tmp_path / "junk.pt", steps=2)


def test_petavox_train_writes_a_checkpoint_to_go_on_from(tiny, tmp_path):
    raw, gt = tiny
    np.save(tmp_path / "raw.npy", raw)
    np.save(tmp_path / "gt.npy", gt)
    out, path = tmp_path / "m.onnx", tmp_path / "m.pt"
    common = {"patch": PATCH, "base_channels": 2, "holdout": 0, "progress": False}
    args = (str(tmp_path / "raw.npy"), str(tmp_path / "gt.npy"), str(out))
    assert run_train(*args, minutes=0.02, checkpoint=str(path), **common) == 0
    steps = torch.load(path, weights_only=True)["log"]["steps"]
    assert out.exists() and steps > 0
    command = ["train", "--raw", args[0], "--gt", args[1], "--out", args[2], "--minutes", "0.04"]
    command += ["--patch", "16,16,8", "--base-channels", "2", "--holdout", "0", "--quiet"]
    assert main([*command, "--checkpoint", str(path)]) == 0  # the command line goes on from it
    assert torch.load(path, weights_only=True)["log"]["steps"] > steps


def test_an_interrupted_run_saves_what_it_trained(tiny, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM turned into it) mid-run: the steps done are saved, then it stops."""
    from petavox.tasks.ml import training

    real, calls = training.make_batch, []

    def stop_at_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "make_batch", stop_at_the_third)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        train(tiny, path, steps=10)
    assert torch.load(path, weights_only=True)["log"]["steps"] == 2
