"""Who wrote a layer: the `provenance` file beside its info, and the rules for writing over it.

The file follows cloud-volume's layer provenance (``description``, ``sources``, ``owners``,
``processing``). Each petavox write appends to ``processing`` a record with ``method:
"petavox"``: the product part (``""`` for the layer's data, ``"scale:<key>"``, ``"mesh"``,
``"skeletons"``), the stage step and its identity, an *epoch* (a fresh token each time a step
takes the product over), the step's inputs and its config entry as given, the date, petavox's
version, commit and host. The last record of a part is that part's writer.

Before a step writes, `claim` compares the writer with the step:

- the same identity: the epoch is kept and the ledger's markers under it stand (a resume);
- the same step on the same inputs with other parameters: a new epoch, so every chunk is
  recomputed (markers of an earlier run under the same identity are not trusted: the layer may
  hold another run's data since);
- another stage, other inputs, or a layer petavox did not write: refused unless `overwrite`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from petavox.tasks.core import objects
from petavox.tasks.core.errors import InputError
from petavox.tasks.core.layers import read_info
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.plan import Output, StageSteps

PROVENANCE_KEY = "provenance"
METHOD = "petavox"
HISTORY = 100  # records kept per layer


class OverwriteRefusedError(InputError):
    """A step would write over a product made by another stage or from other inputs."""


@dataclass(frozen=True, kw_only=True)
class Writer:
    part: str
    stage: str
    identity: str
    epoch: str
    inputs: tuple[str, ...]

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Writer:
        return cls(
            part=record.get("part", ""),
            stage=record["stage"],
            identity=record["identity"],
            epoch=record["epoch"],
            inputs=tuple(record.get("inputs", ())),
        )


def read_provenance(url: str, context: StorageContext) -> dict[str, Any]:
    data = objects.get(url, PROVENANCE_KEY, context)
    found = json.loads(data) if data else {}
    return {
        "description": found.get("description", ""),
        "sources": list(found.get("sources", [])),
        "owners": list(found.get("owners", [])),
        "processing": list(found.get("processing", [])),
    }


def writer_of(provenance: Mapping[str, Any], part: str = "") -> Writer | None:
    for record in reversed(provenance["processing"]):
        if record.get("method") == METHOD and record.get("part", "") == part:
            return Writer.of(record)
    return None


def current_writer(url: str, part: str, context: StorageContext) -> Writer | None:
    return writer_of(read_provenance(url, context), part)


def _refusal(output: Output, found: Writer | None, steps: StageSteps) -> str:
    if found is None:
        what = "an existing layer that petavox did not write (or wrote before it kept provenance)"
    elif found.stage != steps.name:
        what = f"what stage {found.stage} wrote"
    else:
        was = ", ".join(found.inputs) or "no layer"
        now = ", ".join(steps.inputs) or "no layer"
        what = f"what {found.stage} made from other inputs ({was}; now {now})"
    return (
        f"{steps.name}: {output} holds {what}; writing it would replace that data. Choose "
        "another output, or pass --overwrite (config: overwrite: true) to replace it"
    )


def _check(output: Output, found: Writer | None, existed: bool, steps: StageSteps) -> None:
    if found is None:
        if output.part == "" and existed:
            raise OverwriteRefusedError(_refusal(output, None, steps))
        return
    if found.stage != steps.name or found.inputs != steps.inputs:
        raise OverwriteRefusedError(_refusal(output, found, steps))


@dataclass(frozen=True, kw_only=True)
class Claim:
    """What `decide` found: the epoch the stage's markers live under; `resumed` when its
    products already name it as their writer (nothing to record)."""

    epoch: str
    resumed: bool


def decide(
    steps: StageSteps,
    found: Mapping[Output, Writer | None],
    existed: Mapping[Output, bool],
    overwrite: bool,
) -> Claim:
    """The epoch for the stage given each product's current writer (pure; see the module doc)."""
    epochs = set()
    for output in steps.outputs:
        writer = found[output]
        if not overwrite:
            _check(output, writer, existed[output], steps)
        same = writer is not None and writer.identity == steps.identity
        epochs.add(writer.epoch if same else None)  # type: ignore[union-attr]
    if len(epochs) == 1 and None not in epochs:
        return Claim(epoch=epochs.pop(), resumed=True)  # type: ignore[arg-type]
    return Claim(epoch=f"{int(time.time())}-{secrets.token_hex(4)}", resumed=False)


@lru_cache(maxsize=1)
def software() -> dict[str, str | None]:
    """What wrote the record: petavox's version, the commit of its source tree (None when it is
    installed from a wheel), and the host."""
    from petavox import petavox_version

    release = petavox_version()
    commit = None
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            timeout=10,
        )
        if found.returncode == 0:
            commit = found.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass  # no git here: a wheel install
    return {"version": release, "commit": commit, "host": socket.gethostname()}


def record(
    url: str, parts: Iterable[str], steps: StageSteps, epoch: str, context: StorageContext
) -> None:
    """Append the stage's writer records for `parts` of the layer at `url`."""
    provenance = read_provenance(url, context)
    for part in parts:
        provenance["processing"].append(
            {
                "method": METHOD,
                "part": part,
                "stage": steps.name,
                "identity": steps.identity,
                "epoch": epoch,
                "inputs": list(steps.inputs),
                "parameters": dict(steps.params),
                "steps": {p.stage: p.identity for p in steps.plans},
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **software(),
            }
        )
    provenance["processing"] = provenance["processing"][-HISTORY:]
    provenance["sources"] = sorted(set(provenance["sources"]) | set(steps.inputs))
    objects.put_json(url, PROVENANCE_KEY, provenance, context)


def claim(steps: StageSteps, overwrite: bool, context: StorageContext) -> str | None:
    """Check the stage's products against their writers, record the stage as their writer, and
    return the epoch its ledger markers live under (None: the stage writes no product)."""
    if not steps.outputs:
        return None
    found = {o: current_writer(o.url, o.part, context) for o in steps.outputs}
    existed = {o: read_info(o.url, context) is not None for o in steps.outputs}
    decision = decide(steps, found, existed, overwrite)
    if not decision.resumed:
        by_url: dict[str, list[str]] = {}
        for output in steps.outputs:
            by_url.setdefault(output.url, []).append(output.part)
        for url, parts in by_url.items():
            record(url, parts, steps, decision.epoch, context)
    return decision.epoch


def epoch_of(steps: StageSteps, context: StorageContext) -> str | bool | None:
    """The epoch of the stage's finished markers if it is its products' writer; None if it
    writes no product; False if another run wrote them last (nothing of this stage stands)."""
    if not steps.outputs:
        return None
    epochs = set()
    for output in steps.outputs:
        writer = current_writer(output.url, output.part, context)
        if writer is None or writer.identity != steps.identity:
            return False
        epochs.add(writer.epoch)
    return epochs.pop() if len(epochs) == 1 else False
