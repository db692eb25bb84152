"""The job record, schema 2: every persisted structure as a dataclass or an enum.

One JSON document per job (`state/<job>.json`), decoded by core.state.codec from these types;
files of schema 1 are upgraded by core.state.migrate when read (`live` was added to schema 2 as an
optional field: a record without it reads as one whose job was not yet seen running). A record tells the job's whole
story: how it was submitted, who monitors it, what Slurm last said, how it ended, its escalation
chain, what its logs say, and every message it produced (the outbox) with their deliveries.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol

from core.analysis.finding import Finding
from core.notify import outbox
from core.notify.outbox import OutboxEntry
from core.progress.follow import FollowedLog
from core.progress.reading import Reading, Sample
from core.slurm import efficiency as efficiency_rules
from core.slurm.efficiency import Efficiency, EfficiencySpread
from core.slurm.model import JobState, is_clean_end, job_workdir

SCHEMA_VERSION = 2
class _Accounted(Protocol):
    """What sacct said of one job or task, as FinalRecord and TaskOutcome both keep it."""

    elapsed: str
    time_limit: str
    total_cpu: str
    alloc_cpus: int
    used_mem_bytes: Optional[int]
    req_mem: str
    alloc_nodes: int
    gpu_util: Optional[float]
    alloc_gpus: int


def _efficiency(row: _Accounted) -> Efficiency:
    return efficiency_rules.compute(
        elapsed=row.elapsed, time_limit=row.time_limit, total_cpu=row.total_cpu, alloc_cpus=row.alloc_cpus,
        used_mem_bytes=row.used_mem_bytes, req_mem=row.req_mem, nodes=row.alloc_nodes,
        gpu_util=row.gpu_util, gpus=row.alloc_gpus)


#: A finished job stays in `status` (and in the live part of the state folder) this long.
RECENT = 24 * 3600.0


class RecordSource(str, enum.Enum):
    SUBMIT = "submit"  # `jobmon submit`: jobmon ran sbatch
    WATCH = "watch"  # `jobmon watch`: a job submitted with plain sbatch
    WATCH_ALL = "watch-all"  # found by `jobmon watch --all`; `jobmon submit` adopts it when it comes second


class FinalSource(str, enum.Enum):
    SACCT = "sacct"
    SQUEUE = "squeue"  # sacct never answered: what squeue knew, marked incomplete


class Action(str, enum.Enum):
    """What an escalation chain does after an attempt (or an array task) ended."""

    ESCALATE_MEM = "escalate_mem"
    ESCALATE_TIME = "escalate_time"
    RELAUNCH = "relaunch"
    STOP = "stop"


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
    stopped_at: float = 0.0


@dataclass
class Observation:
    """The last thing Slurm told us about the job while it was not yet final."""

    state: Optional[JobState] = None
    reason: str = ""
    seen_at: float = 0.0
    controller_down_since: float = 0.0
    accounting_down_since: float = 0.0
    final_seen_at: float = 0.0
    last_error: str = ""


@dataclass
class FinalRecord:
    """How the job ended, from sacct (or from squeue alone when sacct never answered)."""

    state: JobState = JobState.UNKNOWN
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
    source: FinalSource = FinalSource.SACCT
    incomplete: bool = False
    decided_at: float = 0.0
    alloc_cpus: int = 0
    task_counts: Dict[str, int] = field(default_factory=dict)  # arrays and het jobs: how many ended how
    failed_tasks: str = ""
    slowest_task: str = ""
    total_cpu: str = ""  # sacct's TotalCPU ("" when sacct did not give it)
    used_mem_bytes: Optional[int] = None  # the largest step's MaxRSS x its tasks
    alloc_nodes: int = 0
    alloc_gpus: int = 0
    gpu_util: Optional[float] = None  # the highest step average of gres/gpuutil (None: not accounted)

    @property
    def is_success(self) -> bool:
        return is_clean_end(self.state, self.exit_code, self.signal)

    @property
    def efficiency(self) -> Efficiency:
        """CPU, memory and time used of what was asked (one job; a group's is its tasks' spread)."""
        return _efficiency(self)

    @property
    def advice(self) -> List[str]:
        """At most two lines of advice, for a run that says something about its needs (it completed or ran
        into its time limit); none for a group."""
        if self.is_group or not (self.is_success or self.state is JobState.TIMEOUT):
            return []
        return efficiency_rules.advice(self.efficiency, used_mem_bytes=self.used_mem_bytes, req_mem=self.req_mem,
                                       alloc_cpus=self.alloc_cpus, elapsed=self.elapsed, nodes=self.alloc_nodes)

    @property
    def is_group(self) -> bool:
        """A summary of array tasks or het components rather than one job."""
        return bool(self.task_counts)

    @property
    def summary(self) -> str:
        """How it ended in a few words: the state, or for a group its counts (`7 COMPLETED, 3 FAILED`)."""
        return self.state_text if self.is_group else self.state.value


@dataclass
class TaskOutcome:
    """How one array task (or het component) ended."""

    task_id: str
    job_id: str = ""
    raw_id: str = ""
    state: JobState = JobState.UNKNOWN
    exit_code: int = 0
    signal: int = 0
    elapsed: str = ""
    max_rss_bytes: Optional[int] = None
    categories: List[str] = field(default_factory=list)
    req_mem: str = ""  # what this task ran with: an escalation starts from it
    time_limit: str = ""
    alloc_cpus: int = 0
    total_cpu: str = ""
    used_mem_bytes: Optional[int] = None
    alloc_nodes: int = 0
    alloc_gpus: int = 0
    gpu_util: Optional[float] = None

    @property
    def is_failure(self) -> bool:
        return not is_clean_end(self.state, self.exit_code, self.signal)

    @property
    def efficiency(self) -> Efficiency:
        return _efficiency(self)


@dataclass(frozen=True)
class Level:
    """Resources of one rung of an escalation ladder; empty fields keep what the job asked for."""

    mem: str = ""
    time: str = ""
    partition: str = ""
    gres: str = ""
    cpus: int = 0

    def describe(self) -> str:
        """`4G/02:00:00 on big gpu:2 8 CPUs`: the one way resources are written for people."""
        text = "/".join(part for part in (self.mem, self.time) if part) or "same resources"
        extras = [f"on {self.partition}" if self.partition else "", self.gres, f"{self.cpus} CPUs" if self.cpus else ""]
        return " ".join([text, *[extra for extra in extras if extra]])

    @property
    def is_empty(self) -> bool:
        return self == Level()


@dataclass
class Attempt:
    """One job of an escalation chain: the resources it ran with and how it ended."""

    job_id: str
    level_index: int = 0
    resources: Level = field(default_factory=Level)
    state: Optional[JobState] = None  # None while it runs
    exit_code: int = 0
    elapsed: str = ""
    core_hours: float = 0.0
    categories: List[str] = field(default_factory=list)
    decision: str = ""  # what jobmon did next, and why
    round: int = 1  # a chain's rounds: an array round may need several submissions
    tasks: str = ""  # for an array: the --array spec this submission ran
    task_counts: Dict[str, int] = field(default_factory=dict)  # for an array: how its tasks ended
    failed_tasks: str = ""
    efficiency: Optional[Efficiency] = None  # a single job's, when it ended
    efficiency_spread: Optional[EfficiencySpread] = None  # an array submission's, across its tasks


@dataclass
class TaskTrack:
    """One array task retried by a chain: the level it runs at now and how each of its runs ended."""

    level_index: int = 0
    level: Level = field(default_factory=Level)
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
class PendingSubmission:
    """One sbatch of the next round: decided before it runs, its job id written right after."""

    level_index: int
    level: Level
    action: Action
    tasks: str = ""  # an array round: the --array spec to resubmit
    sbatch_started: float = 0.0  # set just before sbatch runs: only then can a tagged job exist
    job_id: str = ""
    stdout: str = ""
    stderr: str = ""
    refused: str = ""  # sbatch's own words when it refused this submission


@dataclass
class PendingRound:
    """A decision not yet carried out: written before any sbatch, so `recover` finishes it after a crash."""

    round: int
    decided_at: float
    submissions: List[PendingSubmission] = field(default_factory=list)


@dataclass
class Chain:
    """Automatic resubmission: the attempts so far, the one running, and a decision not yet carried out."""

    ladder: List[Level] = field(default_factory=list)
    max_retries: int = 3
    mem_option: str = "--mem"
    current_job: str = ""
    level_index: int = 0
    level: Level = field(default_factory=Level)
    attempts: List[Attempt] = field(default_factory=list)
    pending: Optional[PendingRound] = None
    round: int = 1
    rounds: List[Round] = field(default_factory=list)  # arrays only
    tasks: Dict[str, TaskTrack] = field(default_factory=dict)  # arrays only: retried tasks by id


#: Progress samples kept per job (advances only): enough for the rates and the stall budget.
MAX_SAMPLES = 32


@dataclass
class Usage:
    """What sstat (and, when enabled, nvidia-smi) last said of a running job's resources; None: unknown."""

    updated_at: float = 0.0  # when sstat last answered for this job (0: never)
    max_rss_bytes: Optional[int] = None  # the largest step's MaxRSS x its tasks (core.slurm.usage)
    req_mem_bytes: Optional[int] = None  # the job's memory request, from sacct's ReqMem
    alloc_cpus: int = 0
    cpu_fraction: Optional[float] = None  # CPU time of its steps / (elapsed x AllocCPUS)
    gpu_util_percent: Optional[float] = None  # where the site accounts GPUs (or gpu_query "srun")
    gpu_mem_bytes: Optional[int] = None
    gpu_idle_since: float = 0.0  # first look of the current run of looks at 0 % GPU (0: not idle)
    gpu_srun_failed: bool = False  # `srun ... nvidia-smi` gave nothing once: not tried again this run
    error: str = ""  # why the values are unknown or old ("sstat failed: ...", "no step in sstat yet")
    request_error: str = ""  # why the request (ReqMem, AllocCPUS) is unknown: sacct failed

    @property
    def memory_fraction(self) -> Optional[float]:
        if self.max_rss_bytes is None or not self.req_mem_bytes:
            return None
        return self.max_rss_bytes / self.req_mem_bytes

    @property
    def problem(self) -> str:
        """What `status` says when the values are unknown: sstat's failure, else sacct's for the request."""
        if self.error:
            return self.error
        return f"memory request unknown: {self.request_error}" if self.req_mem_bytes is None and self.request_error else ""


@dataclass
class WatchedFiles:
    """The files matching the job's `watch_files` globs at the last look."""

    count: int = 0
    total_bytes: int = 0
    growth_bytes: int = 0  # total_bytes minus that of the look before
    newest_path: str = ""
    newest_at: float = 0.0  # the newest match's modification time (0: no match)


@dataclass
class DiskSpace:
    """Free space on a filesystem the job writes to (its working directory, its logs' folders)."""

    path: str = ""
    free_bytes: int = 0
    total_bytes: int = 0


@dataclass
class LiveState:
    """What the monitor saw of one run of the job (a chain's next attempt, or a requeue, starts afresh)."""

    target: str = ""
    run_start: str = ""  # squeue's START_TIME of this run: a requeued job starts another run
    started_at: float = 0.0  # first seen running
    logs: List[FollowedLog] = field(default_factory=list)
    reading: Optional[Reading] = None  # the newest progress line understood
    read_at: float = 0.0  # when `reading` was seen
    samples: List[Sample] = field(default_factory=list)  # overall progress when it moved, oldest first
    advanced_at: float = 0.0  # progress last moved (0: never)
    advanced_before: float = 0.0  # the advance before that one (how long a stall lasted, once it moves)
    paused_at: float = 0.0  # a checkpoint/eval/save line after the last advance
    grown_at: float = 0.0  # a log last grew
    notes: List[str] = field(default_factory=list)  # what was already said about this run ("start", "time:80%", ...)
    last_lines: List[str] = field(default_factory=list)  # the newest log lines, cleaned (for a stall message)
    sampled_at: float = 0.0  # usage, watched files and disks were last looked at (every health.sstat_interval)
    usage: Optional[Usage] = None
    files: Optional[WatchedFiles] = None  # None: no watch_files
    disks: List[DiskSpace] = field(default_factory=list)


@dataclass
class LogOptions:
    """The job's -o/-e/-D as given (unexpanded): array tasks' log paths are worked out from them."""

    output: str = ""
    error: str = ""
    chdir: str = ""


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
    log_options: LogOptions = field(default_factory=LogOptions)
    array_spec: str = ""
    expected_tasks: List[int] = field(default_factory=list)
    created_at: float = 0.0
    source: RecordSource = RecordSource.SUBMIT
    monitor: MonitorInfo = field(default_factory=MonitorInfo)
    observation: Observation = field(default_factory=Observation)
    final: Optional[FinalRecord] = None
    tasks: List[TaskOutcome] = field(default_factory=list)
    chain: Optional[Chain] = None
    categories: List[str] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)
    excerpt: str = ""
    warnings: List[Finding] = field(default_factory=list)  # log lines that looked bad in a run that went on
    outbox: List[OutboxEntry] = field(default_factory=list)
    live: Optional[LiveState] = None
    watch_files: List[str] = field(default_factory=list)  # `jobmon submit --watch-files` (with config's)
    schema_version: int = SCHEMA_VERSION

    @property
    def efficiency(self) -> Optional[Efficiency]:
        """How much of its request the job used, once it ended (None for a group: see efficiency_spread)."""
        if self.final is None or self.final.is_group or self.tasks:
            return None
        return self.final.efficiency

    @property
    def efficiency_spread(self) -> Optional[EfficiencySpread]:
        """An array's (or het job's) efficiency: each value's spread across its tasks' latest runs."""
        if self.final is None or not self.tasks:
            return None
        return efficiency_rules.spread([task.efficiency for task in self.tasks if task.job_id])

    @property
    def target(self) -> str:
        """The Slurm job being watched now: the chain's current attempt, or the job itself."""
        return self.chain.current_job if self.chain is not None and self.chain.current_job else self.job_id

    @property
    def workdir(self) -> str:
        """The job's working directory: its --chdir, itself relative to the submit directory."""
        return job_workdir(self.submit_dir, self.log_options.chdir)

    @property
    def log_paths(self) -> List[str]:
        """The job's logs: stderr first (where errors and progress bars go), stdout when it is another file."""
        return list(dict.fromkeys(p for p in (self.stderr_path, self.stdout_path) if p))

    @property
    def targets(self) -> List[str]:
        """Every Slurm job of the current round (an array round can need several submissions)."""
        if self.chain is None:
            return [self.job_id]
        jobs = [a.job_id for a in self.chain.attempts if a.round == self.chain.round]
        return jobs if len(jobs) > 1 else [self.target]

    @property
    def slurm_jobs(self) -> List[str]:
        """Every Slurm job this record is answerable for now: the round's, and those of a round being submitted."""
        pending = self.chain.pending.submissions if self.chain is not None and self.chain.pending else []
        return list(dict.fromkeys([*self.targets, *(s.job_id for s in pending if s.job_id)]))

    @property
    def story_over(self) -> bool:
        """The job (or the chain's last attempt) has ended and nothing more will be submitted."""
        return self.final is not None and (self.chain is None or self.chain.pending is None)

    @property
    def done(self) -> bool:
        """Monitoring is complete: the story is over and every message arrived (or its sink is gone)."""
        return self.story_over and outbox.is_delivered(self.outbox)

    @property
    def cancelled(self) -> bool:
        return self.monitor.stop_requested

    @property
    def ended_at(self) -> float:
        """When monitoring ended: the job's end was decided, or monitoring was stopped (0 while it goes on)."""
        if self.cancelled:
            return self.monitor.stopped_at or self.created_at
        return (self.final.decided_at or self.created_at) if self.done and self.final is not None else 0.0

    def is_current(self, now: float) -> bool:
        """Shown by `status` and kept in the live part of the state folder: still monitored, ended within
        RECENT, or (unless cancelled) with a message that did not arrive."""
        if not (self.done or self.cancelled):
            return True
        if now - self.ended_at < RECENT:
            return True
        return not self.cancelled and outbox.has_undelivered(self.outbox)
