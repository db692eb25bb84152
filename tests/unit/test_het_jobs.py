"""Het jobs replayed from real Slurm 22.05 captures (tests/fixtures/slurm/*het*): the parsers, the
grouping code and the whole monitor loop must tell one story, one summary, for `838+0` + `838+1`.

No het job can start on the single-node test cluster (see the fixtures' README), so the captured
outcomes are DEADLINE for one component, CANCELLED, and a dependency that can never be satisfied.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List

import pytest

from core import outcome as groups
from core.analysis.analyzer import parse_patterns
from core.config import BUILTIN_PATTERNS, Config
from core.errors import SlurmError
from core.monitor.monitor import GROUP_SETTLE, Monitor, MonitorDeps
from core.notify.discord import Delivery
from core.slurm.client import CommandResult, JobState, Slurm, parse_sacct, parse_squeue
from core.slurm.shared import members_of
from core.state.store import JobRecord, StateStore

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"
HET = "838"  # component 1 ended DEADLINE on its own, then the job was cancelled
CONFIG = Config(success_webhook="http://127.0.0.1:1/api/webhooks/1/ok",
                error_webhook="http://127.0.0.1:1/api/webhooks/2/err",
                running_interval=30.0, pending_interval=60.0, accounting_wait=120.0)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def queue(name: str) -> dict:
    return {entry.job_id: entry for entry in parse_squeue(fixture(name))}


def accounting(name: str) -> dict:
    return {record.job_id: record for record in parse_sacct(fixture(name))}


# --- parsers and groups ----------------------------------------------------------------------

def test_components_keep_their_plus_ids_and_own_raw_ids():
    records = accounting("sacct_het_pending.txt")
    assert [(r.job_id, r.job_id_raw, r.state) for r in records.values()] == [
        ("838+0", "838", JobState.PENDING), ("838+1", "839", JobState.PENDING)]
    assert not any(r.is_placeholder for r in records.values())
    assert list(queue("squeue_het_pending_r.txt")) == ["838+0", "838+1"]
    assert groups.is_group(HET, list(records))


def test_a_component_that_ended_alone_does_not_end_the_het_job():
    entries = queue("squeue_het_deadline_r.txt")
    assert [e.job_id for e in groups.active_members(entries)] == ["838+0"]
    assert groups.headline_entry(groups.active_members(entries)).state is JobState.PENDING
    assert groups.failed_queue_members(HET, entries) == ["838+1"]
    tasks = groups.collect_tasks(HET, accounting("sacct_het_deadline.txt"))
    assert not groups.all_final(tasks, accounting("sacct_het_deadline.txt"))


def test_summary_counts_each_component_and_names_the_one_that_failed_first():
    records = accounting("sacct_het_deadline_cancelled.txt")
    tasks = groups.collect_tasks(HET, records)
    assert [(t.task_id, t.raw_id, t.state, t.exit_code) for t in tasks] == [
        ("+0", "838", "CANCELLED", 0), ("+1", "839", "DEADLINE", 1)]
    assert groups.all_final(tasks, records)
    final = groups.summarize(tasks, records, now=1.0)
    assert final.state == "DEADLINE"
    assert final.task_counts == {"CANCELLED": 1, "DEADLINE": 1}
    assert final.state_text == "1 CANCELLED, 1 DEADLINE"
    assert final.failed_tasks == "+0, +1" and final.exit_code == 1
    assert final.nodes == "" and final.start == "" and final.end == "2026-11-21T23:09:12"


def test_het_job_cancelled_while_pending():
    records = accounting("sacct_het_cancelled.txt")
    final = groups.summarize(groups.collect_tasks("829", records), records, now=1.0)
    assert final.state == "CANCELLED" and final.task_counts == {"CANCELLED": 2}
    assert [e.state for e in queue("squeue_het_cancelled_r.txt").values()] == [JobState.CANCELLED] * 2


def test_the_shared_snapshot_gives_a_monitor_every_component_and_nothing_else():
    snapshot = {**queue("squeue_het_cancelled_r.txt"), **queue("squeue_het_deadline_r.txt")}
    assert sorted(members_of(snapshot, [HET])) == ["838+0", "838+1"]
    assert sorted(members_of(snapshot, ["829"])) == ["829+0", "829+1"]


def test_scontrol_lists_the_leader_first_so_its_log_is_the_one_jobmon_reads():
    slurm = Slurm(lambda argv, timeout: CommandResult(0, fixture("scontrol_show_job_het.txt"), ""))
    assert [job.job_id for job in slurm.show_jobs("836")] == ["836", "837"]
    assert slurm.show_job("836").stdout == "/tmp/hetprobe/hetfail-836.out"


def test_a_single_component_cannot_be_cancelled():
    slurm = Slurm(lambda argv, timeout: CommandResult(60, "", fixture("scancel_het_component.stderr")))
    with pytest.raises(SlurmError, match="individual component of heterogeneous job"):
        slurm.cancel("836+1")


# --- the monitor loop, with recorded answers -------------------------------------------------

class RecordedSlurm:
    """Answers squeue/sacct for one job from lists of captures; the last answer repeats."""

    def __init__(self, job_id: str, queue_answers: List[dict], accounting_answers: List[dict]) -> None:
        self.job_id = job_id
        self.queue_answers = list(queue_answers)
        self.accounting_answers = list(accounting_answers)
        self.accounting_calls = 0

    @staticmethod
    def _next(answers: List[dict]) -> dict:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def query_queue(self, job_ids, not_before=0.0):
        assert list(job_ids) == [self.job_id]
        return self._next(self.queue_answers)

    def next_poll_delay(self, interval, job_id):
        return interval

    def query_accounting(self, job_ids):
        assert list(job_ids) == [self.job_id]
        self.accounting_calls += 1
        return self._next(self.accounting_answers)


class Story:
    """A fake clock and webhook around one Monitor run."""

    def __init__(self, tmp_path: Path, job_id: str, name: str, config: Config = CONFIG) -> None:
        state = tmp_path / "state"
        state.mkdir()
        self.store = StateStore(str(state))
        log = tmp_path / f"{name}-{job_id}.out"
        log.write_text("")
        self.store.create(JobRecord(job_id=job_id, name=name, stdout_path=str(log), stderr_path=str(log)))
        self.job_id = job_id
        self.config = config
        self.now = 1_000_000.0
        self.sent: List[Dict] = []
        self.urls: List[str] = []

    def _sleep(self, seconds: float) -> None:
        self.now += seconds

    def _send(self, url: str, payload: dict) -> Delivery:
        self.urls.append(url)
        self.sent.append(payload)
        return Delivery("delivered", 200, "ok", 1, "m1")

    def run(self, slurm: RecordedSlurm) -> JobRecord:
        with open(BUILTIN_PATTERNS, encoding="utf-8") as handle:
            patterns = parse_patterns(handle.read(), BUILTIN_PATTERNS)
        deps = MonitorDeps(slurm=slurm, store=self.store, config=self.config, patterns=lambda: patterns,
                           send=self._send, clock=lambda: self.now, sleep=self._sleep, host="testhost", pid=1)
        assert Monitor(self.job_id, deps).run() == "done"
        return self.store.load(self.job_id)


def test_het_job_story_ends_in_one_summary_to_the_error_channel(tmp_path):
    story = Story(tmp_path, HET, "hetdl")
    slurm = RecordedSlurm(HET, [queue("squeue_het_pending_r.txt"), queue("squeue_het_deadline_r.txt"),
                                queue("squeue_het_deadline_cancelled_r.txt")],
                          [accounting("sacct_het_deadline_cancelled.txt")])
    record = story.run(slurm)
    assert record.final.task_counts == {"CANCELLED": 1, "DEADLINE": 1} and record.final.state == "DEADLINE"
    assert {t.task_id: t.state for t in record.tasks} == {"+0": "CANCELLED", "+1": "DEADLINE"}
    assert story.urls == [CONFIG.error_webhook]
    embed = story.sent[0]["embeds"][0]
    assert embed["title"] == "Het job 838 (hetdl): 1 CANCELLED, 1 DEADLINE"
    assert {f["name"]: f["value"] for f in embed["fields"]}["Failed tasks"] == "+0, +1"


def test_first_failure_warning_names_the_component_that_ended_alone(tmp_path):
    config = dataclasses.replace(CONFIG, notify_first_failure=True)
    story = Story(tmp_path, HET, "hetdl", config)
    slurm = RecordedSlurm(HET, [queue("squeue_het_deadline_r.txt"), queue("squeue_het_deadline_cancelled_r.txt")],
                          [accounting("sacct_het_deadline_cancelled.txt")])
    story.run(slurm)
    first, summary = [payload["embeds"][0] for payload in story.sent]
    assert first["title"].endswith("838 (hetdl): first task failure")
    assert first["description"].startswith("Failed so far: 838+1.")
    assert summary["title"] == "Het job 838 (hetdl): 1 CANCELLED, 1 DEADLINE"


def test_het_job_that_can_never_start_is_reported_once(tmp_path):
    story = Story(tmp_path, "832", "hetok")
    slurm = RecordedSlurm("832", [queue("squeue_het_dependency_never_r.txt")], [{}])
    record = story.run(slurm)
    assert record.final.state == "PENDING" and record.final.reason == "DependencyNeverSatisfied"
    assert slurm.accounting_calls == 0 and story.urls == [CONFIG.error_webhook]
    assert "NEVER STARTS (DependencyNeverSatisfied)" in story.sent[0]["embeds"][0]["title"]


def test_no_settle_wait_once_sacct_has_every_component_squeue_lists(tmp_path):
    """squeue lists all components until the whole het job is purged: nothing can be missing."""
    story = Story(tmp_path, HET, "hetdl")
    slurm = RecordedSlurm(HET, [queue("squeue_het_deadline_cancelled_r.txt")],
                          [accounting("sacct_het_deadline_cancelled.txt")])
    started = story.now
    story.run(slurm)
    assert slurm.accounting_calls == 1 and story.now - started < GROUP_SETTLE


def test_a_component_sacct_has_not_recorded_yet_is_waited_for(tmp_path):
    story = Story(tmp_path, HET, "hetdl")
    both = accounting("sacct_het_deadline_cancelled.txt")
    leader_only = {key: record for key, record in both.items() if key == "838+0"}  # sacct lags per component
    slurm = RecordedSlurm(HET, [queue("squeue_het_deadline_cancelled_r.txt")], [leader_only, both])
    record = story.run(slurm)
    assert slurm.accounting_calls == 2
    assert record.final.task_counts == {"CANCELLED": 1, "DEADLINE": 1}


def test_only_het_components_count_as_a_complete_list():
    het = accounting("sacct_het_deadline_cancelled.txt")
    listed = queue("squeue_het_deadline_cancelled_r.txt")
    assert groups.het_components_recorded(HET, listed, groups.collect_tasks(HET, het))
    leader_only = {key: record for key, record in het.items() if key == "838+0"}
    assert not groups.het_components_recorded(HET, listed, groups.collect_tasks(HET, leader_only))
    array = accounting("sacct_array.txt")  # array tasks leave squeue one by one: their list proves nothing
    assert not groups.het_components_recorded("7", queue("squeue_array_done_r.txt"), groups.collect_tasks("7", array))
