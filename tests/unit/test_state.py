"""core.state.store: JSON round trip, schema checks, atomic writes, locking across processes."""
from __future__ import annotations

import json
import multiprocessing
import os
import stat

import pytest

from core import locking
from core.errors import StateError
from core.state import store as state_module
from core.state.store import (
    SCHEMA_VERSION,
    FinalRecord,
    JobRecord,
    MonitorInfo,
    NotificationStatus,
    Observation,
    StateStore,
    atomic_write_text,
)


def full_record(job_id: str = "123") -> JobRecord:
    return JobRecord(
        job_id=job_id,
        name="train",
        cluster="localcluster",
        user="alice",
        script="/home/alice/job.sh",
        sbatch_args=["--mem=1G", "-p", "debug"],
        script_args=["a b", "--lr=0.1"],
        submit_dir="/home/alice",
        stdout_path="/home/alice/o.out",
        stderr_path="/home/alice/e.err",
        created_at=1700000000.25,
        source="watch",
        monitor=MonitorInfo(pid=4242, start_ticks=99, host="vm", started_at=1.0, heartbeat=2.0,
                            heartbeat_deadline=3.5, stop_requested=True),
        observation=Observation(state="RUNNING", reason="None", seen_at=4.0, controller_down_since=5.0,
                                accounting_down_since=6.0, final_seen_at=7.0, restarts=1, last_error="x"),
        final=FinalRecord(state="FAILED", state_text="FAILED", exit_code=3, signal=0, elapsed="00:00:04",
                          time_limit="01:00:00", max_rss_bytes=58180 * 1024, req_mem="1G", nodes="vm",
                          partition="debug", work_dir="/home/alice", start="s", end="e", reason="NonZeroExitCode",
                          source="sacct", incomplete=False, decided_at=8.0),
        categories=["cuda_oom", "python_traceback"],
        findings=[{"category": "cuda_oom", "line_no": 3, "line": "CUDA out of memory", "hint": "smaller batch"}],
        excerpt="line 1\nline 2",
        notification=NotificationStatus(status="sent", channel="error", attempts=2, last_error="",
                                        sent_at=9.0, message_id="m1", claimed_by="vm:4242"),
        done=True,
    )


def temp_files(folder) -> list:
    return [name for name in os.listdir(folder) if name.startswith(".tmp")]


# --- JobRecord --------------------------------------------------------------------------

@pytest.mark.parametrize("record", [full_record(), JobRecord(job_id="7_4")], ids=["full", "defaults"])
def test_job_record_round_trip_through_json(record):
    data = json.loads(json.dumps(record.to_dict()))
    back = JobRecord.from_dict(data)
    assert back == record
    assert isinstance(back.monitor, MonitorInfo)
    assert isinstance(back.observation, Observation)
    assert isinstance(back.notification, NotificationStatus)
    assert back.final is None or isinstance(back.final, FinalRecord)


def test_job_record_round_trip_through_store(tmp_path):
    store = StateStore(str(tmp_path))
    record = full_record()
    store.create(record)
    loaded = store.load("123")
    assert loaded == record
    assert isinstance(loaded.final, FinalRecord)
    assert loaded.final.max_rss_bytes == 58180 * 1024


def test_unknown_keys_are_ignored_at_every_level():
    data = full_record().to_dict()
    data["added_in_v2"] = {"anything": 1}
    data["monitor"]["new_monitor_field"] = "x"
    data["final"]["new_final_field"] = [1, 2]
    data["notification"]["new_notification_field"] = True
    assert JobRecord.from_dict(data) == full_record()


def test_missing_keys_take_defaults():
    record = JobRecord.from_dict({"job_id": "5", "name": "n", "monitor": {"pid": 3}})
    assert record == JobRecord(job_id="5", name="n", monitor=MonitorInfo(pid=3))


def test_newer_schema_version_is_refused():
    data = full_record().to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="newer"):
        JobRecord.from_dict(data)


@pytest.mark.parametrize(
    "data",
    [[], "x", None, {}, {"job_id": 5}, {"job_id": "5", "schema_version": "1"}],
)
def test_not_a_record_is_refused(data):
    with pytest.raises(ValueError):
        JobRecord.from_dict(data)


def test_store_load_of_newer_schema_is_state_error(tmp_path):
    data = full_record().to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "123.json").write_text(json.dumps(data))
    with pytest.raises(StateError, match="unreadable"):
        StateStore(str(tmp_path)).load("123")


def test_store_load_missing_job(tmp_path):
    with pytest.raises(StateError, match="not monitored"):
        StateStore(str(tmp_path)).load("42")


# --- create / update --------------------------------------------------------------------

def test_create_refuses_a_duplicate_and_keeps_the_first(tmp_path):
    store = StateStore(str(tmp_path))
    store.create(JobRecord(job_id="9", name="first"))
    with pytest.raises(StateError, match="already monitored"):
        store.create(JobRecord(job_id="9", name="second"))
    assert store.load("9").name == "first"


def test_update_applies_change_and_returns_saved_record(tmp_path):
    store = StateStore(str(tmp_path))
    store.create(JobRecord(job_id="9"))

    def change(record):
        record.notification.attempts += 1
        record.done = True

    returned = store.update("9", change)
    loaded = store.load("9")
    assert loaded == returned
    assert (loaded.notification.attempts, loaded.done) == (1, True)


def test_update_that_crashes_leaves_the_file_unchanged(tmp_path):
    store = StateStore(str(tmp_path))
    store.create(full_record("9"))
    before = (tmp_path / "9.json").read_bytes()

    def change(record):
        record.name = "half-changed"
        record.notification.status = "sending"
        raise RuntimeError("crash in the middle of a change")

    with pytest.raises(RuntimeError, match="crash"):
        store.update("9", change)
    assert (tmp_path / "9.json").read_bytes() == before
    assert temp_files(tmp_path) == []
    # the lock was released: a later update works
    store.update("9", lambda r: setattr(r, "name", "later"))
    assert store.load("9").name == "later"


def test_update_of_unknown_job_is_state_error(tmp_path):
    with pytest.raises(StateError):
        StateStore(str(tmp_path)).update("404", lambda r: None)
    assert not (tmp_path / "404.json").exists()


def test_save_crash_before_replace_keeps_old_file(tmp_path, monkeypatch):
    store = StateStore(str(tmp_path))
    store.create(JobRecord(job_id="9", name="old"))
    before = (tmp_path / "9.json").read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_module.os, "replace", broken_replace)
    with pytest.raises(StateError, match="No space left"):
        store.update("9", lambda r: setattr(r, "name", "new"))
    monkeypatch.undo()
    assert (tmp_path / "9.json").read_bytes() == before
    assert temp_files(tmp_path) == []


# --- atomic_write_text ------------------------------------------------------------------

def test_atomic_write_text_mode_0600_and_no_temp_files(tmp_path):
    old_umask = os.umask(0)
    try:
        target = tmp_path / "x.json"
        target.write_text("old")
        os.chmod(target, 0o644)
        atomic_write_text(str(target), '{"a": 1}')
    finally:
        os.umask(old_umask)
    assert target.read_text() == '{"a": 1}'
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["x.json"]


def test_atomic_write_text_honours_mode(tmp_path):
    target = tmp_path / "x.txt"
    atomic_write_text(str(target), "hello", mode=0o640)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640


def test_atomic_write_text_failure_leaves_no_temp_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("keeps the folder non-empty")
    with pytest.raises(OSError):
        atomic_write_text(str(target), "text")
    assert temp_files(tmp_path) == []
    assert target.is_dir()


def test_atomic_write_text_unicode(tmp_path):
    target = tmp_path / "u.json"
    atomic_write_text(str(target), "naïve — ✓")
    assert target.read_text(encoding="utf-8") == "naïve — ✓"


# --- job_ids / load_all -----------------------------------------------------------------

def test_job_ids_sorted_numerically_and_only_job_files(tmp_path):
    store = StateStore(str(tmp_path))
    for job_id in ("10", "2", "10_3", "10_12", "1_2", "100"):
        store.create(JobRecord(job_id=job_id))
    for other in ("notes.txt", ".tmp-abc.json", "10.lock", "10.monitor.lock", "abc.json", "5.json.bak"):
        (tmp_path / other).write_text("{}")
    assert store.job_ids() == ["1_2", "2", "10", "10_3", "10_12", "100"]


def test_job_ids_of_missing_folder(tmp_path):
    assert StateStore(str(tmp_path / "nope")).job_ids() == []


def test_load_all_reports_bad_files_and_still_loads_the_rest(tmp_path):
    store = StateStore(str(tmp_path))
    store.create(full_record("2"))
    store.create(JobRecord(job_id="10_3", name="task"))
    good = json.dumps(full_record("10").to_dict())
    (tmp_path / "10.json").write_text(good[: len(good) // 2])  # half-written
    newer = full_record("3").to_dict()
    newer["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "3.json").write_text(json.dumps(newer))
    (tmp_path / "4.json").write_text("")  # empty
    (tmp_path / "5.json").write_bytes(b"\xff\xfe\x00garbage")  # not even UTF-8

    results = list(store.load_all())
    assert [job_id for job_id, _, _ in results] == ["2", "3", "4", "5", "10", "10_3"]
    by_id = {job_id: (record, error) for job_id, record, error in results}
    assert by_id["2"] == (full_record("2"), "")
    assert by_id["10_3"][0].name == "task" and by_id["10_3"][1] == ""
    for bad in ("3", "4", "5", "10"):
        record, error = by_id[bad]
        assert record is None
        assert "unreadable" in error and f"{bad}.json" in error


# --- concurrency ------------------------------------------------------------------------

def _increment_worker(folder: str, job_id: str, times: int, lean: bool, start) -> None:
    start.wait(30)
    if lean:  # a daemon's lock (core.locking's flock); the others take filelock's, like the CLI
        locking.use_lean_locks()
    store = StateStore(folder)  # built after fork: lock objects do not survive fork

    def bump(record):
        record.notification.attempts += 1

    for _ in range(times):
        store.update(job_id, bump)


def test_daemons_and_cli_processes_updating_one_record_lose_nothing(tmp_path):
    StateStore(str(tmp_path)).create(JobRecord(job_id="77"))
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [
        context.Process(target=_increment_worker, args=(str(tmp_path), "77", 25, lean, start))
        for lean in (True, False, True, False)
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(120)
    for worker in workers:
        if worker.is_alive():
            worker.kill()
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert StateStore(str(tmp_path)).load("77").notification.attempts == 100
    assert temp_files(tmp_path) == []
