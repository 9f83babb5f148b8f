"""Stage `infer`: check the model (file, checksum, shapes) and the input, then predict per chunk:
a boundary map, affinities or a cleft probability map (whatever the model predicts)."""

from __future__ import annotations

import logging
import math
import re
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from petavox.tasks.core.errors import LayerMismatchError
from petavox.tasks.core.geometry import ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.storage import normalize_url
from petavox.tasks.infer.infer_jobs import InferJob
from petavox.tasks.infer.no_data_fill import no_data_value
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
from petavox.tasks.infer.patches import PatchGrid, PredictFn, patch_grid
from petavox.workflows.catalog import Catalog
from petavox.workflows.domain_fit import INFO_KEY, ScalePlan, intensity_binding, plan_scale
from petavox.workflows.params import (
    NonNegativeTriple,
    PositiveTriple,
    VolumeWriterParams,
    layer_sharding,
)
from petavox.workflows.plan import ChunkJob, DriverHooks, JobBinding, Output, StagePlan
from petavox.workflows.sizing import writing_task_shape
from petavox.workflows.stage import Positional, Stage

log = logging.getLogger("petavox")

VERSION = 2  # 2: the input fitted to the model's training domain (intensity, voxel size)
DEFAULT_MODEL = BUILTIN + "boundary-synthetic.onnx"
CLEFT_MODEL = BUILTIN + "clefts-synthetic.onnx"  # the built-in cleft probability model
# the built-in synapse model: cleft, presynaptic-side and postsynaptic-side probabilities
SYNAPSE_MODEL = BUILTIN + "synapses-synthetic.onnx"
CLASSICAL = "classical"
# sizing weight: input, prediction sums and weights take 12-20 bytes per output voxel; big tasks
# matter because the patches that straddle a task's faces are predicted by both tasks
BYTES_PER_VOXEL = 8


class InferParams(VolumeWriterParams):
    """Image → boundary map, affinities or cleft probability with a CNN (ONNX), patch-wise with
    seamless blending."""

    stage: Literal["infer"] = "infer"
    input: str = Field("raw", description="image layer (uint8, or float 0-1): name or URL")
    output: str = Field("boundary", description="layer name under the run output, or a URL")
    model: str | None = Field(
        None,
        description="ONNX model: path or file/s3/gs URL; 'classical' for the no-model filter "
        "(default: the built-in boundary model trained on synthetic data; "
        f"{CLEFT_MODEL} predicts synaptic clefts, {SYNAPSE_MODEL} clefts and their sides)",
    )
    model_sha256: str | None = Field(
        None, description="expected SHA-256 of the model file (checked before any work)"
    )
    patch: PositiveTriple = Field(
        (136, 136, 72), description="model input size X,Y,Z (clipped to the volume)"
    )
    overlap: NonNegativeTriple = Field(
        (8, 8, 8), description="overlap of neighbouring patches X,Y,Z, blended smoothly"
    )
    output_dtype: Literal["uint8", "float32"] = Field(
        "uint8", description="uint8: probability × 255; float32: probability"
    )
    chunk_shape: PositiveTriple | None = Field(
        None, description="voxels per task, a multiple of the storage chunk (default: ~32 M voxels)"
    )
    storage_chunk: PositiveTriple | None = Field(
        None, description="chunk size of the output layer (default: the input's)"
    )
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="gpu: the model runs in GPU actors (the autoscaler brings GPU nodes); "
        "auto: gpu when the cluster has GPUs, else in each CPU task",
    )
    gpu_actors: int = Field(1, ge=1, description="GPU actors that each load the model once")
    gpus_per_actor: float = Field(1.0, ge=0, description="GPUs each actor reserves")
    batch: int = Field(1, ge=1, description="patches per model call (raise on GPUs)")
    normalise: Literal["auto", "off"] = Field(
        "auto",
        description="auto: map the input's intensity mean and std onto the model's training "
        "statistics when they differ (more than ×1.1 in std or 0.03 in mean)",
    )
    resample: Literal["auto", "off"] = Field(
        "auto",
        description="auto: resample the input to the model's training voxel size in each task "
        "(and the prediction back) when they differ by more than ×1.2",
    )

    UNHASHED: ClassVar[frozenset[str]] = VolumeWriterParams.UNHASHED | frozenset(
        {"device", "gpu_actors", "gpus_per_actor", "batch"}
    )
    HASHED_UNLESS_DEFAULT: ClassVar[frozenset[str]] = (
        VolumeWriterParams.HASHED_UNLESS_DEFAULT | frozenset({"normalise", "resample"})
    )

    @field_validator("model_sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value.lower()):
            raise ValueError("model_sha256 must be 64 hexadecimal digits (sha256sum of the file)")
        return value.lower() if value else value


def check_input(layer: Layer) -> None:
    if layer.num_channels != 1 or layer.dtype.name not in ("uint8", "float32"):
        raise LayerMismatchError(
            f"{layer.url} holds {layer.num_channels} channel(s) of {layer.dtype}; infer takes "
            "one image channel, uint8 (0-255) or float32 (0-1). For 16-bit, 32-bit or other "
            f"float EM run petavox normalize {layer.url} OUTPUT_URL first (uint8 by "
            "percentiles; see 'Contrast normalisation') and infer on its output"
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
    return ModelRef(url=url, sha256=digest, context=catalog.context), inspect(session, url), session


def model_patches(
    params: InferParams, source: Layer, catalog: Catalog
) -> tuple[ModelRef | None, ModelInfo | None, str, PatchGrid, ScalePlan]:
    """The model (None: the classical filter) and what it says about itself, its target, the
    patch grid it predicts on (over the model-space volume when the input is resampled; patch
    sides fitted to it and to the model's divisor) and the resampling to its voxel size."""
    bounds = source.bounds(0)
    if params.model == CLASSICAL:
        ref, info, target = None, None, "boundary (classical, no model)"
        scale, divisor = ScalePlan(None, ""), Vec3(1, 1, 1)
    else:
        ref, info, session = load_model(params, catalog)
        target, divisor = info.target, info.divisor
        scale = plan_scale(source, info.domain, params.resample == "auto")
        for warning in scale.warnings:
            log.warning("infer: %s", warning)
    grid_bounds = scale.resampling.model_bounds() if scale.resampling else bounds
    grid = patch_grid(grid_bounds, Vec3.of(params.patch), Vec3.of(params.overlap), divisor)
    if ref is not None:
        check_patch(session, info, grid.patch, ref.url)
    return ref, info, target, grid, scale


def plan_infer(params: InferParams, catalog: Catalog) -> list[StagePlan]:
    source = catalog.layer(catalog.url(params.input))
    check_input(source)
    bounds = source.bounds(0)
    ref, info, target, patches, scale = model_patches(params, source, catalog)
    url = catalog.url(params.output)
    target_layer = catalog.plan_layer(url, output_spec(params, source, ref, info, scale))
    chunk_shape = writing_task_shape(
        params.chunk_shape, target_layer, bounds.shape, task_bytes(scale), name="infer chunk_shape"
    )
    predict: PredictFn = ClassicalPredictor() if ref is None else OnnxPredictor(ref)
    fill = None if info is None else no_data_value(info.target, info.domain)
    stage_spec = {
        **params.hashed_fields(),
        "input": source.url,
        "output": url,
        "model": ref.url if ref else CLASSICAL,
        "model_sha256": ref.sha256 if ref else None,
        "patch_used": list(patches.patch),
        "overlap_used": list(patches.overlap),
        "task_shape": list(chunk_shape),
        **scale.spec(),
        # a cleft or synapse model's no-data fill (added later: absent for the others)
        **({} if fill is None else {"no_data_value": fill}),
    }
    plan = StagePlan(
        label=f"infer {params.input} → {params.output} ({target})",
        stage="infer",
        version=VERSION,
        spec=stage_spec,
        grid=ChunkGrid(bounds, chunk_shape, 0, origin=bounds.start),
        job=InferJob(
            source=source,
            target=target_layer,
            patches=patches,
            predict=predict,
            batch=params.batch,
            fill_missing=params.fill_missing,
            resampling=scale.resampling,
            no_data_value=fill,
        ),
        resources=params.resources,
        layer_infos={url: target_layer.info},
        outputs=(Output(url),),
        hooks=DriverHooks(bind=job_binding(params, ref, info, source, scale)),
    )
    return [plan]


def output_spec(
    params: InferParams,
    source: Layer,
    ref: ModelRef | None,
    info: ModelInfo | None,
    scale: ScalePlan,
) -> LayerSpec:
    """The output layer: the model's channels on the input's grid, with the model's record."""
    bounds = source.bounds(0)
    return LayerSpec(
        layer_type="image",
        dtype=params.output_dtype,
        size=bounds.shape,
        resolution=source.resolution(0),
        chunk_size=Vec3.of(params.storage_chunk or source.chunk_size(0)),
        voxel_offset=bounds.start,
        encoding="raw",
        num_channels=1 if info is None else info.channels,
        sharding=layer_sharding(params.sharding),
        extra=() if ref is None or info is None else ((INFO_KEY, model_record(ref, info, scale)),),
    )


def task_bytes(scale: ScalePlan) -> int:
    """Sizing weight per layer voxel: a task also holds its model-space arrays, more of them per
    layer voxel when the input is upsampled to the model's voxels."""
    upsampled = math.prod(scale.resampling.scale) if scale.resampling else 1.0
    return round(BYTES_PER_VOXEL * max(1.0, upsampled))


def model_record(ref: ModelRef, info: ModelInfo, scale: ScalePlan) -> dict:
    """What the output layer's info says about the model that made it and what it predicts
    (read by `segment`, which refuses a cleft map)."""
    return {
        "model": ref.url,
        "sha256": ref.sha256,
        "target": info.target,
        **info.domain.as_dict(),
        "model_scale": list(scale.resampling.scale) if scale.resampling else None,
    }


def job_binding(
    params: InferParams,
    ref: ModelRef | None,
    info: ModelInfo | None,
    source: Layer,
    scale: ScalePlan,
) -> JobBinding | None:
    """On the driver, once the earlier stages ran: fit the intensities (a model's), then place
    the forward pass (GPU actors or in each task)."""
    if ref is None or info is None:
        return None
    return intensity_binding(
        source,
        info.domain,
        params.normalise == "auto",
        params.fill_missing,
        then=device_binding(params, ref),
        notes=(scale.note,),
    )


def device_binding(params: InferParams, ref: ModelRef):
    """Where the forward pass runs, decided once Ray is up: GPU actors, or in each CPU task."""
    if params.device == "cpu":
        return None

    def bind(job: ChunkJob) -> AbstractContextManager[ChunkJob]:
        from petavox.workflows.model_actors import cluster_has_gpus, gpu_actors

        if params.device == "gpu" or cluster_has_gpus():
            return gpu_actors(job, ref, params.gpu_actors, params.gpus_per_actor)  # type: ignore[arg-type]
        return nullcontext(job)

    return bind


STAGE = Stage(
    name="infer",
    order=40,
    params=InferParams,
    planner=plan_infer,
    positionals=(
        Positional(field="input", metavar="RAW_URL", help="image layer (uint8 or float 0-1)"),
        Positional(
            field="output",
            metavar="OUTPUT_URL",
            help="layer URL to write: boundary, affinities or clefts, as the model predicts",
        ),
    ),
)
