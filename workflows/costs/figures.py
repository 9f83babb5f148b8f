"""Measured figures the estimates rest on, each with the benchmark, date and machine it came from.

A `Figure` is per kind of step (its job's class): throughput per core in mega-voxels per second
of its `Basis` voxels (see `steps`), the memory a task holds per voxel it reads, and the work
files and data-dependent products (mesh fragments, skeletons, tables) its tasks write, per task
or per voxel. Figures measured by a benchmark of their own (README.md "Measured") are used as
published; the rest come from `benchmarks/bench_plan.py --calibrate`: the demo's config on a
384×384×96 synthetic volume (seed 1; the demo itself, 256 and seed 0, is what they are checked
against), every step's job seconds and objects read from its done-markers, and one task of each
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
    benchmark="benchmarks/bench_sharding.py (README.md 'Measured': 1024×1024×256 FIB-SEM, "
    "64³ chunks, unsharded, 2 workers)",
    date="2026-12-05",
)
_DOWNSAMPLE = Source(
    benchmark="benchmarks/bench_downsample.py (README.md 'Measured': Ray 1 CPU, 64³ chunks, "
    "512×512×64 tasks)",
    date="2026-11-22",
)
_INFER = Source(
    benchmark="benchmarks/bench_infer.py (README.md 'Measured': infer stage, Ray 1 CPU, "
    "0.95 MVx/s written × 1.17 voxels predicted per voxel written)",
    date="2026-11-30",
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

FIGURES: tuple[Figure, ...] = ()  # filled below by `_figures`


#: the runner's own cost (benchmarks/bench_runner.py, README.md 'Measured', 2026-11-22): per
#: task outside job.run (6.1 ms at 512×512×64 tasks), and per step (19 ms before the first task
#: starts, 3 ms after the last)
RUNNER = Source(benchmark="benchmarks/bench_runner.py (README.md 'Measured')", date="2026-11-22")
TASK_OVERHEAD_S = 0.0061
STEP_OVERHEAD_S = 0.022
#: the first step of a run also waits for its Ray workers to start and import petavox and
#: cloud-volume (measured by the calibration run: its first step's seconds less its work)
COLD_START_S = 4.0
#: a GPU's throughput for `infer` is not measured (no GPU on the benchmark machine): assumed
#: 40 MVx/s of patches per GPU for the built-in U-Net; override with a measurement
GPU_ASSUMED = "assumed, not measured (no GPU on the benchmark machine)"
