"""core.state.migrate: every real schema-1 file (tests/fixtures/state_v1) read as a schema-2 record that means
the same thing, and the schema checks of `upgrade`."""
from __future__ import annotations

import copy
import json
import os

import pytest

from core.analysis.finding import Finding
from core.errors import StateError
from core.notify import outbox
from core.notify.events import EventKind, Route
from core.notify.outbox import DeliveryStatus, SinkDelivery
from core.slurm.model import JobState
from core.state.migrate import upgrade, v1_to_v2
from core.state.model import (
    SCHEMA_VERSION,
    Action,
    FinalSource,
    JobRecord,
    Level,
    LogOptions,
    PendingRound,
    PendingSubmission,
    RecordSource,
    Round,
    TaskTrack,
)
from core.state.store import StateStore, parse_record
from tests.support import copy_v1_state, v1_data, v1_names

SCHEMA_1_ONLY = ("notification", "done", "first_failure_notified")


@pytest.fixture
def v1_store(tmp_path):
    """A state folder holding every schema-1 fixture as jobmon 1 left it; `.jobs` maps file name -> job id."""
    store = StateStore(str(tmp_path / "state"))
    store.jobs = copy_v1_state(store.folder)
    return store


def load(store: StateStore, name: str) -> JobRecord:
    return store.load(store.jobs[name])


def test_the_fixture_folder_holds_the_18_captures():
    assert len(v1_names()) == 18
    assert all(v1_data(name)["schema_version"] == 1 for name in v1_names())


# --- every file -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", v1_names())
def test_every_v1_file_loads_as_a_schema_2_record(v1_store, name):
    raw = v1_data(name)
    record = load(v1_store, name)
    assert isinstance(record, JobRecord)
    assert record.schema_version == SCHEMA_VERSION == 2
    assert (record.job_id, record.name, record.created_at) == (raw["job_id"], raw["name"], raw["created_at"])
    # what schema 1 stored as a flag, schema 2 works out from the outbox and the chain
    assert record.done is raw["done"]
    pending = (raw.get("chain") or {}).get("pending")
    assert record.story_over is (raw["final"] is not None and not pending)
    assert record.cancelled is raw["monitor"]["stop_requested"]
    assert (record.final is None) is (raw["final"] is None)
    if record.final is not None:
        assert record.final.state is JobState(raw["final"]["state"])
        assert record.final.decided_at == raw["final"]["decided_at"]
    assert record.monitor.heartbeat == raw["monitor"]["heartbeat"]
    assert record.observation.state is JobState(raw["observation"]["state"])
    assert all(isinstance(f, Finding) for f in record.findings)
    assert [f.category for f in record.findings] == [f["category"] for f in raw["findings"]]
    assert [t.job_id for t in record.tasks] == [t["job_id"] for t in raw["tasks"]]
    assert record.excerpt == raw["excerpt"]


@pytest.mark.parametrize("name", v1_names())
def test_a_migrated_record_is_saved_as_schema_2_and_loads_back_equal(v1_store, name):
    record = load(v1_store, name)
    v1_store.save(record)
    with open(v1_store.path(record.job_id), encoding="utf-8") as handle:
        saved = json.load(handle)
    assert saved["schema_version"] == 2
    assert not set(SCHEMA_1_ONLY) & set(saved)
    assert "restarts" not in saved["observation"]
    assert v1_store.load(record.job_id) == record


@pytest.mark.parametrize("name", v1_names())
def test_merely_loading_a_v1_file_does_not_rewrite_it(v1_store, name):
    path = v1_store.path(v1_store.jobs[name])
    with open(path, "rb") as handle:
        before = handle.read()
    stat = os.stat(path)
    load(v1_store, name)
    list(v1_store.load_current())  # also builds the index (ensure_layout): still no rewrite
    with open(path, "rb") as handle:
        assert handle.read() == before
    assert os.stat(path).st_mtime_ns == stat.st_mtime_ns
    assert os.stat(path).st_ino == stat.st_ino


def test_the_v1_fixtures_are_not_changed_by_upgrade():
    for name in v1_names():
        raw = v1_data(name)
        kept = copy.deepcopy(raw)
        upgrade(raw)
        assert raw == kept, name


# --- what each file means ---------------------------------------------------------------------

def test_completed_sent_is_one_delivered_final_entry(v1_store):
    record = load(v1_store, "completed_sent.json")
    raw = v1_data("completed_sent.json")["notification"]
    [entry] = record.outbox
    assert (entry.key, entry.kind, entry.route) == ("44:final:1", EventKind.FINAL, Route.SUCCESS)
    assert entry.message is None  # schema 1 kept no message; it was delivered, so none is needed
    assert entry.routed_at == record.final.decided_at
    assert entry.deliveries == {"discord-success": SinkDelivery(
        status=DeliveryStatus.DELIVERED, attempts=1, delivered_at=raw["sent_at"], message_id=raw["message_id"])}
    assert record.final.is_success
    assert record.done
    assert outbox.due(record.outbox, now=2e9) == []
    assert outbox.summary_status(record.outbox) == "sent"


@pytest.mark.parametrize(("name", "job", "sink"), [
    ("failed_cuda_oom_sent.json", "46", "discord-error"),
    ("out_of_memory_sent.json", "48", "discord-error"),
    ("final_incomplete_sacct_down.json", "101", "discord-error"),
    ("dependency_never_satisfied.json", "71", "discord-error"),
    ("watch_completed_sent.json", "68", "discord-success"),
    ("chain_oom_then_completed.json", "53", "discord-success"),
    ("chain_array_rounds.json", "55", "discord-error"),
    ("v0_chain_oom_then_completed.json", "72", "discord-success"),
])
def test_a_sent_notification_is_a_final_entry_delivered_to_its_channel(v1_store, name, job, sink):
    record = load(v1_store, name)
    [entry] = record.outbox
    assert entry.key == f"{job}:final:1"
    assert entry.route is (Route.SUCCESS if sink == "discord-success" else Route.ERROR)
    assert list(entry.deliveries) == [sink]
    assert entry.deliveries[sink].status is DeliveryStatus.DELIVERED
    assert entry.deliveries[sink].message_id == v1_data(name)["notification"]["message_id"]
    assert record.done and not record.is_current(record.final.decided_at + 2 * 86400)


def test_failed_cuda_oom_keeps_its_typed_findings(v1_store):
    record = load(v1_store, "failed_cuda_oom_sent.json")
    assert (record.final.state, record.final.exit_code, record.final.reason) == (JobState.FAILED, 1,
                                                                                   "NonZeroExitCode")
    assert record.categories == ["cuda_oom", "python_traceback"]
    assert record.findings[0].category == "cuda_oom" and "CUDA out of memory" in record.findings[0].line
    assert record.excerpt


def test_out_of_memory_keeps_signal_and_requested_memory(v1_store):
    final = load(v1_store, "out_of_memory_sent.json").final
    assert (final.state, final.exit_code, final.signal, final.req_mem) == (JobState.OUT_OF_MEMORY, 0, 125, "100M")
    assert not final.is_success


def test_array_first_failure_sent_is_a_delivered_first_failure_entry(v1_store):
    record = load(v1_store, "array_mixed_first_failure_sent.json")
    first, final = sorted(record.outbox, key=lambda e: e.kind is EventKind.FINAL)
    assert (first.key, first.kind, first.route) == ("49:first_failure:1", EventKind.FIRST_FAILURE, Route.ERROR)
    assert first.deliveries["discord-error"].status is DeliveryStatus.DELIVERED
    assert first.routed_at > 0
    assert final.key == "49:final:1" and final.deliveries["discord-error"].status is DeliveryStatus.DELIVERED
    assert record.done
    assert record.final.is_group and record.final.task_counts == {"COMPLETED": 2, "FAILED": 1, "OUT_OF_MEMORY": 1}
    assert record.final.failed_tasks == "1,2"
    assert [(t.task_id, t.job_id, t.state) for t in record.tasks] == [
        ("0", "49_0", JobState.COMPLETED), ("1", "49_1", JobState.FAILED), ("2", "49_2", JobState.OUT_OF_MEMORY),
        ("3", "49_3", JobState.COMPLETED)]
    assert record.tasks[3].raw_id == "49"
    assert [t.is_failure for t in record.tasks] == [False, True, True, False]
    assert record.observation.state is JobState.RUNNING
    assert record.log_options == LogOptions(output="mixed4-%A_%a.out")
    assert record.expected_tasks == [0, 1, 2, 3]


def test_a_first_failure_sent_before_the_end_keeps_the_record_going():
    raw = v1_data("running.json")
    raw["first_failure_notified"] = True
    record = parse_record(json.dumps(raw))
    [entry] = record.outbox
    assert (entry.key, entry.kind) == ("69:first_failure:1", EventKind.FIRST_FAILURE)
    assert entry.deliveries == {"discord-error": SinkDelivery(status=DeliveryStatus.DELIVERED)}
    assert not record.story_over and not record.done and record.is_current(1e12)
    assert outbox.due(record.outbox, now=1e12) == []  # never sent a second time


def test_notification_sending_is_an_unrouted_final_entry_that_will_be_sent_again(v1_store):
    record = load(v1_store, "notification_sending.json")
    [entry] = record.outbox
    assert (entry.key, entry.kind, entry.route) == ("65:final:1", EventKind.FINAL, Route.SUCCESS)
    assert entry.routed_at == 0.0 and entry.deliveries == {}
    assert entry.message is None  # rendered from the record by the next deliverer
    assert record.story_over and not record.done
    assert outbox.due(record.outbox, now=0.0) == [(entry, None)]  # the next deliverer routes it, then sends
    assert record.is_current(record.final.decided_at + 30 * 86400)


def test_notification_gone_is_a_gone_delivery(v1_store):
    record = load(v1_store, "notification_gone.json")
    [entry] = record.outbox
    delivery = entry.deliveries["discord-success"]
    assert delivery.status is DeliveryStatus.GONE
    assert delivery.attempts == 1
    assert delivery.last_error == "webhook deleted or invalid (HTTP 404: Unknown Webhook)"
    assert delivery.delivered_at == 0.0
    assert record.done  # nothing more will be tried by itself ...
    assert outbox.summary_status(record.outbox) == "gone"  # ... but status shows it did not arrive
    assert outbox.problems(record.outbox) == [
        "final message to discord-success: gone (webhook deleted or invalid (HTTP 404: Unknown Webhook))"]


@pytest.mark.parametrize("status", ["pending", "failed"])
def test_a_notification_not_yet_delivered_will_be_sent_again(status):
    """Statuses no capture has (README: not captured): anything but sent/gone is re-routed and re-sent."""
    raw = v1_data("completed_sent.json")
    raw["notification"].update(status=status, attempts=3, message_id="", sent_at=0.0)
    raw["done"] = False
    migrated = parse_record(json.dumps(raw))
    [entry] = migrated.outbox
    assert entry.routed_at == 0.0 and entry.deliveries == {}
    assert not migrated.done


@pytest.mark.parametrize("name", ["chain_pending_decided.json", "chain_pending_sbatch_started.json"])
def test_a_pending_chain_decision_is_a_typed_pending_round(v1_store, name):
    raw_pending = v1_data(name)["chain"]["pending"]
    record = load(v1_store, name)
    chain = record.chain
    assert chain.pending == PendingRound(round=2, decided_at=raw_pending["decided_at"], submissions=[
        PendingSubmission(level_index=1, level=Level(mem="500M"), action=Action.ESCALATE_MEM, tasks="",
                          sbatch_started=raw_pending["submissions"][0].get("sbatch_started", 0.0))])
    assert chain.round == 1 and chain.current_job == record.job_id
    assert chain.ladder == [Level(mem="100M"), Level(mem="500M")]
    assert record.final.state is JobState.OUT_OF_MEMORY
    assert not record.story_over and not record.done and record.outbox == []
    assert record.slurm_jobs == [record.job_id]
    assert record.is_current(1e12)


def test_sbatch_started_is_kept_only_where_sbatch_ran(v1_store):
    decided = load(v1_store, "chain_pending_decided.json").chain.pending.submissions[0]
    started = load(v1_store, "chain_pending_sbatch_started.json")
    submission = started.chain.pending.submissions[0]
    assert decided.sbatch_started == 0.0
    assert started.chain.pending.decided_at < submission.sbatch_started < started.chain.pending.decided_at + 1
    assert submission.job_id == ""


def test_array_chain_pending_keeps_its_closed_round_and_task_tracks(v1_store):
    record = load(v1_store, "chain_array_pending.json")
    chain = record.chain
    pending = chain.pending
    assert pending.round == 2 and len(pending.submissions) == 1
    submission = pending.submissions[0]
    assert (submission.tasks, submission.level, submission.action) == ("0", Level(mem="500M"), Action.ESCALATE_MEM)
    assert submission.sbatch_started > pending.decided_at
    assert chain.rounds == [Round(number=1, jobs=["62"], task_counts={"COMPLETED": 1, "FAILED": 1, "OUT_OF_MEMORY": 1},
                                  failed_tasks="0,1", retried_tasks="0",
                                  not_retried={"FAILED: no retry for this ending": "1"},
                                  decision=chain.attempts[0].decision)]
    assert chain.tasks == {"0": TaskTrack(level_index=1, level=Level(mem="500M"), runs=["62_0 OUT_OF_MEMORY"])}
    assert chain.attempts[0].task_counts == {"COMPLETED": 1, "FAILED": 1, "OUT_OF_MEMORY": 1}
    assert record.observation.state is JobState.PENDING
    assert not record.story_over and record.slurm_jobs == ["62"]


def test_chain_oom_then_completed(v1_store):
    record = load(v1_store, "chain_oom_then_completed.json")
    chain = record.chain
    assert [(a.job_id, a.round, a.state, a.resources) for a in chain.attempts] == [
        ("53", 1, JobState.OUT_OF_MEMORY, Level(mem="100M")), ("54", 2, JobState.COMPLETED, Level(mem="500M"))]
    assert chain.pending is None and chain.round == 2 and chain.rounds == [] and chain.tasks == {}
    assert record.job_id == "53" and record.target == "54" and record.targets == ["54"]
    assert record.done and record.final.is_success


def test_chain_array_rounds(v1_store):
    record = load(v1_store, "chain_array_rounds.json")
    chain = record.chain
    assert [r.number for r in chain.rounds] == [1, 2]
    assert chain.rounds[0].not_retried == {"FAILED: no retry for this ending": "1"}
    assert chain.tasks["0"].runs == ["55_0 OUT_OF_MEMORY", "58_0 COMPLETED"]
    assert [a.tasks for a in chain.attempts] == ["", "0"]
    assert record.final.task_counts == {"COMPLETED": 2, "FAILED": 1} and record.final.failed_tasks == "1"
    assert record.target == "58" and record.done


def test_v0_chain_pending_gets_rounds_and_its_flat_decision_becomes_one_submission(v1_store):
    raw_pending = v1_data("v0_chain_pending.json")["chain"]["pending"]
    assert "submissions" not in raw_pending and "round" not in raw_pending  # the old, flat shape
    record = load(v1_store, "v0_chain_pending.json")
    chain = record.chain
    assert [(a.job_id, a.round) for a in chain.attempts] == [("74", 1)]
    assert chain.round == 1 and chain.rounds == [] and chain.tasks == {}
    assert chain.pending == PendingRound(round=2, decided_at=raw_pending["decided_at"], submissions=[
        PendingSubmission(level_index=1, level=Level(mem="500M"), action=Action.ESCALATE_MEM, tasks="")])
    assert not record.story_over and not record.done
    assert record.slurm_jobs == ["74"]


def test_v0_finished_chain_gets_one_round_per_attempt(v1_store):
    record = load(v1_store, "v0_chain_oom_then_completed.json")
    chain = record.chain
    assert [(a.job_id, a.round, a.state) for a in chain.attempts] == [
        ("72", 1, JobState.OUT_OF_MEMORY), ("73", 2, JobState.COMPLETED)]
    assert chain.round == 2 and chain.pending is None
    assert record.targets == ["73"] and record.done


def test_cancelled_monitoring_is_cancelled(v1_store):
    record = load(v1_store, "cancelled_monitoring.json")
    assert record.cancelled and record.final is None and not record.story_over and not record.done
    assert record.outbox == []
    assert record.monitor.stopped_at == 0.0  # schema 1 did not record when: the record's creation stands in
    assert record.ended_at == record.created_at
    assert record.is_current(record.created_at + 3600)
    assert not record.is_current(record.created_at + 86400 + 1)


def test_running_story_is_not_over(v1_store):
    record = load(v1_store, "running.json")
    assert record.final is None and not record.story_over and not record.done and not record.cancelled
    assert record.observation.state is JobState.RUNNING
    assert record.monitor.pid > 0 and record.monitor.heartbeat_deadline > record.monitor.heartbeat
    assert record.is_current(1e12)
    assert record.outbox == [] and record.chain is None and record.ended_at == 0.0


def test_watch_record(v1_store):
    record = load(v1_store, "watch_completed_sent.json")
    assert record.source is RecordSource.WATCH
    assert record.sbatch_args == [] and record.log_options == LogOptions()
    assert record.stdout_path == record.stderr_path and record.stdout_path.endswith("plain-68.out")


def test_final_from_squeue_while_sacct_was_down(v1_store):
    record = load(v1_store, "final_incomplete_sacct_down.json")
    final = record.final
    assert (final.source, final.incomplete, final.state, final.exit_code) == (FinalSource.SQUEUE, True,
                                                                              JobState.FAILED, 0)
    assert final.max_rss_bytes is None and final.elapsed == "" and final.nodes == ""
    assert record.observation.accounting_down_since > 0
    assert "Connection refused" in record.observation.last_error


def test_dependency_never_satisfied(v1_store):
    record = load(v1_store, "dependency_never_satisfied.json")
    assert (record.final.state, record.final.reason) == (JobState.PENDING, "DependencyNeverSatisfied")
    assert record.observation.reason == "Dependency"
    assert record.outbox[0].route is Route.ERROR and record.done


# --- upgrade ----------------------------------------------------------------------------------

def test_upgrade_leaves_a_current_record_alone():
    data = {"job_id": "5", "schema_version": SCHEMA_VERSION, "observation": {"state": None}, "outbox": []}
    assert upgrade(copy.deepcopy(data)) == data


def test_a_record_without_schema_version_is_schema_1():
    data = v1_data("completed_sent.json")
    del data["schema_version"]
    assert upgrade(data)["outbox"][0]["key"] == "44:final:1"


@pytest.mark.parametrize("version", ["1", True, None, 1.0])
def test_a_schema_version_that_is_not_a_number_is_refused(version):
    with pytest.raises(ValueError, match="is not a number"):
        upgrade({"job_id": "5", "schema_version": version})


def test_a_newer_schema_is_refused():
    with pytest.raises(ValueError, match="newer than this jobmon understands"):
        upgrade({"job_id": "5", "schema_version": SCHEMA_VERSION + 1})


def test_empty_states_become_null_and_restarts_go():
    raw = v1_data("chain_oom_then_completed.json")
    raw["observation"]["state"] = ""
    raw["chain"]["attempts"][1]["state"] = ""
    data = v1_to_v2(raw)
    assert data["observation"]["state"] is None and "restarts" not in data["observation"]
    assert data["chain"]["attempts"][1]["state"] is None
    assert data["chain"]["pending"] is None  # {} meant "no decision"


MALFORMED = [
    ("observation", 5),
    ("observation", ["ab"]),
    ("notification", "sent"),
    ("final", [1]),
    ("chain.pending", [1, 2]),
    ("chain.attempts", 5),
    ("chain.attempts", {"a": {"job_id": "1"}}),
    ("chain.attempts", ["not an attempt"]),
]


@pytest.mark.parametrize(("where", "value"), MALFORMED, ids=[f"{w}={v!r}" for w, v in MALFORMED])
def test_a_malformed_v1_file_is_unreadable_not_a_crash(tmp_path, where, value):
    """A corrupt schema-1 section is a StateError naming the file (so `status` reports it and goes on),
    never a TypeError from inside the migration, and never silently dropped."""
    raw = v1_data("chain_oom_then_completed.json")
    section, _, key = where.partition(".")
    if key:
        raw[section][key] = value
    else:
        raw[section] = value
    store = StateStore(str(tmp_path))
    with open(store.path("53"), "w", encoding="utf-8") as handle:
        json.dump(raw, handle)
    with pytest.raises(StateError, match=r"53\.json is unreadable: .*" + section):
        store.load("53")


def test_the_keys_and_sinks_the_migration_writes_are_the_ones_jobmon_uses(tmp_path):
    """A carried-over key or sink name that drifted from today's would make the FINAL message go twice."""
    from core.config import ERROR_SINK, SUCCESS_SINK
    from core.notify.events import event_key

    jobs = copy_v1_state(str(tmp_path))
    store = StateStore(str(tmp_path))
    completed = store.load(jobs["completed_sent.json"])
    [final] = completed.outbox
    assert final.key == event_key(completed.job_id, EventKind.FINAL, 1) and list(final.deliveries) == [SUCCESS_SINK]
    array = store.load(jobs["array_mixed_first_failure_sent.json"])
    first, summary = array.outbox
    assert first.key == event_key(array.job_id, EventKind.FIRST_FAILURE, 1) and list(first.deliveries) == [ERROR_SINK]
    assert summary.key == event_key(array.job_id, EventKind.FINAL, 1) and list(summary.deliveries) == [ERROR_SINK]
