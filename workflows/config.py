"""The run config: one YAML file, validated by pydantic before anything is dispatched or written.

A config has three parts. `output` and `stages` are the *spec*: what to compute, hashed into each
task's identity. `ray` and `storage` are runtime *context*: where and how to run, never hashed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.storage import StorageContext, normalize_url

Triple = tuple[int, int, int]
PositiveTriple = tuple[
    Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]
]
NonNegativeTriple = tuple[
    Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]
]
Resolution = tuple[
    Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]
]


class Strict(BaseModel):
    """Unknown keys are errors; models are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_memory(value: int | float | str | None) -> int | None:
    """Bytes from ``1073741824``, ``"2GiB"``, ``"512MB"`` or ``"1.5G"`` (binary units)."""
    if value is None or isinstance(value, int | float):
        return None if value is None else int(value)
    m = _MEMORY.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a memory size; write e.g. 2GiB, 512MiB or 1073741824")
    unit = (m.group(2) or "B").upper()[0]
    power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit]
    return int(float(m.group(1)) * 1024**power)


class Resources(Strict):
    """What one task of a stage needs; the Ray autoscaler adds nodes that have it."""

    num_cpus: float = Field(1.0, ge=0, description="CPU cores per task")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per task")
    memory: int | None = Field(None, ge=0, description="memory per task, e.g. 2GiB")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        return parse_memory(value)


class StageParams(Strict):
    """Fields every stage has. `resources` is context (not hashed); the rest is the spec."""

    resources: Resources = Field(default_factory=Resources, description="Ray resources per task")

    #: fields that do not change a stage's output, so they stay out of its identity hash
    UNHASHED: ClassVar[frozenset[str]] = frozenset({"resources"})

    def hashed_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(self.UNHASHED))


class IngestParams(StageParams):
    """Image stack (TIFF/PNG slices, multi-page TIFF, .npy, .h5) to a precomputed layer."""

    stage: Literal["ingest"] = "ingest"
    input: str = Field(
        description="slice folder, .tif stack, .npy or file.h5:dataset (local path or file://)"
    )
    output: str = Field("raw", description="layer name under the run output, or a full URL")
    axes: str = Field("zyx", description="axis order of the stored array (slice folders: zyx)")
    layer_type: Literal["image", "segmentation"] = Field("image", description="layer type")
    resolution: Resolution = Field(description="voxel size in nm, X,Y,Z")
    voxel_offset: Triple = Field((0, 0, 0), description="position of voxel 0 in the volume, X,Y,Z")
    dtype: str | None = Field(None, description="layer dtype (default: the source's)")
    encoding: Literal["raw", "jpeg", "compressed_segmentation"] | None = Field(
        None,
        description="chunk encoding (default: raw; compressed_segmentation for uint32/64 labels)",
    )
    storage_chunk: PositiveTriple = Field((64, 64, 64), description="chunk size of the layer")
    chunk_shape: PositiveTriple | None = Field(
        None, description="voxels per task, a multiple of storage_chunk (default: ~64 M voxels)"
    )

    @field_validator("axes")
    @classmethod
    def _axes(cls, value: str) -> str:
        if sorted(value) != ["x", "y", "z"]:
            raise ValueError(f"{value!r} is not an order of the letters x, y, z (e.g. zyx)")
        return value


class DownsampleParams(StageParams):
    """Adds a mip pyramid to a layer: averaging for images, mode for segmentations."""

    stage: Literal["downsample"] = "downsample"
    input: str = Field("raw", description="layer to downsample: name under the output, or URL")
    output: str | None = Field(None, description="layer that gets the pyramid (default: input)")
    factor: PositiveTriple = Field((2, 2, 1), description="downsampling factor per mip, X,Y,Z")
    mips: int = Field(3, ge=1, le=12, description="number of new mips to make")
    method: Literal["auto", "average", "mode"] = Field(
        "auto", description="auto: average for images, mode for segmentations"
    )
    chunk_shape: PositiveTriple | None = Field(
        None,
        description="mip-0 voxels per task, a multiple of storage chunk × factor^mips "
        "(default: ~64 M voxels)",
    )
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")
    bounds: tuple[Triple, Triple] | None = Field(
        None,
        description="only this box, [[x0,y0,z0],[x1,y1,z1]] in mip-0 voxels (grown to whole tasks)",
    )

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, value: tuple[Triple, Triple] | None) -> tuple[Triple, Triple] | None:
        if value is not None and any(b <= a for a, b in zip(*value)):
            raise ValueError(f"bounds {value} are empty: each stop must exceed its start")
        return value


class SegmentParams(StageParams):
    """Boundary map or affinities → one global id per object, segmented per chunk and stitched."""

    stage: Literal["segment"] = "segment"
    input: str = Field(
        "boundary",
        description="boundary map (1 channel, float 0-1 or uint8, high = membrane) or "
        "affinities (3 channels x,y,z, high = connected): layer name or URL",
    )
    output: str = Field("segmentation", description="layer name under the run output, or a URL")
    mode: Literal["watershed", "cc"] = Field(
        "watershed",
        description="watershed: seeded watershed + mean-affinity agglomeration; "
        "cc: connected components of boundary < boundary_threshold",
    )
    chunk_shape: PositiveTriple | None = Field(
        None, description="voxels per task, a multiple of the storage chunk (default: ~16 M voxels)"
    )
    halo: NonNegativeTriple = Field(
        (32, 32, 32),
        description="context read around each chunk in watershed mode, X,Y,Z (≥ 2 each)",
    )
    storage_chunk: PositiveTriple | None = Field(
        None, description="chunk size of the output layer (default: the input's)"
    )
    smoothing: float = Field(0.5, ge=0, description="Gaussian sigma on the boundary map (voxels)")
    seed_threshold: float = Field(
        0.15,
        ge=0,
        le=1,
        description="boundary below this seeds the watershed (distance seeds: is foreground)",
    )
    seeds: Literal["threshold", "distance"] = Field(
        "threshold",
        description="threshold: components of boundary < seed_threshold; distance: maxima of "
        "the distance transform of that foreground (robust to membrane gaps; use for CNN maps)",
    )
    seed_radius: float = Field(
        3.0, gt=0, description="distance seeds: at most one seed per this radius (x voxels)"
    )
    merge_threshold: float = Field(
        0.875, ge=0, le=1, description="agglomerate while 1 - mean affinity is below this"
    )
    boundary_threshold: float = Field(
        0.5, ge=0, le=1, description="cc mode: voxels with boundary below this are foreground"
    )
    connectivity: Literal[6, 18, 26] = Field(6, description="cc mode: voxel connectivity")
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")


class AlignParams(StageParams):
    """Serial sections → aligned stack: estimate flows, solve per-section transforms, render."""

    stage: Literal["align"] = "align"
    input: str = Field("raw", description="image layer of the stack: name or URL")
    output: str = Field("aligned", description="layer name under the run output, or a URL")
    patch: int = Field(64, ge=16, description="side of a matching patch (pixels)")
    patch_spacing: int = Field(32, ge=4, description="distance between patch centres")
    coarse: int = Field(4, ge=1, description="downsampling of the coarse (whole-tile) match")
    max_shift: int = Field(
        64, ge=0, description="largest expected shift between neighbouring sections (pixels)"
    )
    bridge: bool = Field(True, description="also match each section to z-2 (skips a bad one)")
    tile: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] | None = Field(
        None, description="estimate in XY tiles of this size (default: whole sections)"
    )
    mesh_spacing: float = Field(64.0, gt=0, description="pixels between elastic mesh nodes")
    stiffness: float = Field(0.5, ge=0, description="springs between neighbouring mesh nodes")
    prior: float = Field(0.02, gt=0, description="spring of each section to no motion (drift)")
    linear_prior: float = Field(
        0.3, gt=0, description="the same for rotation/scale/shear (pixels at the section edge)"
    )
    min_confidence: float = Field(0.2, ge=0, le=1, description="patches below are ignored")
    chunk_shape: PositiveTriple | None = Field(
        None, description="render: voxels per task, a multiple of the storage chunk"
    )
    storage_chunk: PositiveTriple | None = Field(
        None, description="chunk size of the output layer (default: the input's)"
    )
    mips: int = Field(2, ge=0, le=12, description="pyramid levels (factor 2,2,1) to add")
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")
    carry: dict[str, str] = Field(
        {},
        description="other layers in the raw frame (e.g. annotations) to render with the "
        "same transforms: {input: output}; labels by nearest pixel",
    )


class InferParams(StageParams):
    """Image → boundary map or affinities with a CNN (ONNX), patch-wise with seamless blending."""

    stage: Literal["infer"] = "infer"
    input: str = Field("raw", description="image layer (uint8, or float 0-1): name or URL")
    output: str = Field("boundary", description="layer name under the run output, or a URL")
    model: str | None = Field(
        None,
        description="ONNX model: path or file/s3/gs URL; 'classical' for the no-model filter "
        "(default: the built-in model trained on synthetic data)",
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

    UNHASHED: ClassVar[frozenset[str]] = frozenset(
        {"resources", "device", "gpu_actors", "gpus_per_actor", "batch"}
    )

    @field_validator("model_sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value.lower()):
            raise ValueError("model_sha256 must be 64 hexadecimal digits (sha256sum of the file)")
        return value.lower() if value else value


class EvaluateParams(StageParams):
    """Scores a segmentation against a ground-truth layer; writes the scores as JSON."""

    stage: Literal["evaluate"] = "evaluate"
    input: str = Field("segmentation", description="segmentation layer: name or URL")
    ground_truth: str = Field(description="ground-truth layer: name or URL")
    ignore: list[int] = Field([0], description="ground-truth labels left out of the scores")
    report: str = Field(
        "evaluation.json", description="where the scores go: key under the run output, or URL"
    )


class MeshParams(StageParams):
    """Segmentation → a surface mesh per segment (marching cubes + simplification, zmesh)."""

    stage: Literal["mesh"] = "mesh"
    input: str = Field("segmentation", description="segmentation layer: name or URL")
    mesh_dir: str = Field("mesh", description="folder in the layer for the meshes")
    reduction_factor: int = Field(
        100, ge=0, description="simplify to about 1/this of the triangles (0: no simplification)"
    )
    max_error: float = Field(40.0, gt=0, description="nm a simplified vertex may move")
    chunk_shape: PositiveTriple | None = Field(
        None, description="voxels per task, a multiple of the storage chunk (default: ~64 M)"
    )
    manifest_digits: int | None = Field(
        None,
        ge=1,
        le=6,
        description="legacy: manifest tasks split the ids by this many digits "
        "(default: about one manifest task per 10 mesh tasks, 1 to 5 digits)",
    )
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")
    format: Literal["legacy", "sharded"] = Field(
        "legacy",
        description="legacy: a file per segment and chunk; sharded: multi-resolution "
        "(neuroglancer_multilod_draco), one file per shard (for millions of segments)",
    )
    lods: int = Field(
        3, ge=1, le=8, description="sharded: levels of detail, each ~1/4 of the finer's triangles"
    )
    shard_bits: int | None = Field(
        None,
        ge=0,
        le=20,
        description="sharded: 2^shard_bits shard files, a merge task each; "
        "default: about one per 8 chunk tasks",
    )
    minishard_bits: int = Field(6, ge=0, le=16, description="sharded: minishards per shard, log2")
    vertex_quantization_bits: Literal[10, 16] = Field(
        16, description="sharded: bits per vertex coordinate within an octree node"
    )

    #: the options of one format only
    SHARDED_ONLY: ClassVar[frozenset[str]] = frozenset(
        {"lods", "shard_bits", "minishard_bits", "vertex_quantization_bits"}
    )
    LEGACY_ONLY: ClassVar[frozenset[str]] = frozenset({"manifest_digits"})


class SkeletonizeParams(StageParams):
    """Segmentation → a skeleton per segment (kimimaro's TEASAR per chunk, merged across chunks)."""

    stage: Literal["skeletonize"] = "skeletonize"
    input: str = Field("segmentation", description="segmentation layer: name or URL")
    skeleton_dir: str = Field("skeletons", description="folder in the layer for the skeletons")
    teasar_scale: float = Field(
        1.5, gt=0, description="invalidation radius = scale × distance to boundary + const"
    )
    teasar_const: float = Field(300.0, ge=0, description="the const of that radius (nm)")
    dust_threshold: int = Field(
        1000, ge=0, description="a segment's pieces within one task with fewer voxels are skipped"
    )
    fix_branching: bool = Field(True, description="branch points where paths part (slower)")
    tick_threshold: float = Field(
        3000.0, ge=0, description="side branches shorter than this (nm) are removed (0: none)"
    )
    min_cable: float = Field(
        0.0,
        ge=0,
        description="components shorter than this (nm) are dropped, except a segment's longest",
    )
    sharded: bool = Field(False, description="write sharded skeletons (one file per shard)")
    shard_bits: int | None = Field(
        None,
        ge=0,
        le=20,
        description="2^shard_bits merge tasks, each writing its share of the ids (one shard "
        "file when sharded); default: about one per 8 chunk tasks",
    )
    minishard_bits: int = Field(6, ge=0, le=16, description="sharded: minishards per shard, log2")
    chunk_shape: PositiveTriple | None = Field(
        None, description="voxels per task, a multiple of the storage chunk (default: ~8 M)"
    )
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")


class SynapsesParams(StageParams):
    """Raw image + segmentation → synapse tables per chunk (classical cleft detector)."""

    stage: Literal["synapses"] = "synapses"
    input: str = Field("raw", description="raw EM image layer (1 channel): name or URL")
    segmentation: str = Field(
        "segmentation", description="segmentation layer (same bounds and resolution): name or URL"
    )
    output: str = Field(
        "synapses",
        description="folder for the tables (chunks/*.parquet, read by connectome): name or URL",
    )
    sigma: float = Field(1.0, gt=0, description="Gaussian weighting of cytoplasm darkness (voxels)")
    voxel_threshold: float = Field(
        0.3, gt=0, le=1, description="candidate voxels: cytoplasm darkness below this (0-1)"
    )
    seed_threshold: float = Field(
        0.19, gt=0, le=1, description="a cleft has a voxel whose darkness is below this (0-1)"
    )
    contact_radius: int = Field(
        2, ge=1, description="two different segments within this of a candidate (voxels)"
    )
    min_size: int = Field(15, ge=1, description="fewest voxels of a cleft")
    max_extent: int = Field(20, ge=1, description="most voxels of a cleft along every axis")
    vesicle_threshold: float = Field(
        0.4, gt=0, le=1, description="direction: image below this counts as dark (0-1)"
    )
    reach: int = Field(10, ge=1, description="how far partners are looked for (voxels)")
    halo: NonNegativeTriple | None = Field(
        None,
        description="context read around each chunk, X,Y,Z (default and minimum: what the "
        "detector needs for the same synapses under any chunking)",
    )
    chunk_shape: PositiveTriple | None = Field(
        None, description="voxels per task, a multiple of the storage chunk (default: ~16 M)"
    )
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")


class ConnectomeParams(StageParams):
    """Synapse tables → the connectome: table, edges, segment statistics, annotation layer."""

    stage: Literal["connectome"] = "connectome"
    input: str = Field(
        "synapses", description="synapses output (folder with chunks/*.parquet): name or URL"
    )
    output: str | None = Field(None, description="folder for the connectome (default: input)")
    segmentation: str | None = Field(
        None, description="segmentation layer: name or URL; adds each segment's volume (voxels)"
    )
    shard_bits: int = Field(
        4,
        ge=0,
        le=16,
        description="2^shard_bits shards of segment ids, a task each (aim for ≤ ~10^6 synapses "
        "per shard); also the annotation indexes' shard files",
    )
    minishard_bits: int = Field(6, ge=0, le=16, description="minishards per shard, log2")
    readers: int = Field(16, ge=1, description="tasks that read the chunk tables, a share each")
    spatial_cell: float = Field(
        4096.0, gt=0, description="finest spatial-index cell of the annotation layer (nm)"
    )
    fill_missing: bool = Field(False, description="treat missing segmentation chunks as zeros")


AnyStage = Annotated[
    IngestParams
    | DownsampleParams
    | AlignParams
    | InferParams
    | SegmentParams
    | EvaluateParams
    | MeshParams
    | SkeletonizeParams
    | SynapsesParams
    | ConnectomeParams,
    Field(discriminator="stage"),
]
STAGE_MODELS: dict[str, type[StageParams]] = {
    "ingest": IngestParams,
    "downsample": DownsampleParams,
    "align": AlignParams,
    "infer": InferParams,
    "segment": SegmentParams,
    "evaluate": EvaluateParams,
    "mesh": MeshParams,
    "skeletonize": SkeletonizeParams,
    "synapses": SynapsesParams,
    "connectome": ConnectomeParams,
}


class RayConfig(Strict):
    """Where tasks run. Context: never hashed."""

    address: str = Field(
        "local", description="local (start Ray here), auto (join the running cluster) or HOST:PORT"
    )
    workers: int | None = Field(None, ge=1, description="CPUs of a local Ray (default: all cores)")
    gpus: int | None = Field(None, ge=0, description="GPUs of a local Ray (default: detected)")
    max_in_flight: int | None = Field(
        None, ge=1, description="tasks submitted at once (default: 2 × cluster CPUs)"
    )
    task_retries: int = Field(3, ge=0, description="reruns of a task whose worker died")
    storage_retries: int = Field(
        5, ge=0, description="attempts on transient storage errors inside a task"
    )


class StorageConfig(Strict):
    """How to reach object storage. Context: never hashed; credentials come from the environment."""

    s3_endpoint: str | None = Field(
        None, description="S3-compatible endpoint for s3:// URLs, e.g. http://127.0.0.1:9000"
    )
    s3_region: str = Field("us-east-1", description="region sent to the S3 endpoint")
    gcs_endpoint: str | None = Field(None, description="GCS emulator endpoint (tests)")

    def context(self) -> StorageContext:
        return StorageContext(self.s3_endpoint, self.s3_region, self.gcs_endpoint)


class RunConfig(Strict):
    """A whole run: the output root, the stages in order, and the runtime context."""

    output: str = Field(description="run output root URL: layers and the ledger go here")
    stages: list[AnyStage] = Field(min_length=1, description="stages to run, in order")
    ray: RayConfig = Field(default_factory=RayConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    @field_validator("output")
    @classmethod
    def _output(cls, value: str) -> str:
        return normalize_url(value)


class ConfigError(InputError):
    """The run config is invalid; the message lists every problem with its key."""


def _location(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in STAGE_MODELS and parts and parts[-1].endswith("]"):
            continue  # the discriminator tag pydantic inserts
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _allowed(loc: tuple) -> str:
    """For an unknown key: the keys allowed at that place."""
    model: type[BaseModel] | None = RunConfig
    for item in loc[:-1]:
        if isinstance(item, int):
            continue
        if item in STAGE_MODELS:
            model = STAGE_MODELS[item]
            continue
        field = model.model_fields.get(item) if model is not None else None
        ann = getattr(field, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if model is None:
        return ""
    return "; allowed keys: " + ", ".join(sorted(model.model_fields))


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid run config {source}:"]
    for err in exc.errors():
        where = _location(err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key{_allowed(err['loc'])}")
        elif err["type"] == "union_tag_invalid":
            lines.append(f"  {where}: unknown stage; stages are {', '.join(STAGE_MODELS)}")
        elif err["type"] == "union_tag_not_found":
            lines.append(f"  {where}: missing 'stage:' ({', '.join(STAGE_MODELS)})")
        else:
            lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid run config {source}: expected a mapping at the top level")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"run config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"run config {path} is not valid YAML: {exc}") from None
    return parse_config(data, str(path))


def dump_config(config: RunConfig) -> str:
    data = config.model_dump(mode="json", exclude_defaults=True)
    data["output"] = config.output
    # the discriminator is a default value too, but the file cannot do without it
    data["stages"] = [
        {"stage": s.stage, **d}  # type: ignore[attr-defined]
        for s, d in zip(config.stages, data["stages"])
    ]
    return yaml.safe_dump(data, sort_keys=False)
