"""Coalesced polling: many monitors, one squeue per interval; shared errors; batched sacct."""
from __future__ import annotations

import multiprocessing
import os

import pytest

from core.errors import SlurmUnavailable
from core.slurm.client import CommandResult, Slurm
from core.slurm.shared import SharedSlurm, is_member

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "slurm")


def fixture(name: str) -> str:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return handle.read()


class CountingRunner:
    """A Slurm runner that answers from text and counts calls in a file (works across processes)."""

    def __init__(self, folder: str, squeue: str = "", sacct: str = "", squeue_error: str = "") -> None:
        self.log = os.path.join(folder, "calls.log")
        self.squeue, self.sacct, self.squeue_error = squeue, sacct, squeue_error

    def __call__(self, argv, timeout):
        with open(self.log, "a", encoding="utf-8") as handle:
            handle.write(" ".join(argv) + "\n")
        if argv[0] == "squeue":
            if self.squeue_error:
                return CommandResult(1, "", self.squeue_error)
            return CommandResult(0, self.squeue, "")
        return CommandResult(0, self.sacct, "")

    def calls(self, command: str):
        try:
            with open(self.log, encoding="utf-8") as handle:
                return [line.split() for line in handle if line.startswith(command)]
        except FileNotFoundError:
            return []


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def shared(tmp_path, runner, clock=None, max_age=30.0):
    return SharedSlurm(Slurm(runner), str(tmp_path), max_age=max_age, clock=clock or Clock())


def test_one_squeue_serves_every_monitor_until_it_is_older_than_the_interval(tmp_path):
    runner = CountingRunner(str(tmp_path), squeue=fixture("squeue_array_running_r.txt") + "12|RUNNING|None|1:00\n")
    clock = Clock()
    monitors = [shared(tmp_path, runner, clock) for _ in range(5)]
    for monitor in monitors:
        assert set(monitor.query_queue(["12"])) == {"12"}
        assert set(monitor.query_queue(["7"])) == {"7_0", "7_1", "7_2", "7_3", "7_4", "7_5"}
    assert len(runner.calls("squeue")) == 1
    assert runner.calls("squeue")[0][:2] == ["squeue", "-u"]
    clock.now += 29.0
    monitors[0].query_queue(["12"])
    assert len(runner.calls("squeue")) == 1
    clock.now += 1.5
    monitors[1].query_queue(["12"])
    assert len(runner.calls("squeue")) == 2


def _poll_in_child(folder: str, squeue: str, job_id: str, queue: multiprocessing.Queue) -> None:
    runner = CountingRunner(folder, squeue=squeue)
    queue.put(sorted(SharedSlurm(Slurm(runner), folder, max_age=30.0).query_queue([job_id])))


def test_monitors_in_separate_processes_share_one_call(tmp_path):
    squeue = "".join(f"{n}|RUNNING|None|0:0{n % 10}\n" for n in range(20, 32))
    results: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_poll_in_child, args=(str(tmp_path), squeue, str(n), results))
             for n in range(20, 32)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert sorted(results.get(timeout=5) for _ in procs) == [[str(n)] for n in range(20, 32)]
    assert len(CountingRunner(str(tmp_path)).calls("squeue")) == 1


def test_a_failed_squeue_is_shared_as_an_error_not_as_an_empty_queue(tmp_path):
    runner = CountingRunner(str(tmp_path), squeue_error=fixture("squeue_controller_down.stderr"))
    for _ in range(3):
        with pytest.raises(SlurmUnavailable, match="Unable to contact slurm controller"):
            shared(tmp_path, runner).query_queue(["12"])
    assert len(runner.calls("squeue")) == 1


def test_a_snapshot_older_than_the_job_is_not_trusted(tmp_path):
    runner = CountingRunner(str(tmp_path), squeue="12|RUNNING|None|1:00\n")
    clock = Clock()
    shared(tmp_path, runner, clock).query_queue(["12"])
    clock.now += 1.0
    shared(tmp_path, runner, clock).query_queue(["13"], not_before=clock.now - 0.5)  # job 13 was just submitted
    assert len(runner.calls("squeue")) == 2


def test_jobs_ending_together_share_one_sacct_call(tmp_path):
    sacct = fixture("sacct_completed.txt") + fixture("sacct_failed.txt")
    runner = CountingRunner(str(tmp_path), sacct=sacct)
    clock = Clock()
    ids = sorted({line.split("^|^")[0].split(".")[0] for line in sacct.splitlines()})
    first, second = ids
    slurm_a, slurm_b = shared(tmp_path, runner, clock), shared(tmp_path, runner, clock)
    slurm_a.query_accounting([first])  # nobody else waits yet: sacct -j first
    slurm_b.query_accounting([second])  # now both are wanted: one call for both
    clock.now += 0.5
    assert set(slurm_a.query_accounting([first])) == {first}
    assert set(slurm_b.query_accounting([second])) == {second}
    calls = runner.calls("sacct")
    assert len(calls) == 2
    assert calls[-1][-1] == f"{first},{second}"


def test_next_poll_lands_just_after_the_shared_snapshot_expires(tmp_path):
    runner = CountingRunner(str(tmp_path), squeue="12|RUNNING|None|1:00\n")
    clock = Clock()
    first = shared(tmp_path, runner, clock)
    first.query_queue(["12"])
    clock.now += 12.0
    late = shared(tmp_path, runner, clock)
    late.query_queue(["12"])
    delay = late.next_poll_delay(30.0, "12")
    assert 18.0 < delay < 19.0  # wakes right after the snapshot taken 12 s ago expires
    assert 48.0 < late.next_poll_delay(60.0, "12") < 49.0  # pending jobs: the expiry after next
    clock.now += 15.0  # a monitor that reads the snapshot 27 s old must not skip the next refresh
    assert 3.0 < late.next_poll_delay(30.0, "12") < 4.0


@pytest.mark.parametrize("key, job, expected", [
    ("52", "52", True), ("52_7", "52", True), ("52_[3-9%3]", "52", True), ("52+1", "52", True),
    ("520", "52", False), ("5", "52", False), ("52.batch", "52", False),
])
def test_membership(key, job, expected):
    assert is_member(key, job) is expected
