"""A training run's state on disk, to go on from (`training.train_model(checkpoint=...)`).

The file (torch.save of plain types and tensors, read back with `weights_only`) holds the model
and optimizer state, the numpy and torch random states, the run's log, the seconds trained and
the settings; a run goes on from it only with the same settings (target, patch, batch, seed,
architecture, learning rate, zoom), else the mismatch is refused. It is written to a temporary
name and renamed, so a run killed while saving leaves the previous checkpoint whole.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from petavox.tasks.core.errors import InputError

CHECKPOINT_EVERY = 300.0  # seconds between saves (and one at the end)
FORMAT = "petavox training checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    """Where a run's state goes, and the settings it must match to be continued."""

    path: Path
    settings: dict[str, Any]

    def save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        log: Any,
        rng: np.random.Generator,
        seconds: float,
    ) -> None:
        """Write the state after `seconds` of training in all."""
        state = {
            "format": FORMAT,
            "settings": self.settings,
            "seconds": float(seconds),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "log": dataclasses.asdict(log),
            "numpy_random": rng.bit_generator.state,
            "torch_random": torch.get_rng_state(),
        }
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save(state, partial)
        os.replace(partial, self.path)

    def restore(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, log: Any, rng: np.random.Generator
    ) -> float:
        """Load the saved state into the run's objects; the seconds trained (0: no file)."""
        if not self.path.exists():
            return 0.0
        try:
            state = torch.load(self.path, weights_only=True)
        except Exception as err:  # torch raises several kinds for a file that is not its own
            raise InputError(f"cannot read the training checkpoint {self.path}: {err}") from err
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise InputError(f"{self.path} is not a petavox training checkpoint")
        saved = state["settings"]
        differ = [
            f"{k} {saved.get(k)} (now {v})" for k, v in self.settings.items() if saved.get(k) != v
        ]
        if differ:
            raise InputError(
                f"{self.path} was trained with other settings: {', '.join(differ)}; train on "
                "with the checkpoint's settings, or give another --checkpoint to start anew"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for name, value in state["log"].items():
            setattr(log, name, value)
        rng.bit_generator.state = state["numpy_random"]
        torch.set_rng_state(state["torch_random"])
        return float(state["seconds"])


def run_settings(model: nn.Module, log: Any, batch: int, lr: float) -> dict:
    """What a run must match to go on from a checkpoint."""
    width = model.head.in_channels  # the first level's channels
    architecture = [model.out_channels, width, model.depth, list(model.pool)]
    return {
        "target": log.target,
        "architecture": architecture,
        "patch": list(log.patch),
        "batch": batch,
        "lr": lr,
        "zoom": list(log.zoom),
    }


def resume(
    checkpoint: Checkpoint | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    log: Any,
    rng: np.random.Generator,
    budget: float,
) -> float:
    """Seconds already trained: the checkpoint's, its state loaded (0 without one)."""
    if checkpoint is None:
        return 0.0
    prior = checkpoint.restore(model, optimizer, log, rng)
    if prior >= budget:
        raise InputError(
            f"{checkpoint.path} holds {prior / 60:.1f} minutes of training, as many as the "
            f"{budget / 60:.1f} asked for; ask for more minutes to train on"
        )
    return prior
