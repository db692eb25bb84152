"""What a running job uses now: sstat's step rows folded per job, and nvidia-smi's CSV. Pure.

Loaded only once a job runs (an idle daemon never needs it). Rules, each defined once:
- memory: the largest running step's MaxRSS x its NTasks (core.slurm.parse.step_memory, as sacct's
  efficiency counts it), against the job's request (core.slurm.efficiency.req_mem_bytes);
- CPU: the CPU time of all its steps (`cpu=` in TRESUsageInTot, the sum over a step's tasks) over
  elapsed x AllocCPUS;
- GPU: where the site accounts it (Slurm >= 23.02 with NVML/RSMI), the highest step average of
  `gres/gpuutil` (TRESUsageInAve) and the largest `gres/gpumem` (TRESUsageInMax); Slurm 22.05 and
  sites without GPU accounting print neither, which is None, never 0 (no false "idle").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from core.slurm.parse import parse_duration, parse_size, parse_table, step_memory, tres_number, tres_value

SSTAT_DELIMITER = "|"


@dataclass(frozen=True)
class JobUsage:
    """One job's running steps as sstat saw them."""

    job_id: str
    steps: int = 0
    max_rss_bytes: Optional[int] = None
    cpu_seconds: Optional[float] = None
    gpu_util_percent: Optional[float] = None
    gpu_mem_bytes: Optional[int] = None


def parse_sstat(text: str) -> Dict[str, JobUsage]:
    """`sstat -p -a --format=JobID,MaxRSS,NTasks,TRESUsageInAve,TRESUsageInMax,TRESUsageInTot` (header
    included) by job id; step rows (`123.batch`, `123.0`, `123.extern`) are folded into their job."""
    steps: Dict[str, List[Dict[str, str]]] = {}
    for row in parse_table(text, SSTAT_DELIMITER):
        job_id, _, step = row.get("JOBID", "").partition(".")
        if job_id and step:
            steps.setdefault(job_id, []).append(row)
    return {job_id: _fold(job_id, rows) for job_id, rows in steps.items()}


def _fold(job_id: str, rows: List[Dict[str, str]]) -> JobUsage:
    memory = [step_memory(rss, row.get("NTASKS", "")) for row in rows
              for rss in [parse_size(row.get("MAXRSS", ""))] if rss is not None]
    cpu = [seconds for row in rows
           for seconds in [parse_duration(tres_value(row.get("TRESUSAGEINTOT", ""), "cpu"))] if seconds is not None]
    gpu = [value for row in rows for value in [tres_number(row.get("TRESUSAGEINAVE", ""), "gres/gpuutil")]
           if value is not None]
    gpu_mem = [value for row in rows for value in [tres_number(row.get("TRESUSAGEINMAX", ""), "gres/gpumem")]
               if value is not None]
    return JobUsage(
        job_id=job_id, steps=len(rows),
        max_rss_bytes=max(memory) if memory else None,
        cpu_seconds=sum(cpu) if cpu else None,
        gpu_util_percent=max(gpu) if gpu else None,
        gpu_mem_bytes=int(max(gpu_mem)) if gpu_mem else None,
    )


@dataclass(frozen=True)
class GpuReading:
    """nvidia-smi's view of the job's GPUs: the mean utilisation and the memory used, summed."""

    gpus: int
    util_percent: float
    mem_used_bytes: int
    mem_total_bytes: int


def parse_gpu_csv(text: str) -> Optional[GpuReading]:
    """`nvidia-smi --query-gpu=utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits`:
    one line per GPU, `87, 30012, 40960` (percent, MiB, MiB). Lines that are not three numbers (an error
    text, `[N/A]`, `[Not Supported]`) are skipped; None when no GPU line is left."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 3:
            continue
        try:
            util, used, total = (float(cell) for cell in cells)
        except ValueError:
            continue
        rows.append((util, used, total))
    if not rows:
        return None
    mib = 1024 ** 2
    return GpuReading(len(rows), round(sum(r[0] for r in rows) / len(rows), 1),
                      int(sum(r[1] for r in rows) * mib), int(sum(r[2] for r in rows) * mib))


def cpu_fraction(cpu_seconds: Optional[float], elapsed: str, alloc_cpus: int) -> Optional[float]:
    """CPU time / (elapsed x AllocCPUS): 1.0 is every allocated CPU busy all the time."""
    seconds = parse_duration(elapsed) if elapsed else None
    if cpu_seconds is None or not seconds or alloc_cpus <= 0:
        return None
    return round(cpu_seconds / (seconds * alloc_cpus), 3)
