"""The built-in cell classifier, recreated: `python -m petavox.workflows.train_cells OUT` makes
`petavox:cells-synthetic.json` the way it was made. Synthetic volumes with cell classes at
fixed seeds are measured by the pipeline's own stages (ingest, skeletonize, morphology with the
image) on their ground-truth segmentation and on the pipeline's own segmentation of the image
(the built-in U-Net, `segment`), and a forest learns each segment's class: the generator's, or
for an own segment "neuron" if it holds a soma, else the class of the ground truth covering
most of it (`own_truth`).

`measure_volume`, `own_stages` and `own_truth` are also what the cell-class benchmark measures
held-out seeds with.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from petavox.tasks.classify.classify_jobs import features_of, usable_features
from petavox.tasks.classify.training import train
from petavox.tasks.morphology.table_reads import Table, read_dataset
from petavox.tasks.synthetic.generator import SyntheticParams, SyntheticVolume, generate
from petavox.workflows.config import parse_config

# train the built-in classifier (benchmark: 511-516, tests: 521, orientation: 611-623)
CELL_SEEDS = (*range(501, 511), *range(531, 541))
CELL_SHAPE = (192, 192, 96)  # x, y, z voxels at RESOLUTION
RESOLUTION = (8.0, 8.0, 8.0)
CLASSES = ("glia", "myelin", "neurite", "neuron", "vessel")
MIN_VOXELS = 500  # smaller segments are slivers whose shape says little; not trained on
INPUTS = {"image": True, "skeletons": True, "connectome": False}
#: skeletonize's parameters here: side branches of 400 nm (50 voxels) or more kept (the
#: default 3 µm is more than these volumes are wide, and would leave every cell one path)
SKELETONIZE = {"dust_threshold": 0, "tick_threshold": 200.0, "teasar_const": 50.0}


def cell_volume(seed: int, shape: tuple[int, int, int] = CELL_SHAPE, **more) -> SyntheticVolume:
    return generate(SyntheticParams(shape=shape, seed=seed, cell_classes=True, **more))


def morphology_stages(folder: Path, seg: str = "seg", **morphology) -> list[dict]:
    """Ingest the stacks in `folder` (seg.npy, image.npy), skeletonize, measure."""
    ingest = {"resolution": list(RESOLUTION), "storage_chunk": [32, 32, 32]}
    return [
        {"stage": "ingest", "input": str(folder / "seg.npy"), "output": seg, **ingest}
        | {"layer_type": "segmentation"},
        {"stage": "ingest", "input": str(folder / "image.npy"), "output": "image", **ingest},
        {"stage": "skeletonize", "input": seg, **SKELETONIZE},
        {"stage": "morphology", "input": seg, "image": "image", **morphology},
    ]


def own_stages() -> list[dict]:
    """The pipeline's own segmentation of the image (`own`): the built-in boundary U-Net and
    `segment` with the demo's parameters, then skeletonized and measured like the truth."""
    from petavox.workflows.demo import MERGE_THRESHOLD, SEEDS

    segment = {"halo": [16, 16, 16], **SEEDS, "merge_threshold": MERGE_THRESHOLD}
    return [
        {"stage": "infer", "input": "image", "output": "boundary"},
        {"stage": "segment", "input": "boundary", "output": "own", **segment},
        {"stage": "skeletonize", "input": "own", **SKELETONIZE},
        {"stage": "morphology", "input": "own", "image": "image"},
    ]


@contextmanager
def local_ray() -> Iterator:
    """One local Ray for every volume of a loop (a run without one starts and stops its own:
    seconds each time), shut down on exit."""
    from petavox.workflows.config import RayConfig
    from petavox.workflows.runner import RaySession

    session = RaySession(RayConfig())
    try:
        yield session
    finally:
        session.shutdown()


def measure_volume(volume: SyntheticVolume, folder: Path, session=None, more=()) -> None:
    """Measure the volume's ground truth (layer `seg`) and run the stages `more` after."""
    from petavox.workflows.pipeline import run

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "seg.npy", volume.labels.transpose(2, 1, 0))
    np.save(folder / "image.npy", volume.aligned_raw.transpose(2, 1, 0))
    stages = morphology_stages(folder) + list(more)
    config = parse_config({"output": f"file://{folder}", "stages": stages})
    run(config, session=session, progress=False)


def majority_class(own: np.ndarray, truth: np.ndarray, classes: dict[int, str]) -> dict[int, str]:
    """Each segment of `own`: the class of the ground-truth voxels covering most of it
    (membrane voxels left out)."""
    inside = (own != 0) & (truth != 0)
    code = np.zeros(int(truth.max()) + 1, np.int64)
    for label, name in classes.items():
        code[label] = CLASSES.index(name)
    pairs = own[inside].astype(np.int64) * len(CLASSES) + code[truth[inside]]
    keys, counts = np.unique(pairs, return_counts=True)
    seg, c = np.divmod(keys, len(CLASSES))
    order = np.lexsort((-counts, seg))  # per segment, its largest class first
    first = np.r_[True, seg[order][1:] != seg[order][:-1]]
    return {int(s): CLASSES[int(k)] for s, k in zip(seg[order][first], c[order][first])}


SOMA_CORE = 0.5  # a soma's core: its neuron's voxels at least this × its widest radius deep


def soma_cores(truth: np.ndarray, classes: dict[int, str]) -> np.ndarray:
    """Each voxel's neuron label if it lies in that neuron's soma core (0 elsewhere): the
    voxels of a class-neuron segment of `MIN_VOXELS` or more (a smaller one is a sliver, its
    deepest voxels no soma) whose distance to its boundary is at least `SOMA_CORE` times the
    segment's largest (the soma is far thicker than the neurites drawn from it)."""
    from scipy import ndimage

    sizes = np.bincount(truth.ravel())
    neurons = np.array(
        [i for i, c in classes.items() if c == "neuron" and sizes[i] >= MIN_VOXELS], np.int64
    )
    cores = np.zeros(truth.shape, np.uint32)
    if not len(neurons):
        return cores
    depth = ndimage.distance_transform_edt(np.pad(truth > 0, 1, constant_values=True))
    depth = depth[1:-1, 1:-1, 1:-1]
    widest = np.zeros(int(truth.max()) + 1)
    widest[neurons] = ndimage.maximum(depth, truth, neurons)
    core = np.isin(truth, neurons) & (depth >= SOMA_CORE * widest[truth])
    cores[core] = truth[core]
    return cores


def own_truth(folder: Path, volume: SyntheticVolume) -> dict[int, str]:
    """Each own segment's class: the ground truth's class covering most of it, with "neurite"
    for "neuron" (a process cut off from its soma), but "neuron" for a neuronal one that holds
    half or more of a neuron's soma core (the cell, whatever neurites were merged into it)."""
    from petavox.tasks.core.layers import Layer

    layer = Layer.open(f"file://{folder}/own")
    own = layer.read(layer.bounds(0))
    classes = majority_class(own, volume.labels, volume.classes)
    classes = {i: "neurite" if c == "neuron" else c for i, c in classes.items()}
    cores = soma_cores(volume.labels, volume.classes)
    inside = (cores > 0) & (own > 0)
    n = int(cores.max()) + 1
    pairs, counts = np.unique(own[inside].astype(np.int64) * n + cores[inside], return_counts=True)
    whole = np.bincount(cores[cores > 0], minlength=n)
    for segment, count, label in zip(pairs // n, counts, pairs % n):
        if 2 * count >= whole[label] and classes[int(segment)] == "neurite":
            classes[int(segment)] = "neuron"
    return classes


def labelled_rows(table: Table, truth: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """Features and class indices of the table's segments of `MIN_VOXELS` or more."""
    keep = (table["voxels"] >= MIN_VOXELS) & np.isin(table["segment_id"], list(truth))
    ids = table["segment_id"][keep]
    rows = {name: column[keep] for name, column in table.items()}
    y = np.array([CLASSES.index(truth[int(i)]) for i in ids], np.int64)
    return features_of(rows, usable_features(INPUTS)), y


def training_rows(seeds: Sequence[int], work: Path, session=None) -> tuple[np.ndarray, np.ndarray]:
    """Features and true classes of the ground truth's and the own segmentation's segments."""
    xs, ys = [], []
    for seed in seeds:
        volume, folder = cell_volume(seed), work / f"seed{seed}"
        measure_volume(volume, folder, session, own_stages())
        for layer, truth in (("seg", volume.classes), ("own", own_truth(folder, volume))):
            x, y = labelled_rows(read_dataset(folder / layer / "morphology"), truth)
            xs.append(x)
            ys.append(y)
        print(f"seed {seed}: {len(ys[-2])} + {len(ys[-1])} segments", flush=True)
    return np.concatenate(xs), np.concatenate(ys)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="where to write the classifier (JSON)")
    parser.add_argument(
        "--workdir", help="keep the measured volumes here (a rerun resumes); default: temporary"
    )
    args = parser.parse_args(argv)
    with local_ray() as session:
        if args.workdir:
            x, y = training_rows(CELL_SEEDS, Path(args.workdir), session)
        else:
            with tempfile.TemporaryDirectory(prefix="petavox-cells-") as work:
                x, y = training_rows(CELL_SEEDS, Path(work), session)
    meta = {
        "inputs": sorted(k for k, v in INPUTS.items() if v),
        "min_voxels": MIN_VOXELS,
        "trained_on": f"synthetic cell-class volumes, seeds {list(CELL_SEEDS)}, {CELL_SHAPE} "
        f"voxels at {RESOLUTION} nm, segments of {MIN_VOXELS} voxels or more of the ground "
        "truth and of the pipeline's own segmentation",
        "skeletonize": SKELETONIZE,
    }
    forest = train(x, y, CLASSES, usable_features(INPUTS), folds=5, meta=meta)
    Path(args.out).write_bytes(forest.to_json())
    scores = forest.meta["cross_validation"]
    print(f"cross-validated accuracy {scores['accuracy']:.3f}, recall {scores['recall']}")
    print(f"wrote {args.out} ({len(forest.to_json()) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
