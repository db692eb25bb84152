"""Pure parsers of Slurm's output (text in, frozen values out), tested on output captured from a
real Slurm 22.05 (tests/fixtures/slurm).

squeue and sacct are read by the header line they print, never by counting columns: a new field
is one entry in a column list and one line where the value is used.

Facts encoded here:
- sacct prints `CANCELLED by <uid>`, keeps MaxRSS on step rows only, and briefly returns a
  placeholder record (JobName "allocation", ReqMem "16?") right after submission;
- exit 1 + "Invalid job id specified" means the controller forgot the job (ask sacct),
  exit 1 + "Unable to contact slurm controller" means retry later.
"""
from __future__ import annotations

import re
from time import mktime
from typing import Dict, List, Optional, Sequence, Tuple

from core.slurm.model import AccountingRecord, JobInfo, JobState, QueueEntry

#: sacct's column delimiter: a job name or a submit line may contain `|` but not this.
SACCT_DELIMITER = "^|^"
#: The sacct columns jobmon reads (the header names sacct prints for them).
SACCT_FIELDS = (
    "JobID", "JobIDRaw", "JobName", "State", "ExitCode", "Elapsed", "Timelimit",
    "MaxRSS", "ReqMem", "NodeList", "Partition", "WorkDir", "Start", "End", "User", "AllocCPUS",
    "TotalCPU", "NTasks", "NNodes", "AllocTRES", "TRESUsageInAve",
)
#: The sstat columns live usage reads (`sstat -p`: `|` between fields and after the last one).
SSTAT_FIELDS = ("JobID", "MaxRSS", "NTasks", "TRESUsageInAve", "TRESUsageInMax", "TRESUsageInTot")
#: What live usage needs of sacct: the request (placeholder rows are told by JobName, User and ReqMem).
REQUEST_FIELDS = ("JobID", "JobName", "State", "User", "ReqMem", "AllocCPUS", "NNodes")
#: What `gpu_query: "srun"` asks nvidia-smi for, one CSV line per GPU.
GPU_QUERY = "--query-gpu=utilization.gpu,memory.used,memory.total"
#: The squeue columns jobmon reads: (format letter, the header squeue prints for it).
SQUEUE_COLUMNS = (
    ("%i", "JOBID"), ("%T", "STATE"), ("%r", "REASON"), ("%M", "TIME"), ("%l", "TIME_LIMIT"), ("%L", "TIME_LEFT"),
    ("%S", "START_TIME"), ("%N", "NODELIST"), ("%V", "SUBMIT_TIME"), ("%P", "PARTITION"),
    ("%j", "NAME"),  # last: the only column whose text may contain the delimiter (parse_table keeps it whole)
)
SQUEUE_DELIMITER = "|"

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


def squeue_format(columns: Sequence[Tuple[str, str]] = SQUEUE_COLUMNS) -> str:
    """The `-o` argument for these columns."""
    return SQUEUE_DELIMITER.join(letter for letter, _ in columns)


def parse_table(text: str, delimiter: str) -> List[Dict[str, str]]:
    """Rows of a delimited table whose first line is its header, keyed by upper-cased header name.

    The last column may itself contain the delimiter (a comment, a submit line). Blank lines, and
    lines without the delimiter under a header of several columns (messages, junk), are skipped; a
    row with fewer cells than the header gets "" for the missing ones.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = [name.strip().upper() for name in lines[0].split(delimiter)]
    rows = []
    for line in lines[1:]:
        if len(header) > 1 and delimiter not in line:
            continue
        cells = line.split(delimiter, len(header) - 1)
        cells += [""] * (len(header) - len(cells))
        rows.append({name: cell.strip() for name, cell in zip(header, cells)})
    return rows


def parse_squeue(text: str) -> List[QueueEntry]:
    """Parse `squeue -o` output of SQUEUE_COLUMNS (header included); rows without a job id are skipped."""
    entries = []
    for row in parse_table(text, SQUEUE_DELIMITER):
        job_id = row.get("JOBID", "")
        if job_id:
            entries.append(QueueEntry(
                job_id, JobState.parse(row.get("STATE", "")), row.get("REASON", ""), row.get("TIME", ""),
                time_limit=row.get("TIME_LIMIT", ""), time_left=row.get("TIME_LEFT", ""),
                start_time=row.get("START_TIME", ""), nodes=row.get("NODELIST", ""),
                submit_time=row.get("SUBMIT_TIME", ""), partition=row.get("PARTITION", ""),
                name=row.get("NAME", ""),
            ))
    return entries


def parse_exit_code(text: str) -> Tuple[int, int]:
    """sacct ExitCode is `exit:signal`, e.g. `3:0` or `0:125`."""
    code, _, signal = text.strip().partition(":")
    try:
        return int(code or 0), int(signal or 0)
    except ValueError:
        return 0, 0


_TIMESTAMP_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)", re.ASCII)
_DURATION_RE = re.compile(r"^(?:(\d{1,9})-)?(?:(\d{1,9}):)?(\d{1,9}):(\d{1,9}(?:\.\d{1,9})?)$", re.ASCII)


def parse_duration(text: str) -> Optional[float]:
    """sacct's `[D-]HH:MM:SS` / `MM:SS.mmm` in seconds; UNLIMITED, empty or junk -> None."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


def parse_timestamp(text: str) -> Optional[float]:
    """squeue's and sacct's `2026-11-29T00:19:50` (the local time zone) as epoch seconds; N/A, Unknown -> None.

    Read by hand, not by datetime: every daemon parses these, and datetime would cost it 0.3 MB.
    """
    match = _TIMESTAMP_RE.fullmatch(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        return None
    try:
        return mktime((year, month, day, hour, minute, second, 0, 0, -1))
    except (OverflowError, ValueError):
        return None


def seconds_between(start: str, end: str) -> Optional[float]:
    """From one Slurm timestamp to another (a queue wait: submit to start); None if either is unknown."""
    first, last = parse_timestamp(start), parse_timestamp(end)
    return max(0.0, last - first) if first is not None and last is not None else None


def explicit_time_limit(text: str) -> str:
    """sacct's Timelimit when it is a real duration; "" for UNLIMITED or Partition_Limit (never ran, no -t)."""
    return "" if text in ("", "UNLIMITED", "Partition_Limit") else text


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
    """Parse `sacct -P --delimiter='^|^' --format=...` (header included) with its step rows.

    Step rows (`123.batch`, `123.0`, `123.extern`) only contribute their MaxRSS to the job row: the
    largest of one task (`max_rss_bytes`), and the largest step's MaxRSS x its NTasks (`used_mem_bytes`,
    what memory efficiency counts; a capture without NTasks counts one task per step), and the highest
    average GPU utilisation of a step (`gres/gpuutil` in TRESUsageInAve, where the site accounts it).
    """
    jobs: Dict[str, Dict[str, str]] = {}
    step_rss: Dict[str, int] = {}
    step_used: Dict[str, int] = {}
    step_gpu: Dict[str, float] = {}
    for row in parse_table(text, SACCT_DELIMITER):
        job_id = row.get("JOBID", "")
        if not job_id:
            continue
        if "." in job_id:
            owner = job_id.split(".", 1)[0]
            rss = parse_size(row.get("MAXRSS", ""))
            if rss is not None:
                step_rss[owner] = max(step_rss.get(owner, 0), rss)
                step_used[owner] = max(step_used.get(owner, 0), step_memory(rss, row.get("NTASKS", "")))
            gpu = tres_number(row.get("TRESUSAGEINAVE", ""), "gres/gpuutil")
            if gpu is not None:
                step_gpu[owner] = max(step_gpu.get(owner, 0.0), gpu)
            continue
        jobs[job_id] = row
    return [_accounting_record(job_id, row, step_rss.get(job_id), step_used.get(job_id), step_gpu.get(job_id))
            for job_id, row in jobs.items()]


def step_memory(max_rss: int, ntasks: str) -> int:
    """What a step's memory counts against the request: its MaxRSS (the largest task's) x its NTasks
    (one task when not given). sacct (efficiency) and sstat (live usage) both count it so."""
    return max_rss * max(_count(ntasks), 1)


def _count(text: str) -> int:
    return int(text) if text.isdecimal() else 0


def tres_value(text: str, name: str) -> str:
    """One entry of a TRES list as written (`cpu=00:00:06,mem=2776K`: `cpu` -> "00:00:06"); "" if absent."""
    for item in text.split(","):
        key, _, value = item.strip().partition("=")
        if key == name:
            return value
    return ""


def tres_number(text: str, name: str) -> Optional[float]:
    """One numeric entry of a TRES list (`cpu=2,gres/gpu=1,gres/gpuutil=87`): `gres/gpu` -> 1.0; None if absent."""
    value = tres_value(text, name)
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _accounting_record(job_id: str, row: Dict[str, str], step_rss: Optional[int],
                       step_used: Optional[int], step_gpu: Optional[float]) -> AccountingRecord:
    exit_code, signal = parse_exit_code(row.get("EXITCODE", ""))
    own_rss = parse_size(row.get("MAXRSS", ""))
    return AccountingRecord(
        job_id=job_id,
        job_id_raw=row.get("JOBIDRAW", "") or job_id,
        name=row.get("JOBNAME", ""),
        state=JobState.parse(row.get("STATE", "")),
        state_text=row.get("STATE", ""),
        exit_code=exit_code,
        signal=signal,
        elapsed=row.get("ELAPSED", ""),
        time_limit=row.get("TIMELIMIT", ""),
        max_rss_bytes=step_rss if step_rss is not None else own_rss,
        req_mem=row.get("REQMEM", ""),
        nodes=row.get("NODELIST", ""),
        partition=row.get("PARTITION", ""),
        work_dir=row.get("WORKDIR", ""),
        start=row.get("START", ""),
        end=row.get("END", ""),
        user=row.get("USER", ""),
        alloc_cpus=_count(row.get("ALLOCCPUS", "")),
        total_cpu=row.get("TOTALCPU", ""),
        used_mem_bytes=step_used if step_used is not None else own_rss,
        alloc_nodes=_count(row.get("NNODES", "")),
        alloc_gpus=int(tres_number(row.get("ALLOCTRES", ""), "gres/gpu") or 0),
        gpu_util=step_gpu,
    )


def parse_submit_lines(text: str) -> List[Tuple[str, str]]:
    """(job id, submit line) from `sacct -X -P --delimiter='^|^' --format=JobID,SubmitLine`."""
    return [(row.get("JOBID", ""), row.get("SUBMITLINE", "")) for row in parse_table(text, SACCT_DELIMITER)]


def parse_comments(text: str) -> List[Tuple[str, str]]:
    """(job id, comment) from `squeue -o '%i|%k'` (the comment last: it may contain `|`)."""
    return [(row.get("JOBID", ""), row.get("COMMENT", "")) for row in parse_table(text, SQUEUE_DELIMITER)]


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
    return JobInfo(
        job_id=fields["JobId"],
        name=fields.get("JobName", ""),
        state=JobState.parse(fields.get("JobState", "")),
        stdout=fields.get("StdOut", ""),
        stderr=fields.get("StdErr", ""),
        work_dir=fields.get("WorkDir", ""),
        command=fields.get("Command", ""),
        array_job_id=fields.get("ArrayJobId", ""),
        array_task_id=fields.get("ArrayTaskId", ""),
    )


def error_line(text: str) -> str:
    """The last non-blank line of a command's stderr: where Slurm puts the actual error."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def is_unavailable_error(stderr: str) -> bool:
    lowered = stderr.lower()
    return any(marker in lowered for marker in _UNAVAILABLE_MARKERS)


def is_invalid_job_error(stderr: str) -> bool:
    lowered = stderr.lower()
    return any(marker in lowered for marker in _INVALID_JOB_MARKERS)
