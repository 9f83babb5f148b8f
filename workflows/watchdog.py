"""A per-task timeout on a Ray worker: Ray has none, and a hung task (a stalled read, a
deadlocked library) would hold its worker and its chunk forever.

Python cannot interrupt a thread stuck in C code, so past its time the watchdog ends the
worker process (exit status `TIMEOUT_EXIT`) after saying why on stderr (which Ray shows on
the driver). To Ray that is a worker that died: it retries the task (`ray.task_retries`), and
after the retries the driver reports the chunk as failed, within the stage's failure budget.
"""

from __future__ import annotations

import os
import sys
import threading
from types import TracebackType

TIMEOUT_EXIT = 75  # EX_TEMPFAIL


class Watchdog:
    """``with Watchdog(seconds, what):`` ends the process if the block runs past `seconds`
    (None: no limit)."""

    def __init__(self, seconds: float | None, what: str) -> None:
        self.seconds, self.what = seconds, what
        self._timer: threading.Timer | None = None

    def _expire(self) -> None:
        print(
            f"petavox: {self.what} ran past its task_timeout of {self.seconds:g} s; "
            "ending its worker so that the task is retried",
            file=sys.stderr,
            flush=True,
        )
        os._exit(TIMEOUT_EXIT)

    def __enter__(self) -> Watchdog:
        if self.seconds is not None:
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
