"""The ledger: which chunks of each stage step are finished, and what each of them wrote.

Layout under ``<ledger url>/<stage>/<identity>/``:

- ``params.json``: what the identity stands for.
- ``done/<segment>.npz``: *segments*, each listing up to `SEGMENT_CHUNKS` finished chunks by
  their position in the plan's grid (`ChunkGrid.index_of`), with when each finished, how long
  it took and the objects it wrote (URL, key, stored size; see `done_segments`). The driver
  collects each task's record as the task returns and rewrites its open segment at most every
  `flush_seconds` (and when the step ends or stops): one object per ~16 k chunks instead of
  one marker per chunk, so a 10^7-chunk step has ~600 of them and its done-state is a bitmap
  (10 MB), read in bounded memory. A driver killed between flushes loses at most
  `flush_seconds` of records: those chunks run again and rewrite the same objects.
- ``failed/<chunk id>.json``: a chunk that failed for good, with its error (few by design).
- ``global.json``: the marker of the step's global step.

Resume, `status` and `petavox verify` check the recorded objects against listings of the
store (`petavox.workflows.verify`).
"""

from __future__ import annotations

import io
import json
import math
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from petavox.tasks.core import objects
from petavox.tasks.core.storage import StorageContext

PARAMS_FILE = "params.json"
GLOBAL_MARKER = "global.json"
DONE_FOLDER, FAILED_FOLDER = "done/", "failed/"
SEGMENT_CHUNKS = 16384  # chunks per segment, and objects per segment at most 16 times that
SEGMENT_OBJECTS = 16 * SEGMENT_CHUNKS
FLUSH_SECONDS = 30.0
RECENT = 1000  # finish times kept for the pace of a step (`Finished.pace`)


@dataclass(frozen=True)
class Segment:
    """Finished chunks (grid positions) with what each wrote: chunk i wrote objects
    ``first[i]:first[i + 1]`` of (`object_url` index into `urls`, `object_key`, `object_size`)."""

    grid: tuple[int, int, int]
    chunks: np.ndarray  # int64 positions
    finished: np.ndarray  # float64 epoch seconds
    seconds: np.ndarray  # float32 task seconds
    first: np.ndarray  # int64, len(chunks) + 1
    urls: tuple[str, ...]
    object_url: np.ndarray  # int32
    object_key: np.ndarray  # bytes (utf-8)
    object_size: np.ndarray  # int64
    results: Mapping[int, Any] = field(default_factory=dict)  # a task's dict result, by position

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            grid=np.asarray(self.grid, np.int64),
            chunks=self.chunks,
            finished=self.finished,
            seconds=self.seconds,
            first=self.first,
            urls=np.asarray(self.urls, dtype=str),
            object_url=self.object_url,
            object_key=self.object_key,
            object_size=self.object_size,
            results=np.asarray(json.dumps({str(k): v for k, v in self.results.items()})),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Segment:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            results = json.loads(str(z["results"]))
            return cls(
                grid=tuple(int(v) for v in z["grid"]),  # type: ignore[arg-type]
                chunks=z["chunks"],
                finished=z["finished"],
                seconds=z["seconds"],
                first=z["first"],
                urls=tuple(str(u) for u in z["urls"]),
                object_url=z["object_url"],
                object_key=z["object_key"],
                object_size=z["object_size"],
                results={int(k): v for k, v in results.items()},
            )

    def objects_of(self, i: int) -> Iterator[tuple[str, str, int]]:
        """(URL, key, stored size) of each object chunk ``chunks[i]`` wrote."""
        for j in range(int(self.first[i]), int(self.first[i + 1])):
            key = self.object_key[j].decode()
            yield self.urls[int(self.object_url[j])], key, int(self.object_size[j])


@dataclass(frozen=True)
class Finished:
    """What the ledger says of one step: a mask over its grid positions, and its global step."""

    mask: np.ndarray  # bool, one per grid position
    global_done: bool
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0))  # newest finish times, sorted

    def pace(self) -> tuple[float | None, float | None]:
        """(chunks per second over the `RECENT` newest finishes, when the last one finished);
        None where the ledger cannot tell (under two finishes, or all at one instant)."""
        if not self.recent.size:
            return None, None
        span = float(self.recent[-1] - self.recent[0])
        rate = (self.recent.size - 1) / span if self.recent.size > 1 and span > 0 else None
        return rate, float(self.recent[-1])

    @property
    def count(self) -> int:
        return int(np.count_nonzero(self.mask))


class SegmentWriter:
    """The driver's side of a step's segments: `add` each task's record as it returns, `flush`
    (at most every `flush_seconds`, or `force`) rewrites the open segment, which is closed and
    replaced by a new one when full. Names sort in the order the segments were opened."""

    def __init__(
        self,
        ledger: Ledger,
        stage: str,
        ident: str,
        grid: tuple[int, int, int],
        flush_seconds: float = FLUSH_SECONDS,
        retry: Callable[[Callable[[], None]], None] = lambda put: put(),
    ) -> None:
        self.ledger, self.stage, self.ident, self.retry = ledger, stage, ident, retry
        self.grid = grid_shape(grid)
        self.flush_seconds = flush_seconds
        self._token = f"{time.time_ns():020d}-{secrets.token_hex(3)}"
        self._opened = 0
        self._rows: list[tuple[int, float, float, dict[str, dict[str, int]], Any]] = []
        self._objects = 0
        self._dirty = False
        self._last_flush = time.monotonic()

    def add(self, position: int, record: Mapping[str, Any], result: Any = None) -> None:
        written = record.get("objects", {})
        self._rows.append(
            (position, time.time(), float(record.get("seconds", 0.0)), written, result)
        )
        self._objects += sum(len(keys) for keys in written.values())
        self._dirty = True
        if len(self._rows) >= SEGMENT_CHUNKS or self._objects >= SEGMENT_OBJECTS:
            self.flush(force=True)
            self._rows, self._objects = [], 0
            self._opened += 1
        else:
            self.flush()

    def flush(self, force: bool = False) -> None:
        due = time.monotonic() - self._last_flush >= self.flush_seconds
        if not self._dirty or not (force or due):
            return
        name = f"{self._token}-{self._opened:06d}.npz"
        key = self.ledger.prefix(self.stage, self.ident) + DONE_FOLDER + name
        data = self._segment().to_bytes()
        self.retry(lambda: objects.put(self.ledger.url, key, data, self.ledger.context))
        self._dirty, self._last_flush = False, time.monotonic()

    def _segment(self) -> Segment:
        urls: dict[str, int] = {}
        url_ids, keys, sizes, first = [], [], [], [0]
        for _, _, _, written, _ in self._rows:
            for url, sized in sorted(written.items()):
                for key, size in sorted(sized.items()):
                    url_ids.append(urls.setdefault(url, len(urls)))
                    keys.append(key.encode())
                    sizes.append(size)
            first.append(len(keys))
        return Segment(
            grid=self.grid,
            chunks=np.array([r[0] for r in self._rows], np.int64),
            finished=np.array([r[1] for r in self._rows], np.float64),
            seconds=np.array([r[2] for r in self._rows], np.float32),
            first=np.array(first, np.int64),
            urls=tuple(urls),
            object_url=np.array(url_ids, np.int32),
            object_key=np.array(keys, dtype=bytes) if keys else np.zeros(0, "S1"),
            object_size=np.array(sizes, np.int64),
            results={r[0]: r[4] for r in self._rows if isinstance(r[4], dict)},
        )


@dataclass(frozen=True)
class Ledger:
    """The steps' segments, failures and markers under `url` (usually ``<output>/ledger``)."""

    url: str
    context: StorageContext = StorageContext()

    def prefix(self, stage: str, ident: str) -> str:
        return f"{stage}/{ident}/"

    def record_params(self, stage: str, ident: str, spec: dict[str, Any]) -> None:
        key = self.prefix(stage, ident) + PARAMS_FILE
        # (`get`, not `exists`: cloud-files' exists needs a GCS batch API emulators lack)
        if objects.get(self.url, key, self.context) is None:
            record = {"stage": stage, "identity": ident, "spec": spec}
            objects.put_json(self.url, key, record, self.context)

    def segment_keys(self, stage: str, ident: str) -> list[str]:
        """The keys of the step's segments, oldest first."""
        prefix = self.prefix(stage, ident) + DONE_FOLDER
        return sorted(
            k for k in objects.list_keys(self.url, prefix, self.context) if k.endswith(".npz")
        )

    def segments(
        self,
        stage: str,
        ident: str,
        grid: tuple[int, int, int] | None = None,
        newest_first: bool = False,
    ) -> Iterator[Segment]:
        """The step's segments one at a time (an unreadable one is skipped: its chunks rerun);
        with `grid`, only those of a grid of that shape (another's positions name other
        chunks)."""
        shape = None if grid is None else grid_shape(grid)
        keys = self.segment_keys(stage, ident)
        for key in reversed(keys) if newest_first else keys:
            data = objects.get(self.url, key, self.context)
            if data:
                try:
                    segment = Segment.from_bytes(data)
                except (ValueError, KeyError, OSError, EOFError):
                    continue
                if shape is None or segment.grid == shape:
                    yield segment

    def finished(self, stage: str, ident: str, grid: tuple[int, int, int]) -> Finished:
        """Which positions of a grid of shape `grid` the ledger lists as finished."""
        total = math.prod(grid_shape(grid))
        mask = np.zeros(total, bool)
        recent = np.zeros(0)
        for segment in self.segments(stage, ident, grid):
            valid = (segment.chunks >= 0) & (segment.chunks < total)
            mask[segment.chunks[valid]] = True
            recent = np.sort(np.concatenate([recent, segment.finished[valid]]))[-RECENT:]
        marker = objects.get(self.url, self.prefix(stage, ident) + GLOBAL_MARKER, self.context)
        return Finished(mask=mask, global_done=marker is not None, recent=recent)

    def global_record(self, stage: str, ident: str) -> dict | None:
        data = objects.get(self.url, self.prefix(stage, ident) + GLOBAL_MARKER, self.context)
        return _json_or_none(data)

    def mark_global(self, stage: str, ident: str, record: dict[str, Any]) -> None:
        record = {"finished": time.time(), **record}
        objects.put_json(self.url, self.prefix(stage, ident) + GLOBAL_MARKER, record, self.context)

    def record_failure(self, stage: str, ident: str, chunk_id: str, info: dict[str, Any]) -> None:
        """Keep why a chunk failed (its error, traceback, grid position) until it succeeds."""
        key = self.prefix(stage, ident) + FAILED_FOLDER + f"{chunk_id}.json"
        record = {"chunk": chunk_id, "when": time.time(), **info}
        objects.put_json(self.url, key, record, self.context)

    def failures(self, stage: str, ident: str) -> list[dict[str, Any]]:
        """The failure records of the step, oldest first (a chunk that succeeded since is still
        listed: compare with `finished`)."""
        prefix = self.prefix(stage, ident) + FAILED_FOLDER
        keys = objects.list_keys(self.url, prefix, self.context)
        found = [
            _json_or_none(data) for data in objects.get_many(self.url, keys, self.context).values()
        ]
        return sorted((f for f in found if f), key=lambda f: f.get("when", 0))

    def writer(
        self,
        stage: str,
        ident: str,
        grid: tuple[int, int, int],
        flush_seconds: float = FLUSH_SECONDS,
        retry: Callable[[Callable[[], None]], None] = lambda put: put(),
    ) -> SegmentWriter:
        """The driver's segment writer for a step; `retry` wraps each write (the driver's
        retries on transient storage errors)."""
        return SegmentWriter(self, stage, ident, grid, flush_seconds, retry)


def grid_shape(grid: tuple[int, ...]) -> tuple[int, int, int]:
    """A grid's shape as plain ints (a `Vec3`, a tuple of numpy ints), as segments keep it."""
    return (int(grid[0]), int(grid[1]), int(grid[2]))


def _json_or_none(data: bytes | None) -> Any:
    """A record's JSON, or None when it is gone or unreadable."""
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def written_objects(written: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """What `objects.recording_writes` collected, as a record's ``objects`` field."""
    grouped: dict[str, dict[str, int]] = {}
    for (url, key), size in sorted(written.items()):
        grouped.setdefault(url, {})[key] = size
    return grouped
