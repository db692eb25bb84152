"""Coalesced polling: many monitors, one squeue per interval; shared errors; batched sacct."""
from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from core.errors import SlurmUnavailable
from core.slurm.client import Slurm
from core.slurm.model import CommandResult, JobState, QueueEntry, is_member
from core.slurm.shared import ACCOUNTING_FILE, ACCOUNTING_FORMAT, SharedSlurm
from tests.support import SLURM_FIXTURES, FakeClock, header_line, read_text, slurm_output

#: squeue's header for jobmon's `-o '%i|%T|%r|%M'` (a real capture): the runner's answers start with it.
SQUEUE_HEADER = header_line("squeue_itrM.txt")


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


def shared(tmp_path, runner, clock=None, max_age=30.0):
    return SharedSlurm(Slurm(runner), str(tmp_path), max_age=max_age, clock=(clock or FakeClock()).time)


def test_one_squeue_serves_every_monitor_until_it_is_older_than_the_interval(tmp_path):
    runner = CountingRunner(str(tmp_path), squeue=slurm_output("squeue_array_running_r.txt") + "12|RUNNING|None\n")
    clock = FakeClock()
    monitors = [shared(tmp_path, runner, clock) for _ in range(5)]
    for monitor in monitors:
        assert monitor.query_queue(["12"]) == {"12": QueueEntry("12", JobState.RUNNING, "None", "")}
        assert set(monitor.query_queue(["7"])) == {"7_0", "7_1", "7_2", "7_3", "7_4", "7_5"}
    assert len(runner.calls("squeue")) == 1
    assert runner.calls("squeue")[0][:2] == ["squeue", "-u"]
    assert "-h" not in runner.calls("squeue")[0], "squeue must print the header the parser reads"
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
    squeue = SQUEUE_HEADER + "".join(f"{n}|RUNNING|None|0:0{n % 10}\n" for n in range(20, 32))
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
    runner = CountingRunner(str(tmp_path), squeue_error=read_text(SLURM_FIXTURES, "squeue_controller_down.stderr"))
    for _ in range(3):
        with pytest.raises(SlurmUnavailable, match="Unable to contact slurm controller"):
            shared(tmp_path, runner).query_queue(["12"])
    assert len(runner.calls("squeue")) == 1


def test_a_snapshot_older_than_the_job_is_not_trusted(tmp_path):
    runner = CountingRunner(str(tmp_path), squeue=SQUEUE_HEADER + "12|RUNNING|None|1:00\n")
    clock = FakeClock()
    shared(tmp_path, runner, clock).query_queue(["12"])
    clock.now += 1.0
    shared(tmp_path, runner, clock).query_queue(["13"], not_before=clock.now - 0.5)  # job 13 was just submitted
    assert len(runner.calls("squeue")) == 2


def test_jobs_ending_together_share_one_sacct_call(tmp_path):
    sacct = slurm_output("sacct_completed.txt") + read_text(SLURM_FIXTURES, "sacct_failed.txt")  # one header
    runner = CountingRunner(str(tmp_path), sacct=sacct)
    clock = FakeClock()
    ids = sorted({line.split("^|^")[0].split(".")[0] for line in sacct.splitlines()[1:]})
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


def _cache(tmp_path, **fields) -> None:
    (tmp_path / ACCOUNTING_FILE).write_text(json.dumps(fields), encoding="utf-8")


@pytest.mark.parametrize("old", [
    {"text": read_text(SLURM_FIXTURES, "sacct_failed.txt"), "error": ""},  # sacct's text without its header
    {"text": "", "error": "sacct failed: sacct: error: Problem talking to the database"},
], ids=["text", "error"])
def test_an_accounting_cache_from_an_older_jobmon_is_ignored_and_sacct_asked_again(tmp_path, old):
    clock = FakeClock()
    _cache(tmp_path, taken_at=clock.now, queried=["3"], wanted={"3": clock.now}, **old)  # no "format": version 1
    runner = CountingRunner(str(tmp_path), sacct=slurm_output("sacct_failed.txt"))
    records = shared(tmp_path, runner, clock).query_accounting(["3"])
    assert len(runner.calls("sacct")) == 1
    assert (records["3"].state, records["3"].exit_code) == (JobState.FAILED, 3)
    cache = json.loads((tmp_path / ACCOUNTING_FILE).read_text(encoding="utf-8"))
    assert cache["format"] == ACCOUNTING_FORMAT == 2
    assert cache["text"] == slurm_output("sacct_failed.txt")


def test_a_fresh_accounting_cache_of_this_format_is_used_without_sacct(tmp_path):
    clock = FakeClock()
    _cache(tmp_path, format=ACCOUNTING_FORMAT, taken_at=clock.now, queried=["3"], wanted={"3": clock.now},
           text=slurm_output("sacct_failed.txt"), error="")
    runner = CountingRunner(str(tmp_path), sacct="unused")
    records = shared(tmp_path, runner, clock).query_accounting(["3"])
    assert runner.calls("sacct") == []
    assert (records["3"].state, records["3"].exit_code) == (JobState.FAILED, 3)


def test_next_poll_lands_just_after_the_shared_snapshot_expires(tmp_path):
    runner = CountingRunner(str(tmp_path), squeue=SQUEUE_HEADER + "12|RUNNING|None|1:00\n")
    clock = FakeClock()
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


@pytest.mark.parametrize("impatient", [True, False])
def test_a_refresh_held_elsewhere_is_an_outage_for_a_person_and_a_fresh_query_for_a_monitor(tmp_path, impatient):
    """A controller going down can leave one process's squeue hanging under the snapshot's lock:
    `jobmon status` must answer with the last known states, a monitor asks squeue itself."""
    from core.locking import FlockLock

    runner = CountingRunner(str(tmp_path), squeue=slurm_output("squeue_running.txt"))
    view = SharedSlurm(Slurm(runner), str(tmp_path), max_age=30.0, clock=FakeClock().time, lock_timeout=0.1,
                       impatient=impatient)
    held = FlockLock(os.path.join(str(tmp_path), "squeue.snapshot.lock"), 0)
    held.acquire()
    try:
        if impatient:
            with pytest.raises(SlurmUnavailable, match="has not answered another jobmon process"):
                view.query_queue(["2"])
            assert runner.calls("squeue") == []
        else:
            assert list(view.query_queue(["2"])) == ["2"] and len(runner.calls("squeue")) == 1
    finally:
        held.release()
