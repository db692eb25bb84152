"""Per-job state files: one JSON document per job, written atomically, changed under a file lock.

Layout inside the state folder:
- `<job>.json`          the record (schema below), replaced atomically (temp file + os.replace);
- `<job>.lock`          guards read-modify-write of the record; never deleted (filelock's advice);
- `<job>.monitor.lock`  held by the job's daemon for its whole life, so a second daemon is refused.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from core.errors import StateError
from core.locking import file_lock

SCHEMA_VERSION = 1
LOCK_TIMEOUT = 30.0
_JOB_FILE_RE = re.compile(r"^(\d+(?:_\d+)?)\.json$")


@dataclass
class MonitorInfo:
    """Who is monitoring the job and how recently it proved it is alive."""

    pid: int = 0
    start_ticks: int = 0
    host: str = ""
    started_at: float = 0.0
    heartbeat: float = 0.0
    heartbeat_deadline: float = 0.0
    stop_requested: bool = False


@dataclass
class Observation:
    """The last thing Slurm told us about the job while it was not yet final."""

    state: str = ""
    reason: str = ""
    seen_at: float = 0.0
    controller_down_since: float = 0.0
    accounting_down_since: float = 0.0
    final_seen_at: float = 0.0
    restarts: int = 0
    last_error: str = ""


@dataclass
class FinalRecord:
    """How the job ended, from sacct (or from squeue alone when sacct never answered)."""

    state: str = ""
    state_text: str = ""
    exit_code: int = 0
    signal: int = 0
    elapsed: str = ""
    time_limit: str = ""
    max_rss_bytes: Optional[int] = None
    req_mem: str = ""
    nodes: str = ""
    partition: str = ""
    work_dir: str = ""
    start: str = ""
    end: str = ""
    reason: str = ""
    source: str = "sacct"
    incomplete: bool = False
    decided_at: float = 0.0
    alloc_cpus: int = 0
    task_counts: Dict[str, int] = field(default_factory=dict)
    failed_tasks: str = ""
    slowest_task: str = ""


@dataclass
class TaskOutcome:
    """How one array task (or het component) ended."""

    task_id: str
    job_id: str = ""
    raw_id: str = ""
    state: str = ""
    exit_code: int = 0
    signal: int = 0
    elapsed: str = ""
    max_rss_bytes: Optional[int] = None
    categories: List[str] = field(default_factory=list)
    req_mem: str = ""  # what this task ran with: an escalation starts from it
    time_limit: str = ""


@dataclass
class NotificationStatus:
    """Delivery bookkeeping: a message is pending until a webhook accepted it; never sent twice."""

    status: str = "none"  # none | pending | sending | sent | failed | gone
    channel: str = ""
    attempts: int = 0
    last_error: str = ""
    sent_at: float = 0.0
    message_id: str = ""
    claimed_by: str = ""


@dataclass
class Attempt:
    """One job of an escalation chain: the resources it ran with and how it ended."""

    job_id: str
    level_index: int = 0
    resources: Dict[str, Any] = field(default_factory=dict)
    state: str = ""
    exit_code: int = 0
    elapsed: str = ""
    core_hours: float = 0.0
    categories: List[str] = field(default_factory=list)
    decision: str = ""  # what jobmon did next, and why
    round: int = 1  # a chain's rounds: an array round may need several submissions
    tasks: str = ""  # for an array: the --array spec this submission ran
    task_counts: Dict[str, int] = field(default_factory=dict)  # for an array: how its tasks ended
    failed_tasks: str = ""


@dataclass
class TaskTrack:
    """One array task retried by a chain: the level it runs at now and how each of its runs ended."""

    level_index: int = 0
    level: Dict[str, Any] = field(default_factory=dict)
    runs: List[str] = field(default_factory=list)  # "123_4 OUT_OF_MEMORY", one per round


@dataclass
class Round:
    """One round of an array chain: how its tasks ended and which went on to the next round."""

    number: int
    jobs: List[str] = field(default_factory=list)
    task_counts: Dict[str, int] = field(default_factory=dict)
    failed_tasks: str = ""
    retried_tasks: str = ""
    not_retried: Dict[str, str] = field(default_factory=dict)  # why -> task ids (an --array spec)
    decision: str = ""


@dataclass
class Chain:
    """Automatic resubmission: the attempts so far, the one running, and a decision not yet carried out.

    `pending` is written *before* sbatch runs and cleared together with recording the new job id,
    so a daemon killed in between is finished by `recover` without a second submission.
    """

    ladder: List[Dict[str, Any]] = field(default_factory=list)
    max_retries: int = 3
    mem_option: str = "--mem"
    current_job: str = ""
    level_index: int = 0
    level: Dict[str, Any] = field(default_factory=dict)
    attempts: List[Attempt] = field(default_factory=list)
    pending: Dict[str, Any] = field(default_factory=dict)
    round: int = 1
    rounds: List[Round] = field(default_factory=list)  # arrays only
    tasks: Dict[str, TaskTrack] = field(default_factory=dict)  # arrays only: retried tasks by id


@dataclass
class JobRecord:
    job_id: str
    name: str = ""
    cluster: str = ""
    user: str = ""
    script: str = ""
    sbatch_args: List[str] = field(default_factory=list)
    script_args: List[str] = field(default_factory=list)
    submit_dir: str = ""
    stdout_path: str = ""
    stderr_path: str = ""
    log_options: Dict[str, str] = field(default_factory=dict)  # unexpanded -o/-e/-D, for array tasks
    array_spec: str = ""
    expected_tasks: List[int] = field(default_factory=list)
    created_at: float = 0.0
    source: str = "submit"  # submit | watch
    monitor: MonitorInfo = field(default_factory=MonitorInfo)
    observation: Observation = field(default_factory=Observation)
    final: Optional[FinalRecord] = None
    tasks: List[TaskOutcome] = field(default_factory=list)
    first_failure_notified: bool = False
    chain: Optional[Chain] = None
    categories: List[str] = field(default_factory=list)
    findings: List[Dict[str, Any]] = field(default_factory=list)
    excerpt: str = ""
    notification: NotificationStatus = field(default_factory=NotificationStatus)
    done: bool = False
    schema_version: int = SCHEMA_VERSION

    @property
    def target(self) -> str:
        """The Slurm job being watched now: the chain's current attempt, or the job itself."""
        return self.chain.current_job if self.chain is not None and self.chain.current_job else self.job_id

    @property
    def targets(self) -> List[str]:
        """Every Slurm job of the current round (an array round can need several submissions)."""
        if self.chain is None:
            return [self.job_id]
        jobs = [a.job_id for a in self.chain.attempts if a.round == self.chain.round]
        return jobs if len(jobs) > 1 else [self.target]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> JobRecord:
        """Build from JSON, ignoring unknown keys so older jobmon versions can read newer files."""
        if not isinstance(data, dict) or not isinstance(data.get("job_id"), str):
            raise ValueError("not a jobmon job record")
        version = data.get("schema_version", 0)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(f"schema version {version!r} is newer than this jobmon understands")
        return _build(cls, data)


def _build(kind: Any, data: Dict[str, Any]) -> Any:
    nested = {
        "monitor": MonitorInfo, "observation": Observation,
        "final": FinalRecord, "notification": NotificationStatus,
    }
    known = {f.name for f in dataclasses.fields(kind)}
    values = {}
    for key, value in data.items():
        if key not in known:
            continue
        if key in nested and isinstance(value, dict):
            value = _build(nested[key], value)
        elif key == "tasks" and isinstance(value, list):
            value = [_build(TaskOutcome, item) for item in value if isinstance(item, dict)]
        elif key == "attempts" and isinstance(value, list):
            value = [_build(Attempt, item) for item in value if isinstance(item, dict)]
        elif key == "chain" and isinstance(value, dict):
            value = _upgrade_chain(_build(Chain, value), value)
        elif key == "rounds" and isinstance(value, list):
            value = [_build(Round, item) for item in value if isinstance(item, dict)]
        elif kind is Chain and key == "tasks" and isinstance(value, dict):
            value = {str(k): _build(TaskTrack, v) for k, v in value.items() if isinstance(v, dict)}
        values[key] = value
    return kind(**values)


def _upgrade_chain(chain: Chain, data: Dict[str, Any]) -> Chain:
    """A chain saved before rounds existed: attempt N was round N, and a pending decision was one submission."""
    if "round" not in data:
        for number, attempt in enumerate(chain.attempts, 1):
            attempt.round = number
        chain.round = max(1, len(chain.attempts))
        if chain.pending and "submissions" not in chain.pending:
            old = dict(chain.pending)
            chain.pending = {"round": chain.round + 1, "decided_at": old.pop("decided_at", 0.0),
                             "submissions": [{**old, "tasks": ""}]}
    return chain


def atomic_write_text(path: str, text: str, mode: int = 0o600) -> None:
    """Write via a temp file in the same folder + fsync + os.replace: readers never see half a file."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.urandom(6).hex()}.json")  # not tempfile: daemon memory
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class StateStore:
    """Reads and writes job records in one folder."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def path(self, job_id: str) -> str:
        return os.path.join(self.folder, f"{job_id}.json")

    def lock(self, job_id: str, timeout: float = LOCK_TIMEOUT):
        """The read-modify-write lock of one record (a fresh object: safe after fork)."""
        return file_lock(os.path.join(self.folder, f"{job_id}.lock"), timeout)

    def monitor_lock(self, job_id: str):
        """Held by the job's daemon for its lifetime; acquire with timeout=0 to test for a live one."""
        return file_lock(os.path.join(self.folder, f"{job_id}.monitor.lock"), 0)

    def exists(self, job_id: str) -> bool:
        return os.path.exists(self.path(job_id))

    def load(self, job_id: str) -> JobRecord:
        path = self.path(job_id)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            raise StateError(f"job {job_id} is not monitored (no state file {path})") from None
        except (OSError, ValueError) as exc:
            raise StateError(f"state file {path} is unreadable: {exc}") from None
        try:
            return JobRecord.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise StateError(f"state file {path} is unreadable: {exc}") from None

    def save(self, record: JobRecord) -> None:
        try:
            atomic_write_text(self.path(record.job_id), json.dumps(record.to_dict(), indent=1, sort_keys=True))
        except OSError as exc:
            raise StateError(f"cannot write state file {self.path(record.job_id)}: {exc.strerror or exc}") from None

    def create(self, record: JobRecord) -> None:
        """Save a new record unless one already exists for that job."""
        with self.lock(record.job_id):
            if self.exists(record.job_id):
                raise StateError(f"job {record.job_id} is already monitored (state file {self.path(record.job_id)})")
            self.save(record)

    def update(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Load, apply `change`, save, all under the record's lock; returns the saved record."""
        try:
            with self.lock(job_id):
                record = self.load(job_id)
                change(record)
                self.save(record)
                return record
        except TimeoutError:
            raise StateError(f"state of job {job_id} is locked by another jobmon process; try again") from None
        except OSError as exc:  # the lock file itself cannot be created: read-only or full folder
            raise StateError(f"cannot lock state of job {job_id}: {exc.strerror or exc}") from None

    def job_ids(self) -> List[str]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        ids = [m.group(1) for m in map(_JOB_FILE_RE.match, names) if m]
        return sorted(ids, key=_job_sort_key)

    def load_all(self) -> Iterator[Tuple[str, Optional[JobRecord], str]]:
        """Every record as (job_id, record or None, error text); one bad file never hides the others."""
        for job_id in self.job_ids():
            try:
                yield job_id, self.load(job_id), ""
            except StateError as exc:
                yield job_id, None, str(exc)


def _job_sort_key(job_id: str) -> Tuple[int, int]:
    head, _, tail = job_id.partition("_")
    return int(head), int(tail or -1)
