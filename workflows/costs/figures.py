"""Measured figures the estimates rest on, each with the benchmark, date and machine it came from.

A `Figure` is per kind of step (its job's class): throughput per core in mega-voxels per second
of its `Basis` voxels (see `steps`), the memory a task holds per voxel it reads, and the work
files and data-dependent products (mesh fragments, skeletons, tables) its tasks write, per task
or per voxel. Figures measured by a benchmark of their own (README.md "Measured") are used as
published; the rest come from `benchmarks/bench_plan.py --calibrate`: the demo's config on a
384×384×96 synthetic volume (seed 1; the demo itself, 256 and seed 0, is what they are checked
against), every step's job seconds and objects read from its ledger records, and one task of each
step run again under tracemalloc. Object and memory densities always come from that run.
"""

from __future__ import annotations

from dataclasses import dataclass

MACHINE = "2-core shared VM (AMD EPYC), file:// layers"


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where a figure comes from."""

    benchmark: str
    date: str
    machine: str = MACHINE

    def __str__(self) -> str:
        return f"{self.benchmark}, {self.date}, {self.machine}"


#: a GPU's throughput for `infer` is not measured (no GPU on the benchmark machine): assumed
#: 40 MVx/s of patches per GPU for the built-in U-Net; override with a measurement
GPU_ASSUMED = "assumed, not measured (no GPU on the benchmark machine)"

CALIBRATION = Source(benchmark="benchmarks/bench_plan.py --calibrate", date="2026-12-05")


@dataclass(frozen=True, kw_only=True)
class Figure:
    """What one kind of step costs. Throughput is per core on file://; `object_store` is the
    same on S3/GCS where it was measured (None: taken equal). `memory_factor`: a task's peak
    bytes per byte of its largest read box (all inputs); `task_memory`: bytes, for tasks that
    read no volume. `work_*`: objects under `intermediate/` (expire; read back by the stage's
    next step); `product_*`: data-dependent products (estimates)."""

    job: str
    mvx_per_core_s: float
    source: Source
    object_store: float | None = None
    gpu_mvx_per_s: float | None = None  # per GPU, for steps that can run on one
    memory_factor: float = 0.0
    task_memory: int = 0
    work_per_task: float = 0.0
    work_bytes_per_voxel: float = 0.0
    product_per_task: float = 0.0
    product_per_mvx: float = 0.0
    product_bytes_per_voxel: float = 0.0
    lists_per_task: float = 0.0
    note: str = ""


_SHARDING = Source(
    benchmark="benchmarks/bench_sharding.py (README.md 'Measured' and benchmarks/README.md: "
    "1024×1024×256 FIB-SEM, 64³ chunks, unsharded, file://, 2 workers, per core)",
    date="2026-12-05",
)
_INFER = Source(
    benchmark="benchmarks/bench_infer.py (results/infer.json: the infer stage, Ray 1 CPU, "
    "392×392×200, 1.66 MVx/s written × 1.56 voxels predicted per voxel written)",
    date="2026-12-05",
)
_MESH = Source(
    benchmark="benchmarks/bench_mesh.py (README.md 'Measured': forge + manifests in one "
    "process, 512×512×128 neurites, 256×256×64 tasks)",
    date="2026-11-30",
)
_SKELETON = Source(
    benchmark="benchmarks/bench_skeleton.py (README.md 'Measured': Ray 1 CPU, 256×256×128 "
    "neurites, 128×128×64 tasks)",
    date="2026-11-30",
)
_SYNAPSES = Source(
    benchmark="benchmarks/bench_synapse_detection.py (README.md 'Synapses': the stage's jobs, "
    "256×256×128, 8 tasks, halo 32; the low end of 1.9-3.4)",
    date="2026-11-30",
)

_MORPHOLOGY = Source(
    benchmark="benchmarks/bench_morphology.py (benchmarks/README.md: the parts step, 256×256×128 "
    "Voronoi, 500 and 2,000 segments, 128×128×64 tasks, 2 workers; the lower of 1.46, 1.41)",
    date="2026-12-04",
)


_MONTAGE = Source(
    benchmark="benchmarks/bench_montage.py --large 2048 (README.md 'Tiles and montage': 3×3 "
    "tiles of 2048 px, a 5752 px section, one core in one process; memory by tracemalloc)",
    date="2026-12-07",
)


def _calibrated(job: str, mvx: float, runs: str, **counts) -> Figure:
    """A figure of the calibration run (`runs`: its three measurements, MVx/s per core)."""
    return Figure(job=job, mvx_per_core_s=mvx, source=CALIBRATION, note=f"runs {runs}", **counts)


FIGURES: tuple[Figure, ...] = (
    # ---- figures of benchmarks of their own (README.md "Measured") ---------------------------
    Figure(
        job="IngestJob",
        mvx_per_core_s=279.0,
        object_store=25.9,
        source=_SHARDING,
        memory_factor=2.24,
        note="S3: 25.9 unsharded, 44.2 sharded; file:// 279-666 across runs; the calibration "
        "run's 0.5 MVx tasks: 18-83",
    ),
    Figure(
        job="DownsampleJob",
        mvx_per_core_s=486.0,
        object_store=31.8,
        source=_SHARDING,
        memory_factor=1.27,
        note="2 mips of (2, 2, 1); S3: 31.8 unsharded, 77.8 sharded; bench_downsample (1 CPU, "
        "3 mips, 512×512×64 tasks): 266-370; the calibration run's 0.5 MVx tasks: 116-147",
    ),
    Figure(
        job="DownsampleJob[mode]",
        mvx_per_core_s=80.0,
        source=CALIBRATION,
        memory_factor=1.27,
        note="labels by mode, uint32/64, compressed_segmentation: the calibration runs' 88 and "
        "72 MVx/s (no benchmark of its own)",
    ),
    Figure(
        job="IngestJob[labels]",
        mvx_per_core_s=50.0,
        source=CALIBRATION,
        memory_factor=2.24,
        note="labels encoded compressed_segmentation: the calibration runs' 67, 50, 16 MVx/s "
        "at 0.5 MVx tasks (no benchmark of its own)",
    ),
    Figure(
        job="InferJob",
        mvx_per_core_s=2.60,
        gpu_mvx_per_s=40.0,
        source=_INFER,
        memory_factor=2.08,
        note="per voxel predicted (patches); README.md's run of 2026-11-30 measured 0.95 MVx/s "
        "written (1.48 predicted) on the same machine; calibration 1.30-1.86; GPU: "
        f"{GPU_ASSUMED}",
    ),
    Figure(
        job="MeshForgeJob",
        mvx_per_core_s=0.70,
        source=_MESH,
        memory_factor=2.05,
        product_per_mvx=224.0,
        product_bytes_per_voxel=3.04,
        note="fragments: ~224 per MVx at 128×128×32 tasks (calibration; more for smaller "
        "tasks, fewer for bigger); calibration throughput 0.38-0.50",
    ),
    Figure(
        job="ShardedForgeJob",
        mvx_per_core_s=0.667,
        source=_MESH,
        memory_factor=2.03,
        work_per_task=1.0,
        work_bytes_per_voxel=1.95,
        note="the sharded format's 0.54 MVx/s, 81 % of it the forge; calibration 0.53",
    ),
    Figure(
        job="ShardMergeJob",
        mvx_per_core_s=2.84,
        source=_MESH,
        task_memory=34_781_984,
        product_per_task=1.0,
        product_bytes_per_voxel=0.417,
        lists_per_task=1.0,
        note="per voxel of the volume: 19 % of the sharded format's time; one shard file per "
        "task (each shard holding a segment); calibration 2.53",
    ),
    Figure(
        job="SkeletonizeChunkJob",
        mvx_per_core_s=0.69,
        source=_SKELETON,
        memory_factor=3.25,
        work_per_task=4.0,
        work_bytes_per_voxel=0.164,
        note="calibration 0.28-0.38 (its volume has more, thinner segments)",
    ),
    Figure(
        job="MorphologyChunkJob",
        mvx_per_core_s=1.41,
        source=_MORPHOLOGY,
        # 89 MiB traced for a 129×129×65 read of uint64 labels and a uint8 image (9.7 MB)
        memory_factor=9.6,
        note="its parts (one per segment shard a task touches) are not counted",
    ),
    Figure(
        job="SynapseJob",
        mvx_per_core_s=1.9,
        source=_SYNAPSES,
        memory_factor=2.78,
        product_per_task=1.0,
        product_bytes_per_voxel=0.0088,
        note="a table per task (exact); calibration 0.89-1.22",
    ),
    Figure(
        job="SolveSectionJob",
        mvx_per_core_s=0.89,
        source=_MONTAGE,
        memory_factor=16.6,
        work_per_task=1.0,
        product_per_task=2.0,
        note="per section pixel: match and solve 35.7 s, shading 1.3 s for 33.1 MPx (37.7 MPx "
        "of tiles); peak 548 MB with the tiles; 89-96 px tiles: 0.23 MPx/s of tiles",
    ),
    Figure(
        job="RenderSectionsJob",
        mvx_per_core_s=2.38,
        source=_MONTAGE,
        task_memory=306_000_000,
        note="13.9 s for the 5752 px section in 1024 px boxes; a box's peak 306 MB (four "
        "tiles' splines, 34 MB each), and a worker keeps up to 32 tiles' splines",
    ),
    # ---- the calibration run (benchmarks/bench_plan.py --calibrate, three runs) --------------
    _calibrated(
        "EstimateJob",
        1.24,
        "1.33, 1.48, 0.92",
        memory_factor=0.54,
        work_per_task=1.97,
        work_bytes_per_voxel=0.075,
    ),
    _calibrated(
        "SolveJob",
        20.6,
        "19.8, 20.5, 21.6",
        task_memory=31_444_307,
        work_per_task=1.0,
        work_bytes_per_voxel=0.0136,
        lists_per_task=1.0,
    ),
    _calibrated("RenderJob", 3.2, "3.06, 3.59, 3.08", memory_factor=32.4),
    _calibrated(
        "SegmentJob",
        1.19,
        "1.27, 1.02, 1.29; per voxel read (halo included)",
        memory_factor=36.6,
        work_per_task=4.0,
        work_bytes_per_voxel=1.76,
    ),
    _calibrated(
        "MatchJob",
        10.5,
        "11.9, 10.0, 9.7",
        memory_factor=7.69,
        work_per_task=1.0,
        work_bytes_per_voxel=0.0059,
    ),
    _calibrated(
        "ResolveJob",
        1100.0,
        "726, 1368, 1195; per voxel of the volume, each level",
        task_memory=1_279_728,
        work_per_task=2.0,
        work_bytes_per_voxel=0.0063,
    ),
    _calibrated("RelabelJob", 30.0, "30.5, 23.6, 36.3", memory_factor=1.1),
    _calibrated(
        "ContactJob",
        6.8,
        "7.19, 5.34, 7.76",
        memory_factor=6.37,
        work_per_task=2.0,
        work_bytes_per_voxel=0.066,
    ),
    _calibrated(
        "MergeJob",
        380.0,
        "451, 312, 383; per voxel of the volume, each level",
        task_memory=4_774_205,
        work_per_task=2.0,
        work_bytes_per_voxel=0.0203,
    ),
    _calibrated(
        "ContingencyJob", 14.5, "14.5 (from the stage's seconds: no markers)", memory_factor=2.64
    ),
    _calibrated(
        "ManifestJob",
        90.0,
        "88, 69, 114; per voxel of the volume",
        task_memory=177_997,
        product_per_mvx=108.0,
        product_bytes_per_voxel=0.0091,
        lists_per_task=1.0,
    ),
    _calibrated(
        "SkeletonMergeJob",
        5.7,
        "4.28, 5.00, 7.96; per voxel of the volume",
        task_memory=3_186_283,
        product_per_mvx=108.0,
        product_bytes_per_voxel=0.115,
        lists_per_task=1.0,
    ),
    _calibrated(
        "SkeletonMergeJob[sharded]",
        9.3,
        "9.3; per voxel of the volume",
        task_memory=8_994_885,
        product_per_task=1.0,
        product_bytes_per_voxel=0.045,
        lists_per_task=1.0,
    ),
    _calibrated(
        "VolumeCountJob",
        39.0,
        "32.0, 33.7, 52.1",
        memory_factor=2.25,
        work_per_task=16.0,
        work_bytes_per_voxel=0.0043,
    ),
    _calibrated(
        "ShuffleJob",
        29.0,
        "16.2, 28.7, 41.9; per voxel of the synapses' volume",
        task_memory=1_949_563,
        work_per_task=18.7,
        work_bytes_per_voxel=0.086,
        lists_per_task=1.0,
    ),
    _calibrated(
        "ShardJob",
        29.0,
        "17.2, 34.7, 34.5; per voxel of the synapses' volume",
        task_memory=90_681,
        work_per_task=1.0,
        work_bytes_per_voxel=0.0017,
        product_per_task=7.0,
        product_bytes_per_voxel=0.0155,
        lists_per_task=1.0,
    ),
    _calibrated(
        "SpatialJob",
        1800.0,
        "848, 2722, 1769; per voxel of the synapses' volume",
        task_memory=91_016,
        work_per_task=1.0,
        product_per_task=0.125,
        product_bytes_per_voxel=0.00043,
        lists_per_task=1.0,
    ),
)
FIGURES_BY_JOB = {f.job: f for f in FIGURES}


#: the runner's own cost: per task outside job.run, "~3.5 ms" (benchmarks/README.md, findings
#: of bench_runner.py, 2026-11-22); per step, 9-11 ms: the calibration runs' one-task steps
#: less their job's seconds (bench_runner's 17-19 ms before the first task of a 1-CPU Ray
#: at niceness 15 is the high end)
RUNNER = Source(
    benchmark="benchmarks/bench_runner.py (benchmarks/README.md findings) and "
    "benchmarks/bench_plan.py --calibrate",
    date="2026-12-05",
)
TASK_OVERHEAD_S = 0.0035
STEP_OVERHEAD_S = 0.010
#: the first step of a run also waits for a local Ray to start and its workers to import
#: petavox and cloud-volume: the calibration runs' first step less its work took 4.0, 6.6 s,
#: the demo's 4.2 s (README.md: `ray.init` alone 4.5-6 s)
COLD_START_S = 5.0
