"""Drive the monitor loop through whole job stories with recorded Slurm answers and a fake clock."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Union

import pytest

from core.analysis.analyzer import parse_patterns
from core.chain.policy import plan_array_round
from core.config import BUILTIN_PATTERNS, Config
from core.errors import SlurmUnavailable, StateError
from core.monitor.monitor import Monitor, MonitorDeps, heartbeat_deadline
from core.notify.discord import Delivery
from core.outcome import collect_tasks
from core.slurm.arrays import parse_array_spec
from core.slurm.client import AccountingRecord, QueueEntry, parse_sacct, parse_squeue
from core.state.store import Attempt, JobRecord, StateStore

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "slurm")
JOB = "4"

Answer = Union[Dict[str, QueueEntry], Dict[str, AccountingRecord], Exception]


def fixture(name: str) -> str:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return handle.read()


def queue(text: str) -> Dict[str, QueueEntry]:
    return {entry.job_id: entry for entry in parse_squeue(text)}


def accounting(text: str) -> Dict[str, AccountingRecord]:
    return {record.job_id: record for record in parse_sacct(text)}


SACCT_OOM = accounting(fixture("sacct_oom.txt"))
CONTROLLER_DOWN = SlurmUnavailable("squeue failed: Unable to contact slurm controller (connect failure)")
DBD_DOWN = SlurmUnavailable("sacct failed: Problem talking to the database: Connection refused")


def sacct_row(state: str, exit_code: str = "0:0", name: str = "train", req_mem: str = "1G", user: str = "alice") -> str:
    fields = [JOB, JOB, name, state, exit_code, "00:01:00", "01:00:00", "", req_mem, "vm", "debug", "/w",
              "2026-11-21T20:00:00", "2026-11-21T20:01:00", user]
    step = [f"{JOB}.batch", f"{JOB}.batch", "batch", state.split()[0], exit_code, "00:01:00", "", "58180K", "",
            "vm", "", "", "", "", ""]
    return "^|^".join(fields) + "\n" + "^|^".join(step) + "\n"


class ScriptedSlurm:
    """Answers squeue/sacct from scripted lists; the last answer repeats."""

    def __init__(self, queue_answers: List[Answer], accounting_answers: List[Answer]) -> None:
        self.queue_answers = list(queue_answers)
        self.accounting_answers = list(accounting_answers)
        self.queue_calls = 0
        self.accounting_calls = 0

    @staticmethod
    def _next(answers: List[Answer]):
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def query_queue(self, job_ids, not_before=0.0):
        assert list(job_ids) == [JOB]
        self.queue_calls += 1
        return self._next(self.queue_answers)

    def next_poll_delay(self, interval, job_id):
        return interval

    def query_accounting(self, job_ids):
        assert list(job_ids) == [JOB]
        self.accounting_calls += 1
        return self._next(self.accounting_answers)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.sleeps: List[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Outbox:
    def __init__(self, outcomes: List[str]) -> None:
        self.outcomes = list(outcomes)
        self.sent: List[dict] = []
        self.urls: List[str] = []

    def __call__(self, url: str, payload: dict) -> Delivery:
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        self.urls.append(url)
        if outcome == "delivered":
            self.sent.append(payload)
            return Delivery("delivered", 200, "ok", 1, "m1")
        return Delivery(outcome, 404 if outcome == "gone" else 500, f"{outcome} detail", 1)


@pytest.fixture
def patterns():
    with open(BUILTIN_PATTERNS, encoding="utf-8") as handle:
        return parse_patterns(handle.read(), BUILTIN_PATTERNS)


@pytest.fixture
def store(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    store = StateStore(str(state))
    err = tmp_path / "job.err"
    err.write_text("")
    store.create(JobRecord(job_id=JOB, name="train", stdout_path=str(err), stderr_path=str(err)))
    return store


CONFIG = Config(success_webhook="http://127.0.0.1:1/api/webhooks/1/ok", error_webhook="http://127.0.0.1:1/api/webhooks/2/err",
                running_interval=30.0, pending_interval=60.0, accounting_wait=120.0)


def run(store, slurm, patterns, outbox, config=CONFIG, clock=None, should_stop=lambda: False):
    clock = clock or FakeClock()
    deps = MonitorDeps(slurm=slurm, store=store, config=config, patterns=lambda: patterns, send=outbox,
                       clock=clock.time, sleep=clock.sleep, host="testhost", pid=4242, should_stop=should_stop)
    result = Monitor(JOB, deps).run()
    return result, clock


def test_pending_running_completed_goes_to_success_channel_once(store, patterns):
    slurm = ScriptedSlurm(
        [queue(f"{JOB}|PENDING|Priority|0:00"), queue(f"{JOB}|RUNNING|None|0:05"), queue(f"{JOB}|COMPLETED|None|1:00")],
        [accounting(sacct_row("COMPLETED", name="allocation", req_mem="16?", user="root")),
         accounting(sacct_row("COMPLETED"))],
    )
    outbox = Outbox(["delivered"])
    result, clock = run(store, slurm, patterns, outbox)
    assert result == "done"
    assert clock.sleeps[:2] == [60.0, 30.0]  # pending interval, then running interval
    assert slurm.accounting_calls == 2  # the placeholder record was not trusted
    record = store.load(JOB)
    assert record.final.state == "COMPLETED" and record.final.max_rss_bytes == 58180 * 1024
    assert record.final.req_mem == "1G" and not record.final.incomplete
    assert record.notification.status == "sent" and record.done
    assert outbox.urls == [CONFIG.success_webhook]
    assert len(outbox.sent) == 1
    assert outbox.sent[0]["allowed_mentions"] == {"parse": []}


def test_controller_outage_is_never_taken_for_the_end(store, patterns, tmp_path):
    (tmp_path / "job.err").write_text(
        "Traceback (most recent call last):\n  File \"train.py\", line 3\n"
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    )
    seen_during_outage = []

    class Watching(ScriptedSlurm):
        def query_queue(self, job_ids, not_before=0.0):
            if self.queue_calls in (2, 3, 4):
                seen_during_outage.append(store.load(JOB))
            return super().query_queue(job_ids)

    slurm = Watching(
        [queue(f"{JOB}|RUNNING|None|0:05"), CONTROLLER_DOWN, CONTROLLER_DOWN, CONTROLLER_DOWN, {}],
        [accounting(sacct_row("FAILED", "1:0"))],
    )
    outbox = Outbox(["delivered"])
    result, _ = run(store, slurm, patterns, outbox)
    assert result == "done"
    assert all(r.final is None and r.notification.status == "none" for r in seen_during_outage)
    assert seen_during_outage[-1].observation.controller_down_since > 0
    record = store.load(JOB)
    assert record.final.state == "FAILED" and record.final.exit_code == 1
    assert record.categories[0] == "cuda_oom"
    assert outbox.urls == [CONFIG.error_webhook]
    assert "cuda_oom" in str(outbox.sent[0])


def test_sacct_lag_after_squeue_final_is_waited_out(store, patterns):
    slurm = ScriptedSlurm(
        [queue(f"{JOB}|OUT_OF_MEMORY|OutOfMemory|0:01")],
        [{}, accounting(sacct_row("RUNNING")), SACCT_OOM_FOR_JOB],
    )
    result, clock = run(store, slurm, patterns, Outbox(["delivered"]))
    assert result == "done"
    assert slurm.accounting_calls == 3
    assert all(delay <= 30.0 for delay in clock.sleeps)
    record = store.load(JOB)
    assert record.final.state == "OUT_OF_MEMORY" and record.final.signal == 125
    assert record.notification.channel == "error"


SACCT_OOM_FOR_JOB = SACCT_OOM  # the captured OOM job has id 4


def test_accounting_down_past_the_wait_sends_what_squeue_knew_marked_incomplete(store, patterns):
    slurm = ScriptedSlurm([queue(f"{JOB}|FAILED|NonZeroExitCode|0:03")], [DBD_DOWN])
    outbox = Outbox(["delivered"])
    result, clock = run(store, slurm, patterns, outbox)
    assert result == "done"
    assert sum(clock.sleeps) >= CONFIG.accounting_wait
    record = store.load(JOB)
    assert record.final.state == "FAILED" and record.final.incomplete and record.final.source == "squeue"
    assert "never confirmed" in outbox.sent[0]["embeds"][0]["description"]


def test_dependency_never_satisfied_is_terminal(store, patterns):
    slurm = ScriptedSlurm([queue(f"{JOB}|PENDING|DependencyNeverSatisfied|0:00")], [{}])
    outbox = Outbox(["delivered"])
    result, _ = run(store, slurm, patterns, outbox)
    assert result == "done"
    assert slurm.accounting_calls == 0
    record = store.load(JOB)
    assert record.final.reason == "DependencyNeverSatisfied"
    assert "NEVER STARTS" in outbox.sent[0]["embeds"][0]["title"]


def test_requeued_job_gets_one_notification_for_its_last_run(store, patterns):
    slurm = ScriptedSlurm(
        [queue(f"{JOB}|RUNNING|None|0:05"), queue(f"{JOB}|REQUEUED|None|0:06"), queue(f"{JOB}|PENDING|BeginTime|0:00"),
         queue(f"{JOB}|RUNNING|None|0:01"), {}],
        [accounting(sacct_row("COMPLETED"))],
    )
    outbox = Outbox(["delivered"])
    result, _ = run(store, slurm, patterns, outbox)
    assert result == "done"
    assert slurm.queue_calls == 5
    assert len(outbox.sent) == 1


def test_failed_delivery_is_retried_until_delivered_exactly_once(store, patterns):
    slurm = ScriptedSlurm([{}], [accounting(sacct_row("TIMEOUT"))])
    outbox = Outbox(["failed", "failed", "delivered"])
    result, clock = run(store, slurm, patterns, outbox)
    assert result == "done"
    assert len(outbox.sent) == 1 and len(outbox.urls) == 3
    assert clock.sleeps == [30.0, 60.0]
    record = store.load(JOB)
    assert record.notification.status == "sent" and record.notification.attempts == 3


def test_deleted_webhook_stops_retrying_and_is_recorded(store, patterns):
    slurm = ScriptedSlurm([{}], [accounting(sacct_row("FAILED", "2:0"))])
    outbox = Outbox(["gone"])
    result, _ = run(store, slurm, patterns, outbox)
    assert result == "done"
    assert len(outbox.urls) == 1
    record = store.load(JOB)
    assert record.notification.status == "gone" and "gone detail" in record.notification.last_error


def test_stop_request_ends_monitoring_without_a_message(store, patterns):
    calls = []

    def stop_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    slurm = ScriptedSlurm([queue(f"{JOB}|RUNNING|None|0:05")], [{}])
    outbox = Outbox(["delivered"])
    result, _ = run(store, slurm, patterns, outbox, should_stop=stop_after_two)
    assert result == "cancelled"
    assert outbox.urls == []


def test_heartbeat_is_written_every_poll_with_a_deadline(store, patterns):
    seen = []

    class Spy(ScriptedSlurm):
        def query_queue(self, job_ids, not_before=0.0):
            if self.queue_calls == 1:
                seen.append(store.load(JOB).monitor)
            return super().query_queue(job_ids)

    slurm = Spy([queue(f"{JOB}|RUNNING|None|0:05"), {}], [accounting(sacct_row("COMPLETED"))])
    clock = FakeClock()
    start = clock.now
    run(store, slurm, patterns, Outbox(["delivered"]), clock=clock)
    monitor = seen[0]
    assert monitor.pid == 4242 and monitor.host == "testhost"
    assert monitor.heartbeat == start
    assert monitor.heartbeat_deadline == heartbeat_deadline(start, 30.0, CONFIG.heartbeat_grace)


def array_rows(states: dict, name: str = "sweep", job: str = JOB) -> str:
    """sacct text for array `job` with tasks {task: (state, exit)}; the last task keeps the array's raw id."""
    lines = []
    last = max(states)
    for task, (state, code) in sorted(states.items()):
        raw = job if task == last else str(int(job) * 1000 + task)
        lines.append("^|^".join([f"{job}_{task}", raw, name, state, code, f"00:00:{10 + task:02d}", "01:00:00", "",
                                 "1G", "vm", "debug", "/w", "2026-11-21T20:00:00", "2026-11-21T20:01:00", "alice"]))
        lines.append("^|^".join([f"{job}_{task}.batch", f"{raw}.batch", "batch", state, code, "", "", f"{task + 1}000K",
                                 "", "vm", "", "", "", "", ""]))
    return "\n".join(lines) + "\n"


def test_array_waits_for_every_task_then_sends_one_summary(store, patterns, tmp_path):
    def change(record):
        record.array_spec = "0-5"
        record.expected_tasks = [0, 1, 2, 3, 4, 5]
        record.submit_dir = str(tmp_path)
        record.log_options = {"output": "sweep-%A_%a.out", "error": "", "chdir": ""}

    store.update(JOB, change)
    (tmp_path / f"sweep-{JOB}_4.out").write_text("Traceback (most recent call last):\n"
                                                "ModuleNotFoundError: No module named 'wandb'\n")
    (tmp_path / f"sweep-{JOB}_5.out").write_text("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=9.batch.\n")
    done = {0: ("COMPLETED", "0:0"), 1: ("COMPLETED", "0:0"), 2: ("COMPLETED", "0:0"), 3: ("COMPLETED", "0:0"),
            4: ("FAILED", "1:0"), 5: ("OUT_OF_MEMORY", "0:125")}
    partial = {task: done[task] for task in (0, 1, 2, 3, 4)}  # the last task is missing from sacct for a while
    slurm = ScriptedSlurm(
        [queue(f"{JOB}_[3-5%3]|PENDING|JobArrayTaskLimit|0:00\n{JOB}_0|RUNNING|None|0:01"),
         queue(f"{JOB}_5|RUNNING|None|0:05\n{JOB}_4|FAILED|NonZeroExitCode|0:02"), {}],
        [accounting(array_rows(partial)), accounting(array_rows(done))],
    )
    outbox = Outbox(["delivered"])
    result, _ = run(store, slurm, patterns, outbox)
    assert result == "done"
    assert slurm.accounting_calls == 2 and len(outbox.sent) == 1
    record = store.load(JOB)
    final = record.final
    assert final.state == "OUT_OF_MEMORY"
    assert final.task_counts == {"COMPLETED": 4, "FAILED": 1, "OUT_OF_MEMORY": 1}
    assert final.failed_tasks == "4,5" and final.slowest_task == "5"
    assert final.max_rss_bytes == 6000 * 1024
    assert record.categories[:2] == ["slurm_oom", "import_error"]
    assert {t.task_id: t.categories[:1] for t in record.tasks if t.categories} == {"4": ["import_error"],
                                                                                    "5": ["slurm_oom"]}
    embed = outbox.sent[0]["embeds"][0]
    assert embed["title"].startswith(f"Array {JOB} (train): 4 COMPLETED, 1 FAILED, 1 OUT")
    assert outbox.urls == [CONFIG.error_webhook]


def test_array_with_tasks_never_in_sacct_ends_incomplete_after_the_wait(store, patterns):
    store.update(JOB, lambda r: (setattr(r, "array_spec", "0-2"), setattr(r, "expected_tasks", [0, 1, 2])))
    slurm = ScriptedSlurm([{}], [accounting(array_rows({0: ("COMPLETED", "0:0"), 1: ("COMPLETED", "0:0")}))])
    outbox = Outbox(["delivered"])
    result, clock = run(store, slurm, patterns, outbox)
    assert result == "done" and sum(clock.sleeps) >= CONFIG.accounting_wait
    final = store.load(JOB).final
    assert final.incomplete and final.task_counts == {"COMPLETED": 2, "UNKNOWN": 1} and final.failed_tasks == "2"
    assert outbox.urls == [CONFIG.error_webhook]


def test_a_disk_that_refuses_writes_costs_no_message_and_sends_none_twice(store, patterns):
    class ReadOnlyAfterStart(StateStore):
        broken = False

        def save(self, record):
            if self.broken:
                raise StateError(f"cannot write state file {self.path(record.job_id)}: Read-only file system")
            super().save(record)

    flaky = ReadOnlyAfterStart(store.folder)
    flaky.broken = True
    slurm = ScriptedSlurm([queue(f"{JOB}|RUNNING|None|0:05"), {}], [accounting(sacct_row("FAILED", "1:0"))])
    outbox = Outbox(["failed", "delivered"])
    result, _ = run(flaky, slurm, patterns, outbox)
    assert result == "done"
    assert len(outbox.sent) == 1 and len(outbox.urls) == 2
    assert store.load(JOB).final is None  # nothing could be written, yet the story was told once


def sacct_for(job: str, state: str, exit_code: str = "0:0", req_mem: str = "100M") -> str:
    return sacct_row(state, exit_code, req_mem=req_mem).replace(f"{JOB}^|^{JOB}^|^", f"{job}^|^{job}^|^", 1) \
        .replace(f"{JOB}.batch^|^{JOB}.batch", f"{job}.batch^|^{job}.batch") + "\n"


class ChainSlurm(ScriptedSlurm):
    """Answers for whichever attempt is current (its id is the first thing asked)."""

    def __init__(self, answers):
        super().__init__([{}], [{}])
        self.answers = answers

    def query_queue(self, job_ids, not_before=0.0):
        self.queue_calls += 1
        return {}

    def query_accounting(self, job_ids):
        self.accounting_calls += 1
        return accounting(self.answers[job_ids[0]])


def chained(store, ladder=()):
    from core.state.store import Attempt, Chain

    def change(record):
        record.chain = Chain(ladder=[dict(level) for level in ladder], max_retries=2,
                             current_job=JOB, level=dict(ladder[0]) if ladder else {}, attempts=[Attempt(job_id=JOB)])

    store.update(JOB, change)


def test_oom_escalates_once_per_attempt_and_one_final_message_lists_the_chain(store, patterns):
    chained(store)
    submitted = []

    def resubmit(record, level, attempt, tasks):
        submitted.append((level.mem, attempt, tasks))
        return "500", "/w/a.out", "/w/a.out"

    slurm = ChainSlurm({JOB: sacct_for(JOB, "OUT_OF_MEMORY", "0:125"), "500": sacct_for("500", "COMPLETED")})
    outbox = Outbox(["delivered"])
    clock = FakeClock()
    deps = MonitorDeps(slurm=slurm, store=store, config=CONFIG, patterns=lambda: patterns, send=outbox,
                       clock=clock.time, sleep=clock.sleep, host="h", pid=1, resubmit=resubmit)
    assert Monitor(JOB, deps).run() == "done"
    assert submitted == [("200M", 2, "")]  # the default ladder doubles the 100M the job had
    record = store.load(JOB)
    assert [a.job_id for a in record.chain.attempts] == [JOB, "500"]
    assert record.chain.attempts[0].state == "OUT_OF_MEMORY" and "escalate_mem" in record.chain.attempts[0].decision
    assert record.final.state == "COMPLETED" and record.notification.status == "sent"
    titles = [payload["embeds"][0]["title"] for payload in outbox.sent]
    assert len(titles) == 2
    assert "resubmitted as 500 with 200M" in titles[0]
    assert titles[1].startswith(f"Chain {JOB} (train): COMPLETED after 2 attempts")
    assert outbox.urls == [CONFIG.error_webhook, CONFIG.success_webhook]


def test_a_decided_resubmission_is_adopted_not_repeated_after_a_crash(store, patterns):
    chained(store)

    def crash_after_decision(record):  # what a daemon killed right before sbatch leaves behind
        record.chain.pending = {"round": 2, "submissions": [
            {"level_index": 1, "level": {"mem": "200M"}, "action": "escalate_mem", "tasks": "", "sbatch_started": 1.0}]}
        record.chain.attempts[0].state = "OUT_OF_MEMORY"

    store.update(JOB, crash_after_decision)
    calls = []
    slurm = ChainSlurm({"777": sacct_for("777", "COMPLETED")})
    outbox = Outbox(["delivered"])
    clock = FakeClock()
    deps = MonitorDeps(slurm=slurm, store=store, config=CONFIG, patterns=lambda: patterns, send=outbox,
                       clock=clock.time, sleep=clock.sleep, host="h", pid=1,
                       resubmit=lambda *args: calls.append(args),
                       find_submitted=lambda record, attempt, tasks: ("777", "/w/777.out", "/w/777.out")
                       if attempt == 2 else None)
    assert Monitor(JOB, deps).run() == "done"
    assert calls == []
    record = store.load(JOB)
    assert record.chain.current_job == "777" and record.stderr_path == "/w/777.out"  # its own log, not the last one


def test_top_of_the_ladder_ends_the_chain_with_the_reason(store, patterns):
    chained(store, ladder=({"mem": "100M"}, {"mem": "200M"}))
    oom = {job: sacct_for(job, "OUT_OF_MEMORY", "0:125") for job in (JOB, "501")}
    slurm = ChainSlurm(oom)
    outbox = Outbox(["delivered"])
    clock = FakeClock()
    deps = MonitorDeps(slurm=slurm, store=store, config=CONFIG, patterns=lambda: patterns, send=outbox,
                       clock=clock.time, sleep=clock.sleep, host="h", pid=1,
                       resubmit=lambda record, level, attempt, tasks: ("501", "", ""))
    assert Monitor(JOB, deps).run() == "done"
    final_embed = outbox.sent[-1]["embeds"][0]
    assert "OUT\\_OF\\_MEMORY after 2 attempts" in final_embed["title"]
    assert "top level" in final_embed["description"]


class ArrayChainSlurm(ScriptedSlurm):
    """sacct answers per array job; every job asked for contributes its rows."""

    def __init__(self, rows_by_job):
        super().__init__([{}], [{}])
        self.rows_by_job = rows_by_job
        self.asked: List[List[str]] = []

    def query_queue(self, job_ids, not_before=0.0):
        self.queue_calls += 1
        return {}

    def query_accounting(self, job_ids):
        self.asked.append(list(job_ids))
        return accounting("".join(self.rows_by_job[job] for job in job_ids))


def array_chain(store, tmp_path, spec="0-3", ladder=()):
    chained(store, ladder)

    def change(record):
        record.array_spec = spec
        record.expected_tasks = list(parse_array_spec(spec).task_ids)
        record.submit_dir = str(tmp_path)
        record.log_options = {"output": "sweep-%A_%a.out", "error": "", "chdir": ""}

    store.update(JOB, change)


def test_an_array_round_resubmits_only_oom_and_timeout_tasks_each_at_its_own_next_level(store, patterns, tmp_path):
    array_chain(store, tmp_path)
    (tmp_path / f"sweep-{JOB}_2.out").write_text("ModuleNotFoundError: No module named 'wandb'\n")
    (tmp_path / f"sweep-{JOB}_1.out").write_text("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=9.batch.\n")
    round_one = array_rows({0: ("COMPLETED", "0:0"), 1: ("OUT_OF_MEMORY", "0:125"), 2: ("FAILED", "1:0"),
                            3: ("TIMEOUT", "0:15")})
    slurm = ArrayChainSlurm({JOB: round_one, "600": array_rows({1: ("COMPLETED", "0:0")}, job="600"),
                             "601": array_rows({3: ("COMPLETED", "0:0")}, job="601")})
    submitted = []

    def resubmit(record, level, attempt, tasks):
        submitted.append((level.to_dict(), attempt, tasks))
        return str(599 + attempt - 1), "", ""

    outbox = Outbox(["delivered"])
    clock = FakeClock()
    deps = MonitorDeps(slurm=slurm, store=store, config=CONFIG, patterns=lambda: patterns, send=outbox,
                       clock=clock.time, sleep=clock.sleep, host="h", pid=1, resubmit=resubmit)
    assert Monitor(JOB, deps).run() == "done"
    # the default ladder: task 1 gets twice sacct's 1G, task 3 twice its 1 h limit; task 2 (exit 1) is left alone
    assert submitted == [({"mem": "2048M"}, 2, "1"), ({"time": "02:00:00"}, 3, "3")]
    assert slurm.asked[-1] == ["600", "601"]  # round 2 is both submissions, watched together
    record = store.load(JOB)
    chain = record.chain
    assert [(a.job_id, a.round, a.tasks) for a in chain.attempts] == [(JOB, 1, ""), ("600", 2, "1"), ("601", 2, "3")]
    assert chain.tasks["1"].runs == [f"{JOB}_1 OUT_OF_MEMORY", "600_1 COMPLETED"]
    assert chain.tasks["3"].level == {"time": "02:00:00"} and "2" not in chain.tasks
    assert [(r.number, r.task_counts, r.retried_tasks) for r in chain.rounds] == [
        (1, {"COMPLETED": 1, "OUT_OF_MEMORY": 1, "FAILED": 1, "TIMEOUT": 1}, "1,3"), (2, {"COMPLETED": 2}, "")]
    assert "not retried: task(s) 2 (FAILED: no retry for this ending)" in chain.rounds[0].decision
    final = record.final
    assert final.task_counts == {"COMPLETED": 3, "FAILED": 1} and final.failed_tasks == "2"
    assert record.categories == ["import_error"]  # the OOM was fixed by the retry: no longer a cause
    titles = [payload["embeds"][0]["title"].replace("\\", "") for payload in outbox.sent]
    assert titles == [
        f"Array {JOB} (train) round 1: 1 COMPLETED, 1 FAILED, 1 OUT_OF_MEMORY, 1 TIMEOUT → resubmitted 1,3 as 600, 601",
        f"Array chain {JOB} (train): 3 COMPLETED, 1 FAILED after 2 rounds",
    ]
    assert outbox.urls == [CONFIG.error_webhook, CONFIG.error_webhook]


def test_an_array_chain_splits_a_long_spec_and_throttles_each_submission(store, patterns, tmp_path):
    ids = list(range(0, 400, 3)) + [401, 404, 409]
    array_chain(store, tmp_path, spec="0-409%5", ladder=({"mem": "1G"}, {"mem": "4G"}))
    rows = {task: ("OUT_OF_MEMORY", "0:125") if task in ids else ("COMPLETED", "0:0") for task in range(410)}
    record = store.load(JOB)
    tasks = collect_tasks(JOB, accounting(array_rows(rows)))
    plan = plan_array_round(record.chain, tasks, {}, throttle=5, max_spec_length=12)
    specs = [s["tasks"] for s in plan.submissions]
    assert all(len(spec) <= 12 and spec.endswith("%5") for spec in specs) and len(specs) > 1
    resubmitted = [i for spec in specs for i in parse_array_spec(spec).task_ids]
    assert resubmitted == ids and {s["level"]["mem"] for s in plan.submissions} == {"4G"}


def test_an_array_chain_stops_at_the_retry_budget_per_task(store, patterns, tmp_path):
    array_chain(store, tmp_path, spec="0-1", ladder=({"mem": "1G"}, {"mem": "2G"}, {"mem": "4G"}, {"mem": "8G"}))
    oom = ("OUT_OF_MEMORY", "0:125")
    slurm = ArrayChainSlurm({JOB: array_rows({0: ("COMPLETED", "0:0"), 1: oom}),
                             "700": array_rows({1: oom}, job="700"), "701": array_rows({1: oom}, job="701")})
    jobs = iter(["700", "701", "702"])
    outbox = Outbox(["delivered"])
    clock = FakeClock()
    deps = MonitorDeps(slurm=slurm, store=store, config=CONFIG, patterns=lambda: patterns, send=outbox,
                       clock=clock.time, sleep=clock.sleep, host="h", pid=1,
                       resubmit=lambda record, level, attempt, tasks: (next(jobs), "", ""))
    assert Monitor(JOB, deps).run() == "done"
    chain = store.load(JOB).chain
    assert [a.job_id for a in chain.attempts] == [JOB, "700", "701"]  # max_retries=2: three runs of task 1
    assert chain.tasks["1"].runs == [f"{JOB}_1 OUT_OF_MEMORY", "700_1 OUT_OF_MEMORY", "701_1 OUT_OF_MEMORY"]
    assert "already used its 2 retries" in chain.rounds[-1].decision
    final_embed = outbox.sent[-1]["embeds"][0]
    assert "after 3 rounds" in final_embed["title"]
    assert "Not retried: task(s) 1 (OUT_OF_MEMORY is set to escalate_mem, but the chain already used its 2 " \
           "retries)." in final_embed["description"]


def test_an_array_round_half_submitted_when_the_daemon_died_submits_only_the_rest(store, patterns, tmp_path):
    array_chain(store, tmp_path)

    def crashed_between_two_sbatches(record):
        from core.state.store import Attempt

        record.chain.pending = {"round": 2, "submissions": [
            {"level_index": 1, "level": {"mem": "2G"}, "action": "escalate_mem", "tasks": "1", "job_id": "600"},
            {"level_index": 1, "level": {"time": "2:00:00"}, "action": "escalate_time", "tasks": "3"}]}
        record.chain.attempts.append(Attempt(job_id="600", level_index=1, resources={"mem": "2G"}, round=2, tasks="1"))

    store.update(JOB, crashed_between_two_sbatches)
    calls = []
    slurm = ArrayChainSlurm({"600": array_rows({1: ("COMPLETED", "0:0")}, job="600"),
                             "601": array_rows({3: ("COMPLETED", "0:0")}, job="601")})
    outbox = Outbox(["delivered"])
    clock = FakeClock()
    deps = MonitorDeps(slurm=slurm, store=store, config=CONFIG, patterns=lambda: patterns, send=outbox,
                       clock=clock.time, sleep=clock.sleep, host="h", pid=1,
                       resubmit=lambda record, level, attempt, tasks: calls.append((attempt, tasks)) or ("601", "", ""))
    assert Monitor(JOB, deps).run() == "done"
    assert calls == [(3, "3")]
    assert [a.job_id for a in store.load(JOB).chain.attempts] == [JOB, "600", "601"]


def test_sbatch_refusing_one_submission_of_a_round_keeps_the_others(store, patterns, tmp_path):
    from core.slurm.client import SbatchRejected

    array_chain(store, tmp_path, spec="0-1")
    round_one = array_rows({0: ("OUT_OF_MEMORY", "0:125"), 1: ("TIMEOUT", "0:15")})
    slurm = ArrayChainSlurm({JOB: round_one, "600": array_rows({0: ("COMPLETED", "0:0")}, job="600")})

    def resubmit(record, level, attempt, tasks):
        if tasks == "1":
            raise SbatchRejected(1, "sbatch: error: Batch job submission failed: Requested time limit is invalid")
        return "600", "", ""

    outbox = Outbox(["delivered"])
    clock = FakeClock()
    deps = MonitorDeps(slurm=slurm, store=store, config=CONFIG, patterns=lambda: patterns, send=outbox,
                       clock=clock.time, sleep=clock.sleep, host="h", pid=1, resubmit=resubmit)
    assert Monitor(JOB, deps).run() == "done"
    record = store.load(JOB)
    assert [a.job_id for a in record.chain.attempts] == [JOB, "600"]
    assert "resubmission of 1 refused by sbatch" in record.chain.rounds[0].decision
    assert list(record.chain.rounds[0].not_retried.values()) == ["1"]
    assert record.final.task_counts == {"COMPLETED": 1, "TIMEOUT": 1} and record.final.failed_tasks == "1"


def test_signal_9_tasks_are_analysed_first_when_only_some_logs_are_read(patterns, tmp_path):
    from core.analysis.logs import MAX_TASK_LOGS, analyze_group_logs
    from core.state.store import TaskOutcome

    record = JobRecord(job_id="70", array_spec="0-40", submit_dir=str(tmp_path),
                       log_options={"output": "s-%A_%a.out", "error": "", "chdir": ""})
    (tmp_path / "s-70_40.out").write_text("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=70_40.batch.\n")
    tasks = [TaskOutcome(task_id=str(i), job_id=f"70_{i}", state="FAILED", exit_code=1) for i in range(40)]
    tasks.append(TaskOutcome(task_id="40", job_id="70_40", state="FAILED", exit_code=137))
    analysed, analysis, _ = analyze_group_logs(record, tasks, patterns, 100)
    assert len(tasks) > MAX_TASK_LOGS and analysed[-1].categories == ["slurm_oom"]
    assert "slurm_oom" in analysis.categories


# -- found in review: upgrades, crashes and refusals around array rounds ---------------------------
def test_a_chain_saved_before_rounds_existed_is_upgraded_and_finishes(store, patterns):
    old = store.load(JOB).to_dict()
    old["chain"] = {"current_job": "500", "level": {"mem": "200M"}, "level_index": 1, "max_retries": 2,
                    "attempts": [{"job_id": JOB, "state": "OUT_OF_MEMORY"}, {"job_id": "500"}]}
    record = JobRecord.from_dict(json.loads(json.dumps(old)))
    assert [a.round for a in record.chain.attempts] == [1, 2] and record.targets == ["500"]
    store.save(record)
    outbox = Outbox(["delivered"])
    result, _ = run_chain(store, patterns, ArrayChainSlurm({"500": sacct_for("500", "COMPLETED")}), outbox)
    assert result == "done" and store.load(JOB).final.state == "COMPLETED"
    assert outbox.urls == [CONFIG.success_webhook]


def test_an_old_style_pending_decision_is_carried_out(store, patterns):
    chained(store)

    def old_pending(record):
        data = record.to_dict()
        del data["chain"]["round"]
        data["chain"]["pending"] = {"level_index": 1, "level": {"mem": "200M"}, "action": "escalate_mem",
                                    "decided_at": 5.0}
        return JobRecord.from_dict(data)

    store.save(old_pending(store.load(JOB)))
    calls = []
    result, _ = run_chain(store, patterns, ArrayChainSlurm({"500": sacct_for("500", "COMPLETED")}),
                          Outbox(["delivered"]), resubmit=lambda *args: calls.append(args[1:]) or ("500", "", ""))
    assert result == "done" and [(level.mem, attempt, tasks) for level, attempt, tasks in calls] == [("200M", 2, "")]


def test_a_round_whose_accounting_never_came_keeps_the_earlier_rounds(store, patterns, tmp_path):
    array_chain(store, tmp_path, spec="0-2")

    class AccountingDownForRoundTwo(ArrayChainSlurm):
        def query_accounting(self, job_ids):
            if "600" in job_ids:
                raise SlurmUnavailable("sacct: error: Problem talking to the database")
            return super().query_accounting(job_ids)

    slurm = AccountingDownForRoundTwo(
        {JOB: array_rows({0: ("COMPLETED", "0:0"), 1: ("OUT_OF_MEMORY", "0:125"), 2: ("FAILED", "1:0")})})
    outbox = Outbox(["delivered"])
    result, _ = run_chain(store, patterns, slurm, outbox, resubmit=lambda *a: ("600", "", ""))
    record = store.load(JOB)
    assert result == "done" and record.final.incomplete
    assert record.final.task_counts == {"COMPLETED": 1, "UNKNOWN": 1, "FAILED": 1}
    assert [r.number for r in record.chain.rounds] == [1, 2]
    assert outbox.sent[-1]["embeds"][0]["title"].startswith(f"Array chain {JOB} (train): ")


def test_no_search_for_a_tagged_job_before_sbatch_was_ever_started(store, patterns, tmp_path):
    array_chain(store, tmp_path, spec="0-1")
    slurm = ArrayChainSlurm({JOB: array_rows({0: ("OUT_OF_MEMORY", "0:125"), 1: ("COMPLETED", "0:0")}),
                             "600": array_rows({0: ("COMPLETED", "0:0")}, job="600")})
    searched = []
    result, _ = run_chain(store, patterns, slurm, Outbox(["delivered"]), resubmit=lambda *a: ("600", "", ""),
                          find_submitted=lambda *args: searched.append(args) or None)
    assert result == "done" and searched == []  # a plain resubmission needs no sacct


def test_a_stop_between_two_sbatches_of_a_round_submits_no_more(store, patterns, tmp_path):
    array_chain(store, tmp_path, spec="0-1")
    slurm = ArrayChainSlurm({JOB: array_rows({0: ("OUT_OF_MEMORY", "0:125"), 1: ("TIMEOUT", "0:15")})})
    calls = []
    result, _ = run_chain(store, patterns, slurm, Outbox(["delivered"]),
                          resubmit=lambda record, level, attempt, tasks: calls.append(tasks) or ("600", "", ""),
                          should_stop=lambda: bool(calls))  # SIGTERM arrives during the first sbatch
    assert result == "cancelled" and calls == ["0"]
    assert store.load(JOB).chain.pending["submissions"][0]["job_id"] == "600"  # `cancel --job` finds it here


def test_the_escalation_message_after_a_crash_names_the_attempt_that_ended(store, patterns):
    chained(store)

    def crashed_after_recording(record):
        record.chain.attempts[0].state, record.chain.attempts[0].resources = "OUT_OF_MEMORY", {"mem": "100M"}
        record.chain.pending = {"round": 2, "decided_at": 1.0, "submissions": [
            {"level_index": 1, "level": {"mem": "200M"}, "action": "escalate_mem", "tasks": "", "job_id": "500",
             "stdout": "/w/500.out", "stderr": "/w/500.out"}]}
        record.chain.attempts.append(Attempt(job_id="500", level_index=1, resources={"mem": "200M"}, round=2))

    store.update(JOB, crashed_after_recording)
    outbox = Outbox(["delivered"])
    assert run_chain(store, patterns, ArrayChainSlurm({"500": sacct_for("500", "COMPLETED")}), outbox)[0] == "done"
    assert outbox.sent[0]["embeds"][0]["title"].replace("\\", "") == \
        f"Job {JOB} (train) OUT_OF_MEMORY at 100M → resubmitted as 500 with 200M"


def test_tasks_whose_resubmission_was_refused_are_not_reported_as_retried(store, patterns, tmp_path):
    from core.slurm.client import SbatchRejected

    array_chain(store, tmp_path, spec="0-1")
    slurm = ArrayChainSlurm({JOB: array_rows({0: ("OUT_OF_MEMORY", "0:125"), 1: ("TIMEOUT", "0:15")}),
                             "600": array_rows({0: ("COMPLETED", "0:0")}, job="600")})

    def resubmit(record, level, attempt, tasks):
        if tasks == "1":
            raise SbatchRejected(1, "sbatch: error: Batch job submission failed: Requested time limit is invalid")
        return "600", "", ""

    outbox = Outbox(["delivered"])
    run_chain(store, patterns, slurm, outbox, resubmit=resubmit)
    first_round = store.load(JOB).chain.rounds[0]
    assert first_round.retried_tasks == "0"
    assert "→ resubmitted 0 as 600" in outbox.sent[0]["embeds"][0]["title"].replace("\\", "")


def test_an_excerpt_of_a_task_fixed_by_its_retry_is_dropped(store, patterns, tmp_path):
    array_chain(store, tmp_path, spec="0-1")
    (tmp_path / f"sweep-{JOB}_1.out").write_text("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=9.batch.\n")
    slurm = ArrayChainSlurm({JOB: array_rows({0: ("COMPLETED", "0:0"), 1: ("OUT_OF_MEMORY", "0:125")}),
                             "600": array_rows({1: ("COMPLETED", "0:0")}, job="600")})
    run_chain(store, patterns, slurm, Outbox(["delivered"]), resubmit=lambda *a: ("600", "", ""))
    record = store.load(JOB)
    assert record.final.task_counts == {"COMPLETED": 2} and record.excerpt == "" and record.findings == []


def run_chain(store, patterns, slurm, outbox, **deps):
    clock = FakeClock()
    monitor_deps = MonitorDeps(slurm=slurm, store=store, config=CONFIG, patterns=lambda: patterns, send=outbox,
                               clock=clock.time, sleep=clock.sleep, host="h", pid=1, **deps)
    return Monitor(JOB, monitor_deps).run(), clock
