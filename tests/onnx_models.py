"""Small ONNX models built with onnx.helper: good ones with edge effects, and broken ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_model(
    path: Path,
    channels: int = 1,
    kernel: int = 3,
    pad: bool = True,
    input_rank: int = 5,
    divisor: str | None = None,
) -> Path:
    """out = sigmoid(8 · (conv(1 - x) - 0.5)): dark = boundary; zero padding gives edge effects."""
    rng = np.random.default_rng(channels * 10 + kernel)
    weights = rng.uniform(0.5, 1.5, (channels, 1, kernel, kernel, kernel)).astype(np.float32)
    weights /= weights.sum(axis=(1, 2, 3, 4), keepdims=True)
    half = kernel // 2 if pad else 0
    dims = ["N", 1, "Z", "Y", "X"][:input_rank]
    nodes = [
        helper.make_node("Sub", ["one", "raw"], ["dark"]),
        helper.make_node("Conv", ["dark", "w"], ["conv"], pads=[half] * 6),
        helper.make_node("Sub", ["conv", "half"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["scaled"]),
        helper.make_node("Sigmoid", ["scaled"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "test-model",
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", channels, "Z", "Y", "X"])],
        initializer=[
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.array(1, np.float32), "one"),
            numpy_helper.from_array(np.array(0.5, np.float32), "half"),
            numpy_helper.from_array(np.array(8, np.float32), "gain"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"petavox.target": "boundary" if channels == 1 else "affinities"}
    if divisor:
        meta["petavox.divisor"] = divisor
    helper.set_model_props(model, meta)
    onnx.save(model, str(path))
    return path
