"""One driver per output: the lease's rules, on file:// (two real drivers: integration)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import pytest

import petavox.workflows.lease as lease_module
from petavox.workflows.lease import (
    LEASE_KEY,
    DriverLease,
    LeaseLostError,
    OutputBusyError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def lease(out: str, clock: Clock | None = None, ttl: float = 60.0) -> DriverLease:
    return DriverLease(out, ttl=ttl, settle=0.0, clock=clock or Clock())


def write_record(tmp_path, **fields) -> None:
    record = {
        "token": "other",
        "host": "node-7",
        "pid": 4242,
        "started": 999_990.0,
        "heartbeat": 999_999.0,
        "ttl": 60.0,
        **fields,
    }
    (tmp_path / "ledger").mkdir(exist_ok=True)
    (tmp_path / "ledger" / LEASE_KEY).write_text(json.dumps(record))


def test_a_second_driver_is_refused_naming_the_holder(tmp_path):
    out = f"file://{tmp_path}"
    with lease(out), pytest.raises(OutputBusyError) as err:
        lease(out).acquire()
    message = str(err.value)
    assert f"host {socket.gethostname()}" in message and "pid" in message
    assert "started" in message and "expires at" in message


def test_a_released_lease_is_free_and_never_deleted(tmp_path):
    out = f"file://{tmp_path}"
    with lease(out):
        pass
    assert json.loads((tmp_path / "ledger" / LEASE_KEY).read_text())["released"] is True
    with lease(out):
        pass


def test_a_live_lease_elsewhere_holds_until_it_expires(tmp_path):
    write_record(tmp_path)
    clock = Clock()
    with pytest.raises(OutputBusyError, match="host node-7, pid 4242"):
        lease(f"file://{tmp_path}", clock).acquire()
    clock.now += 61  # the other driver's heartbeat is now older than its time to live
    taker = lease(f"file://{tmp_path}", clock)
    with taker:
        assert json.loads((tmp_path / "ledger" / LEASE_KEY).read_text())["token"] == taker.token


def test_a_dead_driver_of_this_host_is_taken_over_at_once(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_record(tmp_path, host=socket.gethostname(), pid=gone.pid)
    with lease(f"file://{tmp_path}"):
        pass


def test_a_driver_whose_lease_was_taken_over_stops(tmp_path):
    out = f"file://{tmp_path}"
    holder = DriverLease(out, ttl=5.0, settle=0.0)
    holder.acquire()
    try:
        write_record(tmp_path, heartbeat=holder.clock())  # another driver took it over
        holder._stop.wait(5.0 / 4 + 0.5)  # one heartbeat
        with pytest.raises(LeaseLostError, match="taken over by host node-7, pid 4242"):
            holder.check()
    finally:
        holder.release()
    assert json.loads((tmp_path / "ledger" / LEASE_KEY).read_text())["token"] == "other"


def test_two_drivers_that_start_together_do_not_both_go_on(tmp_path, monkeypatch):
    """Both read no lease and write theirs; the read-back after the settle time tells them
    apart: only the one whose record survived goes on."""
    out = f"file://{tmp_path}"
    first, second = DriverLease(out, settle=0.0), DriverLease(out, settle=0.0)
    # the second driver writes while the first waits out its settle time
    monkeypatch.setattr(lease_module.time, "sleep", lambda seconds: second._write())
    with pytest.raises(OutputBusyError, match="started at the same moment"):
        first.acquire()
    monkeypatch.undo()
    with second:
        assert second.read().token == second.token


def test_on_file_urls_exactly_one_of_many_simultaneous_drivers_wins(tmp_path):
    out = f"file://{tmp_path}"
    leases = [DriverLease(out) for _ in range(8)]
    start = threading.Barrier(len(leases))
    won, refused = [], []

    def race(lease: DriverLease) -> None:
        start.wait()
        try:
            lease.acquire()
            won.append(lease)
        except OutputBusyError:
            refused.append(lease)

    threads = [threading.Thread(target=race, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == 7
    won[0].release()
