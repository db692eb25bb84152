"""A running job's resources, looked at every `health.sstat_interval`: sstat, watched files, free disk.

`sample` folds one look into the run's LiveState (usage, files, disks); the checks in
core.monitor.checks turn it into warnings. sstat is shared by all of the user's monitors (one call
per interval, core.slurm.shared), and so is the request (ReqMem, AllocCPUS): one sacct with the
refresh, for the running jobs whose request is not known yet. A look that fails leaves the values
unknown with the reason (`usage.error`), which `status` shows and which no check takes for a
reading. Loaded only once a job runs.
"""
from __future__ import annotations

import glob
import os
from dataclasses import replace
from typing import Dict, List, Optional, Protocol, Sequence

from core.config import GpuQuery, UsageConfig
from core.errors import SlurmError
from core.logs import log
from core.slurm.efficiency import req_mem_bytes
from core.slurm.model import QueueEntry
from core.slurm.shared import UsageSnapshot
from core.slurm.usage import cpu_fraction, parse_gpu_csv, parse_sstat
from core.state.model import DiskSpace, JobRecord, LiveState, Usage, WatchedFiles


class UsageSource(Protocol):
    """What a look asks Slurm (core.slurm.shared.SharedSlurm's snapshot plus Slurm.gpu_text, or a test double)."""

    def usage_snapshot(self, job_ids: Sequence[str], max_age: float) -> UsageSnapshot: ...

    def gpu_text(self, job_id: str) -> str: ...


def sample(record: JobRecord, entry: QueueEntry, live: LiveState, now: float, config: UsageConfig,
           source: UsageSource) -> LiveState:
    """The LiveState after one look at the job's resources (a new object)."""
    new = replace(live, sampled_at=now, notes=list(live.notes))
    new.usage = read_usage(record.target, entry, live.usage, now, config, source)
    before = live.usage.problem if live.usage is not None else ""
    if new.usage.problem and new.usage.problem != before:
        log.info("job %s: usage unknown: %s", record.job_id, new.usage.problem)
    globs = [*config.watch_files, *record.watch_files]
    new.files = look_at_files(record.workdir, globs, live.files) if globs else None
    if config.disk_free_fraction or config.disk_free_bytes:
        new.disks = free_space([record.workdir, *(os.path.dirname(path) for path in record.log_paths)])
    return new


def _request(job_id: str, usage: Usage, snapshot: UsageSnapshot) -> Usage:
    """ReqMem (per job, per node or per CPU) and AllocCPUS, as the shared snapshot's sacct gave them."""
    found = snapshot.requests.get(job_id)
    if found is None:
        return replace(usage, request_error=snapshot.request_error)
    req_mem, cpus, nodes = found
    return replace(usage, req_mem_bytes=req_mem_bytes(req_mem, cpus, nodes), alloc_cpus=cpus, request_error="")


def read_usage(job_id: str, entry: QueueEntry, before: Optional[Usage], now: float, config: UsageConfig,
               source: UsageSource) -> Usage:
    usage = before if before is not None else Usage()
    snapshot = source.usage_snapshot([job_id], config.sstat_interval)
    if usage.req_mem_bytes is None:
        usage = _request(job_id, usage, snapshot)
    if snapshot.error:
        return replace(usage, error=snapshot.error, gpu_idle_since=0.0)
    found = parse_sstat(snapshot.text).get(job_id) if job_id in snapshot.queried else None
    if found is None or not found.steps:  # before the first reading: not measured yet, no problem to show
        gone = "sstat shows no running step of this job any more" if usage.updated_at else ""
        return replace(usage, error=gone, gpu_idle_since=0.0)
    gpu_util = gpu_mem = None
    if config.gpu_query is not GpuQuery.OFF:
        gpu_util, gpu_mem = found.gpu_util_percent, found.gpu_mem_bytes
    srun_failed = usage.gpu_srun_failed
    if config.gpu_query is GpuQuery.SRUN and not srun_failed:
        try:
            reading = parse_gpu_csv(source.gpu_text(job_id))
        except SlurmError as exc:  # no GPU, no nvidia-smi, srun refused: GPU use stays unknown, silently
            log.info("job %s: no GPU reading from srun nvidia-smi (not asked again this run): %s", job_id, exc)
            reading = None
        srun_failed = reading is None  # each try is a job step: one that gave nothing is not repeated
        if reading is not None:
            gpu_util, gpu_mem = reading.util_percent, reading.mem_used_bytes
    idle_since = (usage.gpu_idle_since or now) if gpu_util is not None and gpu_util <= 0.0 else 0.0
    return replace(usage, updated_at=now, max_rss_bytes=found.max_rss_bytes,
                   cpu_fraction=cpu_fraction(found.cpu_seconds, entry.time_used, usage.alloc_cpus),
                   gpu_util_percent=gpu_util, gpu_mem_bytes=gpu_mem, gpu_idle_since=idle_since,
                   gpu_srun_failed=srun_failed, error="")


def look_at_files(workdir: str, globs: Sequence[str], before: Optional[WatchedFiles]) -> WatchedFiles:
    """Count, size and the newest of the files matching the globs (relative to the job's working directory)."""
    found: Dict[str, os.stat_result] = {}
    for pattern in globs:
        full = pattern if os.path.isabs(pattern) else os.path.join(workdir, pattern)
        for path in glob.glob(os.path.expanduser(full)):
            try:
                info = os.stat(path)
            except OSError:
                continue
            if not os.path.isdir(path):
                found[path] = info
    total = sum(info.st_size for info in found.values())
    newest = max(found, key=lambda path: found[path].st_mtime, default="")
    return WatchedFiles(count=len(found), total_bytes=total,
                        growth_bytes=total - before.total_bytes if before is not None else 0,
                        newest_path=newest, newest_at=found[newest].st_mtime if newest else 0.0)


def free_space(folders: Sequence[str]) -> List[DiskSpace]:
    """statvfs of each distinct filesystem among these folders (what an unprivileged user may still write)."""
    seen = set()
    disks = []
    for folder in dict.fromkeys(f for f in folders if f):
        try:
            device = os.stat(folder).st_dev
            if device in seen:
                continue
            info = os.statvfs(folder)
        except OSError:
            continue
        seen.add(device)
        disks.append(DiskSpace(folder, info.f_bavail * info.f_frsize, info.f_blocks * info.f_frsize))
    return disks
