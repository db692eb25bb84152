"""Per-job state files: one JSON document per job, written atomically, changed under a file lock.

Layout inside the state folder:
- `<job>.json`            the record (core.state.model), replaced atomically (temp file + os.replace);
- `<job>.lock`            guards read-modify-write of the record; never deleted (filelock's advice);
- `<job>.monitor.lock`    held by the job's daemon for its whole life, so a second daemon is refused;
- `<job>.deliver.lock`    held by whoever delivers the job's outbox, so no message goes out twice;
- `active/<job>`          the index of current records (empty marker files): what `status` and
                          `recover` read, so their cost follows the live jobs, not the history;
- `history/<month>.jsonl` summaries of the jobs that left the index (core.state.history);
- `layout.json`           written once the index exists (a folder of an older jobmon gets it on first use).

Records are never moved or deleted, and no lock file is: a record leaves the index (its summary
written first, its marker then removed) once `is_current` says it no longer belongs in `status`.
Everything here is safe on an NFS home shared by several login nodes: atomic renames, flock'd lock
files, and markers removed only under their record's lock.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from core.errors import RecordExists, StateError, StateLocked, StateWriteError
from core.files import atomic_write_text
from core.locking import file_lock
from core.state.codec import DecodeError, decode, encode
from core.state.history import JOB_ID_RE, History, HistoryEntry, summarize
from core.state.migrate import upgrade
from core.state.model import JobRecord

LOCK_TIMEOUT = 30.0
LAYOUT_VERSION = 2
#: An index marker whose record never appeared (its creator died in between) is dropped after this long.
ORPHAN_MARKER_AGE = 3600.0
#: The first use of an old folder indexes it once; another command waits this long for that to finish.
LAYOUT_WAIT = 600.0


def job_sort_key(job_id: str) -> Tuple[int, int]:
    head, _, tail = job_id.partition("_")
    return int(head), int(tail or -1)


def parse_record(text: str) -> JobRecord:
    """A record from its JSON text, upgraded from an older schema if need be; ValueError if it is not one."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("job_id"), str):
        raise ValueError("not a jobmon job record")
    return decode(JobRecord, upgrade(data))


def format_record(record: JobRecord) -> str:
    return json.dumps(encode(record), indent=1, sort_keys=True)


class StateStore:
    """Reads and writes job records in one folder, and keeps the index of current ones."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.index = os.path.join(folder, "active")
        self.history = History(folder)

    def path(self, job_id: str) -> str:
        return os.path.join(self.folder, f"{job_id}.json")

    def _lock_path(self, job_id: str, kind: str) -> str:
        return os.path.join(self.folder, f"{job_id}.{kind}")

    def lock(self, job_id: str, timeout: float = LOCK_TIMEOUT) -> Any:
        """The read-modify-write lock of one record (a fresh object: safe after fork)."""
        return file_lock(self._lock_path(job_id, "lock"), timeout)

    def monitor_lock(self, job_id: str) -> Any:
        """Held by the job's daemon for its lifetime; acquire with timeout=0 to test for a live one."""
        return file_lock(self._lock_path(job_id, "monitor.lock"), 0)

    def delivery_lock(self, job_id: str, timeout: float) -> Any:
        """Held while the job's outbox is being delivered: one deliverer at a time, whoever runs it."""
        return file_lock(self._lock_path(job_id, "deliver.lock"), timeout)

    def exists(self, job_id: str) -> bool:
        return os.path.exists(self.path(job_id))

    # -- one record --------------------------------------------------------------------------
    def load(self, job_id: str) -> JobRecord:
        path = self.path(job_id)
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise StateError(f"job {job_id} is not monitored (no state file {path})") from None
        except (OSError, ValueError) as exc:
            raise StateError(f"state file {path} is unreadable: {exc}") from None
        try:
            return parse_record(text)
        except (ValueError, DecodeError, RecursionError) as exc:
            raise StateError(f"state file {path} is unreadable: {exc}") from None

    def save(self, record: JobRecord) -> None:
        try:
            atomic_write_text(self.path(record.job_id), format_record(record))
        except OSError as exc:
            raise StateWriteError(
                f"cannot write state file {self.path(record.job_id)}: {exc.strerror or exc}") from None

    def create(self, record: JobRecord) -> None:
        """Save a new record (and index it) unless one already exists for that job."""
        self.ensure_layout()
        try:
            with self.lock(record.job_id):
                if self.exists(record.job_id):
                    raise RecordExists(
                        f"job {record.job_id} is already monitored (state file {self.path(record.job_id)})")
                self._mark(record.job_id)  # before the record: a record is never outside the index
                self.save(record)
        except TimeoutError:
            raise StateLocked(f"state of job {record.job_id} is locked by another jobmon process; try again") from None
        except OSError as exc:  # the lock file itself cannot be created: read-only or full folder (as in update)
            raise StateWriteError(f"cannot lock state of job {record.job_id}: {exc.strerror or exc}") from None

    def update(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Load, apply `change`, save, all under the record's lock; returns the saved record."""
        try:
            with self.lock(job_id):
                record = self.load(job_id)
                change(record)
                self.save(record)
                return record
        except TimeoutError:
            raise StateLocked(f"state of job {job_id} is locked by another jobmon process; try again") from None
        except OSError as exc:  # the lock file itself cannot be created: read-only or full folder
            raise StateWriteError(f"cannot lock state of job {job_id}: {exc.strerror or exc}") from None

    # -- the index of current records ------------------------------------------------------------
    def _mark(self, job_id: str) -> None:
        os.makedirs(self.index, mode=0o700, exist_ok=True)
        try:
            os.close(os.open(os.path.join(self.index, job_id), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        except OSError as exc:
            raise StateWriteError(f"cannot index job {job_id} in {self.index}: {exc.strerror or exc}") from None

    def current_ids(self) -> List[str]:
        """The jobs in the index (current records), in job id order."""
        self.ensure_layout()
        try:
            names = os.listdir(self.index)
        except FileNotFoundError:
            return []
        return sorted((name for name in names if JOB_ID_RE.match(name)), key=job_sort_key)

    def load_current(self) -> Iterator[Tuple[str, Optional[JobRecord], str]]:
        """Every indexed record as (job_id, record or None, error text); one bad file never hides the others."""
        for job_id in self.current_ids():
            try:
                record = self.load(job_id)
            except StateError as exc:
                if self.exists(job_id):
                    yield job_id, None, str(exc)
                else:
                    self._drop_orphan_marker(job_id)
                continue
            yield job_id, record, ""

    def _drop_orphan_marker(self, job_id: str) -> None:
        """A marker whose record never came (its `create` died); young ones may still get theirs."""
        marker = os.path.join(self.index, job_id)
        try:
            if time.time() - os.stat(marker).st_mtime > ORPHAN_MARKER_AGE:
                os.unlink(marker)
        except OSError:
            pass

    def read_history(self, since: float = 0.0) -> Dict[str, HistoryEntry]:
        """The summaries of the jobs that left the index (see History.read), the folder upgraded first."""
        self.ensure_layout()
        return self.history.read(since)

    def find_in_history(self, job_id: str) -> Optional[HistoryEntry]:
        """The summary of a job, or of the chain one of whose attempts has this id (the folder upgraded first)."""
        self.ensure_layout()
        return self.history.find(job_id)

    def retire(self, job_id: str, now: float) -> bool:
        """Take a record that is no longer current out of the index, its history line written first.

        Best effort: when the record is busy, or the folder refuses the history line (full disk), it
        stays in the index and the next command tries again; `status` must answer all the same.
        """
        try:
            with self.lock(job_id):
                marker = os.path.join(self.index, job_id)
                if not os.path.exists(marker):
                    return False  # retired meanwhile (another command got the lock first): no second line
                record = self.load(job_id)
                if record.is_current(now):
                    return False
                self.history.append([summarize(record)])
                os.unlink(marker)
                return True
        except (OSError, StateError):  # busy (TimeoutError is an OSError), retired meanwhile, or no room
            return False

    # -- the first use of a folder of an older jobmon ----------------------------------------------
    def needs_layout(self) -> bool:
        """True before the first use of a folder of an older jobmon: records, but no index yet."""
        if os.path.exists(os.path.join(self.folder, "layout.json")):
            return False
        try:
            return any(name.endswith(".json") and JOB_ID_RE.match(name[:-5]) for name in os.listdir(self.folder))
        except OSError:
            return False

    def ensure_layout(self) -> None:
        """Build the index and the history from every record, once (a folder of schema-1 jobmon has neither).

        Records are not rewritten: an older daemon may still be writing its own. A crash halfway
        just means the next command does it again (markers are idempotent, history lines dedupe).
        """
        marker = os.path.join(self.folder, "layout.json")
        if os.path.exists(marker) or not os.path.isdir(self.folder):
            return
        try:
            with file_lock(os.path.join(self.folder, "layout.lock"), LAYOUT_WAIT):
                if os.path.exists(marker):
                    return
                self._build_index()
                atomic_write_text(marker, json.dumps({"layout": LAYOUT_VERSION}) + "\n")
        except TimeoutError:
            raise StateLocked(f"another jobmon process is still indexing {self.folder}; try again") from None
        except OSError as exc:
            raise StateError(f"cannot upgrade the state folder {self.folder}: {exc.strerror or exc}") from None

    def _build_index(self) -> None:
        now = time.time()
        retired = []
        for name in os.listdir(self.folder):
            job_id = name[:-5] if name.endswith(".json") else ""
            if not JOB_ID_RE.match(job_id):
                continue
            try:
                record = self.load(job_id)
            except StateError:
                self._mark(job_id)  # unreadable: `status` shows it until it is fixed
                continue
            if record.is_current(now):
                self._mark(job_id)
            else:
                retired.append(summarize(record))
        self.history.append(retired)
