"""`jobmon watch --all` (core/daemon/watchall.py): which jobs of the shared snapshot it takes, its grace
period, and the one claim it shares with `submit` and `watch`: never two records, never two monitors."""
from __future__ import annotations

import os
import time

import pytest

from core.chain.submitter import create_or_adopt
from core.daemon import control, watchall
from core.daemon.liveness import Health, process_start_ticks, this_host
from core.daemon.service import ServiceRecord, save_service
from core.daemon.watchall import (
    Watcher,
    WatchFilter,
    base_job,
    known_jobs,
    make_filter,
    parse_filter_args,
    select_new,
    submitted_at,
)
from core.errors import JobmonError, RecordExists
from core.notify.events import EventKind, Route
from core.notify.outbox import OutboxEntry
from core.slurm.model import JobState, QueueEntry
from core.slurm.parse import parse_squeue
from core.slurm.shared import QueueSnapshot
from core.state.model import Attempt, Chain, JobRecord, MonitorInfo, RecordSource
from core.state.store import StateStore
from tests.support import HEADERS, read_text

T0 = time.mktime(time.strptime("2026-11-29T01:34:00", "%Y-%m-%dT%H:%M:%S"))


def row(job_id: str, name: str, partition: str = "debug", submitted: str = "2026-11-29T01:34:33") -> QueueEntry:
    return QueueEntry(job_id, JobState.PENDING, "Priority", submit_time=submitted, partition=partition, name=name)


def entries(*rows: QueueEntry):
    return {entry.job_id: entry for entry in rows}


@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    store = StateStore(str(folder))
    store.ensure_layout()
    return store


def test_base_job_and_submit_time():
    assert [base_job(j) for j in ("123", "123_4", "123_[5-9%2]", "123+1")] == ["123"] * 4
    assert submitted_at("2026-11-29T01:34:33") == T0 + 33
    assert submitted_at("N/A") is None and submitted_at("") is None


def test_the_real_capture_selects_by_name_partition_and_time():
    snapshot = entries(*parse_squeue(read_text(HEADERS, "squeue_watch.txt")))
    assert select_new(snapshot, make_filter("", "^sweep-", T0), set()) == ["1266"]
    assert select_new(snapshot, make_filter("", "", T0), set()) == ["1266", "1267"]  # the array once, by its id
    assert select_new(snapshot, make_filter("debug", "oth", T0), set()) == ["1267"]
    assert select_new(snapshot, make_filter("gpu,big", "", T0), set()) == []
    assert select_new(snapshot, make_filter("", "", T0 + 60), set()) == [], "submitted before the watcher's start"
    assert select_new(snapshot, make_filter("", "^sweep", T0 + 33.9), set()) == ["1266"], "squeue's whole seconds"
    assert select_new(snapshot, make_filter("", "", T0), {"1266"}) == ["1267"]


def test_filters_round_trip_through_the_arguments_of_the_detached_watcher():
    wanted = make_filter("gpu, debug", "^sweep-(a|b)", 1234.5)
    assert parse_filter_args(wanted.as_args()) == wanted == WatchFilter(("gpu", "debug"), "^sweep-(a|b)", 1234.5)
    with pytest.raises(JobmonError, match="regular expression"):
        make_filter("", "sweep-(", 0)


def test_known_jobs_include_every_attempt_of_a_chain(store):
    store.create(JobRecord("100", chain=Chain(current_job="102", attempts=[Attempt("100"), Attempt("102")])))
    store.create(JobRecord("200"))
    assert known_jobs(store) == {"100", "102", "200"}


class Attacher:
    def __init__(self, store: StateStore) -> None:
        self.store, self.calls = store, []

    def __call__(self, job_id: str) -> str:
        self.calls.append(job_id)
        self.store.create(JobRecord(job_id, source=RecordSource.WATCH_ALL))
        return "monitor started"


def test_the_watcher_waits_its_grace_then_attaches_each_job_once(store):
    snapshot = QueueSnapshot(T0, entries(row("7", "sweep-a"), row("8", "sweep-b"), row("9", "other")))
    attach = Attacher(store)
    watcher = Watcher(store, lambda: snapshot, make_filter("", "^sweep-", T0), attach, grace=5.0)
    assert watcher.step(T0 + 40) == [] and attach.calls == []
    assert watcher.step(T0 + 45) == ["job 7: monitor started", "job 8: monitor started"]
    assert watcher.step(T0 + 50) == [] and attach.calls == ["7", "8"]


def test_a_job_submit_recorded_first_is_left_to_its_monitor(store):
    snapshot = QueueSnapshot(T0, entries(row("7", "sweep-a")))
    attach = Attacher(store)
    watcher = Watcher(store, lambda: snapshot, make_filter("", "", T0), attach, grace=0.0)
    store.create(JobRecord("7", source=RecordSource.SUBMIT))
    assert watcher.step(T0 + 50) == [] and attach.calls == []


def test_losing_the_create_race_is_no_error_and_no_second_try(store):
    snapshot = QueueSnapshot(T0, entries(row("7", "sweep-a")))

    def late_attach(job_id: str) -> str:  # submit created the record between our look and our create
        raise RecordExists(f"job {job_id} is already monitored")

    watcher = Watcher(store, lambda: snapshot, make_filter("", "", T0), late_attach, grace=0.0)
    assert watcher.step(T0 + 50) == ["job 7: monitored already"]
    assert watcher.step(T0 + 60) == []


def test_a_failed_squeue_attaches_nothing(store):
    attach = Attacher(store)
    watcher = Watcher(store, lambda: QueueSnapshot(T0, {}, "squeue failed: timeout"), make_filter("", "", 0), attach)
    assert "squeue unavailable" in watcher.step(T0)[0] and attach.calls == []


def test_submit_adopts_the_watchers_record_keeping_its_monitor_and_outbox(store):
    found = JobRecord("7", source=RecordSource.WATCH_ALL, name="sweep-a",
                      monitor=MonitorInfo(pid=4242, host="vm", heartbeat=5.0),
                      outbox=[OutboxEntry("7:start:1", EventKind.START, Route.SUCCESS, created_at=1.0)])
    store.create(found)
    submitted = JobRecord("7", source=RecordSource.SUBMIT, name="sweep-a", script="/w/run.sh", sbatch_args=["-p", "x"],
                          chain=Chain(max_retries=2, current_job="7", attempts=[Attempt("7")]))
    assert create_or_adopt(store, submitted) is True
    record = store.load("7")
    assert record.source is RecordSource.SUBMIT and record.script == "/w/run.sh" and record.chain.max_retries == 2
    assert record.monitor.pid == 4242 and [e.key for e in record.outbox] == ["7:start:1"]


def test_submit_never_adopts_a_record_of_submit_or_watch(store):
    store.create(JobRecord("7", source=RecordSource.WATCH))
    with pytest.raises(RecordExists):
        create_or_adopt(store, JobRecord("7", source=RecordSource.SUBMIT))
    assert create_or_adopt(store, JobRecord("8")) is False


def test_recover_restarts_a_dead_watcher_with_its_filters_and_leaves_a_stopped_one(tmp_path, monkeypatch):
    from core.config import Paths

    paths = Paths(str(tmp_path))
    paths.ensure()
    started = []

    def fake_start(paths_, wanted):
        started.append(wanted)
        return ServiceRecord(pid=99)

    monkeypatch.setattr(watchall, "start_watcher", fake_start)
    wanted = make_filter("debug", "^sweep-", 1000.0)
    dead = ServiceRecord(pid=0, host=this_host(), args=wanted.as_args())
    save_service(watchall.watch_path(paths.state), dead)
    assert control._recover_watcher(paths, time.time()) == "watcher restarted (pid 99)"
    assert started == [wanted]
    dead.stopped_at = 1.0
    save_service(watchall.watch_path(paths.state), dead)
    assert control._recover_watcher(paths, time.time()) is None
    me = ServiceRecord(pid=os.getpid(), start_ticks=process_start_ticks(os.getpid()) or 0, host=this_host())
    save_service(watchall.watch_path(paths.state), me)
    assert watchall.watcher_health(me, time.time()) is Health.ALIVE
    assert control._recover_watcher(paths, time.time()) is None and len(started) == 1
