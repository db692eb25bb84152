"""A running job's story: progress, stalls, hangs and time limits, stepped with a fake clock while the
test writes the job's log, and a queue row whose time left follows the clock."""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Sequence, Tuple

import pytest

from core.config import Config, HealthConfig
from core.notify.events import EventKind
from core.progress.health import StallRule, Threshold
from core.slurm.model import AccountingRecord, QueueEntry
from core.slurm.parse import parse_squeue
from core.views.status import progress_cell, progress_json
from tests.support import CONFIG, Story, accounting_text, header_line, sacct_row

JOB = "4"
START = 1_000_000.0


def clock_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RunningJob:
    """squeue under the real live header (tests/fixtures/slurm_headers/squeue_live.txt): RUNNING since
    START with `limit` seconds, COMPLETED at `ends_at`; sacct answers only then."""

    def __init__(self, clock, limit: float, ends_at: float = float("inf"), end_state: str = "COMPLETED",
                 requeued: Tuple[float, float] = (float("inf"), float("inf"))) -> None:
        self.clock, self.limit, self.ends_at, self.end_state = clock, limit, ends_at, end_state
        self.requeued = requeued  # (seconds after START it went back to PENDING, when it started again)
        self.queue_calls = 0

    def query_queue(self, job_ids: Sequence[str], *, not_before: float = 0.0) -> Dict[str, QueueEntry]:
        self.queue_calls += 1
        now = self.clock.time()
        state = "RUNNING" if now < self.ends_at else self.end_state
        started, start_time = START, "2026-11-29T00:19:50"
        if now >= START + self.requeued[1]:
            started, start_time = START + self.requeued[1], "2026-11-29T01:04:50"
        elif now >= START + self.requeued[0]:
            state, start_time = "PENDING", "N/A"
        used = now - started
        row = (f"{JOB}|{state}|None|{clock_time(used)}|{clock_time(self.limit)}|{clock_time(self.limit - used)}|"
               f"{start_time}|vm|2026-11-29T00:10:00\n")
        return {entry.job_id: entry for entry in parse_squeue(header_line("squeue_live.txt") + row)}

    def query_accounting(self, job_ids: Sequence[str]) -> Dict[str, AccountingRecord]:
        return accounting_text(sacct_row(JOB, self.end_state)) if self.clock.time() >= self.ends_at else {}

    def next_poll_delay(self, interval: float, job_id: str) -> float:
        return interval


def live_config(**health) -> Config:
    return replace(CONFIG, running_interval=10.0, health=replace(HealthConfig(), **health))


def run(tale: Story, log_path: str, writes: List[Tuple[float, str]], until: float) -> None:
    """Step the monitor like the daemon does, appending each (seconds after START, text) to the log when due."""
    pending = sorted(writes)
    while tale.clock.time() < START + until:
        now = tale.clock.time()
        while pending and START + pending[0][0] <= now:
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(pending.pop(0)[1])
        wake = tale.monitor.step(now)
        if wake is None:
            return
        tale.clock.sleep(max(wake - now, 0.0) or 1.0)


@pytest.fixture
def log_path(tmp_path):
    return str(tmp_path / "job.err")  # the story record's stdout and stderr


def steps(first: int, last: int, total: int, every: float, start: float) -> List[Tuple[float, str]]:
    return [(start + (n - first) * every, f"step {n}/{total} loss=0.5\n") for n in range(first, last + 1)]


def kinds(store) -> List[str]:
    return [entry.kind.value for entry in store.load(JOB).outbox]


def test_progress_and_eta_follow_the_log(story_store, patterns, log_path):
    tale = Story(story_store, JOB, None, patterns, config=live_config())
    tale.slurm = tale.monitor.poller.slurm = RunningJob(tale.clock, limit=3600.0)
    run(tale, log_path, steps(1, 50, 100, 5.0, 0.0), until=251.0)  # step 50 is written at 245 s
    record = story_store.load(JOB)
    progress = progress_json(record.live, tale.clock.time(), running=True)
    assert progress is not None and progress["done"] == 50 and progress["total"] == 100
    assert progress["fraction"] == 0.5 and progress["source"] == "generic"
    assert progress["eta_low_seconds"] <= 250.0 <= progress["eta_high_seconds"]  # 50 more steps of 5 s
    assert progress_cell(progress, []).startswith("50%  ETA ")
    assert kinds(story_store) == []  # nothing to say while it moves


def test_a_stall_is_said_once_then_its_end_once(story_store, patterns, log_path):
    config = live_config(stall=StallRule(factor=3.0, floor=60.0, cap=600.0, quiet=3600.0))
    tale = Story(story_store, JOB, None, patterns, config=config)
    tale.slurm = tale.monitor.poller.slurm = RunningJob(tale.clock, limit=36000.0, ends_at=START + 2000.0)
    writes = steps(1, 10, 20, 10.0, 0.0) + steps(11, 20, 20, 10.0, 1000.0)  # stuck from 90 s to 1000 s
    run(tale, log_path, writes, until=3000.0)
    assert kinds(story_store) == ["stalled", "resumed", "final"]
    stalled = story_store.load(JOB).outbox[0]
    assert stalled.created_at - START == pytest.approx(90.0 + 60.0, abs=11.0)  # the floor: 3 x 10 s is less
    assert "step 10/20" in stalled.message.excerpt and "No progress for" in stalled.message.description


def test_a_job_without_parseable_progress_stalls_when_its_logs_stop_growing(story_store, patterns, log_path):
    config = live_config(stall=StallRule(quiet=300.0))
    tale = Story(story_store, JOB, None, patterns, config=config)
    tale.slurm = tale.monitor.poller.slurm = RunningJob(tale.clock, limit=36000.0, ends_at=START + 1000.0)
    run(tale, log_path, [(0.0, "hello\n"), (100.0, "still here\n")], until=2000.0)
    stalled = [e for e in story_store.load(JOB).outbox if e.kind is EventKind.STALLED]
    assert len(stalled) == 1 and stalled[0].created_at - START == pytest.approx(400.0, abs=11.0)


def test_a_hang_signature_is_said_while_the_job_runs(story_store, patterns, log_path):
    line = ("[rank1]:[E1003 18:37:01.832146912 ProcessGroupNCCL.cpp:607] [Rank 1] Watchdog caught collective "
            "operation timeout: WorkNCCL(SeqNum=6463, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, "
            "Timeout(ms)=1800000) ran for 1800017 milliseconds before timing out.\n")
    tale = Story(story_store, JOB, None, patterns, config=live_config())
    tale.slurm = tale.monitor.poller.slurm = RunningJob(tale.clock, limit=36000.0)
    run(tale, log_path, [(0.0, "step 1/100\n"), (30.0, line), (60.0, line)], until=200.0)
    hang = [e for e in story_store.load(JOB).outbox if e.kind is EventKind.HANG]
    assert len(hang) == 1 and "nccl_timeout" in hang[0].message.title
    assert hang[0].route.value == "error" and hang[0].created_at - START <= 40.0


def test_time_limit_thresholds_are_warned_once_each_and_a_projected_overrun_once(story_store, patterns, log_path):
    config = live_config(time_limit_warn=(Threshold(fraction=0.5), Threshold(seconds_left=60.0)))
    tale = Story(story_store, JOB, None, patterns, config=config)
    tale.slurm = tale.monitor.poller.slurm = RunningJob(tale.clock, limit=600.0, ends_at=START + 600.0,
                                                       end_state="TIMEOUT")
    run(tale, log_path, steps(1, 60, 100, 10.0, 0.0), until=700.0)  # 1 % per 10 s: needs 1000 s
    titles = [e.message.title for e in story_store.load(JOB).outbox if e.kind is EventKind.TIME_LIMIT]
    assert len(titles) == 3
    assert "projected to finish" in titles[0] and "after its time limit" in titles[0]
    assert "50% of its time limit used" in titles[1] and "1m left" in titles[2]


def test_a_failed_log_read_is_never_a_stall(story_store, patterns, tmp_path):
    record = story_store.load(JOB)
    folder = tmp_path / "a-directory"
    folder.mkdir()
    record.stdout_path = record.stderr_path = str(folder)  # exists, cannot be read as a file
    story_store.save(record)
    tale = Story(story_store, JOB, None, patterns, config=live_config(stall=StallRule(quiet=60.0)))
    tale.slurm = tale.monitor.poller.slurm = RunningJob(tale.clock, limit=36000.0)
    run(tale, str(tmp_path / "unused"), [], until=1000.0)
    assert kinds(story_store) == []


def test_cancel_on_stall_scancels_once_after_the_second_limit(story_store, patterns, log_path):
    config = live_config(stall=StallRule(factor=3.0, floor=60.0, cap=600.0, quiet=3600.0), cancel_on_stall=300.0)
    cancelled: List[str] = []
    tale = Story(story_store, JOB, None, patterns, config=config, scancel=cancelled.append)
    job = RunningJob(tale.clock, limit=36000.0)
    tale.slurm = tale.monitor.poller.slurm = job
    run(tale, log_path, steps(1, 10, 20, 10.0, 0.0), until=1000.0)  # stuck from 90 s on
    stalls = [e for e in story_store.load(JOB).outbox if e.kind is EventKind.STALLED]
    assert [e.message.title.split(" stalled")[1] for e in stalls] == ["", " too long: cancelling it"]
    assert cancelled == [JOB]
    assert stalls[1].created_at - stalls[0].created_at == pytest.approx(300.0, abs=11.0)
    assert "jobmon cancels it if it is still stuck 5m from now" in stalls[0].message.description


def test_optional_start_and_progress_messages_take_the_success_route(story_store, patterns, log_path):
    config = live_config(on_start=True, progress_every_fraction=0.25)
    tale = Story(story_store, JOB, None, patterns, config=config)
    tale.slurm = tale.monitor.poller.slurm = RunningJob(tale.clock, limit=36000.0, ends_at=START + 500.0)
    run(tale, log_path, steps(1, 100, 100, 4.0, 0.0), until=1000.0)
    entries = story_store.load(JOB).outbox
    assert [e.kind.value for e in entries] == ["start", "progress", "progress", "progress", "final"]
    assert all(e.route.value == "success" for e in entries)
    start = entries[0].message
    assert dict((f.name, f.value) for f in start.fields) == {"Node": "vm", "Queue wait": "9m"}
    assert [e.message.title for e in entries[1:4]] == [f"Job {JOB} (train): {n}% done" for n in (25, 50, 75)]
    assert entries[1].message.description.startswith("26%, 26/100 step; ETA 4m")  # what the poll saw


def test_progress_every_so_often(story_store, patterns, log_path):
    tale = Story(story_store, JOB, None, patterns, config=live_config(progress_every_seconds=120.0))
    tale.slurm = tale.monitor.poller.slurm = RunningJob(tale.clock, limit=36000.0, ends_at=START + 500.0)
    run(tale, log_path, steps(1, 100, 100, 4.0, 0.0), until=1000.0)
    entries = story_store.load(JOB).outbox
    assert [e.message.title for e in entries[:-1]] == [f"Job {JOB} (train): {n}m running" for n in (2, 4, 6, 8)]


# -- what the review found ------------------------------------------------------------------------
def test_a_log_deleted_while_the_job_runs_is_no_stall_and_no_reason_to_cancel(story_store, patterns, log_path):
    import os

    config = live_config(stall=StallRule(factor=3.0, floor=60.0, cap=600.0, quiet=300.0), cancel_on_stall=60.0)
    cancelled: List[str] = []
    tale = Story(story_store, JOB, None, patterns, config=config, scancel=cancelled.append)
    tale.slurm = tale.monitor.poller.slurm = RunningJob(tale.clock, limit=36000.0)
    run(tale, log_path, steps(1, 5, 100, 10.0, 0.0), until=60.0)
    os.unlink(log_path)  # the job writes on into the unlinked file: jobmon cannot see it
    run(tale, log_path, [], until=2000.0)
    assert kinds(story_store) == [] and cancelled == []


def test_a_requeued_job_starts_a_new_run(story_store, patterns, log_path):
    config = live_config(stall=StallRule(factor=3.0, floor=60.0, cap=600.0, quiet=3600.0),
                         time_limit_warn=(Threshold(fraction=0.5),))
    tale = Story(story_store, JOB, None, patterns, config=config)
    job = RunningJob(tale.clock, limit=400.0, requeued=(300.0, 3000.0))  # queued again for 45 minutes
    tale.slurm = tale.monitor.poller.slurm = job
    run(tale, log_path, steps(1, 25, 100, 10.0, 0.0), until=250.0)  # 50 % of the limit used: one warning
    before = story_store.load(JOB).live
    requeue = START + 3000.0
    run(tale, log_path, [(3000.0 + t, text) for t, text in steps(1, 30, 100, 10.0, 0.0)], until=3300.0)
    after = story_store.load(JOB).live
    assert before.run_start != after.run_start and after.started_at >= requeue
    titles = [e.message.title.split(": ")[1] for e in story_store.load(JOB).outbox]
    assert titles == ["projected to finish 9m after its time limit", "50% of its time limit used"] * 2  # each run's
    assert "stalled" not in kinds(story_store)  # the 45 minutes in the queue are no stall


def test_thresholds_crossed_together_are_one_message_naming_the_furthest(story_store, patterns, log_path):
    config = live_config(time_limit_warn=(Threshold(fraction=0.8), Threshold(fraction=0.9),
                                          Threshold(seconds_left=30.0)))
    tale = Story(story_store, JOB, None, patterns, config=config)
    tale.slurm = tale.monitor.poller.slurm = RunningJob(tale.clock, limit=600.0)
    tale.clock.now = START + 580.0  # a monitor (re)started late: all three are past
    run(tale, log_path, [], until=700.0)
    titles = [e.message.title for e in story_store.load(JOB).outbox]
    assert titles == [f"Job {JOB} (train): 30s left"]


def test_a_checkpoint_line_does_not_end_a_stall_only_progress_does(story_store, patterns, log_path):
    config = live_config(stall=StallRule(factor=3.0, floor=60.0, cap=200.0, quiet=3600.0))
    tale = Story(story_store, JOB, None, patterns, config=config)
    tale.slurm = tale.monitor.poller.slurm = RunningJob(tale.clock, limit=36000.0)
    writes = steps(1, 10, 100, 10.0, 0.0) + [(400.0, "Saving model checkpoint to /ckpt/step-10\n")] \
        + steps(11, 12, 100, 10.0, 1000.0)
    run(tale, log_path, writes, until=1100.0)
    entries = story_store.load(JOB).outbox
    assert [e.kind.value for e in entries] == ["stalled", "resumed"]
    assert "after 15m without progress" in entries[1].message.description  # 90 s -> 1000 s


def test_an_eta_ages_while_progress_stands_still():
    from core.monitor.live import eta_of
    from core.progress.reading import Reading, Sample, Source
    from core.state.model import LiveState

    live = LiveState(target=JOB, reading=Reading(10.0, 100.0, "step", Source.GENERIC),
                     samples=[Sample(float(t), t / 1000) for t in range(0, 110, 10)])
    fresh = eta_of(live, now=101.0)
    stale = eta_of(live, now=3000.0)
    assert fresh is not None and fresh.confident and fresh.end_at == pytest.approx(1000.0)
    assert stale is not None and not stale.confident and stale.end_at == pytest.approx(3000.0 + 900.0)
