"""One driver per output: a lease object with a heartbeat, kept in the output store.

Object stores offer no lock that works the same on file://, S3 and GCS, so the lease is a small
JSON record (holder's host, pid, start, last heartbeat, time to live) at
``<output>/ledger/driver.lease.json``, taken by write-then-read-back: a driver writes its record,
waits a settle time longer than the gap between any other driver's read and write, and reads the
record back; only the driver whose record survived goes on. On ``file://`` the read, write and
read-back happen under an exclusive `flock` of a lock file beside the lease instead, so no
settle time is needed. The holder rewrites its heartbeat
every quarter of the time to live and checks that the record is still its own; a driver that
finds another's record (it stalled longer than the time to live and was taken over) stops
before its next dispatch. A crashed driver's lease is taken over once its heartbeat is older
than the time to live, or at once when it ran on this host and its process is gone. A released
lease is overwritten with ``released: true`` (no delete: workers and drivers hold no delete
permission).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import TracebackType

from petavox.tasks.core import objects
from petavox.tasks.core.errors import PetavoxError
from petavox.tasks.core.storage import StorageContext, local_path

LEASE_KEY = "driver.lease.json"
LOCK_FILE = "driver.lease.lock"
log = logging.getLogger("petavox")


class OutputBusyError(PetavoxError):
    """Another driver holds the output's lease (exit 2: nothing was written)."""


class LeaseLostError(PetavoxError):
    """This driver's lease was taken over by another driver; it stopped dispatching."""


@dataclass(frozen=True, kw_only=True)
class LeaseRecord:
    token: str
    host: str
    pid: int
    started: float
    heartbeat: float
    ttl: float
    released: bool = False

    def holder(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"host {self.host}, pid {self.pid}, started {started}"

    def expired(self, now: float) -> bool:
        return self.released or now - self.heartbeat > self.ttl or self._dead_here()

    def _dead_here(self) -> bool:
        """The holder ran on this host and its process is gone (a crash or a kill -9)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class DriverLease:
    """The lease on one output root; a context manager around a run's writes."""

    def __init__(
        self,
        output: str,
        context: StorageContext = StorageContext(),
        *,
        ttl: float = 60.0,
        settle: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = output.rstrip("/") + "/ledger"
        self.context = context
        self.ttl = ttl
        # file:// takes the lease under a file lock; object stores take up to a second between
        # a driver's read and its write
        self.folder = local_path(self.url)
        self.settle = settle if settle is not None else (0.0 if self.folder else 2.0)
        self.clock = clock
        self.token = uuid.uuid4().hex
        self.started = clock()
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> LeaseRecord | None:
        data = objects.get(self.url, LEASE_KEY, self.context)
        if data is None:
            return None
        try:
            return LeaseRecord(**json.loads(data))
        except (ValueError, TypeError):
            return None  # not a lease we can read: treat as absent, then read back ours

    def _write(self, released: bool = False) -> None:
        record = LeaseRecord(
            token=self.token,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=self.started,
            heartbeat=self.clock(),
            ttl=self.ttl,
            released=released,
        )
        objects.put_json(self.url, LEASE_KEY, asdict(record), self.context)

    def acquire(self) -> None:
        """Take the lease or raise `OutputBusyError` naming the holder; starts the heartbeat."""
        with self._exclusive():
            self._take()
        self._thread = threading.Thread(target=self._beat, name="petavox-lease", daemon=True)
        self._thread.start()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """On file://, hold an exclusive lock of ``driver.lease.lock`` (elsewhere: nothing)."""
        if self.folder is None:
            yield
            return
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(os.path.join(self.folder, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _take(self) -> None:
        current = self.read()
        if current is not None and current.token != self.token:
            self._refuse_unless_expired(current)
        self._write()
        time.sleep(self.settle)
        back = self.read()
        if back is None or back.token != self.token:
            raise OutputBusyError(self._busy_message(back, "started at the same moment"))

    def _refuse_unless_expired(self, current: LeaseRecord) -> None:
        if not current.expired(self.clock()):
            raise OutputBusyError(self._busy_message(current, "is writing it"))
        if not current.released:
            log.warning("taking over the expired lease of %s", current.holder())

    def _busy_message(self, holder: LeaseRecord | None, what: str) -> str:
        output = self.url.removesuffix("/ledger")
        if holder is None:
            return f"another driver on {output} {what}; run again once it has stopped"
        expires = time.strftime("%H:%M:%S UTC", time.gmtime(holder.heartbeat + holder.ttl))
        return (
            f"another driver ({holder.holder()}) {what}: {output}; two drivers on one output "
            f"would corrupt it. Wait for it to finish, or stop it; if it died, its lease "
            f"expires at {expires} (heartbeat + {holder.ttl:.0f} s) and a rerun takes over"
        )

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                current = self.read()
                if current is not None and current.token != self.token:
                    self.lost = f"its lease was taken over by {current.holder()}"
                    return
                self._write()
            except Exception as exc:  # a storage hiccup: try again at the next beat
                log.warning("lease heartbeat failed: %s", exc)

    def check(self) -> None:
        """Raise `LeaseLostError` if another driver has taken the output over."""
        if self.lost is not None:
            output = self.url.removesuffix("/ledger")
            raise LeaseLostError(
                f"this driver stopped writing {output}: {self.lost}. Its heartbeat stalled "
                f"for longer than {self.ttl:.0f} s; the other driver goes on"
            )

    def release(self) -> None:
        """Stop the heartbeat and mark the lease released (if it is still this driver's). A
        storage error here is logged, not raised: the lease then lapses by itself."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            current = self.read()
            if current is not None and current.token == self.token:
                self._write(released=True)
        except Exception as exc:
            log.warning("could not release the lease (it lapses in %.0f s): %s", self.ttl, exc)

    def __enter__(self) -> DriverLease:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
