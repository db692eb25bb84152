"""How much of what a job asked for it used, computed like seff and reportseff. Pure.

Each rule is defined once here, over the values sacct gives (kept as its own strings):
- CPU: TotalCPU / (Elapsed x AllocCPUS);
- memory: the largest step's MaxRSS x that step's NTasks (folded in by parse_sacct) / ReqMem,
  where ReqMem is the job's total on Slurm >= 21.08 (22.05 prints `--mem-per-cpu=100M -c 2` as
  `200M`, captured in tests/fixtures/slurm_headers/sacct_19_fields.txt) and per node (`4Gn`) or
  per CPU (`4Gc`) on older Slurm;
- time: Elapsed / Timelimit;
- GPU: the highest step average of `gres/gpuutil` (TRESUsageInAve: Slurm >= 23.02 with NVML or RSMI),
  per GPU of AllocTRES's `gres/gpu`. Before 24.05 Slurm counts only a job's last GPU, from 24.05 the
  sum over its GPUs, and sacct does not say which: with several GPUs a value above 100 is a sum (divided
  by the GPUs), one of at most 100 could be either and gives None. Slurm 22.05 accounts none: None.
A value is None when Slurm gave nothing to compute it from. An array is summarised by the spread
of its tasks' values (min / median / max).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

from core.slurm.parse import explicit_time_limit, parse_duration, parse_size


@dataclass(frozen=True)
class Efficiency:
    """Percent of the request used; None where Slurm gave nothing (no TotalCPU, no MaxRSS sample, ...)."""

    cpu_percent: Optional[float] = None
    memory_percent: Optional[float] = None
    time_percent: Optional[float] = None
    gpu_percent: Optional[float] = None

    @property
    def is_empty(self) -> bool:
        return self == Efficiency()


@dataclass(frozen=True)
class Spread:
    """One value across an array's tasks (only tasks that have it count)."""

    min: float
    median: float
    max: float
    count: int = 0


@dataclass(frozen=True)
class EfficiencySpread:
    """An array's efficiency: each value's spread across its tasks."""

    tasks: int = 0
    cpu_percent: Optional[Spread] = None
    memory_percent: Optional[Spread] = None
    time_percent: Optional[Spread] = None
    gpu_percent: Optional[Spread] = None


def req_mem_bytes(req_mem: str, alloc_cpus: int = 0, nodes: int = 0) -> Optional[int]:
    """ReqMem as the job's total in bytes: `200M` (Slurm >= 21.08: already the total), `100Mc` x
    AllocCPUS, `4Gn` x NNodes (older Slurm; a count sacct did not give counts as 1). sacct's
    placeholder (`16?`), `0` (no limit) and "" give None."""
    text = (req_mem or "").strip()
    if not text or text.endswith("?"):
        return None
    factor = 1
    if text[-1] in "cC":
        factor, text = max(alloc_cpus, 1), text[:-1]
    elif text[-1] in "nN":
        factor, text = max(nodes, 1), text[:-1]
    size = parse_size(text, default_unit="M")  # sacct writes sizes with a unit; a bare number is MB
    return size * factor if size else None


def _percent(used: Optional[float], available: Optional[float]) -> Optional[float]:
    if used is None or available is None or available <= 0:
        return None
    return round(100.0 * used / available, 1)


def cpu_percent(total_cpu: str, elapsed: str, alloc_cpus: int) -> Optional[float]:
    """TotalCPU / (Elapsed x AllocCPUS); None without TotalCPU (older captures), CPUs or a run time."""
    if not total_cpu or alloc_cpus <= 0:
        return None
    seconds = parse_duration(elapsed)
    return _percent(parse_duration(total_cpu), seconds * alloc_cpus if seconds else None)


def memory_percent(used_bytes: Optional[int], req_mem: str, alloc_cpus: int = 0, nodes: int = 0) -> Optional[float]:
    """The largest step's memory (MaxRSS x its tasks) / ReqMem; None when either is unknown."""
    return _percent(used_bytes, req_mem_bytes(req_mem, alloc_cpus, nodes)) if used_bytes else None


def time_percent(elapsed: str, time_limit: str) -> Optional[float]:
    """Elapsed / Timelimit; None for UNLIMITED or an unknown elapsed time."""
    limit = parse_duration(explicit_time_limit(time_limit))
    return _percent(parse_duration(elapsed), limit)


def gpu_percent(gpu_util: Optional[float], gpus: int) -> Optional[float]:
    """Average utilisation per allocated GPU; None where Slurm accounts none or the value is ambiguous."""
    if gpu_util is None or gpus <= 0:
        return None
    if gpus == 1:
        return round(gpu_util, 1)
    return round(gpu_util / gpus, 1) if gpu_util > 100 else None


def compute(*, elapsed: str, time_limit: str, total_cpu: str, alloc_cpus: int, used_mem_bytes: Optional[int],
            req_mem: str, nodes: int = 0, gpu_util: Optional[float] = None, gpus: int = 0) -> Efficiency:
    """All of a job's efficiency values from what sacct recorded."""
    return Efficiency(
        cpu_percent=cpu_percent(total_cpu, elapsed, alloc_cpus),
        memory_percent=memory_percent(used_mem_bytes, req_mem, alloc_cpus, nodes),
        time_percent=time_percent(elapsed, time_limit),
        gpu_percent=gpu_percent(gpu_util, gpus),
    )


def spread_of(values: Sequence[Optional[float]]) -> Optional[Spread]:
    known = sorted(v for v in values if v is not None)
    if not known:
        return None
    middle = len(known) // 2
    median = known[middle] if len(known) % 2 else (known[middle - 1] + known[middle]) / 2
    return Spread(min=known[0], median=round(median, 1), max=known[-1], count=len(known))


def spread(values: Sequence[Efficiency]) -> EfficiencySpread:
    """An array's efficiency: the spread of each value across the tasks that have it."""
    return EfficiencySpread(
        tasks=len(values),
        cpu_percent=spread_of([v.cpu_percent for v in values]),
        memory_percent=spread_of([v.memory_percent for v in values]),
        time_percent=spread_of([v.time_percent for v in values]),
        gpu_percent=spread_of([v.gpu_percent for v in values]),
    )


def format_size(count: float) -> str:
    """`1.2G`, `300M`, `2T`: sizes as sbatch's --mem takes them (powers of 1024)."""
    for unit in ("K", "M", "G", "T"):
        count /= 1024.0
        if count < 1024 or unit == "T":
            text = f"{count:.1f}" if count < 10 else f"{count:.0f}"
            return f"{text[:-2] if text.endswith('.0') else text}{unit}"
    return f"{count:.0f}T"


def suggested_mem(used_bytes: int) -> str:
    """What to ask for next time: the peak plus a quarter, rounded up to a round size (`2G`, `600M`)."""
    target = used_bytes * 1.25
    for unit, size in (("M", 1024 ** 2), ("G", 1024 ** 3)):
        for step in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if unit == "G" else (100, 200, 300, 400, 500, 600, 800):
            if step * size >= target:
                return f"{step}{unit}"
    return format_size(target)


#: Advice is given only when it is clear: this little used of something that much asked for.
MEMORY_ADVICE_BELOW = 50.0
MEMORY_ADVICE_MIN_BYTES = 1024 ** 3
CPU_ADVICE_BELOW = 50.0
#: A run shorter than this says nothing about what a job needs.
ADVICE_MIN_SECONDS = 60.0


def advice(efficiency: Efficiency, *, used_mem_bytes: Optional[int], req_mem: str, alloc_cpus: int, elapsed: str,
           nodes: int = 0) -> List[str]:
    """At most two lines, only when clear: `used 1.2G of 32G: 2G would do`, `used 3 % of 16 CPUs`."""
    lines: List[str] = []
    requested = req_mem_bytes(req_mem, alloc_cpus, nodes)
    if (efficiency.memory_percent is not None and efficiency.memory_percent < MEMORY_ADVICE_BELOW
            and used_mem_bytes and requested and requested >= MEMORY_ADVICE_MIN_BYTES):
        suggestion = suggested_mem(used_mem_bytes)
        requested_bytes = req_mem_bytes(suggestion) or requested
        if requested_bytes < requested:
            lines.append(f"used {format_size(used_mem_bytes)} of {format_size(requested)}: {suggestion} would do")
    long_enough = (parse_duration(elapsed) or 0.0) >= ADVICE_MIN_SECONDS
    if (efficiency.cpu_percent is not None and efficiency.cpu_percent < CPU_ADVICE_BELOW and alloc_cpus > 1
            and long_enough):
        lines.append(f"used {efficiency.cpu_percent:.0f} % of {alloc_cpus} CPUs")
    return lines[:2]


def describe(efficiency: Efficiency) -> str:
    """`CPU 98 %, memory 12 %, time 17 % of the limit` (unknown values left out; "" when none is known)."""
    parts = [f"{label} {value:.0f} %" for label, value in (
        ("CPU", efficiency.cpu_percent), ("memory", efficiency.memory_percent), ("time", efficiency.time_percent),
        ("GPU", efficiency.gpu_percent)) if value is not None]
    return ", ".join(parts)


def describe_spread(values: EfficiencySpread) -> str:
    """`CPU 12–98 % (median 60 %), time 3–17 %`: one part per value known for any task."""
    parts = []
    for label, item in (("CPU", values.cpu_percent), ("memory", values.memory_percent),
                        ("time", values.time_percent), ("GPU", values.gpu_percent)):
        if item is not None:
            parts.append(f"{label} {item.min:.0f}–{item.max:.0f} % (median {item.median:.0f} %)")
    return ", ".join(parts)
