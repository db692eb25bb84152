"""core.views (status rows, history, report) and core.daemon.control (recover, cancel) on state folders
built with the store; no daemon is started (start_monitor is replaced by a recorder)."""
from __future__ import annotations

import subprocess
import sys
import time
from typing import List

import pytest

from core.config import Config, Paths
from core.daemon import control
from core.daemon.liveness import Health, this_host
from core.errors import SlurmUnavailable
from core.notify.events import EventKind, Route
from core.notify.outbox import DeliveryStatus, OutboxEntry, SinkDelivery
from core.slurm.model import JobState, QueueEntry
from core.state.model import RECENT, Attempt, Chain, FinalRecord, JobRecord, MonitorInfo
from core.state.store import StateStore
from core.views.history import find_record, history_entries, history_row
from core.views.status import collect_status

NOW = time.time()
CONFIG = Config(success_webhook="http://127.0.0.1:1/api/webhooks/1/ok",
                error_webhook="http://127.0.0.1:1/api/webhooks/2/err")


class CountingSlurm:
    def __init__(self, entries=None, error: Exception = None) -> None:
        self.entries, self.error, self.calls = entries or {}, error, []

    def query_queue(self, job_ids, *, not_before=0.0):
        self.calls.append(list(job_ids))
        if self.error:
            raise self.error
        return {key: value for key, value in self.entries.items() if key in job_ids}


def gone_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def entry(status: DeliveryStatus, sink: str = "discord-error", kind: EventKind = EventKind.FINAL,
          delivered_at: float = 0.0, last_error: str = "") -> OutboxEntry:
    return OutboxEntry(f"x:{kind.value}:1", kind, Route.ERROR, created_at=1.0, routed_at=1.0,
                       deliveries={sink: SinkDelivery(status=status, delivered_at=delivered_at, last_error=last_error)})


def finished(job_id: str, ended: float, status: DeliveryStatus = DeliveryStatus.DELIVERED, **changes) -> JobRecord:
    record = JobRecord(job_id, name=f"job{job_id}", created_at=ended - 60,
                       final=FinalRecord(state=JobState.FAILED, exit_code=1, elapsed="00:01:00", decided_at=ended),
                       monitor=MonitorInfo(pid=gone_pid(), host=this_host(), heartbeat=ended),
                       outbox=[entry(status, delivered_at=ended)], categories=["cuda_oom"])
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def running(job_id: str, **changes) -> JobRecord:
    now = time.time()
    record = JobRecord(job_id, name=f"job{job_id}", created_at=now - 100,
                       monitor=MonitorInfo(pid=gone_pid(), host=this_host(), heartbeat=now - 5,
                                           heartbeat_deadline=now + 100))
    for key, value in changes.items():
        setattr(record, key, value)
    return record


@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    return StateStore(str(folder))


def rows_by_id(rows) -> dict:
    return {row.job_id: row for row in rows}


def test_status_shows_the_current_jobs_with_one_squeue_call(store):
    for job in ("10", "11", "12"):
        store.create(running(job))
    store.create(finished("13", NOW - 60))
    slurm = CountingSlurm({"10": QueueEntry("10", JobState.RUNNING, "None", "1:02")})
    rows, warning = collect_status(store, slurm, include_old=False)
    assert warning == "" and slurm.calls == [["10", "11", "12"]]
    by_id = rows_by_id(rows)
    assert list(by_id) == ["10", "11", "12", "13"]
    assert by_id["10"].state == "RUNNING" and by_id["10"].elapsed == "1:02"
    assert by_id["13"].state == "FAILED" and by_id["13"].notification == "sent"
    assert by_id["13"].as_dict()["events"] == [{"key": "x:final:1", "kind": "final", "route": "error",
                                                "created_at": 1.0, "deliveries": {"discord-error": "delivered"}}]


def test_a_killed_monitor_on_this_host_is_dead_at_once(store):
    store.create(running("20"))  # its pid is gone, its heartbeat is still fresh
    rows, _ = collect_status(store, CountingSlurm(), include_old=False)
    assert rows[0].monitor == Health.DEAD.value


def test_jobs_ended_more_than_a_day_ago_leave_the_index_and_appear_only_with_all(store):
    store.create(finished("30", NOW - RECENT - 60))
    store.create(finished("31", NOW - 60))
    rows, _ = collect_status(store, CountingSlurm(), include_old=False)
    assert [row.job_id for row in rows] == ["31"]
    assert store.current_ids() == ["31"]  # 30 left the index, its summary went to the history
    assert [e.job_id for e in store.history.read().values()] == ["30"]
    rows, _ = collect_status(store, CountingSlurm(), include_old=True)
    by_id = rows_by_id(rows)
    assert list(by_id) == ["31", "30"] and by_id["30"].monitor == "DONE" and by_id["30"].state == "FAILED"


def test_status_reads_only_the_current_records(store, monkeypatch):
    for job in range(100, 160):
        store.create(finished(str(job), NOW - RECENT - 60))
    store.create(running("200"))
    collect_status(store, CountingSlurm(), include_old=False)  # the first pass retires the old ones
    loaded: List[str] = []
    original = StateStore.load
    monkeypatch.setattr(StateStore, "load", lambda self, job_id: loaded.append(job_id) or original(self, job_id))
    rows, _ = collect_status(store, CountingSlurm(), include_old=False)
    assert [row.job_id for row in rows] == ["200"] and loaded == ["200"]


def test_an_undelivered_message_keeps_a_job_in_status_with_its_problem(store):
    store.create(finished("40", NOW - RECENT - 60, DeliveryStatus.GONE, outbox=[
        entry(DeliveryStatus.GONE, last_error="webhook deleted or invalid (HTTP 404: Unknown Webhook)")]))
    rows, _ = collect_status(store, CountingSlurm(), include_old=False)
    [row] = rows
    assert row.notification == "gone" and "webhook gone" in row.problem and "HTTP 404" in row.problem
    assert "jobmon recover" in row.problem and store.current_ids() == ["40"]


def test_an_unreadable_record_is_one_row_and_the_others_still_show(store):
    store.create(running("50"))
    store.create(running("51"))
    with open(store.path("51"), "w", encoding="utf-8") as handle:
        handle.write("{ half a file")
    rows, _ = collect_status(store, CountingSlurm(), include_old=False)
    by_id = rows_by_id(rows)
    assert by_id["51"].monitor == "UNREADABLE" and "unreadable" in by_id["51"].problem
    assert by_id["50"].monitor == Health.DEAD.value


def test_an_unreachable_controller_is_a_warning_and_the_last_known_states_are_shown(store):
    from core.state.model import Observation

    store.create(running("60", observation=Observation(state=JobState.PENDING, seen_at=time.time() - 120)))
    rows, warning = collect_status(store, CountingSlurm(error=SlurmUnavailable("squeue failed: timeout")),
                                   include_old=False)
    assert "squeue unavailable" in warning and rows[0].state == "PENDING"
    assert warning.endswith("they are 2m old")
    store.create(running("61", observation=Observation(state=JobState.RUNNING, seen_at=time.time() - 5)))
    _, warning = collect_status(store, CountingSlurm(error=SlurmUnavailable("down")), include_old=False)
    assert warning.endswith("they are 5s to 2m old")


def test_status_refreshes_a_shared_snapshot_older_than_a_few_seconds_once(store, tmp_path, monkeypatch, capsys):
    import jobmon
    from core.slurm.client import Slurm
    from core.slurm.shared import SharedSlurm

    store.create(running("62"))
    calls = []

    def user_queue(self):
        calls.append(time.time())
        return {"62": QueueEntry("62", JobState.RUNNING, "None")}

    class Monitor:  # the snapshot a monitor polling every 30 s took 10 s ago, when job 62 was PENDING
        def query_user_queue(self):
            return {"62": QueueEntry("62", JobState.PENDING, "Priority")}

    SharedSlurm(Monitor(), store.folder, max_age=30, clock=lambda: time.time() - 10).queue_snapshot()
    monkeypatch.setattr(Slurm, "query_user_queue", user_queue)
    monkeypatch.setenv("JOBMON_HOME", str(tmp_path))
    monkeypatch.delenv("JOBMON_POLL_INTERVAL", raising=False)
    assert jobmon.main(["status"]) == 0
    assert len(calls) == 1 and "RUNNING" in capsys.readouterr().out
    assert jobmon.main(["status"]) == 0  # fresh now: shown from the snapshot, no second squeue
    assert len(calls) == 1 and "RUNNING" in capsys.readouterr().out
    monitor_view = SharedSlurm(Monitor(), store.folder, max_age=30)  # and the monitors use the new snapshot
    assert monitor_view.query_queue(["62"])["62"].state is JobState.RUNNING


def test_a_chain_row_names_its_attempt_and_level(store):
    from core.state.model import Level

    chain = Chain(current_job="71", max_retries=3, level=Level(mem="4G"), round=2,
                  attempts=[Attempt("70"), Attempt("71", round=2)])
    store.create(running("70", chain=chain))
    rows, _ = collect_status(store, CountingSlurm(), include_old=False)
    assert rows[0].cells()[0] == "70->71" and "(attempt 2 of 4, 4G)" in rows[0].state


# -- recover -----------------------------------------------------------------------------------
@pytest.fixture
def started(monkeypatch) -> List[str]:
    calls: List[str] = []

    def start(paths, job_id, *, allow_restart=False):
        assert allow_restart
        calls.append(job_id)
        return 4321

    monkeypatch.setattr(control, "start_monitor", start)
    return calls


def paths_of(store: StateStore) -> Paths:
    import os

    return Paths(os.path.dirname(store.folder))


def test_recover_restarts_a_monitor_killed_a_moment_ago(store, started):
    store.create(running("80"))  # pid gone, heartbeat fresh: the two-minute wait is gone
    actions = control.recover_all(paths_of(store), store, CONFIG)
    assert started == ["80"] and actions == ["job 80: monitor restarted (daemon pid 4321)"]


def test_recover_leaves_alive_starting_cancelled_and_done_monitors_alone(store, started):
    import os

    store.create(running("81", monitor=MonitorInfo(pid=os.getpid(), host=this_host())))  # alive
    starting = MonitorInfo(pid=0, host=this_host(), heartbeat_deadline=time.time() + 30)  # claimed, no pid yet
    store.create(running("82", monitor=starting))
    store.create(running("83", monitor=MonitorInfo(pid=gone_pid(), host=this_host(), stop_requested=True)))
    store.create(finished("84", NOW - 60))
    assert control.recover_all(paths_of(store), store, CONFIG) == [] and started == []


def test_recover_sends_again_what_a_deleted_webhook_refused(store, started):
    store.create(finished("85", NOW - 60, DeliveryStatus.GONE, outbox=[entry(DeliveryStatus.GONE)]))
    actions = control.recover_all(paths_of(store), store, CONFIG)
    assert actions == ["job 85: re-sending its notification (daemon pid 4321)"]
    delivery = store.load("85").outbox[0].deliveries["discord-error"]
    assert delivery.status is DeliveryStatus.PENDING


def test_recover_delivers_what_a_killed_monitor_left_pending(store, started):
    store.create(finished("86", NOW - 60, DeliveryStatus.SENDING, outbox=[entry(DeliveryStatus.SENDING)]))
    assert control.recover_all(paths_of(store), store, CONFIG) == [
        "job 86: delivering its pending notification (daemon pid 4321)"]


def test_recover_routes_a_message_whose_sink_left_the_config_to_the_configured_one(store, started):
    store.create(finished("87", NOW - 60, DeliveryStatus.GONE,
                          outbox=[entry(DeliveryStatus.GONE, sink="discord-old")]))
    control.recover_all(paths_of(store), store, CONFIG)
    assert set(store.load("87").outbox[0].deliveries) == {"discord-error"}


def test_recover_skips_an_unreadable_record_and_says_so(store, started):
    store.create(running("88"))
    with open(store.path("88"), "w", encoding="utf-8") as handle:
        handle.write("not json")
    [line] = control.recover_all(paths_of(store), store, CONFIG)
    assert line.startswith("job 88: skipped, state file") and started == []


def test_cancel_requests_the_stop_and_scancels_every_job_it_answers_for(store):
    store.create(running("90", chain=Chain(current_job="91", round=2,
                                           attempts=[Attempt("90"), Attempt("91", round=2)])))

    class Recording:
        cancelled: List[str] = []

        def cancel(self, job_id):
            self.cancelled.append(job_id)

    slurm = Recording()
    done = control.cancel(store, store.load("90"), slurm)  # type: ignore[arg-type]
    assert done.record.cancelled and done.record.monitor.stopped_at > 0 and done.cancelled_jobs == ("91",)
    assert slurm.cancelled == ["91"]


# -- history and report ------------------------------------------------------------------------
def test_history_joins_the_summaries_and_the_current_records(store):
    store.create(finished("300", NOW - RECENT - 60))
    store.create(running("301"))
    collect_status(store, CountingSlurm(), include_old=False)  # 300 leaves the index for the history
    rows = [history_row(entry) for entry in history_entries(store, 0.0)]
    assert [(row["job_id"], row["state"], row["causes"]) for row in rows] == [
        ("300", "FAILED", "cuda_oom"), ("301", "UNKNOWN", "")]
    assert [e.job_id for e in history_entries(store, NOW - 1000)] == ["301"]


def test_a_record_is_found_by_the_id_of_any_attempt_of_its_chain_even_after_it_left_the_index(store):
    chain = Chain(current_job="402", attempts=[Attempt("400"), Attempt("401"), Attempt("402")])
    store.create(finished("400", NOW - RECENT - 60, chain=chain))
    assert find_record(store, "401").job_id == "400"
    collect_status(store, CountingSlurm(), include_old=False)
    assert store.current_ids() == [] and find_record(store, "402").job_id == "400"


def test_status_answers_even_when_the_history_cannot_be_written(store, monkeypatch):
    from core.state.history import History

    store.create(finished("500", NOW - RECENT - 60))
    store.create(running("501"))

    def full_disk(self, entries):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(History, "append", full_disk)
    rows, warning = collect_status(store, CountingSlurm(), include_old=False)
    assert [row.job_id for row in rows] == ["501"] and store.current_ids() == ["500", "501"]  # tried again later


def test_a_message_with_no_sink_is_shown_and_recover_starts_no_daemon_for_it(store, started):
    unrouted = OutboxEntry("510:final:1", EventKind.FINAL, Route.ERROR, created_at=1.0, routed_at=1.0)
    store.create(finished("510", NOW - 60, outbox=[unrouted]))
    rows, _ = collect_status(store, CountingSlurm(), include_old=False)
    assert rows[0].notification == "no sink" and "no sink is configured for the error route" in rows[0].problem
    [action] = control.recover_all(paths_of(store), store, Config())
    assert action.startswith("job 510: not sent: final message: no sink is configured") and started == []
    control.recover_all(paths_of(store), store, CONFIG)  # once a webhook is configured, it goes there
    assert started == ["510"] and list(store.load("510").outbox[0].deliveries) == ["discord-error"]


def test_recover_goes_on_when_one_record_is_locked(store, started, monkeypatch):
    from core.errors import StateLocked

    store.create(finished("520", NOW - 60, DeliveryStatus.GONE, outbox=[entry(DeliveryStatus.GONE)]))
    store.create(running("521"))
    original = StateStore.update

    def locked_520(self, job_id, change):
        if job_id == "520":
            raise StateLocked("state of job 520 is locked by another jobmon process; try again")
        return original(self, job_id, change)

    monkeypatch.setattr(StateStore, "update", locked_520)
    actions = control.recover_all(paths_of(store), store, CONFIG)
    assert actions[0] == "job 520: skipped, state of job 520 is locked by another jobmon process; try again"
    assert started == ["521"]
