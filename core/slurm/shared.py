"""Coalesced Slurm queries: however many monitors run, the cluster sees ~one squeue per interval.

Sites rate-limit each user's RPCs, and one `squeue` per job every 30 s is the pattern admins
ban. So every monitor (and `jobmon status`) reads one shared snapshot of *all* the user's jobs
(`squeue -u USER`), kept in the state folder and refreshed by whichever process first finds it
older than the poll interval. sacct works the same way: monitors register the ids they need and
one `sacct -j a,b,c` answers all jobs that ended together. A failed query is shared as well, as
an error: no reader may mistake an empty answer from an unreachable controller for "finished".
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Tuple, TypeVar

from core.errors import SlurmError, SlurmUnavailable
from core.files import atomic_write_text
from core.locking import file_lock
from core.slurm.client import Slurm
from core.slurm.model import AccountingRecord, JobState, QueueEntry, is_member
from core.slurm.parse import parse_sacct

QUEUE_FILE = "squeue.snapshot.json"
ACCOUNTING_FILE = "sacct.snapshot.json"
USAGE_FILE = "sstat.snapshot.json"
#: The sacct cache holds sacct's text with its header line since format 2; older caches are ignored.
ACCOUNTING_FORMAT = 2
#: A job asks sacct again within seconds while sacct lags; older wishes are dropped.
WANTED_EXPIRY = 300.0
LOCK_TIMEOUT = 180.0

V = TypeVar("V")


def members_of(entries: Dict[str, V], job_ids: Sequence[str]) -> Dict[str, V]:
    return {key: value for key, value in entries.items() if any(is_member(key, job) for job in job_ids)}


@dataclass(frozen=True)
class QueueSnapshot:
    taken_at: float
    entries: Dict[str, QueueEntry]
    error: str = ""
    calls: int = 0  # squeue runs through this folder's snapshot so far (this one included)
    failures: int = 0  # of which failed


@dataclass(frozen=True)
class SchedulerCalls:
    """What the shared snapshots recorded about Slurm, read without asking Slurm anything (`jobmon serve`)."""

    squeue_taken_at: float = 0.0  # 0: no snapshot yet
    squeue_error: str = ""
    squeue_calls: int = 0
    squeue_failures: int = 0
    sacct_taken_at: float = 0.0
    sacct_error: str = ""
    sacct_calls: int = 0
    sacct_failures: int = 0


@dataclass(frozen=True)
class UsageSnapshot:
    """The shared sstat answer (raw text, parsed by core.slurm.usage) and the requests known so far."""

    taken_at: float = 0.0
    queried: List[str] = field(default_factory=list)
    text: str = ""
    error: str = ""  # sstat failed: every job's usage is unknown
    requests: Dict[str, Tuple[str, int, int]] = field(default_factory=dict)  # job -> (ReqMem, AllocCPUS, NNodes)
    request_error: str = ""  # sacct failed for the requests still unknown


def _encode_queue(snapshot: QueueSnapshot) -> str:
    rows = [[e.job_id, e.state.value, e.reason, e.time_used, e.time_limit, e.time_left, e.start_time, e.nodes,
             e.submit_time, e.partition, e.name] for e in snapshot.entries.values()]
    return json.dumps({"taken_at": snapshot.taken_at, "error": snapshot.error, "rows": rows,
                       "calls": snapshot.calls, "failures": snapshot.failures})


def _decode_queue(text: str) -> QueueSnapshot:
    data = json.loads(text)
    entries = {
        row[0]: QueueEntry(row[0], JobState.parse(row[1]), *row[2:11]) for row in data.get("rows", [])
    }
    return QueueSnapshot(float(data["taken_at"]), entries, str(data.get("error", "")),
                         int(data.get("calls", 0)), int(data.get("failures", 0)))


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_scheduler_calls(folder: str) -> SchedulerCalls:
    """The counters and the last answers the shared squeue and sacct snapshots keep (no Slurm call)."""
    queue = _read_json(os.path.join(folder, QUEUE_FILE))
    accounting = _read_json(os.path.join(folder, ACCOUNTING_FILE))
    try:
        return SchedulerCalls(
            squeue_taken_at=float(queue.get("taken_at", 0.0) or 0.0), squeue_error=str(queue.get("error", "")),
            squeue_calls=int(queue.get("calls", 0)), squeue_failures=int(queue.get("failures", 0)),
            sacct_taken_at=float(accounting.get("taken_at", 0.0) or 0.0),
            sacct_error=str(accounting.get("error", "")),
            sacct_calls=int(accounting.get("calls", 0)), sacct_failures=int(accounting.get("failures", 0)))
    except (TypeError, ValueError):
        return SchedulerCalls()


class SharedSlurm:
    """The monitor's view of Slurm, served from snapshots shared through the state folder."""

    def __init__(
        self, slurm: Slurm, folder: str, *, max_age: float, clock: Callable[[], float] = time.time,
        lock_timeout: float = LOCK_TIMEOUT, impatient: bool = False,
    ) -> None:
        self.slurm = slurm
        self.folder = folder
        self.max_age = max_age
        self.lock_timeout = lock_timeout
        #: A command a person waits for: when another process holds the refresh longer than
        #: `lock_timeout` (squeue hanging on a controller that is going down), it reports the outage
        #: instead of running squeue itself; a monitor (not impatient) refreshes on its own.
        self.impatient = impatient
        self.accounting_max_age = min(2.0, max_age / 2)
        self.clock = clock
        self.last_snapshot_at = 0.0

    def _lock(self, name: str) -> Any:
        return file_lock(os.path.join(self.folder, f"{name}.lock"), self.lock_timeout)

    def _read(self, name: str) -> str:
        try:
            with open(os.path.join(self.folder, name), encoding="utf-8") as handle:
                return handle.read()
        except OSError:
            return ""

    def _write(self, name: str, text: str) -> None:
        try:
            atomic_write_text(os.path.join(self.folder, name), text)
        except OSError:
            pass  # a full or read-only disk costs sharing, not correctness

    # -- squeue -----------------------------------------------------------------------------
    def _fresh(self, taken_at: float, not_before: float) -> bool:
        now = self.clock()
        return taken_at >= not_before and now - self.max_age < taken_at <= now + 1.0

    def _load_queue(self) -> QueueSnapshot:
        try:
            return _decode_queue(self._read(QUEUE_FILE))
        except (ValueError, KeyError, TypeError, IndexError):
            return QueueSnapshot(0.0, {})

    def queue_snapshot(self, not_before: float = 0.0) -> QueueSnapshot:
        """A snapshot younger than the poll interval (and taken after `not_before`): shared or new."""
        snapshot = self._load_queue()
        if not self._fresh(snapshot.taken_at, not_before):
            try:
                with self._lock("squeue.snapshot"):
                    snapshot = self._load_queue()
                    if not self._fresh(snapshot.taken_at, not_before):
                        snapshot = self._refresh_queue()
            except TimeoutError:  # another process has been refreshing for the whole wait
                if self.impatient:
                    raise SlurmUnavailable("squeue has not answered another jobmon process for "
                                           f"{self.lock_timeout:.0f} s") from None
                snapshot = self._refresh_queue()
            except OSError:  # a read-only state folder: no sharing, but an answer
                snapshot = self._refresh_queue()
        self.last_snapshot_at = snapshot.taken_at
        return snapshot

    def _refresh_queue(self) -> QueueSnapshot:
        before = self._load_queue()
        taken_at = self.clock()
        try:
            snapshot = QueueSnapshot(taken_at, self.slurm.query_user_queue(), calls=before.calls + 1,
                                     failures=before.failures)
        except SlurmError as exc:
            snapshot = QueueSnapshot(taken_at, {}, str(exc) or "squeue failed", calls=before.calls + 1,
                                     failures=before.failures + 1)
        self._write(QUEUE_FILE, _encode_queue(snapshot))
        return snapshot

    def query_queue(self, job_ids: Sequence[str], *, not_before: float = 0.0) -> Dict[str, QueueEntry]:
        """Rows of these jobs (and their tasks); raises SlurmUnavailable if the snapshot is an error."""
        snapshot = self.queue_snapshot(not_before)
        if snapshot.error:
            raise SlurmUnavailable(snapshot.error)
        return members_of(snapshot.entries, job_ids)

    def next_poll_delay(self, interval: float, job_id: str) -> float:
        """Wake just after a shared snapshot expires (about `interval` from now), so one refresh
        serves every monitor instead of each waking at its own phase and refreshing again."""
        spread = 0.1 + (sum(map(ord, job_id)) % 10) * 0.05  # small and stable per job
        delay = self.last_snapshot_at + self.max_age - self.clock() + spread
        if delay <= 0:
            return interval
        while delay < interval - self.max_age:  # pending jobs (longer interval) skip whole expiries
            delay += self.max_age
        return delay

    # -- sacct ------------------------------------------------------------------------------
    def query_accounting(self, job_ids: Sequence[str]) -> Dict[str, AccountingRecord]:
        """sacct records for these jobs, batched with every other job waiting for sacct now."""
        try:
            with self._lock("sacct.snapshot"):
                return self._accounting_locked(job_ids)
        except (TimeoutError, OSError):  # lock held too long, or a read-only state folder
            return self._select(parse_sacct(self.slurm.accounting_text(list(job_ids))), job_ids)

    def _accounting_locked(self, job_ids: Sequence[str]) -> Dict[str, AccountingRecord]:
        now = self.clock()
        try:
            cache = json.loads(self._read(ACCOUNTING_FILE) or "{}")
            wanted: Dict[str, float] = {str(k): float(v) for k, v in cache.get("wanted", {}).items()}
        except (ValueError, AttributeError, TypeError):
            cache, wanted = {}, {}
        if cache.get("format") != ACCOUNTING_FORMAT:
            cache = {}  # written by an older jobmon: its text has no header line
        wanted = {job: at for job, at in wanted.items() if now - at < WANTED_EXPIRY}
        for job in job_ids:
            wanted[job] = now
        taken_at = float(cache.get("taken_at", 0.0) or 0.0)
        covered = set(cache.get("queried", []))
        if now - self.accounting_max_age < taken_at <= now + 1.0 and set(job_ids) <= covered:
            self._write(ACCOUNTING_FILE, json.dumps({**cache, "wanted": wanted}))
            if cache.get("error"):
                raise SlurmUnavailable(cache["error"])
            return self._select(parse_sacct(cache.get("text", "")), job_ids)
        queried = sorted(wanted, key=_numeric_key)
        try:
            text, error = self.slurm.accounting_text(queried), ""
        except SlurmError as exc:
            text, error = "", str(exc) or "sacct failed"
        calls, failures = _count(cache, "calls") + 1, _count(cache, "failures") + (1 if error else 0)
        self._write(ACCOUNTING_FILE, json.dumps({"format": ACCOUNTING_FORMAT, "taken_at": now, "queried": queried,
                                                 "text": text, "error": error, "wanted": wanted,
                                                 "calls": calls, "failures": failures}))
        if error:
            raise SlurmUnavailable(error)
        return self._select(parse_sacct(text), job_ids)

    # -- sstat ------------------------------------------------------------------------------
    def usage_snapshot(self, job_ids: Sequence[str], max_age: float) -> UsageSnapshot:
        """The shared sstat snapshot, younger than `max_age`: one `sstat -a -j a,b,c` for every job the queue
        snapshot shows RUNNING serves all monitors for that long (a job that started since waits for the next
        one: exactly one sstat per interval however many jobs run). With it, each job's request from one
        `sacct -X` for the jobs whose request is not known yet (none once all are). A failed sstat is shared as
        its error."""
        cached = self._load_usage()
        if not self._usage_fresh(cached, max_age):
            try:
                with self._lock("sstat.snapshot"):
                    cached = self._load_usage()
                    if not self._usage_fresh(cached, max_age):
                        cached = self._refresh_usage(cached, job_ids)
            except (TimeoutError, OSError):  # lock held too long, or a read-only state folder
                cached = self._refresh_usage(cached, job_ids)
        return cached

    def _load_usage(self) -> UsageSnapshot:
        try:
            data = json.loads(self._read(USAGE_FILE) or "{}")
            requests = {str(job): (str(row[0]), int(row[1]), int(row[2]))
                        for job, row in dict(data.get("requests", {})).items()}
            return UsageSnapshot(float(data.get("taken_at", 0.0)), [str(j) for j in data.get("queried", [])],
                                 str(data.get("text", "")), str(data.get("error", "")), requests,
                                 str(data.get("request_error", "")))
        except (ValueError, TypeError, AttributeError, IndexError):
            return UsageSnapshot()

    def _usage_fresh(self, cached: UsageSnapshot, max_age: float) -> bool:
        now = self.clock()
        return now - max_age < cached.taken_at <= now + 1.0

    def _refresh_usage(self, before: UsageSnapshot, job_ids: Sequence[str]) -> UsageSnapshot:
        running = [key for key, entry in self._load_queue().entries.items()
                   if entry.state is JobState.RUNNING and key.isdecimal()]  # sstat wants plain job ids
        queried = sorted(set(running) | set(job_ids), key=_numeric_key)
        try:
            text, error = self.slurm.usage_text(queried), ""
        except SlurmError as exc:
            text, error = "", str(exc) or "sstat failed"
        requests = {job: request for job, request in before.requests.items() if job in queried}
        unknown = [job for job in queried if job not in requests]
        request_error = ""
        if unknown:
            try:
                for record in parse_sacct(self.slurm.request_text(unknown)):
                    if record.job_id in unknown and not record.is_placeholder and record.real_req_mem:
                        requests[record.job_id] = (record.real_req_mem, record.alloc_cpus, record.alloc_nodes)
            except SlurmError as exc:
                request_error = str(exc) or "sacct failed"
        snapshot = UsageSnapshot(self.clock(), queried, text, error, requests, request_error)
        self._write(USAGE_FILE, json.dumps({
            "taken_at": snapshot.taken_at, "queried": queried, "text": text, "error": error,
            "requests": {job: list(request) for job, request in requests.items()}, "request_error": request_error}))
        return snapshot

    @staticmethod
    def _select(records: List[AccountingRecord], job_ids: Sequence[str]) -> Dict[str, AccountingRecord]:
        return {r.job_id: r for r in records if any(is_member(r.job_id, job) for job in job_ids)}


def _count(cache: Dict[str, Any], key: str) -> int:
    try:
        return int(cache.get(key, 0))
    except (TypeError, ValueError):
        return 0


def _numeric_key(job_id: str) -> Tuple[int, str]:
    head = job_id.split("_", 1)[0].split("+", 1)[0]
    return (int(head) if head.isdecimal() else 0, job_id)
