"""core.state.store's index of current records (`active/<job>`), retiring records into the history, the first
use of a schema-1 folder (ensure_layout), core.state.history, and JobRecord.is_current."""
from __future__ import annotations

import json
import os
import stat
import types
from dataclasses import replace

import pytest

from core.errors import StateError
from core.notify.events import EventKind, Route
from core.notify.outbox import DeliveryStatus, OutboxEntry, SinkDelivery
from core.slurm.model import JobState
from core.state import store as store_module
from core.state.history import History, HistoryEntry, month_of, summarize
from core.state.model import RECENT, Chain, FinalRecord, JobRecord, MonitorInfo, PendingRound
from core.state.store import ORPHAN_MARKER_AGE, StateStore
from tests.support import copy_v1_state, full_record, v1_data, v1_names

#: The evening the schema-1 fixtures were captured (2026-11-28, 21:32-21:41 UTC), a little after the last one.
EVENING = max(v1_data(name)["created_at"] for name in v1_names()) + 600
DAY = 86400.0
T = 1_795_000_000.0  # 2026-11-18
STILL_CURRENT_V1 = {"60", "61", "62", "65", "66", "69", "74"}  # pending chains, sending, gone, running
RETIRED_V1 = {"44", "46", "48", "49", "53", "55", "67", "68", "71", "72", "101"}


def clock(monkeypatch, now: float) -> None:
    """The store's clock (ensure_layout reads it to tell current records from finished ones)."""
    monkeypatch.setattr(store_module, "time", types.SimpleNamespace(time=lambda: now))


def marker(store: StateStore, job_id: str) -> str:
    return os.path.join(store.index, job_id)


def markers(store: StateStore) -> set:
    return set(os.listdir(store.index)) if os.path.isdir(store.index) else set()


def delivered(key: str = "1:final:1", status: DeliveryStatus = DeliveryStatus.DELIVERED) -> OutboxEntry:
    return OutboxEntry(key=key, kind=EventKind.FINAL, route=Route.SUCCESS, created_at=T, routed_at=T,
                       deliveries={"discord-success": SinkDelivery(status=status)})


def finished(job_id: str = "1", *, at: float = T, **changes) -> JobRecord:
    """A job that ended at `at` and whose message arrived."""
    record = JobRecord(job_id=job_id, created_at=at - 100, final=FinalRecord(state=JobState.COMPLETED, decided_at=at),
                       outbox=[delivered(f"{job_id}:final:1")])
    return replace(record, **changes)


# --- is_current -----------------------------------------------------------------------------------

def unrouted() -> OutboxEntry:
    return OutboxEntry(key="1:final:1", kind=EventKind.FINAL, route=Route.ERROR, created_at=T)


def no_sink() -> OutboxEntry:
    return OutboxEntry(key="1:final:1", kind=EventKind.FINAL, route=Route.ERROR, created_at=T, routed_at=T)


CANCELLED = MonitorInfo(stop_requested=True, stopped_at=T)
IS_CURRENT = [
    # (what, record, now, current)
    ("running", JobRecord("1", created_at=T - 100), T + 365 * DAY, True),
    ("ended an hour ago", finished(), T + 3600, True),
    ("ended just under a day ago", finished(), T + RECENT - 1, True),
    ("ended a day ago", finished(), T + RECENT, False),
    ("ended, no decision time: creation counts", finished(final=FinalRecord(decided_at=0.0)), T - 100 + RECENT, False),
    ("message waiting", finished(outbox=[delivered(status=DeliveryStatus.PENDING)]), T + 30 * DAY, True),
    ("message being sent", finished(outbox=[delivered(status=DeliveryStatus.SENDING)]), T + 30 * DAY, True),
    ("message failed", finished(outbox=[delivered(status=DeliveryStatus.FAILED)]), T + 30 * DAY, True),
    ("message not routed yet", finished(outbox=[unrouted()]), T + 30 * DAY, True),
    ("sink gone", finished(outbox=[delivered(status=DeliveryStatus.GONE)]), T + 30 * DAY, True),
    ("no sink configured", finished(outbox=[no_sink()]), T + 30 * DAY, True),
    ("one of two delivered", finished(outbox=[delivered(), delivered("1:x:1", DeliveryStatus.PENDING)]),
     T + 30 * DAY, True),
    ("no message at all", finished(outbox=[]), T + RECENT, False),
    ("chain decision pending", finished(chain=Chain(pending=PendingRound(round=2, decided_at=T))), T + 30 * DAY,
     True),
    ("cancelled an hour ago", JobRecord("1", created_at=T - 100, monitor=CANCELLED), T + 3600, True),
    ("cancelled a day ago", JobRecord("1", created_at=T - 100, monitor=CANCELLED), T + RECENT, False),
    ("cancelled a day ago with a message waiting",
     finished(monitor=CANCELLED, outbox=[delivered(status=DeliveryStatus.PENDING)]), T + RECENT, False),
    ("cancelled, stop time unknown: creation counts",
     JobRecord("1", created_at=T, monitor=MonitorInfo(stop_requested=True)), T + RECENT, False),
]


@pytest.mark.parametrize(("record", "now", "current"), [case[1:] for case in IS_CURRENT],
                         ids=[case[0] for case in IS_CURRENT])
def test_is_current(record, now, current):
    assert record.is_current(now) is current


# --- the index ------------------------------------------------------------------------------------

def test_create_adds_the_marker_before_the_record(tmp_path, monkeypatch):
    store = StateStore(str(tmp_path))
    seen = []
    save = StateStore.save

    def watching_save(self, record):
        seen.append(os.path.exists(marker(self, record.job_id)))
        save(self, record)

    monkeypatch.setattr(StateStore, "save", watching_save)
    store.create(JobRecord(job_id="9"))
    assert seen == [True]
    assert store.current_ids() == ["9"]
    assert stat.S_IMODE(os.stat(marker(store, "9")).st_mode) == 0o600
    assert os.path.isfile(tmp_path / "layout.json")


def test_a_create_that_died_before_its_record_leaves_a_young_marker_that_is_skipped(tmp_path, monkeypatch):
    store = StateStore(str(tmp_path))
    store.create(JobRecord(job_id="1", name="other"))

    def dying_save(self, record):
        raise KeyboardInterrupt  # killed between the marker and the record

    with monkeypatch.context() as patch:
        patch.setattr(StateStore, "save", dying_save)
        with pytest.raises(KeyboardInterrupt):
            store.create(JobRecord(job_id="9"))
    assert os.path.exists(marker(store, "9")) and not store.exists("9")
    assert [(job_id, record.name) for job_id, record, _ in store.load_current()] == [("1", "other")]
    assert os.path.exists(marker(store, "9"))  # young: its creator may still be writing the record
    store.create(JobRecord(job_id="9", name="late"))  # ... and when the record comes, it is current
    assert [job_id for job_id, _, _ in store.load_current()] == ["1", "9"]


def test_an_old_orphan_marker_is_dropped(tmp_path):
    store = StateStore(str(tmp_path))
    store.create(JobRecord(job_id="1"))
    open(marker(store, "9"), "w").close()
    young = os.stat(marker(store, "9")).st_mtime
    os.utime(marker(store, "9"), (young - ORPHAN_MARKER_AGE + 60, young - ORPHAN_MARKER_AGE + 60))
    assert [job_id for job_id, _, _ in store.load_current()] == ["1"]
    assert os.path.exists(marker(store, "9"))  # not old enough yet
    os.utime(marker(store, "9"), (young - ORPHAN_MARKER_AGE - 60, young - ORPHAN_MARKER_AGE - 60))
    assert [job_id for job_id, _, _ in store.load_current()] == ["1"]
    assert not os.path.exists(marker(store, "9"))
    assert store.current_ids() == ["1"]


def test_current_ids_are_the_index_in_job_order(tmp_path):
    store = StateStore(str(tmp_path))
    for job_id in ("10", "2", "10_3", "10_12", "1_2", "100"):
        store.create(JobRecord(job_id=job_id))
    for other in ("notes.txt", ".tmp-abc", "10.json", "10.lock", "abc", "5_"):
        open(os.path.join(store.index, other), "w").close()
    (tmp_path / "77.json").write_text(json.dumps({"job_id": "77"}))  # a record outside the index
    assert store.current_ids() == ["1_2", "2", "10", "10_3", "10_12", "100"]
    assert [job_id for job_id, _, _ in store.load_current()] == ["1_2", "2", "10", "10_3", "10_12", "100"]


def test_current_ids_of_a_missing_folder(tmp_path):
    store = StateStore(str(tmp_path / "nope"))
    assert store.current_ids() == []
    assert list(store.load_current()) == []
    assert not os.path.exists(tmp_path / "nope")


def test_an_unreadable_file_is_reported_and_the_others_still_load(tmp_path):
    store = StateStore(str(tmp_path))
    store.create(full_record("2"))
    store.create(JobRecord(job_id="10_3", name="task"))
    bad = {
        "10": (tmp_path / "2.json").read_text()[:200],  # half-written
        "3": json.dumps({"job_id": "3", "schema_version": 99}),  # newer jobmon
        "4": "",  # empty
        "5": b"\xff\xfe\x00garbage",  # not even UTF-8
        "6": json.dumps({**v1_data("completed_sent.json"), "job_id": "6", "notification": "sent"}),  # bad v1
        "7": json.dumps({"job_id": "7", "schema_version": 2, "final": {"state": "DONE"}}),  # bad value
        "8": json.dumps({"job_id": "8", "schema_version": 2, "monitor": {"heartbeat": 10 ** 400}}),
    }
    for job_id, content in bad.items():
        store.create(JobRecord(job_id=job_id))
        with open(store.path(job_id), "wb") as handle:
            handle.write(content if isinstance(content, bytes) else content.encode())

    results = list(store.load_current())
    assert [job_id for job_id, _, _ in results] == ["2", "3", "4", "5", "6", "7", "8", "10", "10_3"]
    by_id = {job_id: (record, error) for job_id, record, error in results}
    assert by_id["2"] == (full_record("2"), "")
    assert by_id["10_3"][0].name == "task" and by_id["10_3"][1] == ""
    for job_id in bad:
        record, error = by_id[job_id]
        assert record is None
        assert "unreadable" in error and f"{job_id}.json" in error
    assert "newer than this jobmon understands" in by_id["3"][1]
    assert "JobRecord.final.state" in by_id["7"][1]


# --- retire ---------------------------------------------------------------------------------------

def test_retire_writes_the_history_line_then_drops_the_marker(tmp_path, monkeypatch):
    store = StateStore(str(tmp_path))
    store.create(finished("5", name="old"))
    marker_during_append = []
    append = History.append

    def watching_append(self, entries):
        marker_during_append.append(os.path.exists(marker(store, "5")))
        append(self, entries)

    monkeypatch.setattr(History, "append", watching_append)
    assert store.retire("5", T + 2 * DAY) is True
    assert marker_during_append == [True]
    assert not os.path.exists(marker(store, "5"))
    assert store.current_ids() == []
    assert store.history.find("5") == summarize(store.load("5"))  # the record itself stays, for `report`
    assert store.history.read()["5"].name == "old"


def test_retire_refuses_a_current_record(tmp_path):
    store = StateStore(str(tmp_path))
    store.create(finished("5"))
    store.create(JobRecord(job_id="6", created_at=T))  # still running
    assert store.retire("5", T + 3600) is False
    assert store.retire("6", T + 365 * DAY) is False
    assert store.current_ids() == ["5", "6"]
    assert store.history.read() == {}
    assert not os.path.exists(tmp_path / "history")


def test_retire_keeps_the_marker_when_the_history_cannot_be_written(tmp_path, monkeypatch):
    store = StateStore(str(tmp_path))
    store.create(finished("5"))

    def full_disk(self, entries):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(History, "append", full_disk)
    assert store.retire("5", T + 2 * DAY) is False  # best effort: `status` answers all the same
    assert store.current_ids() == ["5"]


def test_retiring_twice_writes_one_history_line(tmp_path):
    """Two `status` commands may both find the record finished: the second one has nothing to do."""
    store = StateStore(str(tmp_path))
    store.create(finished("5"))
    assert store.retire("5", T + 2 * DAY) is True
    assert store.retire("5", T + 2 * DAY) is False
    with open(tmp_path / "history" / f"{month_of(T - 100)}.jsonl", encoding="utf-8") as handle:
        assert len(handle.read().splitlines()) == 1


def test_retire_of_an_unknown_or_unreadable_job(tmp_path):
    store = StateStore(str(tmp_path))
    assert store.retire("404", T) is False
    store.create(JobRecord(job_id="5"))
    (tmp_path / "5.json").write_text("{")
    assert store.retire("5", T) is False
    assert store.current_ids() == ["5"]


# --- ensure_layout: the first use of a schema-1 folder -------------------------------------------

@pytest.fixture
def v1_folder(tmp_path):
    folder = tmp_path / "state"
    copy_v1_state(str(folder))
    return folder


def file_bytes(folder) -> dict:
    return {name: (folder / name).read_bytes() for name in os.listdir(folder) if name.endswith(".json")}


def test_ensure_layout_indexes_the_current_records_and_summarises_the_others(v1_folder, monkeypatch):
    before = file_bytes(v1_folder)
    clock(monkeypatch, EVENING + 2 * DAY)
    store = StateStore(str(v1_folder))
    store.ensure_layout()
    assert set(store.current_ids()) == STILL_CURRENT_V1
    history = store.history.read()
    assert set(history) == RETIRED_V1
    assert os.listdir(v1_folder / "history") == ["2026-11.jsonl"]
    assert json.loads((v1_folder / "layout.json").read_text()) == {"layout": 2}
    assert {name: data for name, data in file_bytes(v1_folder).items() if name != "layout.json"} == before
    assert [name for name in os.listdir(v1_folder) if name.startswith(".tmp")] == []
    # what the summaries say
    assert history["44"].state == "COMPLETED" and history["44"].notification == "sent"
    assert history["49"].state == "2 COMPLETED, 1 FAILED, 1 OUT_OF_MEMORY" and history["49"].exit_code == 1
    assert history["53"].jobs == ["53", "54"] and history["53"].attempts == 2
    assert history["67"].cancelled and history["67"].state == "RUNNING" and history["67"].exit_code is None
    assert history["101"].state == "FAILED" and history["101"].notification == "sent"
    # the current ones load (the ones with a story still going, and one whose message never arrived)
    loaded = {job_id: record for job_id, record, _ in store.load_current()}
    assert set(loaded) == STILL_CURRENT_V1
    assert not any(record.done for job_id, record in loaded.items() if job_id != "66")


def test_ensure_layout_the_same_evening_keeps_everything_current(v1_folder, monkeypatch):
    clock(monkeypatch, EVENING)
    store = StateStore(str(v1_folder))
    assert set(store.current_ids()) == STILL_CURRENT_V1 | RETIRED_V1  # current_ids builds the layout itself
    assert store.history.read() == {}


def test_ensure_layout_is_idempotent(v1_folder, monkeypatch):
    clock(monkeypatch, EVENING + 2 * DAY)
    StateStore(str(v1_folder)).ensure_layout()
    history = (v1_folder / "history" / "2026-11.jsonl").read_bytes()
    clock(monkeypatch, EVENING + 200 * DAY)  # even later: nothing is rebuilt once layout.json exists
    store = StateStore(str(v1_folder))
    store.ensure_layout()
    store.create(JobRecord(job_id="500", created_at=EVENING))
    assert (v1_folder / "history" / "2026-11.jsonl").read_bytes() == history
    assert set(store.current_ids()) == STILL_CURRENT_V1 | {"500"}


def test_ensure_layout_rerun_after_a_crash_before_layout_json(v1_folder, monkeypatch):
    clock(monkeypatch, EVENING + 2 * DAY)
    StateStore(str(v1_folder)).ensure_layout()
    os.unlink(v1_folder / "layout.json")  # as if the first run died just before writing it
    store = StateStore(str(v1_folder))
    store.ensure_layout()
    lines = (v1_folder / "history" / "2026-11.jsonl").read_text().splitlines()
    assert len(lines) == 2 * len(RETIRED_V1)  # every summary written twice ...
    assert set(store.history.read()) == RETIRED_V1  # ... and read once
    assert set(store.current_ids()) == STILL_CURRENT_V1


def test_ensure_layout_rerun_after_a_crash_while_indexing(v1_folder, monkeypatch):
    clock(monkeypatch, EVENING + 2 * DAY)
    mark = StateStore._mark
    calls = []

    def dying_mark(self, job_id):
        calls.append(job_id)
        if len(calls) == 3:
            raise OSError(5, "Input/output error")
        mark(self, job_id)

    with monkeypatch.context() as patch:
        patch.setattr(StateStore, "_mark", dying_mark)
        with pytest.raises(StateError, match="cannot upgrade the state folder .*Input/output error"):
            StateStore(str(v1_folder)).ensure_layout()
    assert not (v1_folder / "layout.json").exists()
    store = StateStore(str(v1_folder))
    assert set(store.current_ids()) == STILL_CURRENT_V1
    assert set(store.history.read()) == RETIRED_V1


def test_ensure_layout_rerun_after_a_crash_while_writing_the_history(v1_folder, monkeypatch):
    clock(monkeypatch, EVENING + 2 * DAY)

    def full_disk(self, entries):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(History, "append", full_disk)
        with pytest.raises(StateError, match="No space left"):
            StateStore(str(v1_folder)).ensure_layout()
    assert not (v1_folder / "layout.json").exists()
    store = StateStore(str(v1_folder))
    assert set(store.current_ids()) == STILL_CURRENT_V1
    assert set(store.history.read()) == RETIRED_V1


def test_ensure_layout_indexes_an_unreadable_file_so_status_shows_it(v1_folder, monkeypatch):
    clock(monkeypatch, EVENING + 2 * DAY)
    (v1_folder / "999.json").write_text('{"job_id": "999", "schema_v')
    (v1_folder / "notes.json").write_text("{}")
    store = StateStore(str(v1_folder))
    assert set(store.current_ids()) == STILL_CURRENT_V1 | {"999"}
    errors = {job_id: error for job_id, record, error in store.load_current() if record is None}
    assert list(errors) == ["999"] and "999.json is unreadable" in errors["999"]


def test_ensure_layout_finds_chains_by_attempt(v1_folder, monkeypatch):
    clock(monkeypatch, EVENING + 2 * DAY)
    store = StateStore(str(v1_folder))
    store.ensure_layout()
    assert store.history.find("54").job_id == "53"
    assert store.history.find("73").job_id == "72"
    assert store.history.find("58").job_id == "55"
    assert store.history.find("69") is None  # current, so not in the history


def test_a_new_folder_gets_its_layout_on_first_create(tmp_path):
    store = StateStore(str(tmp_path / "state"))
    store.ensure_layout()
    assert not os.path.exists(tmp_path / "state")  # nothing to upgrade, nothing created
    os.makedirs(tmp_path / "state")
    store.create(JobRecord(job_id="1"))
    assert (tmp_path / "state" / "layout.json").is_file()
    assert store.current_ids() == ["1"]


# --- the history ----------------------------------------------------------------------------------

def entry(job_id: str, created_at: float, **changes) -> HistoryEntry:
    return HistoryEntry(job_id=job_id, created_at=created_at, **changes)


NOV_1 = 1_793_491_200.0  # 2026-11-01 00:00 UTC
OCT_15 = NOV_1 - 17 * DAY
DEC_2 = NOV_1 + 31 * DAY


def test_month_of_is_utc():
    assert [month_of(NOV_1 - 1), month_of(NOV_1), month_of(DEC_2), month_of(0.0), month_of(-5.0)] == [
        "2026-10", "2026-11", "2026-12", "1970-01", "1970-01"]


def test_history_files_are_by_month_of_submission_and_private(tmp_path):
    old_umask = os.umask(0)
    try:
        history = History(str(tmp_path))
        history.append([entry("1", OCT_15), entry("2", NOV_1), entry("3", DEC_2), entry("4", NOV_1 + 5)])
    finally:
        os.umask(old_umask)
    assert history.months() == ["2026-10", "2026-11", "2026-12"]
    assert len((tmp_path / "history" / "2026-11.jsonl").read_text().splitlines()) == 2
    assert stat.S_IMODE(os.stat(tmp_path / "history").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "history" / "2026-11.jsonl").st_mode) == 0o600
    assert set(history.read()) == {"1", "2", "3", "4"}


def test_appending_nothing_creates_nothing(tmp_path):
    History(str(tmp_path)).append([])
    assert os.listdir(tmp_path) == []


def test_the_last_line_of_a_job_wins(tmp_path):
    history = History(str(tmp_path))
    history.append([entry("1", NOV_1, state="RUNNING"), entry("2", NOV_1)])
    history.append([entry("1", NOV_1, state="COMPLETED")])
    assert history.read()["1"].state == "COMPLETED"
    assert history.find("1").state == "COMPLETED"


def test_read_since_only_reads_months_from_since(tmp_path):
    history = History(str(tmp_path))
    history.append([entry("1", OCT_15), entry("2", NOV_1 + 10 * DAY), entry("3", NOV_1 + 1), entry("4", DEC_2)])
    # a line in an earlier month's file that claims a later date: proves the file is not even read
    with open(tmp_path / "history" / "2026-09.jsonl", "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"job_id": "9", "created_at": DEC_2}) + "\n")
    assert set(history.read(NOV_1 + 5 * DAY)) == {"2", "4"}  # 3 is in a month read, but before `since`
    assert set(history.read(NOV_1)) == {"2", "3", "4"}
    assert set(history.read()) == {"1", "2", "3", "4", "9"}


def test_a_line_cut_by_a_crash_is_skipped_and_the_next_append_starts_a_new_line(tmp_path):
    history = History(str(tmp_path))
    history.append([entry("1", NOV_1)])
    path = tmp_path / "history" / "2026-11.jsonl"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"job_id": "2", "created_at": 17934')  # the crash
    assert set(history.read()) == {"1"}
    history.append([entry("3", NOV_1), entry("4", NOV_1)])
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and lines[1] == '{"job_id": "2", "created_at": 17934'
    assert json.loads(lines[2])["job_id"] == "3"
    assert set(history.read()) == {"1", "3", "4"}
    assert history.find("2") is None


@pytest.mark.parametrize("junk", ["5", "[]", "{}", '{"job_id": 5}', "\x00\x01", '{"job_id": "7", "jobs": "x"}',
                                  '{"job_id": "../7"}', '{"job_id": "x"}', '{"job_id": "[[[[["}'])
def test_lines_that_are_not_summaries_are_skipped(tmp_path, junk):
    history = History(str(tmp_path))
    history.append([entry("1", NOV_1)])
    with open(tmp_path / "history" / "2026-11.jsonl", "a", encoding="utf-8") as handle:
        handle.write(junk + "\n")
    history.append([entry("2", NOV_1)])
    assert set(history.read()) == {"1", "2"}


def test_find_by_chain_attempt_id(tmp_path):
    history = History(str(tmp_path))
    history.append([entry("53", NOV_1, jobs=["53", "54", "60"]), entry("70", DEC_2, jobs=["70"])])
    assert history.find("54").job_id == "53"
    assert history.find("60").job_id == "53"
    assert history.find("53").job_id == "53"
    assert history.find("70").job_id == "70"
    assert history.find("5") is None
    assert History(str(tmp_path / "none")).find("53") is None


def test_summarize():
    chain = summarize(full_record("123"))
    assert (chain.job_id, chain.jobs, chain.attempts) == ("123", ["123", "130"], 2)
    assert chain.state == "1 COMPLETED, 2 FAILED"  # a group's counts
    assert chain.cancelled and chain.notification == "failed" and chain.exit_code == 3
    plain = summarize(finished("5", at=T))
    assert (plain.jobs, plain.attempts, plain.state, plain.notification) == (["5"], 1, "COMPLETED", "sent")
    running = summarize(JobRecord("6"))
    assert (running.state, running.exit_code, running.notification) == ("UNKNOWN", None, "none")
