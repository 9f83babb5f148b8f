"""Plan `infer`: check the model (file, checksum, shapes) and the input, then predict per chunk."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from petavox.tasks.core.errors import LayerMismatchError
from petavox.tasks.core.geometry import ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.storage import normalize_url
from petavox.tasks.infer.infer_jobs import InferJob
from petavox.tasks.infer.onnx_model import (
    BUILTIN,
    ClassicalPredictor,
    ModelError,
    ModelInfo,
    ModelRef,
    OnnxPredictor,
    check_patch,
    fetch,
    inspect,
    open_session,
    sha256,
)
from petavox.tasks.infer.patches import PatchGrid, PredictFn, fit_patch
from petavox.workflows.catalog import Catalog
from petavox.workflows.config import InferParams
from petavox.workflows.ledger import identity
from petavox.workflows.runner import ChunkJob, StagePlan
from petavox.workflows.stages.sizing import task_shape

VERSION = 1
DEFAULT_MODEL = BUILTIN + "boundary-synthetic.onnx"
CLASSICAL = "classical"
# sizing weight: input, prediction sums and weights take 12-20 bytes per output voxel; big tasks
# matter because the patches that straddle a task's faces are predicted by both tasks
BYTES_PER_VOXEL = 8


def check_input(layer: Layer) -> None:
    if layer.num_channels != 1 or layer.dtype.name not in ("uint8", "float32"):
        raise LayerMismatchError(
            f"{layer.url} holds {layer.num_channels} channel(s) of {layer.dtype}; infer takes "
            "one image channel, uint8 (0-255) or float32 (0-1)"
        )


def load_model(params: InferParams, catalog: Catalog) -> tuple[ModelRef, ModelInfo, Any]:
    """Fetch the model once, verify its checksum, open it and read its shapes."""
    url = params.model or DEFAULT_MODEL
    if not url.startswith(BUILTIN):
        url = normalize_url(url)  # workers need an absolute location
    data = fetch(url, catalog.context)
    digest = sha256(data)
    if params.model_sha256 and digest != params.model_sha256:
        raise ModelError(
            f"model {url} has SHA-256 {digest}, but the config says "
            f"{params.model_sha256}; use the right file or fix "
            "model_sha256"
        )
    session = open_session(data, url)
    return ModelRef(url, digest, catalog.context), inspect(session, url), session


def plan_infer(params: InferParams, catalog: Catalog) -> StagePlan:
    source = catalog.layer(catalog.url(params.input))
    check_input(source)
    bounds = source.bounds(0)
    ref: ModelRef | None = None
    if params.model == CLASSICAL:
        channels, target = 1, "boundary (classical, no model)"
        patch = fit_patch(Vec3.of(params.patch), bounds.shape, Vec3(1, 1, 1))
    else:
        ref, info, session = load_model(params, catalog)
        channels, target = info.channels, info.target
        patch = fit_patch(Vec3.of(params.patch), bounds.shape, info.divisor)
        check_patch(session, info, patch, ref.url)
    overlap = Vec3(*(min(o, p - 1) for o, p in zip(params.overlap, patch)))

    storage_chunk = Vec3.of(params.storage_chunk or source.chunk_size(0))
    chunk_shape = task_shape(
        params.chunk_shape,
        storage_chunk,
        bounds.shape,
        BYTES_PER_VOXEL,
        name="infer chunk_shape",
        step_name="storage chunk",
    )
    url = catalog.url(params.output)
    spec = LayerSpec(
        layer_type="image",
        dtype=params.output_dtype,
        size=bounds.shape,
        resolution=source.resolution(0),
        chunk_size=storage_chunk,
        voxel_offset=bounds.start,
        encoding="raw",
        num_channels=channels,
    )
    target_layer = catalog.plan_layer(url, spec)

    predict: PredictFn = ClassicalPredictor() if ref is None else OnnxPredictor(ref)
    grid = PatchGrid(bounds, patch, overlap)
    job = InferJob(source, target_layer, grid, predict, params.batch, params.fill_missing)
    stage_spec = {
        **params.hashed_fields(),
        "input": source.url,
        "output": url,
        "model": ref.url if ref else CLASSICAL,
        "model_sha256": ref.sha256 if ref else None,
        "patch_used": list(patch),
        "overlap_used": list(overlap),
        "task_shape": list(chunk_shape),
    }
    plan = StagePlan(
        label=f"infer {params.input} → {params.output} ({target})",
        stage="infer",
        identity=identity("infer", VERSION, stage_spec),
        spec=stage_spec,
        grid=ChunkGrid(bounds, chunk_shape, 0, origin=bounds.start),
        job=job,
        resources=params.resources,
        layer_infos={url: target_layer.info},
    )
    if ref is not None and params.device != "cpu":
        plan.runtime = device_runtime(params, ref)
    return plan


def device_runtime(params: InferParams, ref: ModelRef):
    """Where the forward pass runs, decided once Ray is up: GPU actors, or in each CPU task."""

    def runtime(job: ChunkJob) -> AbstractContextManager[ChunkJob]:
        from petavox.workflows.model_actors import cluster_has_gpus, gpu_actors

        if params.device == "gpu" or cluster_has_gpus():
            return gpu_actors(job, ref, params.gpu_actors, params.gpus_per_actor)  # type: ignore[arg-type]
        return nullcontext(job)

    return runtime
