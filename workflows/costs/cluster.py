"""The cluster a plan's wall time is estimated for: `--workers N`, a cluster file, or this machine.

A cluster file is a small YAML list of node types::

    nodes:
      - name: cpu        # a label (optional)
        cores: 8         # CPUs Ray schedules tasks on, per node (vCPUs)
        gpus: 0          # GPUs per node (optional, default 0)
        count: 20        # nodes of this type (optional, default 1)
      - name: gpu
        cores: 4
        gpus: 1
        count: 4

Tasks take one core each (a stage's `resources` are not weighed); GPUs serve `infer`'s model.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, ValidationError

from petavox.tasks.core.errors import InputError
from petavox.workflows.params import Strict


class NodeType(Strict):
    name: str = Field("", description="a label for the table")
    cores: int = Field(ge=1, description="CPUs per node that run tasks")
    gpus: int = Field(0, ge=0, description="GPUs per node")
    count: int = Field(1, ge=1, description="nodes of this type")


class Cluster(Strict):
    """What tasks run on: node types, or a total of cores (and GPUs)."""

    nodes: list[NodeType] = Field(min_length=1)
    source: str = Field("", description="where the description came from (for the table)")

    @property
    def cores(self) -> int:
        return sum(n.cores * n.count for n in self.nodes)

    @property
    def gpus(self) -> int:
        return sum(n.gpus * n.count for n in self.nodes)

    def describe(self) -> str:
        gpus = f", {self.gpus} GPUs" if self.gpus else ""
        return f"{self.cores} cores{gpus} ({self.source})"


def workers(count: int, source: str = "--workers") -> Cluster:
    return Cluster(nodes=[NodeType(name="workers", cores=count)], source=source)


def this_machine(ray_workers: int | None) -> Cluster:
    """The config's `ray.workers`, else this machine's cores (what a local run would use)."""
    if ray_workers:
        return workers(ray_workers, "ray.workers of the config")
    return workers(os.cpu_count() or 1, "this machine's cores")


def load_cluster(path: str | Path) -> Cluster:
    """A cluster file; an `InputError` naming the file and what is wrong with it."""
    from petavox.workflows.config import read_yaml

    path = Path(path)
    data = read_yaml(path, "cluster file", InputError)
    if not isinstance(data, dict) or "source" in data:
        raise InputError(f"cluster file {path}: expected a mapping with a 'nodes:' list")
    try:
        return Cluster.model_validate({**data, "source": path.name})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InputError(f"invalid cluster file {path}: {problems}") from None
