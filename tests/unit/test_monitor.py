"""core.monitor.monitor: whole job stories, one `step(now)` at a time, with recorded Slurm answers,
a fake clock and fake sinks. The monitor never sleeps: the test's loop does, as the daemon's does."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from core.config import Config
from core.errors import SlurmUnavailable, StateWriteError
from core.notify.events import EventKind
from core.notify.outbox import DeliveryStatus
from core.slurm.model import JobState
from core.state.model import LogOptions
from core.state.store import StateStore
from tests.support import (
    CONFIG,
    STATE_V1,
    FakeClock,
    FakeSink,
    ScriptedSlurm,
    Story,
    accounting,
    accounting_text,
    queue_text,
    sacct_row,
)

JOB = "4"
CONTROLLER_DOWN = SlurmUnavailable("squeue failed: Unable to contact slurm controller (connect failure)")
DBD_DOWN = SlurmUnavailable("sacct failed: Problem talking to the database: Connection refused")


@pytest.fixture
def store(story_store):
    return story_store


def story(store, slurm, patterns, **options) -> Story:
    return Story(store, JOB, slurm, patterns, **options)


def test_pending_running_completed_goes_to_the_success_route_once(store, patterns):
    slurm = ScriptedSlurm(
        [queue_text(f"{JOB}|PENDING|Priority|0:00"), queue_text(f"{JOB}|RUNNING|None|0:05"),
         queue_text(f"{JOB}|COMPLETED|None|1:00")],
        [accounting_text(sacct_row(JOB, "COMPLETED", name="allocation", req_mem="16?", user="root")),
         accounting_text(sacct_row(JOB, "COMPLETED"))],
    )
    tale = story(store, slurm, patterns)
    tale.run()
    assert tale.clock.sleeps[:2] == [60.0, 30.0]  # pending interval, then running interval
    assert slurm.accounting_calls == 2  # the placeholder record was not trusted
    record = store.load(JOB)
    assert record.final.state is JobState.COMPLETED and record.final.max_rss_bytes == 58180 * 1024
    assert record.final.req_mem == "1G" and not record.final.incomplete
    assert record.done and [e.kind for e in record.outbox] == [EventKind.FINAL]
    assert [m.title for m in tale.delivered("discord-success")] == [f"Job {JOB} (train): COMPLETED"]
    assert tale.delivered("discord-error") == []


def test_a_completed_run_with_scary_lines_goes_to_the_success_route_with_its_warnings(store, patterns, tmp_path):
    (tmp_path / "job.err").write_text(
        "| WARNING: ran out of memory with exception: CUDA out of memory. Tried to allocate 1.50 GiB\n"
        " Skipping batch\n"
        "2022-02-09 20:28:32,418 - mmdet - INFO - Epoch [1][658/742] loss_cls: nan, loss_bbox: nan, loss: nan\n"
        "slurmstepd: error: Exceeded step memory limit at some point.\n")
    slurm = ScriptedSlurm([queue_text(f"{JOB}|COMPLETED|None|1:00")], [accounting_text(sacct_row(JOB, "COMPLETED"))])
    tale = story(store, slurm, patterns)
    tale.run()
    record = store.load(JOB)
    assert record.categories == [] and record.findings == []
    assert [(w.line_no, w.category) for w in record.warnings] == [(1, "cuda_oom"), (3, "nan_loss"), (4, "slurm_oom")]
    [message] = tale.delivered("discord-success")
    assert tale.delivered("discord-error") == []
    assert "Likely cause" not in message.description
    assert "warnings: cuda_oom, nan_loss, slurm_oom" in message.description
    shown = {f.name: f.value for f in message.fields}["Warnings seen"]
    assert shown.splitlines()[1] == ("nan_loss (line 3): 2022-02-09 20:28:32,418 - mmdet - INFO - Epoch [1][658/742] "
                                     "loss_cls: nan, loss_bbox: nan, loss: nan")


def test_a_step_never_sleeps_and_says_when_it_wants_to_run_again(store, patterns):
    slurm = ScriptedSlurm([queue_text(f"{JOB}|RUNNING|None|0:05")], [{}])
    tale = story(store, slurm, patterns)
    now = tale.clock.time()
    assert tale.monitor.step(now) == now + CONFIG.running_interval
    assert tale.clock.sleeps == [] and tale.clock.time() == now
    beat = store.load(JOB).monitor
    assert (beat.pid, beat.host, beat.heartbeat) == (4242, "testhost", now)
    assert beat.heartbeat_deadline == now + CONFIG.running_interval + CONFIG.heartbeat_grace


def test_one_write_per_poll(store, patterns, monkeypatch):
    writes = []
    original = StateStore.save
    monkeypatch.setattr(StateStore, "save", lambda self, record: writes.append(1) or original(self, record))
    tale = story(store, ScriptedSlurm([queue_text(f"{JOB}|RUNNING|None|0:05")], [{}]), patterns)
    for _ in range(3):
        tale.clock.sleep(tale.monitor.step(tale.clock.time()) - tale.clock.time())
    assert len(writes) == 3


def test_a_controller_outage_is_never_taken_for_the_end(store, patterns, tmp_path):
    (tmp_path / "job.err").write_text(
        "Traceback (most recent call last):\n  File \"train.py\", line 3\n"
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    seen = []

    class Watching(ScriptedSlurm):
        def query_queue(self, job_ids, *, not_before=0.0):
            if self.queue_calls in (2, 3, 4):
                seen.append(store.load(JOB))
            return super().query_queue(job_ids)

    slurm = Watching([queue_text(f"{JOB}|RUNNING|None|0:05"), CONTROLLER_DOWN, CONTROLLER_DOWN, CONTROLLER_DOWN, {}],
                     [accounting_text(sacct_row(JOB, "FAILED", "1:0"))])
    tale = story(store, slurm, patterns)
    tale.run()
    assert all(r.final is None and r.outbox == [] for r in seen)
    assert seen[-1].observation.controller_down_since > 0
    record = store.load(JOB)
    assert record.final.state is JobState.FAILED and record.categories[0] == "cuda_oom"
    [message] = tale.delivered("discord-error")
    assert "cuda_oom" in message.description and tale.delivered("discord-success") == []


def test_sacct_down_past_the_wait_sends_what_squeue_knew_marked_incomplete(store, patterns):
    slurm = ScriptedSlurm([queue_text(f"{JOB}|FAILED|NonZeroExitCode|0:03")], [DBD_DOWN])
    tale = story(store, slurm, patterns)
    tale.run()
    assert sum(tale.clock.sleeps) >= CONFIG.accounting_wait
    record = store.load(JOB)
    assert record.final.state is JobState.FAILED and record.final.incomplete
    assert "never confirmed" in tale.delivered("discord-error")[0].description


def test_a_dependency_that_can_never_be_met_is_told_once(store, patterns):
    tale = story(store, ScriptedSlurm([queue_text(f"{JOB}|PENDING|DependencyNeverSatisfied|0:00")], [{}]), patterns)
    tale.run()
    [message] = tale.delivered("discord-error")
    assert "NEVER STARTS" in message.title


def test_a_requeued_job_gets_one_message_for_its_last_run(store, patterns):
    slurm = ScriptedSlurm(
        [queue_text(f"{JOB}|RUNNING|None|0:05"), queue_text(f"{JOB}|REQUEUED|None|0:06"),
         queue_text(f"{JOB}|PENDING|BeginTime|0:00"), queue_text(f"{JOB}|RUNNING|None|0:01"), {}],
        [accounting_text(sacct_row(JOB, "COMPLETED"))])
    tale = story(store, slurm, patterns)
    tale.run()
    assert slurm.queue_calls == 5 and len(tale.all_delivered()) == 1


def test_a_failing_sink_is_retried_with_backoff_until_it_delivers_exactly_once(store, patterns):
    sinks = {"discord-error": FakeSink("discord-error", ["retry", "retry", "delivered"])}
    tale = story(store, ScriptedSlurm([{}], [accounting_text(sacct_row(JOB, "TIMEOUT"))]), patterns, sinks=sinks)
    tale.run()
    assert len(sinks["discord-error"].attempts) == 3 and len(tale.delivered("discord-error")) == 1
    assert tale.clock.sleeps == [1.0, 2.0]  # the outbox's backoff, nothing else to wait for
    delivery = store.load(JOB).outbox[0].deliveries["discord-error"]
    assert delivery.status is DeliveryStatus.DELIVERED and delivery.attempts == 3


def test_a_deleted_webhook_stops_the_retries_and_is_recorded(store, patterns):
    sinks = {"discord-error": FakeSink("discord-error", ["gone"])}
    tale = story(store, ScriptedSlurm([{}], [accounting_text(sacct_row(JOB, "FAILED", "2:0"))]), patterns, sinks=sinks)
    tale.run()
    assert len(sinks["discord-error"].attempts) == 1
    record = store.load(JOB)
    delivery = record.outbox[0].deliveries["discord-error"]
    assert delivery.status is DeliveryStatus.GONE and "gone detail" in delivery.last_error and record.done


def test_a_delivery_that_keeps_failing_is_given_up_for_recover_to_retry(store, patterns):
    sinks = {"discord-error": FakeSink("discord-error", ["retry"])}
    tale = story(store, ScriptedSlurm([{}], [accounting_text(sacct_row(JOB, "FAILED", "2:0"))]), patterns, sinks=sinks)
    tale.run()
    record = store.load(JOB)
    assert record.outbox[0].deliveries["discord-error"].status is DeliveryStatus.FAILED and not record.done
    assert sum(tale.clock.sleeps) >= 6 * 3600


def test_no_sink_for_the_route_is_a_problem_not_a_loop(store, patterns):
    tale = story(store, ScriptedSlurm([{}], [accounting_text(sacct_row(JOB, "FAILED", "2:0"))]), patterns,
                 config=Config(), sinks={})
    assert tale.run() <= 3
    entry = store.load(JOB).outbox[0]
    assert entry.routed_at and entry.deliveries == {}


def test_a_stop_request_ends_monitoring_without_a_message(store, patterns):
    calls = []
    tale = story(store, ScriptedSlurm([queue_text(f"{JOB}|RUNNING|None|0:05")], [{}]), patterns,
                 should_stop=lambda: calls.append(1) or len(calls) > 2)
    tale.run()
    assert tale.all_delivered() == [] and len(calls) == 3


def test_a_disk_that_refuses_writes_costs_no_message_and_sends_none_twice(store, patterns):
    class ReadOnly(StateStore):
        def save(self, record):
            raise StateWriteError(f"cannot write state file {self.path(record.job_id)}: Read-only file system")

    sinks = {"discord-error": FakeSink("discord-error", ["retry", "delivered"])}
    slurm = ScriptedSlurm([queue_text(f"{JOB}|RUNNING|None|0:05"), {}],
                          [accounting_text(sacct_row(JOB, "FAILED", "1:0"))])
    tale = story(ReadOnly(store.folder), slurm, patterns, sinks=sinks)
    tale.run()
    assert len(sinks["discord-error"].attempts) == 2 and len(tale.delivered("discord-error")) == 1
    assert store.load(JOB).final is None  # nothing could be written, yet the story was told once


def test_an_array_waits_for_every_task_then_sends_one_summary(store, patterns, tmp_path):
    def as_array(record):
        record.array_spec, record.expected_tasks = "0-5", [0, 1, 2, 3, 4, 5]
        record.submit_dir, record.log_options = str(tmp_path), LogOptions(output="sweep-%A_%a.out")

    store.update(JOB, as_array)
    (tmp_path / f"sweep-{JOB}_4.out").write_text("Traceback (most recent call last):\n"
                                                "ModuleNotFoundError: No module named 'wandb'\n")
    (tmp_path / f"sweep-{JOB}_5.out").write_text("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=9.batch.\n")
    from tests.unit.test_poller import array_rows

    done = {0: ("COMPLETED", "0:0"), 1: ("COMPLETED", "0:0"), 2: ("COMPLETED", "0:0"), 3: ("COMPLETED", "0:0"),
            4: ("FAILED", "1:0"), 5: ("OUT_OF_MEMORY", "0:125")}
    partial = {task: done[task] for task in (0, 1, 2, 3, 4)}  # the last task is missing from sacct for a while
    slurm = ScriptedSlurm(
        [queue_text(f"{JOB}_[3-5%3]|PENDING|JobArrayTaskLimit|0:00\n{JOB}_0|RUNNING|None|0:01"),
         queue_text(f"{JOB}_5|RUNNING|None|0:05\n{JOB}_4|FAILED|NonZeroExitCode|0:02"), {}],
        [accounting_text(array_rows(partial)), accounting_text(array_rows(done))])
    tale = story(store, slurm, patterns)
    tale.run()
    assert slurm.accounting_calls == 2
    record = store.load(JOB)
    final = record.final
    assert final.state is JobState.OUT_OF_MEMORY and final.task_counts == {"COMPLETED": 4, "FAILED": 1,
                                                                            "OUT_OF_MEMORY": 1}
    assert final.failed_tasks == "4,5" and final.slowest_task == "5" and final.max_rss_bytes == 6000 * 1024
    assert record.categories[:2] == ["slurm_oom", "import_error"]
    assert {t.task_id: t.categories[:1] for t in record.tasks if t.categories} == {"4": ["import_error"],
                                                                                    "5": ["slurm_oom"]}
    [message] = tale.delivered("discord-error")
    assert message.title.startswith(f"Array {JOB} (train): 4 COMPLETED, 1 FAILED, 1 OUT_OF_MEMORY")


def test_first_failure_of_an_array_is_said_once_before_the_summary(store, patterns):
    store.update(JOB, lambda record: setattr(record, "array_spec", "0-1"))
    config = Config(success_webhook=CONFIG.success_webhook, error_webhook=CONFIG.error_webhook,
                    notify_first_failure=True)
    from tests.unit.test_poller import array_rows

    slurm = ScriptedSlurm(
        [queue_text(f"{JOB}_0|FAILED|NonZeroExitCode|0:01\n{JOB}_1|RUNNING|None|0:02")] * 3 + [{}],
        [accounting_text(array_rows({0: ("FAILED", "1:0"), 1: ("COMPLETED", "0:0")}))])
    tale = story(store, slurm, patterns, config=config)
    tale.run()
    titles = [m.title for m in tale.delivered("discord-error")]
    assert titles == [f"Array {JOB} (train): first task failure", f"Array {JOB} (train): 1 COMPLETED, 1 FAILED"]


def test_a_message_left_undelivered_by_the_previous_version_is_rendered_and_sent_once(tmp_path, patterns):
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(os.path.join(STATE_V1, "notification_sending.json"), state / "65.json")
    store = StateStore(str(state))
    before = store.load("65")
    assert before.final is not None and before.outbox[0].message is None
    tale = Story(store, "65", ScriptedSlurm([{}], [{}]), patterns)
    tale.run()
    [message] = tale.delivered("discord-success")
    assert message.title.startswith("Job 65") and store.load("65").done
    assert json.loads((state / "65.json").read_text())["schema_version"] == 2


def test_another_process_delivering_the_outbox_is_waited_for(store, patterns):
    tale = story(store, ScriptedSlurm([{}], [accounting_text(sacct_row(JOB, "FAILED", "1:0"))]), patterns)
    busy = iter([5.0, None])
    original = tale.delivery.deliver
    tale.monitor.dispatcher.deliverer.deliver = lambda records: next(busy) or original(records)  # type: ignore
    now = tale.clock.time()
    assert tale.monitor.step(now) == now + 5.0  # the end is written, then the delivery lock was held elsewhere
    tale.run()
    assert len(tale.delivered("discord-error")) == 1


def test_a_captured_oom_is_told_with_its_cause(store, patterns, tmp_path):
    (tmp_path / "job.err").write_text("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=4.batch.\n")
    tale = story(store, ScriptedSlurm([{}], [accounting("sacct_oom.txt")]), patterns, clock=FakeClock())
    tale.run()
    record = store.load(JOB)
    assert record.final.state is JobState.OUT_OF_MEMORY and record.categories[0] == "slurm_oom"


def test_a_new_monitor_shows_its_pid_before_its_first_poll(store, patterns):
    tale = story(store, ScriptedSlurm([CONTROLLER_DOWN], [{}]), patterns)
    now = tale.clock.time()
    tale.monitor.announce(now)
    beat = store.load(JOB).monitor
    assert (beat.pid, beat.host, beat.heartbeat) == (4242, "testhost", now)
    assert beat.heartbeat_deadline >= now + 300  # a first poll may wait on a hung squeue


def test_the_daemons_loop_waits_out_a_lock_held_elsewhere_instead_of_dying():
    from core.daemon.main import LOCKED_RETRY, drive
    from core.errors import StateLocked

    clock = FakeClock()
    answers = iter([StateLocked("state of job 4 is locked by another jobmon process"), None])

    class Flaky:
        def step(self, now):
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer

    drive(Flaky(), clock.sleep, clock.time)  # type: ignore[arg-type]
    assert clock.sleeps == [LOCKED_RETRY]


def test_the_daemons_loop_renews_the_process_after_its_steps_but_never_with_a_record_only_in_memory():
    from types import SimpleNamespace

    from core.daemon.main import drive

    clock = FakeClock()

    class Counting:
        def __init__(self) -> None:
            self.steps = 0
            self.records = SimpleNamespace(in_memory=False)

        def step(self, now):
            self.steps += 1
            self.records.in_memory = self.steps in (2, 3)  # the disk refused writes at steps 2 and 3
            return None if self.steps == 9 else now + 30

    monitor = Counting()
    renewed = []
    drive(monitor, clock.sleep, clock.time, renew=lambda: renewed.append(monitor.steps), renew_after=2)  # type: ignore[arg-type]
    # due after step 2, held back while only this process had the record, done before step 5; it returned
    # (the exec failed): the loop went on without renewing again
    assert renewed == [4] and monitor.steps == 9


def test_a_record_kept_in_memory_is_written_back_under_the_lock_keeping_a_stop_request(store, patterns):
    from core.monitor.records import Records

    class Flaky(StateStore):
        broken = True

        def save(self, record):
            if self.broken:
                raise StateWriteError("cannot write state file: No space left on device")
            super().save(record)

    flaky = Flaky(store.folder)
    records = Records(flaky, JOB)
    records.update(lambda record: setattr(record.observation, "reason", "in memory"))
    assert records.in_memory and store.load(JOB).observation.reason == ""
    store.update(JOB, lambda record: setattr(record.monitor, "stop_requested", True))  # `jobmon cancel` meanwhile
    flaky.broken = False
    written = records.update(lambda record: setattr(record.observation, "seen_at", 5.0))
    on_disk = store.load(JOB)
    assert not records.in_memory and written.observation.seen_at == 5.0
    assert on_disk.observation.reason == "in memory" and on_disk.monitor.stop_requested


class ForgottenBySqueue:
    """`watch` of a job the controller has purged: scontrol and squeue no longer know it, sacct does."""

    def __init__(self, rows):
        self.rows = rows

    def show_jobs(self, job_id):
        return []

    def query_accounting(self, job_ids):
        return self.rows


def test_watch_of_an_array_squeue_forgot_attaches_it_and_sends_one_summary(tmp_path, patterns):
    from core.chain.submitter import attach

    store = StateStore(str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    rows = accounting("sacct_array.txt")  # array 7: tasks 7_0..7_5, 7_4 FAILED; no row is keyed "7"
    assert "7" not in rows
    record, finished = attach(store, ForgottenBySqueue(rows), "7", stdout=None, stderr=None)
    assert finished and record.array_spec == "0-5" and record.expected_tasks == list(range(6))
    assert record.submit_dir == "/tmp/jobmon-fixtures" and record.name == "arr"
    (tmp_path / "work").mkdir()
    store.update("7", lambda r: setattr(r, "submit_dir", str(tmp_path / "work")))
    (tmp_path / "work" / "slurm-7_4.out").write_text("ModuleNotFoundError: No module named 'wandb'\n")
    tale = Story(store, "7", ScriptedSlurm([{}], [rows]), patterns)
    tale.run()
    final = store.load("7").final
    assert final.task_counts == {"COMPLETED": 5, "FAILED": 1} and final.failed_tasks == "4"
    assert store.load("7").categories == ["import_error"]  # sbatch's default log name, slurm-%A_%a.out
    [message] = tale.all_delivered()
    assert message.title.startswith("Array 7 (arr): 5 COMPLETED, 1 FAILED")


def test_watch_of_an_unknown_id_is_still_an_error(tmp_path):
    from core.chain.submitter import attach
    from core.errors import UnknownJob

    (tmp_path / "state").mkdir()
    with pytest.raises(UnknownJob, match="unknown to Slurm"):
        attach(StateStore(str(tmp_path / "state")), ForgottenBySqueue({}), "70", stdout=None, stderr=None)


def test_watch_of_a_task_of_an_array_already_summarised_sends_nothing_unless_resend(tmp_path, patterns, capsys,
                                                                                    monkeypatch):
    import jobmon
    from core.chain.submitter import attach
    from core.views.history import covering_array

    store = StateStore(str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    rows = accounting("sacct_array.txt")  # array 7: tasks 7_0..7_5
    attach(store, ForgottenBySqueue(rows), "7", stdout=None, stderr=None)
    tale = Story(store, "7", ScriptedSlurm([{}], [rows]), patterns)
    tale.run()
    assert len(tale.all_delivered()) == 1
    assert covering_array(store, "7_4").job_id == "7"
    assert covering_array(store, "7_9") is None  # not one of its tasks
    assert covering_array(store, "8_4") is None and covering_array(store, "7") is None

    (tmp_path / "config.json").write_text(json.dumps({"discord": {"error_webhook": "http://127.0.0.1:9/api/webhooks/1/t"}}))
    (tmp_path / "config.json").chmod(0o600)
    monkeypatch.setenv("JOBMON_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")  # any Slurm call would fail loudly
    assert jobmon.main(["watch", "7_4"]) == 0
    out = capsys.readouterr().out
    assert "belongs to array 7, which jobmon already summarised" in out and "Nothing was sent" in out
    assert "--resend" in out
    assert not store.exists("7_4") and len(tale.all_delivered()) == 1
    assert jobmon.main(["watch", "--resend", "7_4"]) == 1  # goes on to ask Slurm about the task
    assert "'scontrol' is not on PATH" in capsys.readouterr().err
