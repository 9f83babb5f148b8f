"""Stage `synapses`: clefts from a cleft probability layer (`clefts`), or without one the
classical cleft detector (the fallback), per chunk with a halo; a table per chunk."""

from __future__ import annotations

from functools import partial
from typing import ClassVar, Literal

from pydantic import Field

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import get, list_keys, put_json
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.ml.examples import SYNAPSE_TARGETS
from petavox.tasks.synapse import cleft_channel
from petavox.tasks.synapse.cleft_channel import CleftParams
from petavox.tasks.synapse.detection import DetectorParams, required_halo
from petavox.tasks.synapse.partner_ranker import BUILTIN, load_ranker
from petavox.tasks.synapse.synapse_jobs import CLASSICAL, CLEFT_CHANNEL, SynapseJob
from petavox.tasks.synapse.table import from_parquet
from petavox.workflows.catalog import Catalog
from petavox.workflows.params import NonNegativeTriple, PositiveTriple, StageParams
from petavox.workflows.plan import Output, StagePlan
from petavox.workflows.sizing import layer_grid
from petavox.workflows.stage import Positional, Stage

VERSION = 2
DETECTOR_KEY = "detector.json"  # in the output folder: which detector made the tables
SUMMARY_TABLES = 4096  # the summary counts the synapses of at most this many chunk tables
BYTES_PER_VOXEL = 64  # uint64 labels, float32 image, the filters' float and label copies


class SynapsesParams(StageParams):
    """Raw image + segmentation [+ cleft probability] → synapse tables per chunk (the classical
    cleft detector is the fallback without --clefts)."""

    stage: Literal["synapses"] = "synapses"
    input: str = Field("raw", description="raw EM image layer (1 channel): name or URL")
    segmentation: str = Field(
        "segmentation", description="segmentation layer (same bounds and resolution): name or URL"
    )
    output: str = Field(
        "synapses",
        description="folder for the tables (chunks/*.parquet, read by connectome): name or URL",
    )
    clefts: str | None = Field(
        None,
        description="cleft probability layer (one channel, uint8 0-255 or float 0-1, the "
        "image's bounds and resolution; made by infer): name or URL. Clefts are then its "
        "components of probability >= threshold; a synapse model's three channels (cleft, "
        "presynaptic side, postsynaptic side) give the partners too. Without it the "
        "classical detector (the fallback) finds clefts as dark membrane between two segments",
    )
    threshold: float = Field(
        0.5, gt=0, le=1, description="with clefts: cleft voxels have probability >= this (0-1)"
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
    min_presynaptic: float = Field(
        0.35,
        ge=0,
        le=1,
        description="with a synapse model's side channels: a cleft is a synapse only with this "
        "much presynaptic probability around it (95th percentile, 0-1)",
    )
    partner_ranker: str = Field(
        BUILTIN,
        description="with a synapse model's side channels: the ranker that picks each cleft's "
        "partners among the segments near it (a file written by python -m "
        "petavox.workflows.train_partner_ranker; builtin: the one fit on the built-in synapse "
        "model's output)",
    )
    halo: NonNegativeTriple | None = Field(
        None,
        description="context read around each chunk, X,Y,Z (default and minimum: what the "
        "detector needs for the same synapses under any chunking)",
    )
    chunk_shape: PositiveTriple | None = Field(
        None, description="voxels per task, a multiple of the storage chunk (default: ~16 M)"
    )
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")

    #: the ranker's identity is its weights' checksum, in the spec of side-channel runs
    UNHASHED: ClassVar[frozenset[str]] = StageParams.UNHASHED | frozenset({"partner_ranker"})
    #: added after runs existed; their defaults (no clefts layer) run the classical detector
    HASHED_UNLESS_DEFAULT: ClassVar[frozenset[str]] = frozenset(
        {"clefts", "threshold", "min_presynaptic"}
    )


def detector_params(params: SynapsesParams) -> DetectorParams | CleftParams:
    """The cleft-channel detector's params with a clefts layer, else the classical one's."""
    if params.clefts is not None:
        return CleftParams(
            threshold=params.threshold,
            sigma=params.sigma,
            min_size=params.min_size,
            max_extent=params.max_extent,
            vesicle_threshold=params.vesicle_threshold,
            reach=params.reach,
            min_presynaptic=params.min_presynaptic,
            partner_ranker=load_ranker(params.partner_ranker),
        )
    return DetectorParams(
        sigma=params.sigma,
        voxel_threshold=params.voxel_threshold,
        seed_threshold=params.seed_threshold,
        contact_radius=params.contact_radius,
        min_size=params.min_size,
        max_extent=params.max_extent,
        vesicle_threshold=params.vesicle_threshold,
        reach=params.reach,
    )


def check_inputs(raw: Layer, seg: Layer) -> None:
    """Raw: a one-channel image; segmentation: labels on the same voxels."""
    if raw.layer_type != "image" or raw.num_channels != 1:
        raise LayerMismatchError(
            f"{raw.url} is a {raw.num_channels}-channel {raw.layer_type} layer; synapses takes "
            "the raw EM image (one-channel image layer, uint8 or float 0-1) as its input"
        )
    if raw.dtype.name not in ("uint8", "float32", "float64"):
        raise LayerMismatchError(
            f"{raw.url} holds {raw.dtype}; synapses reads the raw image as uint8 (0-255) or "
            "float in 0-1: write it as uint8, or as float32 rescaled to 0-1"
        )
    if seg.layer_type != "segmentation" or seg.num_channels != 1:
        raise LayerMismatchError(
            f"{seg.url} is not a one-channel segmentation layer; give synapses the output of "
            "segment (or any labels layer) as its segmentation"
        )
    check_same_grid(seg, raw, "segmentation")


def check_same_grid(layer: Layer, raw: Layer, what: str) -> None:
    """`layer` (the `what` of the image) must cover the image's voxels at mip 0."""
    if layer.bounds(0) != raw.bounds(0) or layer.resolution(0) != raw.resolution(0):
        raise LayerMismatchError(
            f"{layer.url} covers {layer.bounds(0)} at {layer.resolution(0)} nm but {raw.url} "
            f"covers {raw.bounds(0)} at {raw.resolution(0)} nm; synapses needs the {what} of "
            "this image (same bounds and resolution at mip 0)"
        )


def check_clefts(clefts: Layer, raw: Layer) -> None:
    """The cleft probability (one channel), or a synapse model's cleft, presynaptic-side and
    postsynaptic-side probabilities (three), uint8 or float, on the image's voxels."""
    target = (clefts.info.get("petavox_model") or {}).get("target")
    channels = 3 if target == "synapses" else 1
    if clefts.num_channels != channels or clefts.layer_type != "image":
        raise LayerMismatchError(
            f"{clefts.url} is a {clefts.num_channels}-channel {clefts.layer_type} layer; "
            "synapses --clefts takes the cleft probability (a one-channel image layer) or a "
            "synapse model's three channels (cleft, presynaptic side, postsynaptic side), as "
            "infer writes them"
        )
    if clefts.dtype.name not in ("uint8", "float32", "float64"):
        raise LayerMismatchError(
            f"{clefts.url} holds {clefts.dtype}; synapses reads the cleft probability as uint8 "
            "(0-255) or float in 0-1"
        )
    if target not in (None, *SYNAPSE_TARGETS):
        raise LayerMismatchError(
            f"{clefts.url} is the {target} output of a model (its info says so), not a cleft "
            "probability; give synapses --clefts the layer infer writes with a cleft model"
        )
    check_same_grid(clefts, raw, "cleft probability")


def open_clefts(params: SynapsesParams, catalog: Catalog, raw: Layer) -> Layer | None:
    """The cleft probability layer, checked against the image (None: the classical detector)."""
    if params.clefts is None:
        if params.threshold != SynapsesParams.model_fields["threshold"].default:
            raise InputError(
                "synapses threshold is the cleft probability's; it needs a clefts layer "
                "(without one the classical detector runs): give --clefts or leave threshold out"
            )
        if params.partner_ranker != BUILTIN:
            raise InputError(
                "synapses partner_ranker picks partners from a synapse model's side channels; "
                "it needs a clefts layer made by one: give --clefts or leave partner_ranker out"
            )
        return None
    clefts = catalog.layer(catalog.url(params.clefts))
    check_clefts(clefts, raw)
    return clefts


def chosen_halo(
    params: SynapsesParams,
    detector: DetectorParams | CleftParams,
    channel: bool,
    resolution: tuple[float, float, float],
) -> Vec3:
    """The halo given, else the smallest with which the synapse set is chunking-independent."""
    need = (cleft_channel.required_halo if channel else required_halo)(detector, resolution)
    halo = need if params.halo is None else Vec3.of(params.halo)
    if any(h < n for h, n in zip(halo, need)):
        raise InputError(
            f"synapses halo {tuple(halo)} is smaller than {tuple(need)}, what the detector "
            "needs to see every cleft whole with its partners; leave halo out or raise it to "
            "at least that"
        )
    return halo


def plan_synapses(params: SynapsesParams, catalog: Catalog) -> list[StagePlan]:
    raw = catalog.layer(catalog.url(params.input))
    seg = catalog.layer(catalog.url(params.segmentation))
    check_inputs(raw, seg)
    clefts = open_clefts(params, catalog, raw)
    detector = detector_params(params)
    halo = chosen_halo(params, detector, clefts is not None, raw.resolution(0))
    grid = layer_grid(
        raw, params.chunk_shape, BYTES_PER_VOXEL, name="synapses chunk_shape", halo=halo
    )
    output = catalog.url(params.output)
    spec = {
        **params.hashed_fields(),
        "input": raw.url,
        "segmentation": seg.url,
        "output": output,
        "task_shape": list(grid.chunk_shape),
        "halo": list(halo),
    }
    label = f"synapses {params.input} + {params.segmentation} → {params.output}"
    if clefts is not None:
        spec["clefts"] = clefts.url
        if clefts.num_channels == 3:  # side channels: the presynaptic rule and the ranker apply
            spec["min_presynaptic"] = params.min_presynaptic
            spec["partner_ranker"] = detector.partner_ranker.checksum
        elif params.partner_ranker != BUILTIN:
            raise InputError(
                f"synapses partner_ranker picks partners from a synapse model's side channels; "
                f"{clefts.url} has one channel (a cleft model's): leave partner_ranker out"
            )
        label = (
            f"synapses {params.input} + {params.segmentation} + {params.clefts} → {params.output}"
        )
    plan = StagePlan(
        label=label,
        stage="synapses",
        version=VERSION,
        spec=spec,
        grid=grid,
        job=SynapseJob(
            raw=raw,
            segmentation=seg,
            output_url=output,
            params=detector,
            clefts=clefts,
            fill_missing=params.fill_missing,
        ),
        resources=params.resources,
        outputs=(Output(output),),
        global_step=partial(
            put_json,
            output,
            DETECTOR_KEY,
            detector_record(params, clefts, detector),
            catalog.context,
        ),
    )
    return [plan]


def detector_record(
    params: SynapsesParams, clefts: Layer | None, detector: DetectorParams | CleftParams
) -> dict:
    """What `detector.json` in the output folder says made the tables."""
    if clefts is None:
        return {"detector": CLASSICAL, "fallback": True}
    record = {"detector": CLEFT_CHANNEL, "clefts": clefts.url, "threshold": params.threshold}
    if clefts.num_channels == 3 and isinstance(detector, CleftParams):
        record["partner_ranker"] = detector.partner_ranker.checksum
    return record


def print_summary(root: str, context: StorageContext) -> None:
    """What `petavox synapses` prints after the stage: the synapses found, and by what."""
    import json

    keys = [k for k in list_keys(root, "chunks/", context) if k.endswith(".parquet")]
    record = json.loads(get(root, DETECTOR_KEY, context) or b"{}")
    if record.get("detector") == CLEFT_CHANNEL:
        how = f"from the cleft channel {record['clefts']} (threshold {record['threshold']})"
        if "partner_ranker" in record:
            how += f", partners by the ranker {record['partner_ranker']}"
    else:
        how = "by the classical detector (the fallback: no --clefts layer)"
    count = ""
    if len(keys) <= SUMMARY_TABLES:  # else too many reads for a summary
        rows = sum(len(from_parquet(get(root, k, context) or b"")["synapse_id"]) for k in keys)
        count = f"{rows} "
    print(f"synapses: {count}in {len(keys)} chunk tables, found {how}")


STAGE = Stage(
    name="synapses",
    order=90,
    params=SynapsesParams,
    planner=plan_synapses,
    positionals=(
        Positional(field="input", metavar="RAW_URL", help="raw EM image layer (one channel)"),
        Positional(
            field="segmentation", metavar="SEG_URL", help="segmentation of that image (same bounds)"
        ),
        Positional(
            field="output",
            metavar="OUTPUT_URL",
            help="folder for the synapse tables (chunks/*.parquet)",
        ),
    ),
    summary=print_summary,
)
