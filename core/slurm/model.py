"""What Slurm tells us, as frozen values: job states, queue rows, accounting records, scontrol views.

Also the few rules about those values that every other module relies on, each defined once here
(when a job ended cleanly is defined in core.analysis.jobend, which the analyzer may import, and
re-exported here): which rows belong to a job (array tasks, het components), and when an
accounting record is only sacct's placeholder.
"""
from __future__ import annotations

import enum
import posixpath
import re
from dataclasses import dataclass
from typing import Optional

from core.analysis.jobend import is_clean_end as is_clean_end  # defined once, for the analyzer too


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


def is_sigkilled(state: JobState, exit_code: int, signal: int) -> bool:
    """FAILED by SIGKILL (exit 137 or signal 9): what a host-memory kill without cgroups looks like."""
    return state is JobState.FAILED and (exit_code == 137 or signal == 9)


def member_suffix(key: str, job_id: str) -> Optional[str]:
    """`52_7` -> `7`, `60+1` -> `+1`; `52` itself or a foreign id -> None."""
    if key.startswith(f"{job_id}_"):
        return key[len(job_id) + 1:]
    if key.startswith(f"{job_id}+"):
        return key[len(job_id):]
    return None


def is_member(key: str, job_id: str) -> bool:
    """The rows that belong to a job: itself, its array tasks (`52_7`) and het components (`52+1`)."""
    return key == job_id or member_suffix(key, job_id) is not None


def base_job_id(job_id: str) -> str:
    """`844_0` or `844+1` -> `844`: the id sbatch printed."""
    return re.split(r"[_+]", job_id.strip(), maxsplit=1)[0]


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class QueueEntry:
    """One row of squeue."""

    job_id: str
    state: JobState
    reason: str
    time_used: str = ""
    time_limit: str = ""  # "5:00", "1-00:00:00", "UNLIMITED"; `scontrol update` may change it
    time_left: str = ""
    start_time: str = ""  # ISO local time, or "N/A" while pending without an estimate
    nodes: str = ""
    submit_time: str = ""
    partition: str = ""
    name: str = ""  # the last column squeue prints: a `|` in a job name stays in it


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
    total_cpu: str = ""  # CPU time of all steps (`00:19.746`); "" in captures without the column
    used_mem_bytes: Optional[int] = None  # the largest step's MaxRSS x its NTasks (what efficiency counts)
    alloc_nodes: int = 0
    alloc_gpus: int = 0  # `gres/gpu=N` in AllocTRES
    gpu_util: Optional[float] = None  # the highest step average of `gres/gpuutil` (None: not accounted)

    @property
    def is_placeholder(self) -> bool:
        """sacct's first record of a job is a stub (name "allocation", ReqMem "16?"): details not yet real."""
        return self.req_mem.endswith("?") or (self.name == "allocation" and self.user == "root")

    @property
    def real_req_mem(self) -> str:
        """ReqMem when it is the job's own request; "" while sacct shows its placeholder ("16?")."""
        return "" if self.req_mem.endswith("?") else self.req_mem

    @property
    def real_nodes(self) -> str:
        """NodeList of a job that ran; "" for one that never got a node."""
        return "" if self.nodes in ("None assigned", "(null)") else self.nodes


@dataclass(frozen=True)
class JobInfo:
    """What `scontrol show job -o` says about a job still known to the controller."""

    job_id: str
    name: str
    state: JobState
    stdout: str
    stderr: str
    work_dir: str
    command: str
    array_job_id: str
    array_task_id: str


@dataclass(frozen=True)
class Submission:
    """What sbatch --parsable answered: the job id, and the cluster when it names one."""

    job_id: str
    cluster: Optional[str]


def job_workdir(submit_dir: str, chdir: str) -> str:
    """A job's working directory: its --chdir (absolute, or relative to the submit directory), else where
    it was submitted from."""
    return posixpath.join(submit_dir, chdir) if chdir else submit_dir
