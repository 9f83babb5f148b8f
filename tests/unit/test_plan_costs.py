"""`petavox plan`'s arithmetic: the per-axis sums over a grid's boxes equal the sums over its
tasks, volume objects are the chunks and shards `Layer` writes, and the estimates follow from
the figures; nothing is run, nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec, planned_info, pyramid_info, write_info
from petavox.tasks.infer.patches import PatchGrid
from petavox.tasks.infer.resample import Resampling
from petavox.workflows.cli import main
from petavox.workflows.config import parse_config
from petavox.workflows.costs import figures
from petavox.workflows.costs.boxes import BoxSet, patch_reads, resampled_patch_reads
from petavox.workflows.costs.cluster import Cluster, NodeType, workers
from petavox.workflows.costs.command import estimate_config
from petavox.workflows.costs.estimate import compute, estimate_stages, run_totals
from petavox.workflows.costs.prices import DEFAULT, PriceOverrides, dollars
from petavox.workflows.costs.steps import volume_write
from petavox.workflows.pipeline import plan_stages

GRIDS = [
    (Box((0, 0, 0), (130, 150, 24)), (64, 64, 8), (0, 0, 0), None),
    (Box((5, 3, 2), (200, 90, 41)), (32, 40, 16), (7, 0, 3), None),
    (Box((10, 10, 10), (75, 64, 40)), (16, 16, 16), (4, 4, 4), (0, 2, 10)),
]


@pytest.mark.parametrize(("bounds", "shape", "halo", "origin"), GRIDS)
def test_sums_over_the_axes_are_sums_over_the_tasks(bounds, shape, halo, origin):
    grid = ChunkGrid(bounds, shape, halo, origin=origin)
    writes, reads = BoxSet.writes(grid), BoxSet.reads(grid)
    chunks = list(grid)
    assert writes.tasks == len(chunks) == len(grid)
    assert writes.voxels() == sum(c.write_box.size for c in chunks)
    assert reads.voxels() == sum(c.read_box.size for c in chunks)
    assert reads.largest() == max(c.read_box.size for c in chunks)
    cell, layer_bounds = Vec3(16, 8, 4), Box((0, 0, 0), (210, 160, 50))
    assert reads.cells(cell, layer_bounds) == sum(
        len(c.read_box.cells(cell, layer_bounds)) for c in chunks
    )
    assert reads.cell_voxels(cell, layer_bounds) == sum(
        b.size for c in chunks for b in c.read_box.cells(cell, layer_bounds)
    )
    factor = Vec3(2, 2, 1)
    assert writes.scale_down(factor).voxels() == sum(
        c.write_box.scale_down(factor).size for c in chunks
    )


@pytest.mark.parametrize("extent", [(256, 256, 64), (300, 140, 90), (100, 100, 50)])
def test_patch_reads_are_what_infer_reads_and_predicts(extent):
    bounds = Box.from_shape(extent)
    patches = PatchGrid(bounds=bounds, patch=Vec3(136, 136, 72), overlap=Vec3(8, 8, 8))
    grid = ChunkGrid(bounds, (128, 128, 32))
    reads, predicted = patch_reads(BoxSet.writes(grid), bounds, patches.patch, patches.overlap)
    assert reads.voxels() == sum(patches.read_box(c.write_box).size for c in grid)
    expected = sum(len(patches.touching(c.write_box)) for c in grid) * patches.patch.prod()
    assert predicted == expected


@pytest.mark.parametrize("scale", [(0.5, 0.5, 0.5), (2.0, 2.0, 1.0)])
def test_resampled_patch_reads_follow_the_models_grid(scale):
    """With infer's resampling the patches sit on the model's grid: the estimate maps the write
    boxes there (with the interpolation taps) and the patch reads back, as the job does."""
    bounds = Box((8, 0, 4), (308, 260, 100))
    resampling = Resampling(bounds=bounds, scale=scale)
    patches = PatchGrid(
        bounds=resampling.model_bounds(), patch=Vec3(64, 64, 32), overlap=Vec3(8, 8, 8)
    )
    grid = ChunkGrid(bounds, (128, 128, 32), origin=bounds.start)
    reads, predicted = resampled_patch_reads(
        BoxSet.writes(grid), bounds, scale, patches.bounds, patches.patch, patches.overlap
    )
    touched = [patches.touching(resampling.model_box(c.write_box)) for c in grid]
    assert predicted == pytest.approx(sum(map(len, touched)) * patches.patch.prod(), rel=0.2)
    read = sum(resampling.read_box(patches, c.write_box).size for c in grid)
    assert reads.voxels() == pytest.approx(read, rel=0.2)


def layer(sharding: str | dict, size=(200, 130, 40), chunk=(32, 32, 8)) -> Layer:
    spec = LayerSpec(
        layer_type="image",
        dtype="uint8",
        size=Vec3.of(size),
        resolution=(8, 8, 8),
        chunk_size=Vec3.of(chunk),
        sharding=sharding,
    )
    url = "file:///nowhere/raw"
    return Layer(url, planned_info(url, spec, None))  # file://: shards hold raw chunks


@pytest.mark.parametrize("sharding", ["none", {"chunks_per_shard": 4}, {"chunks_per_shard": 32}])
def test_volume_objects_are_the_chunks_or_shards_tasks_write(sharding):
    target = layer(sharding)
    unit = target.write_unit(0)
    grid = ChunkGrid(target.bounds(0), unit * 2)
    write = volume_write(target, 0, BoxSet.writes(grid))
    if target.sharding(0) is None:
        expected = sum(len(target.storage_chunks(c.write_box)) for c in grid)
    else:
        expected = sum(len(target.sharding(0).shard_boxes(c.write_box)) for c in grid)
    assert write.objects == write.puts == expected
    assert write.bytes_written == target.bounds(0).size  # raw uint8 on file://: its voxels


def test_pyramid_objects_per_mip():
    target = layer("none", size=(256, 256, 64), chunk=(32, 32, 16))
    info = pyramid_info(target.url, target.info, Vec3(2, 2, 2), 2, task=Vec3(256, 256, 64))
    target = Layer(target.url, info)
    boxes = BoxSet.writes(ChunkGrid(target.bounds(0), (256, 256, 64)))
    counts = [volume_write(target, m, boxes.scale_down(Vec3(2, 2, 2) ** m)).objects for m in (1, 2)]
    assert counts == [4 * 4 * 2, 2 * 2 * 1]  # the demo's downsample: 36 objects


def small_config(tmp_path, **ingest) -> dict:
    np.save(tmp_path / "stack.npy", np.zeros((24, 150, 130), np.uint8))
    return {
        "output": f"file://{tmp_path}/out",
        "stages": [
            {
                "stage": "ingest",
                "input": str(tmp_path / "stack.npy"),
                "resolution": [4, 4, 40],
                "storage_chunk": [32, 32, 8],
                "chunk_shape": [64, 64, 8],
                **ingest,
            },
            {"stage": "downsample", "input": "raw", "mips": 2, "chunk_shape": [128, 128, 8]},
        ],
    }


def test_estimates_of_a_small_config(tmp_path):
    config = parse_config(small_config(tmp_path))
    stages = estimate_stages(plan_stages(config), workers(2))
    ingest, downsample = (s.steps[0] for s in stages)
    assert ingest.totals.tasks == 3 * 3 * 3
    assert ingest.totals.objects == 5 * 5 * 3  # 32×32×8 chunks of 130×150×24
    assert ingest.totals.bytes_written == 130 * 150 * 24
    assert ingest.totals.puts == 75 + 1 + 1 + 1  # chunks, the info, a ledger segment, its params
    assert downsample.totals.objects == 3 * 3 * 3 + 2 * 2 * 3  # mips 1 and 2
    figure = figures.FIGURES_BY_JOB["IngestJob"]
    core = 27 * figures.TASK_OVERHEAD_S + 130 * 150 * 24 / 1e6 / figure.mvx_per_core_s
    assert ingest.totals.core_hours == pytest.approx(core / 3600)
    waves = 14  # 27 tasks on 2 cores
    step = figures.STEP_OVERHEAD_S + waves * core / 27 + figures.COLD_START_S
    assert ingest.totals.seconds == pytest.approx(step)
    assert not (tmp_path / "out").exists()  # planning wrote nothing


def test_more_cores_less_wall_time_same_core_hours(tmp_path):
    stages = plan_stages(parse_config(small_config(tmp_path)))
    one, many = (run_totals(estimate_stages(stages, workers(n))) for n in (1, 64))
    assert many.core_hours == pytest.approx(one.core_hours)
    assert many.seconds < one.seconds


def test_sharded_ingest_writes_shard_files(tmp_path):
    config = parse_config(small_config(tmp_path, sharding=4))
    (ingest, _) = estimate_stages(plan_stages(config), workers(2))
    assert ingest.steps[0].totals.objects == 3 * 3 * 3  # 64×64×8 shards of 4 chunks


def test_a_cluster_is_its_node_types_together():
    cluster = Cluster(nodes=[NodeType(cores=8, count=2), NodeType(cores=4, gpus=1, count=3)])
    assert (cluster.cores, cluster.gpus) == (28, 3)


def test_prices_from_the_config_override_the_defaults():
    overrides = PriceOverrides.model_validate({"date": "2027-01-02", "aws": {"cpu_spot": 0.5}})
    prices = overrides.apply()
    assert prices.aws.cpu_spot == 0.5 and prices.aws.cpu_on_demand == DEFAULT.aws.cpu_on_demand
    assert prices.gcp == DEFAULT.gcp and "2027-01-02" in prices.date
    with pytest.raises(ValueError, match="cpu_sport"):
        PriceOverrides.model_validate({"aws": {"cpu_sport": 0.5}})


def test_dollars_are_the_totals_at_the_prices(tmp_path):
    totals = run_totals(
        estimate_stages(plan_stages(parse_config(small_config(tmp_path))), workers(2))
    )
    aws = dollars(DEFAULT.aws, totals)
    assert aws["compute_spot"] == pytest.approx(totals.core_hours * DEFAULT.aws.cpu_spot)
    assert aws["storage_per_month"] == pytest.approx(totals.stored_bytes / 2**30 * 0.023)
    requests = (totals.puts * 0.005 + totals.gets * 0.0004 + totals.lists * 0.005) / 1000
    assert aws["requests"] == pytest.approx(requests)


def test_a_config_with_prices_keeps_its_identities(tmp_path):
    data = small_config(tmp_path)
    plain = [p.identity for s in plan_stages(parse_config(data)) for p in s.plans]
    priced = parse_config({**data, "prices": {"gcp": {"storage_gb_month": 0.026}}})
    assert [p.identity for s in plan_stages(priced) for p in s.plans] == plain
    assert json.loads(priced.prices.model_dump_json())["gcp"]["storage_gb_month"] == 0.026


def test_wall_time_runs_tasks_in_waves():
    class Plan:  # what `compute` reads of a plan
        layer_infos, outputs = {}, ()
        hooks = type("Hooks", (), {"bind": None})()

    shape = type("Shape", (), {"tasks": 9, "basis_voxels": 9_000_000, "job": "X"})()
    figure = figures.Figure(job="X", mvx_per_core_s=1.0, source=figures.CALIBRATION)
    core, gpu, wall = compute(shape, figure, Plan(), workers(2))  # type: ignore[arg-type]
    per_task = 1.0 + figures.TASK_OVERHEAD_S
    assert (core, gpu) == (pytest.approx(9 * per_task), 0.0)
    assert wall == pytest.approx(figures.STEP_OVERHEAD_S + 5 * per_task)


def test_figures_say_where_they_come_from():
    for figure in figures.FIGURES:
        assert figure.mvx_per_core_s > 0
        assert figure.source.benchmark and figure.source.date and figure.source.machine
    assert len({f.job for f in figures.FIGURES}) == len(figures.FIGURES)


def test_every_box_of_a_big_grid_is_counted_without_iterating_it():
    grid = ChunkGrid(Box((0, 0, 0), (400_000, 300_000, 5_000)), (1024, 1024, 64))
    boxes = BoxSet.writes(grid)
    assert boxes.tasks == len(grid) == 391 * 293 * 79
    assert boxes.voxels() == grid.bounds.size
    assert boxes.cells(Vec3(128, 128, 64), grid.bounds) == 3125 * 2344 * 79


# ---- the command ------------------------------------------------------------------------------
def write_config(tmp_path, data: dict) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_plan_prints_a_table_and_writes_nothing(tmp_path, capsys):
    path = write_config(tmp_path, small_config(tmp_path))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["plan", path, "--workers", "2", "--steps"]) == 0
    out = capsys.readouterr().out
    for word in ("stage", "ingest", "downsample raw", "total", "AWS", "GCP", "core-h", "prices:"):
        assert word in out
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_plan_json(tmp_path, capsys):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("nodes:\n  - {cores: 8, count: 3}\n  - {cores: 4, gpus: 1}\n")
    path = write_config(tmp_path, small_config(tmp_path))
    assert main(["plan", path, "--json", "--cluster", str(cluster)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cluster"] == {"cores": 28, "gpus": 1, "source": "cluster.yaml"}
    assert report["total"]["tasks"] == 27 + 12
    assert [s["name"] for s in report["stages"]] == ["ingest", "downsample raw"]
    assert set(report["dollars"]) == {"aws", "gcp"}
    assert report["figures"]["IngestJob"]["source"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.yaml"], "does not exist"),
        (["CONFIG", "--cluster", "missing.yaml"], "cluster file"),
        (["CONFIG", "--cluster", "BAD"], "invalid cluster file"),
        (["CONFIG", "--workers", "0"], "at least 1"),
    ],
)
def test_bad_input_exits_2(tmp_path, capsys, args, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - {cores: 0}\n")
    config = write_config(tmp_path, small_config(tmp_path))
    args = [{"CONFIG": config, "BAD": str(bad)}.get(a, a) for a in args]
    assert main(["plan", *args]) == 2
    assert message in capsys.readouterr().err


def test_an_h01_sized_config_plans_by_arithmetic(tmp_path):
    size = Vec3(400_000, 300_000, 5_000)
    spec = LayerSpec(
        layer_type="image",
        dtype="uint8",
        size=size,
        resolution=(8, 8, 33),
        chunk_size=Vec3(128, 128, 64),
    )
    write_info(f"file://{tmp_path}/h01/raw", spec.to_info())
    stage = {"stage": "downsample", "input": "raw", "mips": 3}
    config = parse_config({"output": f"file://{tmp_path}/h01", "stages": [stage]})
    stages, report = estimate_config(config, workers(1000))
    step = stages[0].steps[0]
    assert step.totals.tasks == 391 * 293 * 79  # 1024×1024×64 tasks: 9,050,477
    chunks = [
        Vec3(200_000, 150_000, 5_000),
        Vec3(100_000, 75_000, 5_000),
        Vec3(50_000, 37_500, 5_000),
    ]
    assert step.totals.objects == sum(c.ceildiv(Vec3(128, 128, 64)).prod() for c in chunks)
    assert report["total"]["core_hours"] > 0


def test_planning_starts_no_ray(tmp_path):
    path = write_config(tmp_path, small_config(tmp_path))
    code = (
        "import sys\n"
        "from petavox.workflows.cli import main\n"
        f"assert main(['plan', {path!r}, '--json']) == 0\n"
        "print('RAY', 'ray' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "RAY False" in done.stdout


def test_infer_runs_on_the_clusters_gpus(tmp_path):
    data = small_config(tmp_path)
    data["stages"].append({"stage": "infer", "input": "raw", "output": "boundary"})
    stages = plan_stages(parse_config(data))
    gpu_cluster = Cluster(nodes=[NodeType(cores=2), NodeType(cores=4, gpus=1)])
    on_cpus, on_gpus = (estimate_stages(stages, c)[2].totals for c in (workers(6), gpu_cluster))
    assert on_cpus.gpu_hours == 0 and on_gpus.gpu_hours > 0
    assert on_gpus.core_hours < on_cpus.core_hours
    assert on_gpus.objects == on_cpus.objects == 5 * 5 * 3


def test_a_montage_is_costed_per_section_and_per_rendered_pixel(tmp_path):
    """`montage`'s steps have models and figures: the solve per section pixel with memory
    growing with the section, the render's chunks written exactly."""
    from petavox.tasks.synthetic.tiles import TileDamage, cut_tiles, write_tiles

    section = np.random.default_rng(0).integers(0, 255, (120, 110)).astype(np.uint8)
    cuts = {z: cut_tiles(section, TileDamage(seed=z)) for z in range(3)}
    manifest = write_tiles(str(tmp_path / "tiles"), cuts)
    montage = {"stage": "montage", "input": manifest, "resolution": [8, 8, 30], "mips": 0}
    config = parse_config({"output": f"file://{tmp_path}/out", "stages": [montage]})
    planned = plan_stages(config)
    (stage,) = estimate_stages(planned, workers(2))
    solve, render = stage.steps
    assert solve.shape.modelled and render.shape.modelled
    assert solve.totals.tasks == 3
    area = solve.shape.basis_voxels
    assert area == solve.shape.voxels and area >= 3 * 120 * 110
    figure = figures.FIGURES_BY_JOB["SolveSectionJob"]
    core = 3 * figures.TASK_OVERHEAD_S + area / 1e6 / figure.mvx_per_core_s
    assert solve.totals.core_hours == pytest.approx(core / 3600)
    assert solve.totals.peak_memory == pytest.approx(area / 3 * figure.memory_factor, rel=0.01)
    target = planned[0].plans[1].job.target
    chunks = -(-np.asarray(target.bounds(0).shape) // np.asarray(target.chunk_size(0)))
    assert render.totals.objects == int(np.prod(chunks))
    assert render.totals.bytes_written == render.shape.voxels  # uint8, raw
    assert not (tmp_path / "out").exists()  # planning wrote nothing
