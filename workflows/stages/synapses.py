"""Plan `synapses`: the classical cleft detector per chunk (with a halo), a table per chunk."""

from __future__ import annotations

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.synapse.detection import DetectorParams, required_halo
from petavox.tasks.synapse.synapse_jobs import SynapseJob
from petavox.workflows.catalog import Catalog
from petavox.workflows.config import SynapsesParams
from petavox.workflows.ledger import identity
from petavox.workflows.runner import StagePlan
from petavox.workflows.stages.sizing import layer_grid

VERSION = 2
BYTES_PER_VOXEL = 64  # uint64 labels, float32 image, the filters' float and label copies


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


def plan_synapses(params: SynapsesParams, catalog: Catalog) -> StagePlan:
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
    return StagePlan(
        label=f"synapses {params.input} + {params.segmentation} → {params.output}",
        stage="synapses",
        identity=identity("synapses", VERSION, spec),
        spec=spec,
        grid=grid,
        job=SynapseJob(raw, seg, output, detector, params.fill_missing),
        resources=params.resources,
    )
