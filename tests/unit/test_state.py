"""core.state.store: JSON and store round trips, schema checks, create/update, atomic writes, locking
across processes. The index and the history are in test_store_index.py, the migration in test_migrate.py."""
from __future__ import annotations

import json
import multiprocessing
import os
import stat

import pytest

from core import files, locking
from core.errors import StateError
from core.files import atomic_write_text
from core.notify.outbox import DeliveryStatus
from core.slurm.model import JobState
from core.state import store as state_store
from core.state.codec import encode
from core.state.model import SCHEMA_VERSION, Chain, FinalRecord, JobRecord, MonitorInfo, Observation
from core.state.store import StateStore, format_record, job_sort_key, parse_record
from tests.support import full_record


def temp_files(folder) -> list:
    return [name for name in os.listdir(folder) if name.startswith(".tmp")]


def write_json(path, data) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle)


# --- round trips ----------------------------------------------------------------------------------

@pytest.mark.parametrize("record", [full_record(), JobRecord(job_id="7_4")], ids=["full", "defaults"])
def test_job_record_round_trip_through_json(record):
    text = format_record(record)
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION
    back = parse_record(text)
    assert back == record
    assert back is not record


def test_job_record_round_trip_through_the_store(tmp_path):
    store = StateStore(str(tmp_path))
    record = full_record()
    store.create(record)
    loaded = store.load("123")
    assert loaded == record
    assert loaded.final.max_rss_bytes == 58180 * 1024
    assert loaded.outbox[0].message.fields == record.outbox[0].message.fields
    assert loaded.chain.pending.submissions[0].sbatch_started == 9.75
    assert loaded.observation.state is JobState.RUNNING


def test_the_file_is_readable_json_with_enums_by_value(tmp_path):
    store = StateStore(str(tmp_path))
    store.create(full_record())
    with open(store.path("123"), encoding="utf-8") as handle:
        data = json.load(handle)
    assert data == encode(full_record())
    assert data["final"]["state"] == "FAILED" and data["chain"]["attempts"][1]["state"] is None


def test_unknown_keys_are_ignored_at_every_level():
    data = encode(full_record())
    data["added_later"] = {"anything": 1}
    data["monitor"]["new_monitor_field"] = "x"
    data["observation"]["new"] = 1
    data["final"]["new_final_field"] = [1, 2]
    data["log_options"]["new"] = ""
    data["tasks"][0]["new"] = None
    data["findings"][0]["new"] = 3
    data["chain"]["new"] = 1
    data["chain"]["attempts"][0]["new"] = 1
    data["chain"]["attempts"][0]["resources"]["new"] = 1
    data["chain"]["pending"]["new"] = 1
    data["chain"]["pending"]["submissions"][0]["new"] = 1
    data["chain"]["rounds"][0]["new"] = 1
    data["chain"]["tasks"]["0"]["new"] = 1
    data["chain"]["tasks"]["0"]["level"]["new"] = 1
    data["outbox"][0]["new"] = 1
    data["outbox"][0]["message"]["new"] = 1
    data["outbox"][0]["message"]["fields"][0]["new"] = 1
    data["outbox"][0]["deliveries"]["discord-error"]["new"] = 1
    assert parse_record(json.dumps(data)) == full_record()


def test_missing_keys_take_defaults():
    record = parse_record(json.dumps({"job_id": "5", "schema_version": 2, "name": "n", "monitor": {"pid": 3},
                                      "final": {"state": "FAILED"}, "chain": {}}))
    assert record == JobRecord(job_id="5", name="n", monitor=MonitorInfo(pid=3),
                               final=FinalRecord(state=JobState.FAILED), chain=Chain())
    assert record.observation == Observation() and record.outbox == []


def test_newer_schema_is_refused_with_a_clear_state_error(tmp_path):
    data = encode(full_record())
    data["schema_version"] = SCHEMA_VERSION + 1
    write_json(tmp_path / "123.json", data)
    with pytest.raises(StateError) as caught:
        StateStore(str(tmp_path)).load("123")
    message = str(caught.value)
    assert "123.json" in message and "unreadable" in message
    assert f"schema version {SCHEMA_VERSION + 1} is newer than this jobmon understands" in message
    assert "upgrade jobmon" in message


@pytest.mark.parametrize("data", [[], "x", None, 5, {}, {"job_id": 5}, {"name": "no id"},
                                  {"job_id": "5", "schema_version": "2"},
                                  {"job_id": "5", "schema_version": 2, "monitor": []},
                                  {"job_id": "5", "schema_version": 2, "final": {"state": "DONE"}}])
def test_not_a_record_is_refused(tmp_path, data):
    with pytest.raises(ValueError):
        parse_record(json.dumps(data))
    write_json(tmp_path / "5.json", data)
    with pytest.raises(StateError, match=r"5\.json is unreadable"):
        StateStore(str(tmp_path)).load("5")


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe\x00garbage", b"[" * 100_000 + b"]" * 100_000])
def test_a_file_that_is_not_json_is_unreadable(tmp_path, content):
    (tmp_path / "5.json").write_bytes(content)
    with pytest.raises(StateError, match=r"5\.json is unreadable"):
        StateStore(str(tmp_path)).load("5")


def test_load_of_a_job_without_state(tmp_path):
    with pytest.raises(StateError, match="job 42 is not monitored"):
        StateStore(str(tmp_path)).load("42")


@pytest.mark.parametrize(("job_ids", "ordered"), [
    (["10", "2", "10_3", "10_12", "1_2", "100"], ["1_2", "2", "10", "10_3", "10_12", "100"]),
])
def test_job_sort_key_is_numeric(job_ids, ordered):
    assert sorted(job_ids, key=job_sort_key) == ordered


# --- create / update ------------------------------------------------------------------------------

def test_create_refuses_a_duplicate_and_keeps_the_first(tmp_path):
    store = StateStore(str(tmp_path))
    store.create(JobRecord(job_id="9", name="first"))
    with pytest.raises(StateError, match="job 9 is already monitored"):
        store.create(JobRecord(job_id="9", name="second"))
    assert store.load("9").name == "first"


def test_create_refuses_to_overwrite_a_v1_file(tmp_path):
    (tmp_path / "9.json").write_text('{"job_id": "9", "schema_version": 1, "name": "old"}')
    store = StateStore(str(tmp_path))
    with pytest.raises(StateError, match="already monitored"):
        store.create(JobRecord(job_id="9", name="new"))
    assert store.load("9").name == "old"


def impatient(monkeypatch):
    """Record locks that give up at once instead of after LOCK_TIMEOUT (no real waiting in unit tests)."""
    lock = StateStore.lock
    monkeypatch.setattr(StateStore, "lock", lambda self, job_id, timeout=0.0: lock(self, job_id, 0.0))


def test_create_while_another_process_holds_the_lock(tmp_path, monkeypatch):
    store = StateStore(str(tmp_path))
    store.ensure_layout()
    with store.lock("9"):
        impatient(monkeypatch)
        with pytest.raises(StateError, match="locked by another jobmon process"):
            StateStore(str(tmp_path)).create(JobRecord(job_id="9"))
    assert not store.exists("9")


def test_update_applies_the_change_and_returns_the_saved_record(tmp_path):
    store = StateStore(str(tmp_path))
    store.create(full_record("9"))

    def change(record):
        record.monitor.heartbeat += 1
        record.outbox[0].deliveries["discord-error"].status = DeliveryStatus.DELIVERED

    returned = store.update("9", change)
    loaded = store.load("9")
    assert loaded == returned
    assert loaded.monitor.heartbeat == 3.0
    assert loaded.outbox[0].deliveries["discord-error"].status is DeliveryStatus.DELIVERED


def test_update_that_crashes_leaves_the_file_unchanged(tmp_path):
    store = StateStore(str(tmp_path))
    store.create(full_record("9"))
    before = (tmp_path / "9.json").read_bytes()

    def change(record):
        record.name = "half-changed"
        record.outbox[0].deliveries["discord-error"].status = DeliveryStatus.SENDING
        raise RuntimeError("crash in the middle of a change")

    with pytest.raises(RuntimeError, match="crash"):
        store.update("9", change)
    assert (tmp_path / "9.json").read_bytes() == before
    assert temp_files(tmp_path) == []
    # the lock was released: a later update works
    store.update("9", lambda r: setattr(r, "name", "later"))
    assert store.load("9").name == "later"


def test_update_while_another_process_holds_the_lock(tmp_path, monkeypatch):
    store = StateStore(str(tmp_path))
    store.create(JobRecord(job_id="9"))
    before = (tmp_path / "9.json").read_bytes()
    with store.lock("9"):
        impatient(monkeypatch)
        with pytest.raises(StateError, match="locked by another jobmon process"):
            StateStore(str(tmp_path)).update("9", lambda r: setattr(r, "name", "x"))
    assert (tmp_path / "9.json").read_bytes() == before


def test_update_of_an_unknown_job_is_a_state_error(tmp_path):
    with pytest.raises(StateError, match="not monitored"):
        StateStore(str(tmp_path)).update("404", lambda r: None)
    assert not (tmp_path / "404.json").exists()


def test_update_of_a_newer_schema_leaves_it_alone(tmp_path):
    data = encode(JobRecord(job_id="9"))
    data["schema_version"] = SCHEMA_VERSION + 1
    write_json(tmp_path / "9.json", data)
    before = (tmp_path / "9.json").read_bytes()
    with pytest.raises(StateError, match="newer"):
        StateStore(str(tmp_path)).update("9", lambda r: setattr(r, "name", "x"))
    assert (tmp_path / "9.json").read_bytes() == before


def test_update_of_a_v1_file_writes_schema_2(tmp_path):
    (tmp_path / "9.json").write_text('{"job_id": "9", "schema_version": 1, "done": true, "name": "old"}')
    store = StateStore(str(tmp_path))
    store.update("9", lambda r: setattr(r, "name", "new"))
    data = json.loads((tmp_path / "9.json").read_text())
    assert (data["schema_version"], data["name"]) == (2, "new")
    assert "done" not in data


def test_save_crash_before_replace_keeps_the_old_file(tmp_path, monkeypatch):
    store = StateStore(str(tmp_path))
    store.create(JobRecord(job_id="9", name="old"))
    before = (tmp_path / "9.json").read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(StateError, match="cannot write state file .*9.json: No space left"):
        store.update("9", lambda r: setattr(r, "name", "new"))
    monkeypatch.undo()
    assert (tmp_path / "9.json").read_bytes() == before
    assert temp_files(tmp_path) == []


def test_the_record_file_is_private(tmp_path):
    old_umask = os.umask(0)
    try:
        store = StateStore(str(tmp_path))
        store.create(JobRecord(job_id="9"))
        store.update("9", lambda r: setattr(r, "name", "x"))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(tmp_path / "9.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "active").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "active" / "9").st_mode) == 0o600
    assert temp_files(tmp_path) == []


# --- atomic_write_text ----------------------------------------------------------------------------

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


def test_atomic_write_text_replaces_rather_than_rewrites(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with open(target, encoding="utf-8") as reader:  # a reader that opened the old file keeps seeing it whole
        atomic_write_text(str(target), "new")
        assert reader.read() == "old"
    assert target.read_text() == "new"


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


def test_atomic_write_text_does_not_follow_a_symlink_at_the_target(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "x.json").symlink_to(victim)
    atomic_write_text(str(tmp_path / "x.json"), "new")
    assert victim.read_text() == "keep"
    assert not (tmp_path / "x.json").is_symlink() and (tmp_path / "x.json").read_text() == "new"


def test_atomic_write_text_unicode(tmp_path):
    target = tmp_path / "u.json"
    atomic_write_text(str(target), "naïve — ✓")
    assert target.read_text(encoding="utf-8") == "naïve — ✓"


# --- concurrency ----------------------------------------------------------------------------------

def _increment_worker(folder: str, job_id: str, times: int, lean: bool, start) -> None:
    start.wait(30)
    if lean:  # a daemon's lock (core.locking's flock); the others take filelock's, like the CLI
        locking.use_lean_locks()
    store = StateStore(folder)  # built after fork: lock objects do not survive fork

    def bump(record):
        record.monitor.heartbeat += 1
        record.outbox[0].deliveries["discord-error"].attempts += 1

    for _ in range(times):
        store.update(job_id, bump)


def test_daemons_and_cli_processes_updating_one_record_lose_nothing(tmp_path):
    record = full_record("77")
    record.monitor.heartbeat = 0.0
    record.outbox[0].deliveries["discord-error"].attempts = 0
    StateStore(str(tmp_path)).create(record)
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
    loaded = StateStore(str(tmp_path)).load("77")
    assert loaded.monitor.heartbeat == 100.0
    assert loaded.outbox[0].deliveries["discord-error"].attempts == 100
    assert temp_files(tmp_path) == []


class _UnwritableLock:
    """The lock file of a read-only or full state folder cannot even be created."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path

    def __enter__(self):
        raise PermissionError(13, "Permission denied", self.path)

    def __exit__(self, *exc_info) -> None:
        pass


@pytest.mark.parametrize("action", ["create", "update"])
def test_a_lock_that_cannot_be_created_is_a_state_error(tmp_path, monkeypatch, action):
    store = StateStore(str(tmp_path))
    store.create(JobRecord(job_id="9"))
    before = (tmp_path / "9.json").read_bytes()
    monkeypatch.setattr(state_store, "file_lock", _UnwritableLock)
    with pytest.raises(StateError, match="cannot lock state of job (9|10): Permission denied"):
        if action == "create":
            store.create(JobRecord(job_id="10"))
        else:
            store.update("9", lambda r: setattr(r, "name", "x"))
    assert (tmp_path / "9.json").read_bytes() == before and not store.exists("10")
