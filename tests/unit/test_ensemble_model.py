"""`workflows.ensemble_model`: one ONNX model averaging several, and the members it refuses."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from petavox.tasks.core.errors import InputError  # noqa: E402
from petavox.tasks.infer.onnx_model import inspect, open_session  # noqa: E402
from petavox.workflows.ensemble_model import ENSEMBLE_KEY, check_members, main  # noqa: E402

META = {
    "petavox.target": "synapses",
    "petavox.divisor": "1,1,1",
    "petavox.axes": "zyx",
    "petavox.intensity": "0.6,0.2",
}


def member(gain: float, **meta: str) -> bytes:
    """raw (n,1,z,y,x) → `gain` · raw on 3 channels (a stand-in for a synapse model)."""
    raw = helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["n", 1, "z", "y", "x"])
    out = helper.make_tensor_value_info("synapses", TensorProto.FLOAT, ["n", 3, "z", "y", "x"])
    gains = numpy_helper.from_array(np.full((1, 3, 1, 1, 1), gain, np.float32), "gain")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["raw", "gain"], ["synapses"])], "m", [raw], [out], [gains]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {**META, **meta})
    return model.SerializeToString()


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_the_ensemble_outputs_the_members_mean_and_keeps_their_metadata(tmp_path, capsys):
    a, b = write(tmp_path, "a.onnx", member(0.2)), write(tmp_path, "b.onnx", member(0.6))
    out = tmp_path / "both.onnx"
    assert main([str(out), str(a), str(b)]) == 0
    assert "the mean of 2 models" in capsys.readouterr().out
    session = open_session(out.read_bytes(), str(out))
    x = np.random.default_rng(0).random((1, 1, 4, 8, 8), np.float32)
    (y,) = session.run(None, {"raw": x})
    assert y.shape == (1, 3, 4, 8, 8) and np.allclose(y, 0.4 * x, atol=1e-6)
    info = inspect(session, str(out))  # what infer reads: a synapse model with 3 channels
    assert info.target == "synapses" and info.channels == 3
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    assert meta[ENSEMBLE_KEY] == ",".join(digests) and meta["petavox.intensity"] == "0.6,0.2"


@pytest.mark.parametrize(
    "other, problem",
    [
        (member(0.5, **{"petavox.target": "clefts"}), "petavox.target is 'clefts'"),
        (member(0.5, **{"petavox.intensity": "0.5,0.2"}), "training intensity 0.5,0.2"),
    ],
)
def test_members_of_different_things_are_refused(other, problem):
    models = [onnx.load_from_string(member(0.2)), onnx.load_from_string(other)]
    with pytest.raises(InputError, match=problem):
        check_members(models, ["a.onnx", "b.onnx"])


def test_one_member_or_a_missing_file_exits_2(tmp_path, capsys):
    a = write(tmp_path, "a.onnx", member(0.2))
    assert main([str(tmp_path / "out.onnx"), str(a)]) == 2
    assert "at least two models" in capsys.readouterr().err
    assert main([str(tmp_path / "out.onnx"), str(a), str(tmp_path / "nope.onnx")]) == 2
    assert not (tmp_path / "out.onnx").exists()
