"""`python -m petavox.workflows.ensemble_model OUT.onnx A.onnx B.onnx ...` writes one ONNX model
whose output is the mean of the given models' outputs on the same input.

An ensemble as one model keeps everything `infer` does (patches, blending, no-data fill,
the chunking rules, one checksum in the run's identity) and costs the sum of its members'
inference. The members must agree on what the stage reads from a model's metadata (target,
patch, divisor, axes, input, voxel size) and on their training intensity within
`INTENSITY_TOLERANCE`: the input is mapped once, onto the first member's statistics. The
ensemble records the first member's metadata and, under `petavox.ensemble_of`, the SHA-256 of
each member. Written by hand on `onnx.helper` because `onnx.compose` merges models in series
(one's outputs into the other's inputs), not side by side.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from petavox.tasks.core.errors import InputError
from petavox.tasks.infer.domain import INTENSITY_KEY, ModelDomain
from petavox.tasks.infer.onnx_model import sha256

#: the members' training mean and std (raw / 255) may differ by this much
INTENSITY_TOLERANCE = 0.01
ENSEMBLE_KEY = "petavox.ensemble_of"


def _metadata(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def check_members(models: Sequence, names: Sequence[str]) -> None:
    """Refuse members whose input, outputs or metadata differ (named), or fewer than two."""
    if len(models) < 2:
        raise InputError("an ensemble needs at least two models")
    first, first_meta = models[0].graph, _metadata(models[0])
    for model, name in zip(models[1:], names[1:]):
        graph, meta = model.graph, _metadata(model)
        if [i.name for i in graph.input] != [i.name for i in first.input]:
            raise InputError(f"{name}: its inputs differ from {names[0]}'s")
        if [o.name for o in graph.output] != [o.name for o in first.output]:
            raise InputError(f"{name}: its outputs differ from {names[0]}'s")
        for key in sorted(set(first_meta) | set(meta)):
            if key == INTENSITY_KEY or not key.startswith("petavox."):
                continue
            if first_meta.get(key) != meta.get(key):
                raise InputError(
                    f"{name}: {key} is {meta.get(key)!r}, {names[0]} has "
                    f"{first_meta.get(key)!r}; the members must be models of the same thing"
                )
        ours = ModelDomain.from_metadata(meta).intensity
        theirs = ModelDomain.from_metadata(first_meta).intensity
        if (ours is None) != (theirs is None) or (
            ours is not None
            and theirs is not None
            and max(abs(a - b) for a, b in zip(ours, theirs)) > INTENSITY_TOLERANCE
        ):
            raise InputError(
                f"{name}: training intensity {meta.get(INTENSITY_KEY)} differs from "
                f"{names[0]}'s {first_meta.get(INTENSITY_KEY)}: "
                "the input is mapped once, so the members must share their training images"
            )


def ensemble(models: Sequence, digests: Sequence[str]):
    """One model: each member's graph (prefixed `m<i>_`) on the shared inputs, each output the
    `Mean` of the members' outputs of that name."""
    from onnx import compose, helper

    first = models[0]
    inputs = [i.name for i in first.graph.input]
    nodes, initializers = [], []
    for i, model in enumerate(models):
        member = compose.add_prefix(model, f"m{i}_")
        nodes += [helper.make_node("Identity", [x], [f"m{i}_{x}"]) for x in inputs]
        nodes += list(member.graph.node)
        initializers += list(member.graph.initializer)
    for out in first.graph.output:
        members = [f"m{i}_{out.name}" for i in range(len(models))]
        nodes.append(helper.make_node("Mean", members, [out.name]))
    graph = helper.make_graph(
        nodes, "petavox_ensemble", list(first.graph.input), list(first.graph.output), initializers
    )
    merged = helper.make_model(graph, opset_imports=list(first.opset_import))
    merged.ir_version = first.ir_version
    metadata = {**_metadata(first), ENSEMBLE_KEY: ",".join(digests)}
    helper.set_model_props(merged, metadata)
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    import onnx

    parser = argparse.ArgumentParser(prog="python -m petavox.workflows.ensemble_model")
    parser.add_argument("out", type=Path, help="the ensemble model to write (.onnx)")
    parser.add_argument("members", type=Path, nargs="+", help="the models to average")
    args = parser.parse_args(argv)
    try:
        data = [path.read_bytes() for path in args.members]
        models = [onnx.load_from_string(d) for d in data]
        check_members(models, [str(p) for p in args.members])
    except (InputError, OSError) as err:
        print(f"ensemble_model: error: {err}", file=sys.stderr)
        return 2
    merged = ensemble(models, [sha256(d) for d in data])
    onnx.checker.check_model(merged)
    written = merged.SerializeToString()
    args.out.write_bytes(written)
    print(f"wrote {args.out}: the mean of {len(models)} models; sha256 {sha256(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
