"""Stage `classify`: [train a forest on the user's labelled segments,] classify every segment of a
morphology table, write the classes table and the viewer's segment properties."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field

from petavox.tasks.classify.classify_jobs import (
    MODEL_KEY,
    SUMMARY_KEY,
    PredictJob,
    PropertiesJob,
    TrainJob,
)
from petavox.tasks.classify.labels import Labels, parse_labels
from petavox.tasks.classify.model_files import BUILTIN_CELLS, fetch_classifier, parse_classifier
from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import index_grid
from petavox.tasks.core.layers import read_info
from petavox.tasks.core.objects import fetch_file, get
from petavox.tasks.core.storage import StorageContext, join_url
from petavox.workflows.catalog import Catalog
from petavox.workflows.layer_checks import check_free_folder, check_segmentation
from petavox.workflows.params import StageParams
from petavox.workflows.plan import ChunkJob, Output, StagePlan
from petavox.workflows.stage import Positional, Stage
from petavox.workflows.stages.morphology import TABLE_INPUTS, TABLES_KEY

VERSION = 1
PROPERTIES_DIR = "segment_properties"


class ClassifyParams(StageParams):
    """Morphology table → a class per segment (neuron, glia, vessel, myelin, ...) and its
    probability, as a table and as segment properties the viewer filters by."""

    stage: Literal["classify"] = "classify"
    input: str = Field("segmentation", description="segmentation layer: name or URL")
    table_dir: str = Field("morphology", description="the morphology table's folder in the layer")
    labels: str | None = Field(
        None,
        description="CSV of labelled segments (header segment_id,class): train on them, print "
        "the cross-validated accuracy, classify with that model",
    )
    model: str = Field(
        BUILTIN_CELLS,
        description="classifier to use without --labels: petavox:NAME, a path or a URL (e.g. "
        "the _model.json an earlier --labels run wrote)",
    )
    classes_dir: str = Field("classes", description="folder in the layer for the classes table")
    folds: int = Field(5, ge=2, le=20, description="cross-validation folds (with --labels)")
    trees: int = Field(100, ge=1, le=2000, description="trees of the forest (with --labels)")
    seed: int = Field(0, description="the forest's and the folds' random seed (with --labels)")
    properties_min_voxels: int = Field(
        0,
        ge=0,
        description="segments with fewer voxels are left out of the segment properties (one "
        "inline JSON for the viewer; the classes table has every segment)",
    )


def read_labels(params: ClassifyParams, catalog: Catalog) -> Labels:
    """The labels file (a path or URL), parsed and checked."""
    source = str(params.labels)
    data = fetch_file(source, catalog.context)
    if data is None:
        raise InputError(f"labels file {source} does not exist; check the path or URL")
    return parse_labels(data.decode(), source, params.folds)


def table_of(params: ClassifyParams, url: str, info: dict) -> dict:
    """The morphology table's declaration in the layer's info (shard bits, inputs)."""
    table = info.get(TABLES_KEY, {}).get(params.table_dir)
    if table is None:
        raise InputError(
            f"{url} has no morphology table {params.table_dir!r}; run petavox morphology on it "
            "first (or in the same run), or give --table-dir"
        )
    return table


def check_model_inputs(model: str, needs: list[str], table: dict, url: str) -> None:
    missing = [n for n in needs if not table.get(n)]
    if missing:
        raise InputError(
            f"classifier {model} was trained with the table's {', '.join(needs)}, but the "
            f"morphology table of {url} was measured without {', '.join(missing)}; run "
            "morphology with them (--image, --connectome, skeletons), or train on this table "
            "with --labels"
        )


def train_job(
    params: ClassifyParams, table: dict, table_url: str, classes_url: str, catalog: Catalog
) -> tuple[TrainJob, str]:
    """The training task of `--labels`, and a digest of the labels for the step's identity."""
    labels = read_labels(params, catalog)
    digest = hashlib.sha256(labels.ids.tobytes() + labels.y.tobytes())
    digest.update(json.dumps(labels.classes).encode())
    job = TrainJob(
        table_url=table_url,
        shard_bits=table["shard_bits"],
        labels=labels,
        inputs={k: bool(table.get(k)) for k in TABLE_INPUTS},
        classes_url=classes_url,
        folds=params.folds,
        trees=params.trees,
        seed=params.seed,
        context=catalog.context,
    )
    return job, digest.hexdigest()


def given_model(params: ClassifyParams, table: dict, url: str, catalog: Catalog) -> str:
    """The digest of the classifier `--model` names, checked against the table's inputs."""
    data = fetch_classifier(params.model, catalog.context)
    forest = parse_classifier(data, params.model)
    check_model_inputs(params.model, forest.meta.get("inputs", []), table, url)
    return hashlib.sha256(data).hexdigest()


def plan_classify(params: ClassifyParams, catalog: Catalog) -> list[StagePlan]:
    url = catalog.url(params.input)
    seg = catalog.layer(url)
    check_segmentation(url, seg, "classify classifies the segments of a segmentation")
    table = table_of(params, url, seg.info)
    check_free_folder(url, seg, "classes_dir", params.classes_dir, "classes")
    catalog.note_part(url, params.table_dir)
    if params.labels is not None and "model" in params.model_fields_set:
        raise InputError("give --labels (train a classifier) or --model (use one), not both")
    table_url = join_url(url, params.table_dir)
    classes_url = join_url(url, params.classes_dir)
    spec = {**params.hashed_fields(), "input": url, "lineage": catalog.reads_token()}
    spec.pop("labels", None)
    classes = Output(url, params.classes_dir)

    def step(name: str, job: ChunkJob, tasks: int, **more) -> StagePlan:
        return StagePlan(
            label=f"classify {params.input}: {name}",
            stage=f"classify-{name}",
            version=VERSION,
            spec=spec,
            grid=index_grid(tasks),
            job=job,
            resources=params.resources,
            **{"outputs": (classes,), **more},
        )

    plans = []
    if params.labels is not None:
        job, spec["labels"] = train_job(params, table, table_url, classes_url, catalog)
        plans.append(step("train", job, 1))
        model_url = join_url(classes_url, MODEL_KEY)
    else:
        spec["model"], model_url = given_model(params, table, url, catalog), params.model
    shards = 2 ** table["shard_bits"]
    predict = PredictJob(
        table_url=table_url, classes_url=classes_url, model_url=model_url, context=catalog.context
    )
    plans.append(step("predict", predict, shards))
    info = {**seg.info, "segment_properties": PROPERTIES_DIR, "classes": params.classes_dir}
    catalog.declare(url, info)
    properties = PropertiesJob(
        table_url=table_url,
        classes_url=classes_url,
        model_url=model_url,
        properties_url=join_url(url, PROPERTIES_DIR),
        shards=shards,
        min_voxels=params.properties_min_voxels,
        context=catalog.context,
    )
    outputs = (classes, Output(url, PROPERTIES_DIR))
    plans.append(step("properties", properties, 1, final_infos={url: info}, outputs=outputs))
    return plans


def print_summary(root: str, context: StorageContext) -> None:
    """What `petavox classify` prints: the cross-validated accuracy and segments per class
    (from the classes folder the layer's info names, wherever --classes-dir put it)."""
    info = read_info(root, context)
    folder = (info or {}).get("classes", "classes")
    data = get(join_url(root, folder), SUMMARY_KEY, context)
    if data is None:
        return
    summary = json.loads(data)
    scores = summary.get("cross_validation")
    if scores:
        recall = ", ".join(f"{c} {r:.2f}" for c, r in scores["recall"].items())
        print(
            f"cross-validated accuracy ({scores['folds']} folds, {scores['rows']} labelled "
            f"segments): {scores['accuracy']:.3f}; per class (share of each found): {recall}"
        )
    counts = ", ".join(f"{c} {n}" for c, n in sorted(summary["classes"].items()))
    print(f"segments per class: {counts or 'none'} ({summary['segments']} in all)")


STAGE = Stage(
    name="classify",
    order=106,
    params=ClassifyParams,
    planner=plan_classify,
    positionals=(
        Positional(
            field="input",
            metavar="SEG_URL",
            help="segmentation layer with a morphology table (classes go into its folder)",
        ),
    ),
    summary=print_summary,
)
