"""GPU inference: Ray actors that each load the model once; CPU tasks send them patch batches.

The CPU tasks of the `infer` stage keep doing the reads, blending and writes; only the forward
pass goes to an actor. Actors reserve `num_gpus` (so the autoscaler brings GPU nodes) and no CPU,
so tasks waiting on them can never starve them of a core.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from petavox.tasks.infer.infer_jobs import InferJob
from petavox.tasks.infer.onnx_model import ModelRef, OnnxPredictor


class ModelActor:
    """Holds one ONNX Runtime session (CUDA when present) for the life of the stage."""

    def __init__(self, ref: ModelRef) -> None:
        self.predict = OnnxPredictor(ref, "gpu")

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.predict(batch)


@dataclass(frozen=True)
class ActorPredictor:
    """A predict function (picklable into tasks) that forwards batches to the actor pool."""

    actors: tuple[Any, ...]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import ray

        return ray.get(random.choice(self.actors).run.remote(batch))


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


@contextmanager
def gpu_actors(job: InferJob, ref: ModelRef, count: int, gpus: float) -> Iterator[InferJob]:
    """Start `count` model actors, yield the job bound to them, stop them afterwards."""
    import ray

    actor_class = ray.remote(ModelActor).options(
        num_gpus=gpus, num_cpus=0, max_restarts=3, max_task_retries=3
    )
    actors = tuple(actor_class.remote(ref) for _ in range(count))
    try:
        yield dataclasses.replace(job, predict=ActorPredictor(actors))
    finally:
        for actor in actors:
            ray.kill(actor)
