"""Stage `synapses`: the classical cleft detector per chunk (with a halo), a table per chunk."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.synapse.detection import DetectorParams, required_halo
from petavox.tasks.synapse.synapse_jobs import SynapseJob
from petavox.workflows.catalog import Catalog
from petavox.workflows.params import NonNegativeTriple, PositiveTriple, StageParams
from petavox.workflows.plan import Output, StagePlan
from petavox.workflows.sizing import layer_grid
from petavox.workflows.stage import Positional, Stage

VERSION = 2
BYTES_PER_VOXEL = 64  # uint64 labels, float32 image, the filters' float and label copies


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


def detector_params(params: SynapsesParams) -> DetectorParams:
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
    if seg.bounds(0) != raw.bounds(0) or seg.resolution(0) != raw.resolution(0):
        raise LayerMismatchError(
            f"{seg.url} covers {seg.bounds(0)} at {seg.resolution(0)} nm but {raw.url} covers "
            f"{raw.bounds(0)} at {raw.resolution(0)} nm; synapses needs the segmentation of "
            "this image (same bounds and resolution at mip 0)"
        )


def plan_synapses(params: SynapsesParams, catalog: Catalog) -> list[StagePlan]:
    raw = catalog.layer(catalog.url(params.input))
    seg = catalog.layer(catalog.url(params.segmentation))
    check_inputs(raw, seg)
    detector = detector_params(params)
    need = required_halo(detector, raw.resolution(0))
    halo = need if params.halo is None else Vec3.of(params.halo)
    if any(h < n for h, n in zip(halo, need)):
        raise InputError(
            f"synapses halo {tuple(halo)} is smaller than {tuple(need)}, what the detector "
            "needs to see every cleft whole with its partners; leave halo out or raise it to "
            "at least that"
        )
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
    plan = StagePlan(
        label=f"synapses {params.input} + {params.segmentation} → {params.output}",
        stage="synapses",
        version=VERSION,
        spec=spec,
        grid=grid,
        job=SynapseJob(
            raw=raw,
            segmentation=seg,
            output_url=output,
            params=detector,
            fill_missing=params.fill_missing,
        ),
        resources=params.resources,
        outputs=(Output(output),),
    )
    return [plan]


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
)
