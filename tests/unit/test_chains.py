"""core.monitor.chains: escalation chains and array rounds, driven through whole stories with fakes."""
from __future__ import annotations

import os
import shutil
from typing import Dict, List

import pytest

from core.chain.policy import plan_array_round
from core.errors import SbatchRejected, SlurmUnavailable
from core.monitor.chains import ChainRunner
from core.outcome import collect_tasks
from core.slurm.arrays import parse_array_spec
from core.slurm.model import JobState
from core.state.model import (
    Action,
    Attempt,
    Chain,
    JobRecord,
    Level,
    LogOptions,
    PendingRound,
    PendingSubmission,
)
from core.state.store import StateStore
from tests.support import CONFIG, STATE_V1, ScriptedSlurm, Story, accounting_text, sacct_row
from tests.unit.test_poller import array_rows

JOB = "4"


@pytest.fixture
def store(story_store):
    return story_store


class PerJobSlurm(ScriptedSlurm):
    """sacct rows per Slurm job; every job asked for contributes its rows; squeue has forgotten them all."""

    def __init__(self, rows_by_job: Dict[str, str]) -> None:
        super().__init__([{}], [{}])
        self.rows_by_job = rows_by_job
        self.asked: List[List[str]] = []

    def query_accounting(self, job_ids):
        self.asked.append(list(job_ids))
        self.accounting_calls += 1
        return accounting_text("".join(self.rows_by_job[job] for job in job_ids))


def single(job: str, state: str, exit_code: str = "0:0", req_mem: str = "100M") -> str:
    return sacct_row(job, state, exit_code, req_mem=req_mem)


def chained(store, ladder=(), max_retries=2):
    def change(record):
        record.chain = Chain(ladder=[Level(**level) for level in ladder], max_retries=max_retries, current_job=JOB,
                             level=Level(**ladder[0]) if ladder else Level(), attempts=[Attempt(job_id=JOB)])

    store.update(JOB, change)


def array_chain(store, tmp_path, spec="0-3", ladder=()):
    chained(store, ladder)

    def change(record):
        record.array_spec = spec
        record.expected_tasks = list(parse_array_spec(spec).task_ids)
        record.submit_dir = str(tmp_path)
        record.log_options = LogOptions(output="sweep-%A_%a.out")

    store.update(JOB, change)


def chain_story(store, patterns, slurm, *, resubmit=None, find_submitted=lambda *args: None,
                should_stop=lambda: False, job_id=JOB) -> Story:
    def runner() -> ChainRunner:
        return ChainRunner(escalation={}, resubmit=resubmit or (lambda *args: pytest.fail("no resubmission expected")),
                           find_submitted=find_submitted, host="testhost", clock=tale.clock.time,
                           should_stop=should_stop, retry_delay=CONFIG.running_interval)

    tale = Story(store, job_id, slurm, patterns, chains=runner, should_stop=should_stop)
    return tale


def titles(tale: Story) -> List[str]:
    return [m.title for sink in ("discord-error", "discord-success") for m in tale.delivered(sink)]


def test_oom_escalates_once_per_attempt_and_one_final_message_lists_the_chain(store, patterns):
    chained(store)
    submitted = []

    def resubmit(record, level, attempt, tasks):
        submitted.append((level.mem, attempt, tasks))
        return "500", "/w/a.out", "/w/a.out"

    slurm = PerJobSlurm({JOB: single(JOB, "OUT_OF_MEMORY", "0:125"), "500": single("500", "COMPLETED")})
    tale = chain_story(store, patterns, slurm, resubmit=resubmit)
    tale.run()
    assert submitted == [("200M", 2, "")]  # the default ladder doubles the 100M the job had
    record = store.load(JOB)
    assert [a.job_id for a in record.chain.attempts] == [JOB, "500"]
    assert record.chain.attempts[0].state is JobState.OUT_OF_MEMORY
    assert "escalate_mem" in record.chain.attempts[0].decision and record.chain.pending is None
    assert record.final.state is JobState.COMPLETED and record.done
    [step] = tale.delivered("discord-error")
    [final] = tale.delivered("discord-success")
    assert "resubmitted as 500 with 200M" in step.title
    assert final.title.startswith(f"Chain {JOB} (train): COMPLETED after 2 attempts")
    assert [e.key for e in record.outbox] == [f"{JOB}:escalation:2", f"{JOB}:final:1"]


def test_the_decision_is_written_with_the_end_before_any_sbatch(store, patterns):
    chained(store)
    seen = []

    def resubmit(record, level, attempt, tasks):
        seen.append(store.load(JOB))
        return "500", "", ""

    slurm = PerJobSlurm({JOB: single(JOB, "OUT_OF_MEMORY", "0:125"), "500": single("500", "COMPLETED")})
    chain_story(store, patterns, slurm, resubmit=resubmit).run()
    [before] = seen
    pending = before.chain.pending
    assert before.final.state is JobState.OUT_OF_MEMORY and pending.round == 2
    assert pending.submissions[0].action is Action.ESCALATE_MEM and pending.submissions[0].sbatch_started > 0


def test_a_decided_resubmission_is_adopted_not_repeated_after_a_crash(store, patterns):
    chained(store)

    def crash_after_decision(record):  # what a daemon killed right after starting sbatch leaves behind
        record.chain.pending = PendingRound(2, decided_at=1.0, submissions=[PendingSubmission(
            level_index=1, level=Level(mem="200M"), action=Action.ESCALATE_MEM, sbatch_started=1.0)])
        record.chain.attempts[0].state = JobState.OUT_OF_MEMORY

    store.update(JOB, crash_after_decision)
    tale = chain_story(store, patterns, PerJobSlurm({"777": single("777", "COMPLETED")}),
                       find_submitted=lambda record, attempt, tasks: ("777", "/w/777.out", "/w/777.out")
                       if attempt == 2 else None)
    tale.run()
    record = store.load(JOB)
    assert record.chain.current_job == "777" and record.stderr_path == "/w/777.out"  # its own log, not the last one


def test_no_search_for_a_tagged_job_before_sbatch_was_ever_started(store, patterns, tmp_path):
    array_chain(store, tmp_path, spec="0-1")
    slurm = PerJobSlurm({JOB: array_rows({0: ("OUT_OF_MEMORY", "0:125"), 1: ("COMPLETED", "0:0")}),
                         "600": array_rows({0: ("COMPLETED", "0:0")}, job="600")})
    searched = []
    chain_story(store, patterns, slurm, resubmit=lambda *a: ("600", "", ""),
                find_submitted=lambda *args: searched.append(args) or None).run()
    assert searched == []  # a plain resubmission needs no sacct


def test_a_real_decision_left_by_a_killed_daemon_of_the_previous_version_is_carried_out(tmp_path, patterns):
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(os.path.join(STATE_V1, "chain_pending_decided.json"), state / "60.json")
    store = StateStore(str(state))
    pending = store.load("60").chain.pending
    calls = []

    def resubmit(record, level, attempt, tasks):
        calls.append((level, attempt, tasks))
        return "900", "", ""

    tale = chain_story(store, patterns, PerJobSlurm({"900": single("900", "COMPLETED")}), resubmit=resubmit,
                       job_id="60")
    tale.run()
    assert calls == [(pending.submissions[0].level, 2, "")]
    assert store.load("60").chain.current_job == "900" and len(tale.all_delivered()) == 2


def test_the_top_of_the_ladder_ends_the_chain_with_the_reason(store, patterns):
    chained(store, ladder=({"mem": "100M"}, {"mem": "200M"}))
    oom = {job: single(job, "OUT_OF_MEMORY", "0:125") for job in (JOB, "501")}
    tale = chain_story(store, patterns, PerJobSlurm(oom), resubmit=lambda *args: ("501", "", ""))
    tale.run()
    final = tale.delivered("discord-error")[-1]
    assert "OUT_OF_MEMORY after 2 attempts" in final.title and "top level" in final.description


def test_sbatch_that_cannot_reach_the_controller_is_retried_later(store, patterns):
    chained(store)
    answers = iter([SbatchRejected(1, "sbatch: error: Batch job submission failed: Unable to contact slurm controller"),
                    ("500", "", "")])

    def resubmit(*args):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    slurm = PerJobSlurm({JOB: single(JOB, "OUT_OF_MEMORY", "0:125"), "500": single("500", "COMPLETED")})
    tale = chain_story(store, patterns, slurm, resubmit=resubmit)
    tale.run()
    assert CONFIG.running_interval in tale.clock.sleeps
    assert [a.job_id for a in store.load(JOB).chain.attempts] == [JOB, "500"]


def test_an_array_round_resubmits_only_oom_and_timeout_tasks_each_at_its_own_next_level(store, patterns, tmp_path):
    array_chain(store, tmp_path)
    (tmp_path / f"sweep-{JOB}_2.out").write_text("ModuleNotFoundError: No module named 'wandb'\n")
    (tmp_path / f"sweep-{JOB}_1.out").write_text("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=9.batch.\n")
    round_one = array_rows({0: ("COMPLETED", "0:0"), 1: ("OUT_OF_MEMORY", "0:125"), 2: ("FAILED", "1:0"),
                            3: ("TIMEOUT", "0:15")})
    slurm = PerJobSlurm({JOB: round_one, "600": array_rows({1: ("COMPLETED", "0:0")}, job="600"),
                         "601": array_rows({3: ("COMPLETED", "0:0")}, job="601")})
    submitted = []

    def resubmit(record, level, attempt, tasks):
        submitted.append((level, attempt, tasks))
        return str(599 + attempt - 1), "", ""

    tale = chain_story(store, patterns, slurm, resubmit=resubmit)
    tale.run()
    # the default ladder: task 1 gets twice sacct's 1G, task 3 twice its 1 h limit; task 2 (exit 1) is left alone
    assert submitted == [(Level(mem="2048M"), 2, "1"), (Level(time="02:00:00"), 3, "3")]
    assert slurm.asked[-1] == ["600", "601"]  # round 2 is both submissions, watched together
    record = store.load(JOB)
    chain = record.chain
    assert [(a.job_id, a.round, a.tasks) for a in chain.attempts] == [(JOB, 1, ""), ("600", 2, "1"), ("601", 2, "3")]
    assert chain.tasks["1"].runs == [f"{JOB}_1 OUT_OF_MEMORY", "600_1 COMPLETED"]
    assert chain.tasks["3"].level == Level(time="02:00:00") and "2" not in chain.tasks
    assert [(r.number, r.task_counts, r.retried_tasks) for r in chain.rounds] == [
        (1, {"COMPLETED": 1, "OUT_OF_MEMORY": 1, "FAILED": 1, "TIMEOUT": 1}, "1,3"), (2, {"COMPLETED": 2}, "")]
    assert "not retried: task(s) 2 (FAILED: no retry for this ending)" in chain.rounds[0].decision
    assert record.final.task_counts == {"COMPLETED": 3, "FAILED": 1} and record.final.failed_tasks == "2"
    assert record.categories == ["import_error"]  # the OOM was fixed by the retry: no longer a cause
    assert titles(tale) == [
        f"Array {JOB} (train) round 1: 1 COMPLETED, 1 FAILED, 1 OUT_OF_MEMORY, 1 TIMEOUT → resubmitted 1,3 as 600, 601",
        f"Array chain {JOB} (train): 3 COMPLETED, 1 FAILED after 2 rounds",
    ]


def test_an_array_chain_splits_a_long_spec_and_throttles_each_submission(store, tmp_path):
    ids = list(range(0, 400, 3)) + [401, 404, 409]
    array_chain(store, tmp_path, spec="0-409%5", ladder=({"mem": "1G"}, {"mem": "4G"}))
    rows = {task: ("OUT_OF_MEMORY", "0:125") if task in ids else ("COMPLETED", "0:0") for task in range(410)}
    tasks = collect_tasks(JOB, accounting_text(array_rows(rows)))
    plan = plan_array_round(store.load(JOB).chain, tasks, {}, throttle=5, max_spec_length=12)
    specs = [s.tasks for s in plan.submissions]
    assert all(len(spec) <= 12 and spec.endswith("%5") for spec in specs) and len(specs) > 1
    resubmitted = [i for spec in specs for i in parse_array_spec(spec).task_ids]
    assert resubmitted == ids and {s.level.mem for s in plan.submissions} == {"4G"}


def test_an_array_chain_stops_at_the_retry_budget_per_task(store, patterns, tmp_path):
    array_chain(store, tmp_path, spec="0-1", ladder=({"mem": "1G"}, {"mem": "2G"}, {"mem": "4G"}, {"mem": "8G"}))
    oom = ("OUT_OF_MEMORY", "0:125")
    slurm = PerJobSlurm({JOB: array_rows({0: ("COMPLETED", "0:0"), 1: oom}),
                         "700": array_rows({1: oom}, job="700"), "701": array_rows({1: oom}, job="701")})
    jobs = iter(["700", "701", "702"])
    tale = chain_story(store, patterns, slurm, resubmit=lambda *args: (next(jobs), "", ""))
    tale.run()
    chain = store.load(JOB).chain
    assert [a.job_id for a in chain.attempts] == [JOB, "700", "701"]  # max_retries=2: three runs of task 1
    assert chain.tasks["1"].runs == [f"{JOB}_1 OUT_OF_MEMORY", "700_1 OUT_OF_MEMORY", "701_1 OUT_OF_MEMORY"]
    assert "already used its 2 retries" in chain.rounds[-1].decision
    final = tale.delivered("discord-error")[-1]
    assert "after 3 rounds" in final.title
    assert "Not retried: task(s) 1 (OUT_OF_MEMORY is set to escalate_mem, but the chain already used its 2 " \
           "retries)." in final.description


def test_an_array_round_half_submitted_when_the_daemon_died_submits_only_the_rest(store, patterns, tmp_path):
    array_chain(store, tmp_path)

    def crashed_between_two_sbatches(record):
        record.chain.pending = PendingRound(2, decided_at=1.0, submissions=[
            PendingSubmission(1, Level(mem="2G"), Action.ESCALATE_MEM, tasks="1", job_id="600"),
            PendingSubmission(1, Level(time="2:00:00"), Action.ESCALATE_TIME, tasks="3")])
        record.chain.attempts.append(Attempt(job_id="600", level_index=1, resources=Level(mem="2G"), round=2,
                                             tasks="1"))

    store.update(JOB, crashed_between_two_sbatches)
    calls = []
    slurm = PerJobSlurm({"600": array_rows({1: ("COMPLETED", "0:0")}, job="600"),
                         "601": array_rows({3: ("COMPLETED", "0:0")}, job="601")})
    chain_story(store, patterns, slurm,
                resubmit=lambda record, level, attempt, tasks: calls.append((attempt, tasks)) or ("601", "", "")).run()
    assert calls == [(3, "3")]
    assert [a.job_id for a in store.load(JOB).chain.attempts] == [JOB, "600", "601"]


def test_sbatch_refusing_one_submission_of_a_round_keeps_the_others(store, patterns, tmp_path):
    array_chain(store, tmp_path, spec="0-1")
    slurm = PerJobSlurm({JOB: array_rows({0: ("OUT_OF_MEMORY", "0:125"), 1: ("TIMEOUT", "0:15")}),
                         "600": array_rows({0: ("COMPLETED", "0:0")}, job="600")})

    def resubmit(record, level, attempt, tasks):
        if tasks == "1":
            raise SbatchRejected(1, "sbatch: error: Batch job submission failed: Requested time limit is invalid")
        return "600", "", ""

    tale = chain_story(store, patterns, slurm, resubmit=resubmit)
    tale.run()
    record = store.load(JOB)
    assert [a.job_id for a in record.chain.attempts] == [JOB, "600"]
    first_round = record.chain.rounds[0]
    assert "resubmission of 1 refused by sbatch" in first_round.decision
    assert list(first_round.not_retried.values()) == ["1"] and first_round.retried_tasks == "0"
    assert record.final.task_counts == {"COMPLETED": 1, "TIMEOUT": 1} and record.final.failed_tasks == "1"
    assert "→ resubmitted 0 as 600" in titles(tale)[0]


def test_a_chain_whose_every_resubmission_was_refused_ends_and_says_why(store, patterns):
    chained(store)

    def refuse(*args):
        raise SbatchRejected(1, "sbatch: error: invalid partition specified: big")

    tale = chain_story(store, patterns, PerJobSlurm({JOB: single(JOB, "OUT_OF_MEMORY", "0:125")}), resubmit=refuse)
    tale.run()
    record = store.load(JOB)
    assert record.chain.pending is None and record.done
    [final] = tale.delivered("discord-error")
    assert "refused by sbatch: sbatch: error: invalid partition" in final.description


def test_a_stop_between_two_sbatches_of_a_round_submits_no_more(store, patterns, tmp_path):
    array_chain(store, tmp_path, spec="0-1")
    slurm = PerJobSlurm({JOB: array_rows({0: ("OUT_OF_MEMORY", "0:125"), 1: ("TIMEOUT", "0:15")})})
    calls = []
    tale = chain_story(store, patterns, slurm,
                       resubmit=lambda record, level, attempt, tasks: calls.append(tasks) or ("600", "", ""),
                       should_stop=lambda: bool(calls))  # SIGTERM arrives during the first sbatch
    tale.run()
    assert calls == ["0"] and tale.all_delivered() == []
    record = store.load(JOB)
    assert record.chain.pending.submissions[0].job_id == "600" and record.slurm_jobs == [JOB, "600"]


def test_the_escalation_message_after_a_crash_names_the_attempt_that_ended(store, patterns):
    chained(store)

    def crashed_after_recording(record):
        record.chain.attempts[0].state, record.chain.attempts[0].resources = JobState.OUT_OF_MEMORY, Level(mem="100M")
        record.chain.pending = PendingRound(2, decided_at=1.0, submissions=[PendingSubmission(
            1, Level(mem="200M"), Action.ESCALATE_MEM, job_id="500", stdout="/w/500.out", stderr="/w/500.out")])
        record.chain.attempts.append(Attempt(job_id="500", level_index=1, resources=Level(mem="200M"), round=2))

    store.update(JOB, crashed_after_recording)
    tale = chain_story(store, patterns, PerJobSlurm({"500": single("500", "COMPLETED")}))
    tale.run()
    assert titles(tale)[0] == f"Job {JOB} (train) OUT_OF_MEMORY at 100M → resubmitted as 500 with 200M"


def test_a_round_whose_accounting_never_came_keeps_the_earlier_rounds(store, patterns, tmp_path):
    array_chain(store, tmp_path, spec="0-2")

    class AccountingDownForRoundTwo(PerJobSlurm):
        def query_accounting(self, job_ids):
            if "600" in job_ids:
                raise SlurmUnavailable("sacct: error: Problem talking to the database")
            return super().query_accounting(job_ids)

    slurm = AccountingDownForRoundTwo(
        {JOB: array_rows({0: ("COMPLETED", "0:0"), 1: ("OUT_OF_MEMORY", "0:125"), 2: ("FAILED", "1:0")})})
    tale = chain_story(store, patterns, slurm, resubmit=lambda *a: ("600", "", ""))
    tale.run()
    record = store.load(JOB)
    assert record.final.incomplete and record.final.task_counts == {"COMPLETED": 1, "UNKNOWN": 1, "FAILED": 1}
    assert [r.number for r in record.chain.rounds] == [1, 2]
    assert titles(tale)[-1].startswith(f"Array chain {JOB} (train): ")


def test_an_excerpt_of_a_task_fixed_by_its_retry_is_dropped(store, patterns, tmp_path):
    array_chain(store, tmp_path, spec="0-1")
    (tmp_path / f"sweep-{JOB}_1.out").write_text("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=9.batch.\n")
    slurm = PerJobSlurm({JOB: array_rows({0: ("COMPLETED", "0:0"), 1: ("OUT_OF_MEMORY", "0:125")}),
                         "600": array_rows({1: ("COMPLETED", "0:0")}, job="600")})
    chain_story(store, patterns, slurm, resubmit=lambda *a: ("600", "", "")).run()
    record = store.load(JOB)
    assert record.final.task_counts == {"COMPLETED": 2} and record.excerpt == "" and record.findings == []


def test_signal_9_tasks_are_analysed_first_when_only_some_logs_are_read(patterns, tmp_path):
    from core.analysis.logs import MAX_TASK_LOGS, analyze_group_logs
    from core.state.model import TaskOutcome

    record = JobRecord(job_id="70", array_spec="0-40", submit_dir=str(tmp_path),
                       log_options=LogOptions(output="s-%A_%a.out"))
    (tmp_path / "s-70_40.out").write_text("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=70_40.batch.\n")
    tasks = [TaskOutcome(task_id=str(i), job_id=f"70_{i}", state=JobState.FAILED, exit_code=1) for i in range(40)]
    tasks.append(TaskOutcome(task_id="40", job_id="70_40", state=JobState.FAILED, exit_code=137))
    analysis, _ = analyze_group_logs(record, tasks, patterns, 100)
    assert len(tasks) > MAX_TASK_LOGS and tasks[-1].categories == ["slurm_oom"]
    assert "slurm_oom" in analysis.categories


def test_each_task_is_analysed_with_its_own_end_and_the_group_ranks_by_each_tasks_order(patterns, tmp_path):
    from core.analysis.logs import analyze_group_logs
    from core.state.model import TaskOutcome

    record = JobRecord(job_id="70", array_spec="0-2", submit_dir=str(tmp_path),
                       log_options=LogOptions(output="s-%A_%a.out"))
    (tmp_path / "s-70_0.out").write_text("Traceback (most recent call last):\nKeyboardInterrupt\n")
    (tmp_path / "s-70_1.out").write_text("OSError: [Errno 24] Too many open files\n")
    (tmp_path / "s-70_2.out").write_text("loss: nan\n")
    tasks = [TaskOutcome(task_id="0", job_id="70_0", state=JobState.TIMEOUT, signal=15),
             TaskOutcome(task_id="1", job_id="70_1", state=JobState.FAILED, exit_code=1),
             TaskOutcome(task_id="2", job_id="70_2", state=JobState.COMPLETED)]
    analysis, excerpt = analyze_group_logs(record, tasks, patterns, 100)
    assert [t.categories for t in tasks] == [["slurm_timeout", "python_traceback"], ["too_many_open_files"], []]
    # both tasks' root causes lead (library order between them), before the wrapper second in task 0
    assert analysis.categories == ("too_many_open_files", "slurm_timeout", "python_traceback")
    assert excerpt == "task 1:\nOSError: [Errno 24] Too many open files"
    assert analysis.warnings == ()  # a completed task is not read


def test_the_heartbeat_is_renewed_before_each_sbatch_of_a_round(store, patterns, tmp_path):
    from core.monitor.monitor import STEP_BUDGET

    array_chain(store, tmp_path, spec="0-1")
    slurm = PerJobSlurm({JOB: array_rows({0: ("OUT_OF_MEMORY", "0:125"), 1: ("TIMEOUT", "0:15")}),
                         "600": array_rows({0: ("COMPLETED", "0:0")}, job="600"),
                         "601": array_rows({1: ("COMPLETED", "0:0")}, job="601")})
    deadlines = []

    def resubmit(record, level, attempt, tasks):
        beat = store.load(JOB).monitor
        deadlines.append(beat.heartbeat_deadline - tale.clock.time())
        tale.clock.now += 50  # a slow sbatch: the next one must not run on an old promise
        return str(598 + attempt), "", ""

    tale = chain_story(store, patterns, slurm, resubmit=resubmit)
    tale.run()
    assert len(deadlines) == 2 and all(left >= STEP_BUDGET for left in deadlines)


def test_a_cause_named_by_slurm_alone_shows_the_end_of_the_log(patterns, tmp_path):
    from core.analysis.jobend import JobEnd
    from core.analysis.logs import analyze_logs

    log = tmp_path / "job.out"
    log.write_text("".join(f"step {i}\n" for i in range(40)))
    analysis, excerpt = analyze_logs([str(log)], patterns, 100, JobEnd("TIMEOUT", 0, 15))
    assert analysis.categories == ("slurm_timeout",) and analysis.findings[0].line_no == 0
    assert excerpt.splitlines()[-1] == "step 39" and len(excerpt.splitlines()) == 25
