"""core.monitor.poller: one poll at a time, on recorded Slurm answers; nothing is written or slept."""
from __future__ import annotations

from dataclasses import replace

import pytest

from core.errors import SlurmUnavailable
from core.monitor.poller import GROUP_SETTLE, PLACEHOLDER_WAIT, Poller, accounting_backoff, round_tasks
from core.slurm.model import JobState
from core.state.model import Attempt, Chain, FinalSource, JobRecord, Observation
from tests.support import CONFIG, ScriptedSlurm, accounting, accounting_text, queue_text, sacct_row

JOB = "4"
NOW = 1_000_000.0
CONTROLLER_DOWN = SlurmUnavailable("squeue failed: Unable to contact slurm controller (connect failure)")
DBD_DOWN = SlurmUnavailable("sacct failed: Problem talking to the database: Connection refused")


def record(**changes) -> JobRecord:
    return replace(JobRecord(job_id=JOB, name="train", created_at=NOW - 100), **changes)


def poll(slurm, job: JobRecord, now: float = NOW, config=CONFIG):
    return Poller(slurm, config).poll(job, now)


def test_a_running_job_is_observed_and_polled_again_at_the_running_interval():
    result = poll(ScriptedSlurm([queue_text(f"{JOB}|RUNNING|None|0:05")], [{}]), record())
    assert result.final is None and result.delay == CONFIG.running_interval
    assert result.observation == Observation(state=JobState.RUNNING, reason="None", seen_at=NOW)


def test_a_pending_job_is_polled_at_the_pending_interval():
    result = poll(ScriptedSlurm([queue_text(f"{JOB}|PENDING|Priority|0:00")], [{}]), record())
    assert result.delay == CONFIG.pending_interval and result.observation.state is JobState.PENDING


def test_an_unreachable_controller_is_never_the_end_and_its_start_is_kept():
    first = poll(ScriptedSlurm([CONTROLLER_DOWN], [{}]), record())
    assert first.final is None and first.observation.controller_down_since == NOW
    assert "Unable to contact" in first.observation.last_error
    later = poll(ScriptedSlurm([CONTROLLER_DOWN], [{}]), record(observation=first.observation), NOW + 60)
    assert later.observation.controller_down_since == NOW  # the outage started at the first failure
    back = poll(ScriptedSlurm([queue_text(f"{JOB}|RUNNING|None|0:05")], [{}]), record(observation=later.observation))
    assert back.observation.controller_down_since == 0.0 and back.observation.last_error == ""


def test_the_end_seen_by_squeue_is_confirmed_by_sacct():
    slurm = ScriptedSlurm([queue_text(f"{JOB}|FAILED|NonZeroExitCode|0:03")],
                          [accounting_text(sacct_row(JOB, "FAILED", "1:0"))])
    result = poll(slurm, record())
    assert result.final.state is JobState.FAILED and result.final.exit_code == 1
    assert result.final.source is FinalSource.SACCT and result.final.reason == "NonZeroExitCode"
    assert result.final.max_rss_bytes == 58180 * 1024 and result.observation.final_seen_at == NOW


def test_sacct_lag_is_waited_out_with_short_retries_first():
    slurm = ScriptedSlurm([queue_text(f"{JOB}|OUT_OF_MEMORY|OutOfMemory|0:01")], [{}])
    result = poll(slurm, record())
    assert result.final is None and result.delay == accounting_backoff(0.0, CONFIG.running_interval) == 1.0
    assert "no record" in result.note


def test_a_placeholder_record_is_not_trusted_until_it_has_waited_long_enough():
    stub = accounting_text(sacct_row(JOB, "COMPLETED", name="allocation", req_mem="16?", user="root"))
    slurm = ScriptedSlurm([{}], [stub])
    waiting = poll(slurm, record(observation=Observation(final_seen_at=NOW - 1)))
    assert waiting.final is None and "placeholder" in waiting.note
    still = poll(slurm, record(observation=Observation(final_seen_at=NOW - PLACEHOLDER_WAIT)))
    assert still.final is None  # a stub's exit code is not the job's: waited on like a missing record
    used = poll(slurm, record(observation=Observation(final_seen_at=NOW - CONFIG.accounting_wait)))
    assert used.final.state is JobState.COMPLETED and used.final.incomplete and used.final.req_mem == ""


def test_sacct_down_past_the_wait_gives_what_squeue_knew_marked_incomplete():
    slurm = ScriptedSlurm([queue_text(f"{JOB}|FAILED|NonZeroExitCode|0:03")], [DBD_DOWN])
    early = poll(slurm, record())
    assert early.final is None and early.observation.accounting_down_since == NOW
    late = poll(slurm, record(observation=replace(early.observation, final_seen_at=NOW - CONFIG.accounting_wait)))
    assert late.final.state is JobState.FAILED and late.final.incomplete and late.final.source is FinalSource.SQUEUE


def test_a_job_forgotten_by_squeue_with_no_sacct_record_ends_unknown_after_the_wait():
    slurm = ScriptedSlurm([{}], [{}])
    seen = Observation(state=JobState.RUNNING, final_seen_at=NOW - CONFIG.accounting_wait)
    result = poll(slurm, record(observation=seen))
    assert result.final.state is JobState.UNKNOWN and result.final.incomplete


def test_a_dependency_that_can_never_be_met_ends_the_job_without_sacct():
    slurm = ScriptedSlurm([queue_text(f"{JOB}|PENDING|DependencyNeverSatisfied|0:00")], [{}])
    result = poll(slurm, record())
    assert result.final.state is JobState.PENDING and result.final.reason == "DependencyNeverSatisfied"
    assert slurm.accounting_calls == 0


def test_a_requeued_job_goes_on_and_forgets_the_end_it_had_seen():
    seen = Observation(state=JobState.COMPLETED, final_seen_at=NOW - 5)
    result = poll(ScriptedSlurm([queue_text(f"{JOB}|PENDING|BeginTime|0:00")], [{}]), record(observation=seen))
    assert result.final is None and result.observation.final_seen_at == 0.0


def array_rows(states: dict, job: str = JOB) -> str:
    """sacct rows for array `job` {task: (state, exit)}; the last task keeps the array's raw id."""
    rows = []
    for task, (state, code) in sorted(states.items()):
        raw = job if task == max(states) else str(int(job) * 1000 + task)
        rows.append(sacct_row(f"{job}_{task}", state, code, name="sweep", elapsed=f"00:00:{10 + task:02d}",
                              max_rss=f"{task + 1}000K").replace(f"{job}_{task}^|^{job}_{task}^|^",
                                                                  f"{job}_{task}^|^{raw}^|^", 1))
    return "".join(rows)


def test_an_array_ends_only_when_every_expected_task_has_a_final_record():
    job = record(array_spec="0-2", expected_tasks=[0, 1, 2])
    partial = poll(ScriptedSlurm([{}], [accounting_text(array_rows({0: ("COMPLETED", "0:0"), 1: ("FAILED", "1:0")}))]),
                   job)
    assert partial.final is None and "1 missing" in partial.note
    done = {0: ("COMPLETED", "0:0"), 1: ("FAILED", "1:0"), 2: ("OUT_OF_MEMORY", "0:125")}
    result = poll(ScriptedSlurm([{}], [accounting_text(array_rows(done))]), job)
    assert result.final.state is JobState.OUT_OF_MEMORY and result.final.task_counts == {
        "COMPLETED": 1, "FAILED": 1, "OUT_OF_MEMORY": 1}
    assert [t.task_id for t in result.tasks] == ["0", "1", "2"] and result.final.failed_tasks == "1,2"


def test_an_array_without_a_task_list_settles_before_it_ends():
    rows = accounting_text(array_rows({0: ("COMPLETED", "0:0"), 1: ("COMPLETED", "0:0")}))
    fresh = poll(ScriptedSlurm([{}], [rows]), record(observation=Observation(final_seen_at=NOW)))
    assert fresh.final is None
    settled = poll(ScriptedSlurm([{}], [rows]), record(observation=Observation(final_seen_at=NOW - GROUP_SETTLE)))
    assert settled.final.state is JobState.COMPLETED


def test_tasks_that_never_reach_sacct_count_as_unknown_after_the_wait():
    job = record(array_spec="0-2", expected_tasks=[0, 1, 2],
                 observation=Observation(final_seen_at=NOW - CONFIG.accounting_wait))
    rows = accounting_text(array_rows({0: ("COMPLETED", "0:0"), 1: ("COMPLETED", "0:0")}))
    result = poll(ScriptedSlurm([{}], [rows]), job)
    assert result.final.incomplete and result.final.task_counts == {"COMPLETED": 2, "UNKNOWN": 1}


def test_a_round_of_an_array_chain_expects_only_its_resubmitted_tasks():
    chain = Chain(round=2, attempts=[Attempt(job_id=JOB), Attempt(job_id="600", round=2, tasks="1,3"),
                                     Attempt(job_id="601", round=2, tasks="5")])
    job = record(array_spec="0-9", expected_tasks=list(range(10)), chain=chain)
    assert round_tasks(job) == [1, 3, 5] and job.targets == ["600", "601"]


@pytest.mark.parametrize("waited, expected", [(0.0, 1.0), (8.0, 3.0), (200.0, 30.0)])
def test_accounting_backoff_grows_to_the_interval(waited, expected):
    assert accounting_backoff(waited, 30.0) == expected


def test_a_captured_oom_record_is_read_whole():
    result = poll(ScriptedSlurm([{}], [accounting("sacct_oom.txt")]), record())
    assert result.final.state is JobState.OUT_OF_MEMORY and result.final.signal == 125
    assert result.final.req_mem == "100M"
