"""Het jobs replayed through the whole monitor from real Slurm 22.05 captures (tests/fixtures/slurm/*het*):
one story, one summary for `838+0` + `838+1`.

No het job can start on the single-node test cluster (see the fixtures' README), so the captured
outcomes are DEADLINE for one component, CANCELLED, and a dependency that can never be satisfied.
"""
from __future__ import annotations

import dataclasses

from core.monitor.poller import GROUP_SETTLE
from core.slurm.model import JobState
from core.state.model import JobRecord
from core.state.store import StateStore
from tests.support import CONFIG, ScriptedSlurm, Story, accounting, queue

HET = "838"  # component 1 ended DEADLINE on its own, then the job was cancelled


def het_story(tmp_path, patterns, job_id: str, name: str, slurm: ScriptedSlurm, config=CONFIG) -> Story:
    state = tmp_path / "state"
    state.mkdir()
    store = StateStore(str(state))
    log = tmp_path / f"{name}-{job_id}.out"
    log.write_text("")
    store.create(JobRecord(job_id=job_id, name=name, stdout_path=str(log), stderr_path=str(log)))
    return Story(store, job_id, slurm, patterns, config=config)


def test_het_job_story_ends_in_one_summary_to_the_error_route(tmp_path, patterns):
    slurm = ScriptedSlurm([queue("squeue_het_pending_r.txt"), queue("squeue_het_deadline_r.txt"),
                           queue("squeue_het_deadline_cancelled_r.txt")],
                          [accounting("sacct_het_deadline_cancelled.txt")], job_ids=[HET])
    tale = het_story(tmp_path, patterns, HET, "hetdl", slurm)
    tale.run()
    record = tale.store.load(HET)
    assert record.final.task_counts == {"CANCELLED": 1, "DEADLINE": 1} and record.final.state is JobState.DEADLINE
    assert {t.task_id: t.state for t in record.tasks} == {"+0": JobState.CANCELLED, "+1": JobState.DEADLINE}
    [message] = tale.delivered("discord-error")
    assert message.title == "Het job 838 (hetdl): 1 CANCELLED, 1 DEADLINE"
    assert {f.name: f.value for f in message.fields}["Failed tasks"] == "+0, +1"
    assert tale.delivered("discord-success") == []


def test_first_failure_warning_names_the_component_that_ended_alone(tmp_path, patterns):
    slurm = ScriptedSlurm([queue("squeue_het_deadline_r.txt"), queue("squeue_het_deadline_cancelled_r.txt")],
                          [accounting("sacct_het_deadline_cancelled.txt")], job_ids=[HET])
    tale = het_story(tmp_path, patterns, HET, "hetdl", slurm, dataclasses.replace(CONFIG, notify_first_failure=True))
    tale.run()
    first, summary = tale.delivered("discord-error")
    assert first.title.endswith("838 (hetdl): first task failure")
    assert first.description.startswith("Failed so far: 838+1.")
    assert summary.title == "Het job 838 (hetdl): 1 CANCELLED, 1 DEADLINE"


def test_het_job_that_can_never_start_is_reported_once(tmp_path, patterns):
    slurm = ScriptedSlurm([queue("squeue_het_dependency_never_r.txt")], [{}], job_ids=["832"])
    tale = het_story(tmp_path, patterns, "832", "hetok", slurm)
    tale.run()
    record = tale.store.load("832")
    assert record.final.state is JobState.PENDING and record.final.reason == "DependencyNeverSatisfied"
    assert slurm.accounting_calls == 0
    [message] = tale.delivered("discord-error")
    assert "NEVER STARTS (DependencyNeverSatisfied)" in message.title


def test_no_settle_wait_once_sacct_has_every_component_squeue_lists(tmp_path, patterns):
    """squeue lists all components until the whole het job is purged: nothing can be missing."""
    slurm = ScriptedSlurm([queue("squeue_het_deadline_cancelled_r.txt")],
                          [accounting("sacct_het_deadline_cancelled.txt")], job_ids=[HET])
    tale = het_story(tmp_path, patterns, HET, "hetdl", slurm)
    started = tale.clock.time()
    tale.run()
    assert slurm.accounting_calls == 1 and tale.clock.time() - started < GROUP_SETTLE


def test_a_component_sacct_has_not_recorded_yet_is_waited_for(tmp_path, patterns):
    both = accounting("sacct_het_deadline_cancelled.txt")
    leader_only = {key: record for key, record in both.items() if key == "838+0"}  # sacct lags per component
    slurm = ScriptedSlurm([queue("squeue_het_deadline_cancelled_r.txt")], [leader_only, both], job_ids=[HET])
    tale = het_story(tmp_path, patterns, HET, "hetdl", slurm)
    tale.run()
    assert slurm.accounting_calls == 2
    assert tale.store.load(HET).final.task_counts == {"CANCELLED": 1, "DEADLINE": 1}
