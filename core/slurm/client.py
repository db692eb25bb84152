"""The one place jobmon runs Slurm commands; parsers are pure and return frozen dataclasses.

Facts this module encodes were measured on a real Slurm 22.05 (see tests/fixtures/slurm):
- `squeue -j ID` needs `-t all` to show a finished-but-not-purged job;
- exit 1 + "Invalid job id specified" means the controller forgot the job (ask sacct),
  exit 1 + "Unable to contact slurm controller" means retry later;
- sacct prints `CANCELLED by <uid>`, keeps MaxRSS on step rows only, and briefly returns a
  placeholder record (JobName "allocation", ReqMem "16?") right after submission.
"""
from __future__ import annotations

import enum
import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from core.errors import SlurmError, SlurmUnavailable

SACCT_DELIMITER = "^|^"
SACCT_FIELDS = (
    "JobID", "JobIDRaw", "JobName", "State", "ExitCode", "Elapsed", "Timelimit",
    "MaxRSS", "ReqMem", "NodeList", "Partition", "WorkDir", "Start", "End", "User", "AllocCPUS",
)
SQUEUE_FORMAT = "%i|%T|%r|%M"
DEFAULT_TIMEOUT = 60.0
#: sacct is searched from this long before a chain's decision (clocks of login node and controller differ).
COMMENT_LOOKBACK = 3600.0

_UNAVAILABLE_MARKERS = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "problem talking to the database",
    "slurm_persist_conn_open",
    "connection timed out",
    "slurm backup controller in standby mode",
    "zero bytes were transmitted or received",
    "communication connection failure",
)
_INVALID_JOB_MARKERS = ("invalid job id specified",)


class JobState(str, enum.Enum):
    """Slurm job states (the first word of sacct's State column)."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    RESIZING = "RESIZING"
    REQUEUED = "REQUEUED"
    REQUEUE_FED = "REQUEUE_FED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    PREEMPTED = "PREEMPTED"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    REVOKED = "REVOKED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, text: str) -> JobState:
        """`CANCELLED by 1234` -> CANCELLED; `CANCELLED+` -> CANCELLED; junk -> UNKNOWN."""
        word = text.strip().split(" ", 1)[0].rstrip("+").upper() if text.strip() else ""
        try:
            return cls(word)
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_final(self) -> bool:
        """True when the job has ended for good; requeue/preempt states may still run again."""
        return self in FINAL_STATES


FINAL_STATES = frozenset({
    JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT,
    JobState.OUT_OF_MEMORY, JobState.NODE_FAIL, JobState.BOOT_FAIL, JobState.DEADLINE,
    JobState.REVOKED,
})

#: Pending reasons after which the job can never start: Slurm 22.05 leaves such jobs PENDING forever.
TERMINAL_PENDING_REASONS = frozenset({"DependencyNeverSatisfied"})


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], float], CommandResult]


@dataclass(frozen=True)
class QueueEntry:
    """One row of squeue."""

    job_id: str
    state: JobState
    reason: str
    time_used: str = ""


@dataclass(frozen=True)
class AccountingRecord:
    """The job row of sacct, with MaxRSS folded in from its step rows."""

    job_id: str
    job_id_raw: str
    name: str
    state: JobState
    state_text: str
    exit_code: int
    signal: int
    elapsed: str
    time_limit: str
    max_rss_bytes: Optional[int]
    req_mem: str
    nodes: str
    partition: str
    work_dir: str
    start: str
    end: str
    user: str
    alloc_cpus: int = 0

    @property
    def is_placeholder(self) -> bool:
        """sacct's first record of a job is a stub (name "allocation", ReqMem "16?"): details not yet real."""
        return self.req_mem.endswith("?") or (self.name == "allocation" and self.user == "root")


@dataclass(frozen=True)
class JobInfo:
    """What `scontrol show job -o` says about a job still known to the controller."""

    job_id: str
    name: str
    state: JobState
    reason: str
    user: str
    stdout: str
    stderr: str
    work_dir: str
    command: str
    partition: str
    time_limit: str
    restarts: int
    array_job_id: str
    array_task_id: str
    node_list: str
    batch_host: str


@dataclass(frozen=True)
class Submission:
    job_id: str
    cluster: Optional[str]
    stdout: str
    stderr: str


class SbatchRejected(SlurmError):
    """sbatch refused the job; its own message and exit code are passed on unchanged."""

    def __init__(self, returncode: int, stderr: str) -> None:
        message = stderr.strip() or f"sbatch exited with code {returncode}"
        super().__init__(message)
        self.exit_code = returncode if returncode > 0 else 1


def explicit_time_limit(text: str) -> str:
    """sacct's Timelimit when it is a real duration; "" for UNLIMITED or Partition_Limit (never ran, no -t)."""
    return "" if text in ("", "UNLIMITED", "Partition_Limit") else text


def _base_job_id(job_id: str) -> str:
    """`844_0` or `844+1` -> `844`: the id sbatch printed."""
    return re.split(r"[_+]", job_id.strip(), maxsplit=1)[0]


def current_user() -> str:
    """The name of our uid, for `squeue -u` (portable to Slurm releases older than `--me`).

    From the password database, not $USER: Slurm owns jobs by uid, and $USER survives `su -p`.
    """
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def run_command(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run a Slurm command without a shell; a missing binary is a clear SlurmError."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, errors="replace",
            timeout=timeout, stdin=subprocess.DEVNULL, check=False,
        )
    except FileNotFoundError:
        raise SlurmError(
            f"'{argv[0]}' is not on PATH: load your cluster's Slurm module or add Slurm's bin folder to PATH"
        ) from None
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"{argv[0]} did not answer within {timeout:.0f} s") from None
    return CommandResult(done.returncode, done.stdout, done.stderr)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def is_unavailable_error(stderr: str) -> bool:
    lowered = stderr.lower()
    return any(marker in lowered for marker in _UNAVAILABLE_MARKERS)


def is_invalid_job_error(stderr: str) -> bool:
    lowered = stderr.lower()
    return any(marker in lowered for marker in _INVALID_JOB_MARKERS)


def parse_squeue(text: str) -> List[QueueEntry]:
    """Parse `squeue -h -o '%i|%T|%r|%M'` output; malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.strip().split("|")] + ["", ""]
        if len(parts) < 4 or not parts[0]:
            continue
        entries.append(QueueEntry(parts[0], JobState.parse(parts[1]), parts[2], parts[3]))
    return entries


def parse_exit_code(text: str) -> tuple[int, int]:
    """sacct ExitCode is `exit:signal`, e.g. `3:0` or `0:125`."""
    code, _, signal = text.strip().partition(":")
    try:
        return int(code or 0), int(signal or 0)
    except ValueError:
        return 0, 0


_DURATION_RE = re.compile(r"^(?:(\d{1,9})-)?(?:(\d{1,9}):)?(\d{1,9}):(\d{1,9}(?:\.\d{1,9})?)$", re.ASCII)


def parse_duration(text: str) -> Optional[float]:
    """sacct's `[D-]HH:MM:SS` / `MM:SS.mmm` in seconds; UNLIMITED, empty or junk -> None."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4, "P": 1024 ** 5}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)", re.IGNORECASE)


def parse_size(text: str, default_unit: str = "") -> Optional[int]:
    """`58180K` -> bytes; empty or unparseable -> None. sacct MaxRSS without a unit is in bytes."""
    match = _SIZE_RE.match(text or "")
    if not match:
        return None
    unit = (match.group(2) or default_unit).upper()
    try:
        return int(float(match.group(1)) * _SIZE_UNITS[unit])
    except OverflowError:  # hundreds of digits: not a real size
        return None


def parse_sacct(text: str) -> List[AccountingRecord]:
    """Parse `sacct -P -n --delimiter='^|^' --format=<SACCT_FIELDS>` including step rows.

    Step rows (`123.batch`, `123.0`, `123.extern`) only contribute their MaxRSS to the job row.
    """
    jobs: Dict[str, dict] = {}
    order: List[str] = []
    step_rss: Dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split(SACCT_DELIMITER)
        if len(parts) == len(SACCT_FIELDS) - 1:
            parts.append("")  # captured before AllocCPUS was asked for
        if len(parts) != len(SACCT_FIELDS):
            continue
        row = dict(zip(SACCT_FIELDS, (p.strip() for p in parts)))
        job_id = row["JobID"]
        if not job_id:
            continue
        if "." in job_id:
            owner = job_id.split(".", 1)[0]
            rss = parse_size(row["MaxRSS"])
            if rss is not None:
                step_rss[owner] = max(step_rss.get(owner, 0), rss)
            continue
        if job_id not in jobs:
            order.append(job_id)
        jobs[job_id] = row
    records = []
    for job_id in order:
        row = jobs[job_id]
        exit_code, signal = parse_exit_code(row["ExitCode"])
        records.append(AccountingRecord(
            job_id=job_id,
            job_id_raw=row["JobIDRaw"] or job_id,
            name=row["JobName"],
            state=JobState.parse(row["State"]),
            state_text=row["State"],
            exit_code=exit_code,
            signal=signal,
            elapsed=row["Elapsed"],
            time_limit=row["Timelimit"],
            max_rss_bytes=step_rss.get(job_id, parse_size(row["MaxRSS"])),
            req_mem=row["ReqMem"],
            nodes=row["NodeList"],
            partition=row["Partition"],
            work_dir=row["WorkDir"],
            start=row["Start"],
            end=row["End"],
            user=row["User"],
            alloc_cpus=int(row["AllocCPUS"]) if row["AllocCPUS"].isdecimal() else 0,
        ))
    return records


_SCONTROL_KEY_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_scontrol_fields(text: str) -> Dict[str, str]:
    """Split `scontrol show job -o` into Key=Value pairs; values may contain spaces (Command, paths)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    matches = list(_SCONTROL_KEY_RE.finditer(line))
    fields: Dict[str, str] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(line)
        fields.setdefault(match.group(1), line[match.end():end].strip())
    return fields


def parse_scontrol_show_jobs(text: str) -> List[JobInfo]:
    """`scontrol show job -o` prints one line per job record: an array gives one per task record."""
    jobs = (parse_scontrol_show_job(line) for line in text.splitlines() if line.strip())
    return [job for job in jobs if job is not None]


def parse_scontrol_show_job(text: str) -> Optional[JobInfo]:
    fields = parse_scontrol_fields(text)
    if "JobId" not in fields:
        return None
    user = fields.get("UserId", "").split("(", 1)[0]
    try:
        restarts = int(fields.get("Restarts", "0") or 0)
    except ValueError:
        restarts = 0
    return JobInfo(
        job_id=fields["JobId"],
        name=fields.get("JobName", ""),
        state=JobState.parse(fields.get("JobState", "")),
        reason=fields.get("Reason", ""),
        user=user,
        stdout=fields.get("StdOut", ""),
        stderr=fields.get("StdErr", ""),
        work_dir=fields.get("WorkDir", ""),
        command=fields.get("Command", ""),
        partition=fields.get("Partition", ""),
        time_limit=fields.get("TimeLimit", ""),
        restarts=restarts,
        array_job_id=fields.get("ArrayJobId", ""),
        array_task_id=fields.get("ArrayTaskId", ""),
        node_list=fields.get("NodeList", ""),
        batch_host=fields.get("BatchHost", ""),
    )


class Slurm:
    """Runs Slurm's client commands through an injectable runner."""

    def __init__(self, runner: Runner = run_command, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._runner = runner
        self._timeout = timeout

    def _run(self, argv: Sequence[str]) -> CommandResult:
        return self._runner(argv, self._timeout)

    def submit(self, sbatch_args: Sequence[str]) -> Submission:
        """Run `sbatch --parsable ARGS`; raise SbatchRejected with sbatch's own words on failure."""
        from core.slurm.jobscript import parse_job_id  # here, not at the top: an idle daemon never submits (~0.2 MB)

        args = list(sbatch_args)
        if "--parsable" not in args:
            args.insert(0, "--parsable")
        result = self._run(["sbatch", *args])
        if result.returncode != 0:
            raise SbatchRejected(result.returncode, result.stderr)
        job_id, cluster = parse_job_id(result.stdout)
        return Submission(job_id, cluster, result.stdout, result.stderr)

    def query_queue(self, job_ids: Sequence[str]) -> Dict[str, QueueEntry]:
        """Rows squeue knows for these ids (finished ones included). Forgotten ids are absent.

        Raises SlurmUnavailable when the controller cannot be reached: absence then proves nothing.
        """
        result = self._run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", SQUEUE_FORMAT])
        if result.returncode != 0:
            if is_invalid_job_error(result.stderr):
                return {}
            if is_unavailable_error(result.stderr) or not result.stderr.strip():
                raise SlurmUnavailable(f"squeue failed: {_first_line(result.stderr) or 'no output'}")
            raise SlurmError(f"squeue failed: {_first_line(result.stderr)}")
        return {entry.job_id: entry for entry in parse_squeue(result.stdout)}

    def query_user_queue(self) -> Dict[str, QueueEntry]:
        """Every job of the calling user still known to the controller, array tasks one per row.

        One call serves all of a user's monitors (see core/shared_slurm.py); a job missing from
        it is gone from the controller, exactly like `Invalid job id` for a single-job query.
        """
        result = self._run(["squeue", "-u", current_user(), "-h", "-r", "-t", "all", "-o", SQUEUE_FORMAT])
        if result.returncode != 0:
            if is_unavailable_error(result.stderr) or not result.stderr.strip():
                raise SlurmUnavailable(f"squeue failed: {_first_line(result.stderr) or 'no output'}")
            raise SlurmError(f"squeue failed: {_first_line(result.stderr)}")
        return {entry.job_id: entry for entry in parse_squeue(result.stdout)}

    def accounting_text(self, job_ids: Sequence[str]) -> str:
        """Raw `sacct` output for these jobs (kept as text so it can be shared through a file)."""
        result = self._run([
            "sacct", "-P", "-n", f"--delimiter={SACCT_DELIMITER}",
            f"--format={','.join(SACCT_FIELDS)}", "-j", ",".join(job_ids),
        ])
        if result.returncode != 0:
            raise SlurmUnavailable(f"sacct failed: {_first_line(result.stderr) or 'no output'}")
        return result.stdout

    def query_accounting(self, job_ids: Sequence[str]) -> Dict[str, AccountingRecord]:
        """sacct records by job id (array tasks keyed by `A_T`). Missing ids mean "not recorded yet"."""
        return {record.job_id: record for record in parse_sacct(self.accounting_text(job_ids))}

    def find_by_comment(self, comment: str, since: float) -> Optional[str]:
        """The id of the user's job submitted with this --comment since `since` (epoch seconds).

        How a resubmission is found after a crash. squeue shows the comment while the controller
        remembers the job (MinJobAge); later only sacct's SubmitLine still has it (sacct stores no
        comment by default). Either query failing raises: guessing "not found" could submit twice.
        """
        result = self._run(["squeue", "-u", current_user(), "-h", "-t", "all", "-o", "%i|%k"])
        if result.returncode != 0:
            raise SlurmUnavailable(f"squeue failed: {_first_line(result.stderr) or 'no output'}")
        for line in result.stdout.splitlines():
            job_id, _, found = line.partition("|")
            if found.strip() == comment:
                return _base_job_id(job_id)
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(max(0.0, since - COMMENT_LOOKBACK)))
        result = self._run(["sacct", "-u", current_user(), "-X", "-n", "-P", "-S", start,
                            "--format=JobID,SubmitLine"])
        if result.returncode != 0:
            raise SlurmUnavailable(f"sacct failed: {_first_line(result.stderr) or 'no output'}")
        tag = f"--comment={comment}"
        for line in result.stdout.splitlines():
            job_id, _, submit_line = line.partition("|")
            if tag in submit_line.split():
                return _base_job_id(job_id)
        return None

    def cancel(self, job_id: str) -> None:
        """scancel a job (the user asked for it: `jobmon cancel --job`)."""
        result = self._run(["scancel", job_id])
        if result.returncode != 0:
            raise SlurmError(f"scancel {job_id} failed: {_first_line(result.stderr) or 'no output'}")

    def show_jobs(self, job_id: str) -> List[JobInfo]:
        """scontrol's records of a job (one per array task record); empty once it is purged."""
        result = self._run(["scontrol", "show", "job", "-o", job_id])
        if result.returncode != 0:
            if is_invalid_job_error(result.stderr):
                return []
            raise SlurmUnavailable(f"scontrol failed: {_first_line(result.stderr) or 'no output'}")
        return parse_scontrol_show_jobs(result.stdout)

    def show_job(self, job_id: str) -> Optional[JobInfo]:
        """scontrol's view of a job, or None once the controller has purged it."""
        jobs = self.show_jobs(job_id)
        return jobs[0] if jobs else None
