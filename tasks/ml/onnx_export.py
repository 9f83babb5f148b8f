"""Exporting a trained U-Net to one self-contained ONNX file, checked against PyTorch.

The file takes raw uint8 / 255 (N, 1, Z, Y, X) and returns probabilities in [0, 1] (the sigmoid
is inside); its metadata says what it predicts, its patch and divisor, and its training domain.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from petavox.tasks.core.errors import InputError, PetavoxError
from petavox.tasks.ml.examples import TARGETS
from petavox.tasks.ml.unet import Probabilities

RAW_NOTE = "raw uint8 / 255 as float32, no other normalisation"
MAX_THREADS = 2


class ExportCheckError(PetavoxError):
    """The exported ONNX model does not reproduce the torch model."""


def _fmt(values: Sequence[int]) -> str:
    return ",".join(str(int(v)) for v in values)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    target: str,
    patch: Sequence[int],
    divisor: Sequence[int],
    raw_note: str = RAW_NOTE,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write `model` (logits) plus a sigmoid as one self-contained ONNX file (opset 17).

    Input "raw" (N,1,Z,Y,X) float32 = raw uint8 / 255; output "boundary" (N,1,Z,Y,X) or
    "affinities" (N,3,Z,Y,X) in [0, 1]; N, Z, Y, X are dynamic. Metadata: petavox.target,
    petavox.patch and petavox.divisor ("z,y,x"), petavox.axes ("zyx"), petavox.raw (`raw_note`),
    plus `metadata` (the training domain, `petavox.tasks.infer.domain.ModelDomain.metadata`).
    The file is checked with onnxruntime against the torch model before it replaces `path`.
    """
    import onnx

    if target not in TARGETS:
        raise InputError(f"target {target!r} is not one of {sorted(TARGETS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    net = Probabilities(copy.deepcopy(model).cpu().eval()).eval()
    example = torch.zeros((1, 1, *(int(p) for p in patch)), dtype=torch.float32)
    axes = {0: "n", 2: "z", 3: "y", 4: "x"}
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter (deprecated, but it needs no onnxscript) is chosen on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            input_names=["raw"],
            output_names=[target],
            dynamic_axes={"raw": axes, target: axes},
            opset_version=17,
            dynamo=False,
        )
    proto = onnx.load(str(tmp))
    meta = {
        "petavox.target": target,
        "petavox.patch": _fmt(patch),
        "petavox.divisor": _fmt(divisor),
        "petavox.axes": "zyx",
        "petavox.raw": raw_note,
        **(metadata or {}),
    }
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp), save_as_external_data=False)
    try:
        check_export(net, tmp, target, patch, divisor)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def check_export(
    net: nn.Module, path: Path, target: str, patch: Sequence[int], divisor: Sequence[int]
) -> None:
    """Raise ExportCheckError unless onnxruntime reproduces `net` (max abs diff < 1e-4) on a
    random input of the patch size and of another allowed size."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = MAX_THREADS
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    other = tuple(int(p) + int(d) for p, d in zip(patch, divisor))
    for size in (tuple(int(p) for p in patch), other):
        x = torch.rand((1, 1, *size), generator=gen)
        with torch.no_grad():
            want = net(x).numpy()
        (got,) = session.run([target], {"raw": x.numpy()})
        if got.shape != want.shape or float(np.abs(got - want).max()) >= 1e-4:
            diff = float(np.abs(got - want).max()) if got.shape == want.shape else math.nan
            raise ExportCheckError(
                f"ONNX model {path} gives {got.shape} (max diff {diff}) where torch gives "
                f"{want.shape} for input {size}; the export is broken"
            )
