"""Keep going through failures: a step's failure budget, the failed chunks in the ledger, and the
errors that end a stage or a run with some chunks failed.

A chunk whose task fails for good (a bug, a bad input chunk, a timeout or a worker death on
every retry) is recorded under the step's ``failed/`` in the ledger with its error and
traceback. Within the stage's `max_failures` the map goes on; at its end the stage raises
`ChunksFailedError` listing them (its global step does not run). A rerun runs them again with
the chunks that never ran: they are not finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from petavox.tasks.core.errors import PetavoxError
from petavox.tasks.core.geometry import Chunk
from petavox.workflows.ledger import Ledger
from petavox.workflows.params import allowed_failures
from petavox.workflows.plan import StagePlan

SHOWN = 5  # failed chunks named in an error message


class ChunksFailedError(PetavoxError):
    """A step finished its map with chunks failed within its budget (exit 1)."""

    def __init__(self, label: str, total: int, errors: list[PetavoxError], allowed: int) -> None:
        self.label, self.total, self.errors, self.allowed = label, total, errors, allowed
        listed = "; ".join(str(e) for e in errors[:SHOWN])
        more = f"; and {len(errors) - SHOWN} more" if len(errors) > SHOWN else ""
        super().__init__(
            f"{label}: {len(errors)} of {total} chunks failed (max_failures allows {allowed}): "
            f"{listed}{more}. Fix the cause and run the same command again: it runs the "
            "failed chunks and those that never ran"
        )


class RunIncompleteError(PetavoxError):
    """Stages ended with failed chunks; the stages that read their outputs did not start."""

    def __init__(self, failed: list[ChunksFailedError], not_started: list[str]) -> None:
        self.failed, self.not_started = failed, not_started
        text = "\n".join(str(f) for f in failed)
        if not_started:
            text += f"\nnot started (they read a failed stage's output): {', '.join(not_started)}"
        super().__init__(text)


@dataclass
class FailureBudget:
    """The failures of one step's map: recorded as they come, tolerated up to `allowed`."""

    plan: StagePlan
    ledger: Ledger | None
    key: str
    allowed: int
    retry: Callable[[Callable[[], None]], None] = lambda write: write()  # the driver's retries
    errors: list[PetavoxError] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(
        cls,
        plan: StagePlan,
        ledger: Ledger | None,
        key: str,
        retry: Callable[[Callable[[], None]], None] = lambda write: write(),
    ) -> FailureBudget:
        allowed = allowed_failures(plan.max_failures, len(plan.grid))
        return cls(plan, ledger, key, allowed, retry)

    def tolerate(self, position: int, chunk: Chunk, error: BaseException) -> bool:
        """Record a chunk's failure; True while the failures are within the budget."""
        if not isinstance(error, PetavoxError):
            return False
        with self._lock:
            self.errors.append(error)
        if self.ledger is not None:
            info = {
                "position": position,
                "error": str(error),
                "details": getattr(error, "details", ""),
                "bad_input": bool(getattr(error, "bad_input", False)),
            }
            ledger = self.ledger
            self.retry(lambda: ledger.record_failure(self.plan.stage, self.key, chunk.id, info))
        return len(self.errors) <= self.allowed

    def check(self) -> None:
        """At the end of the map: the failures, if any, as one error."""
        if self.errors:
            raise ChunksFailedError(self.plan.label, len(self.plan.grid), self.errors, self.allowed)
