"""Boundary/affinity/cleft models: fetched by URL, checked by SHA-256, run with ONNX Runtime.

A model is an ONNX file (a protobuf: no pickle is ever loaded) with one input, (N, 1, Z, Y, X)
float32 = raw / 255, and one output, (N, C, Z, Y, X) float32 in [0, 1], C = 1 (boundary, high =
membrane; or clefts, high = synaptic cleft) or 3 (affinities x, y, z, high = connected; or
synapses: cleft, presynaptic side, postsynaptic side). Optional metadata from `petavox train`:
``petavox.target`` (boundary, affinities, clefts or synapses; without it 1 channel is
boundary, 3 affinities) and ``petavox.divisor`` (z,y,x: patch sides
must be multiples of it), and the training domain (`petavox.tasks.infer.domain`).

The planner fetches the model once, checks its checksum and shapes, and hands workers a
`ModelRef` (URL + checksum); each worker process fetches, verifies and loads it once.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.objects import fetch_file
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.infer.domain import ModelDomain
from petavox.tasks.ml.examples import TARGETS

log = logging.getLogger("petavox")

BUILTIN = "petavox:"  # URL scheme of the models shipped in the package
BUILTIN_PACKAGE = "petavox.tasks.infer"
BUILTIN_DIR = "models"
# what a model may predict, with its channels: what `petavox train` trains
TARGET_CHANNELS = TARGETS


class ModelError(InputError):
    """A model file is missing, corrupt, has the wrong checksum or the wrong shapes."""


def _builtin_dir() -> Path:
    return Path(str(resources.files(BUILTIN_PACKAGE))) / BUILTIN_DIR


def builtin_path(name: str) -> Path:
    path = _builtin_dir() / name
    if not path.is_file():
        shipped = sorted(p.name for p in _builtin_dir().glob("*.onnx"))
        raise ModelError(
            f"no built-in model {name!r}; petavox ships {', '.join(shipped) or 'none'}"
        )
    return path


def fetch(url: str, context: StorageContext = StorageContext()) -> bytes:
    """The bytes of a model: a built-in name, a local path, or a file/s3/gs URL."""
    if url.startswith(BUILTIN):
        return builtin_path(url[len(BUILTIN) :]).read_bytes()
    data = fetch_file(url, context)
    if data is None:
        raise ModelError(
            f"model {url} does not exist; give --model the path or URL of an ONNX file (e.g. "
            "one written by petavox train), and check the URL and credentials"
        )
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """What the planner learned from a model file."""

    target: str  # boundary | affinities | clefts
    channels: int
    divisor: Vec3  # x, y, z: patch sides must be multiples of this
    domain: ModelDomain = ModelDomain()  # what it was trained on, as far as it records


@dataclass(frozen=True, kw_only=True)
class ModelRef:
    """A model as the workers see it: where it is and what its bytes must hash to."""

    url: str
    sha256: str
    context: StorageContext = StorageContext()

    def load(self) -> bytes:
        data = fetch(self.url, self.context)
        found = sha256(data)
        if found != self.sha256:
            raise ModelError(
                f"model {self.url} has SHA-256 {found}, but {self.sha256} was "
                "expected; the file changed or is corrupt: fix the file or the "
                "checksum in the config (model_sha256)"
            )
        return data


def providers(device: str) -> list[str]:
    """ONNX Runtime execution providers: CUDA first when asked for and present, then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "gpu":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning(
            "no CUDA execution provider in onnxruntime here; running the model on CPU "
            "(install onnxruntime-gpu on GPU nodes)"
        )
    return ["CPUExecutionProvider"]


def open_session(data: bytes, source: str, device: str = "cpu", threads: int = 1):
    """An ONNX Runtime session; a clear error when the bytes are not a usable model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # one Ray task per core
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, options, providers=providers(device))
    except Exception as exc:
        raise ModelError(
            f"model {source} is not a valid ONNX model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]})"
        ) from None


def _zyx_metadata(meta: dict[str, str], key: str) -> Vec3 | None:
    value = meta.get(key)
    if not value:
        return None
    z, y, x = (int(v) for v in value.split(","))
    return Vec3(x, y, z)


def inspect(session, source: str) -> ModelInfo:
    """Check the input and output ranks and channels; read petavox metadata."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"model {source} has {len(inputs)} inputs and {len(outputs)} outputs; "
            "petavox runs models with one input and one output"
        )
    shape_in, shape_out = inputs[0].shape, outputs[0].shape
    if len(shape_in) != 5 or (isinstance(shape_in[1], int) and shape_in[1] != 1):
        raise ModelError(
            f"model {source} takes input of shape {shape_in}; petavox feeds "
            "(N, 1, Z, Y, X): one image channel"
        )
    if len(shape_out) != 5 or shape_out[1] not in (1, 3):
        raise ModelError(
            f"model {source} returns shape {shape_out}; petavox expects "
            "(N, 1, Z, Y, X) boundaries or (N, 3, Z, Y, X) affinities"
        )
    meta = session.get_modelmeta().custom_metadata_map
    channels = int(shape_out[1])
    target = meta.get("petavox.target", "boundary" if channels == 1 else "affinities")
    if TARGET_CHANNELS.get(target) != channels:
        known = ", ".join(f"{t} ({c})" for t, c in TARGET_CHANNELS.items())
        raise ModelError(
            f"model {source} says it predicts {target!r} (petavox.target) with {channels} "
            f"channel(s); petavox knows these targets (channels): {known}"
        )
    divisor = _zyx_metadata(meta, "petavox.divisor") or Vec3(1, 1, 1)
    return ModelInfo(target, channels, divisor, ModelDomain.from_metadata(meta))


def check_patch(session, info: ModelInfo, patch: Vec3, source: str) -> None:
    """Run one blank patch: the output must have the input's size and the model's channels."""
    if any(p % d for p, d in zip(patch, info.divisor)):
        raise ModelError(
            f"patch {tuple(patch)} (x,y,z) is not a multiple of "
            f"{tuple(info.divisor)}, which model {source} needs; choose a patch "
            "that is"
        )
    blank = np.zeros((1, 1, patch.z, patch.y, patch.x), np.float32)
    try:
        (out,) = session.run(None, {session.get_inputs()[0].name: blank})
    except Exception as exc:
        raise ModelError(
            f"model {source} fails on a patch of {tuple(patch)} voxels (x,y,z): "
            f"{str(exc).splitlines()[0][:200]}"
        ) from None
    wanted = (1, info.channels, patch.z, patch.y, patch.x)
    if out.shape != wanted:
        raise ModelError(
            f"model {source} returns shape {out.shape} for input {blank.shape}; "
            f"petavox needs {wanted} (same spatial size as the input)"
        )


@lru_cache(maxsize=4)
def _cached_session(ref: ModelRef, device: str):
    return open_session(ref.load(), ref.url, device)


@dataclass(frozen=True)
class OnnxPredictor:
    """Runs a model in the calling process (a CPU task, or inside a GPU actor)."""

    ref: ModelRef
    device: str = "cpu"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        session = _cached_session(self.ref, self.device)
        (out,) = session.run(None, {session.get_inputs()[0].name: batch})
        return out


@dataclass(frozen=True)
class ClassicalPredictor:
    """No model: boundary = Gaussian-smoothed darkness, scaled per patch (membranes dark).

    A fallback for users without a model, far below a trained CNN: it also marks mitochondria,
    vesicles and clefts as boundary.
    """

    sigma: float = 1.0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        out = np.empty_like(batch)
        for i, patch in enumerate(batch[:, 0]):
            smooth = ndimage.gaussian_filter(patch, self.sigma)
            lo, hi = np.percentile(smooth, [2, 60])
            out[i, 0] = np.clip((hi - smooth) / max(hi - lo, 1e-6), 0, 1)
        return out
