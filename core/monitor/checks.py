"""Per-poll checks: small functions that look at a job still in the queue and return events.

Each check runs at every poll of a job that has not ended (see core.monitor.poller.Running).
An event's key makes a repeat harmless; checks that say a thing once per run (a threshold
crossed, a stall begun) remember it through the event's `notes`, which the poller adds to the
run's LiveState in the same write as the event. Messages are built on demand, so an idle daemon
does not carry the message modules.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

from core import outcome
from core.config import Config, HealthConfig, UsageConfig
from core.monitor.poller import CANCEL_NOTE, Check, Running, Sampler
from core.notify.events import Event, EventKind
from core.slurm.model import JobState, QueueEntry
from core.slurm.parse import parse_duration, seconds_between
from core.state.model import DiskSpace, JobRecord, LiveState

if TYPE_CHECKING:
    from core.analysis.analyzer import Pattern
    from core.monitor.usage import UsageSource


def first_failure(running: Running) -> Sequence[Event]:
    """An array's first failed task, before the summary (config `arrays.notify_first_failure`)."""
    record = running.record
    if any(entry.kind is EventKind.FIRST_FAILURE for entry in record.outbox):
        return ()
    failed = [key for job in record.targets for key in outcome.failed_queue_members(job, running.members)]
    if not failed:
        return ()
    from core.monitor.messages import first_failure_event

    return (first_failure_event(record, failed),)


def started(running: Running) -> Sequence[Event]:
    """`notify.on_start`: the job runs (where, after how long in the queue)."""
    live, entry = running.live, running.headline
    if live is None or "start" in live.notes or entry.state is not JobState.RUNNING:
        return ()
    from core.monitor.alerts import start_event

    return (start_event(running.record, entry.nodes, seconds_between(entry.submit_time, entry.start_time)),)


def _progress_text(running: Running) -> str:
    from core.monitor.alerts import describe_progress
    from core.monitor.live import eta_of

    live = running.live
    return describe_progress(live.reading if live else None, eta_of(live, running.now), running.now)


def progress_every(health: HealthConfig) -> Check:
    """`notify.progress_every`: a message at every step of progress ("25%") or every so often ("6h")."""

    def check(running: Running) -> Sequence[Event]:
        live = running.live
        if live is None or running.headline.state is not JobState.RUNNING:
            return ()
        if health.progress_every_fraction is not None:
            fraction = live.reading.fraction if live.reading is not None else None
            if fraction is None or fraction >= 1.0:
                return ()
            step = int(fraction / health.progress_every_fraction + 1e-9)
            milestone = f"{step * health.progress_every_fraction:.0%} done"
        else:
            every = health.progress_every_seconds or 0.0
            step = int((running.now - live.started_at) // every) if every else 0
            from core.progress.eta import format_span

            milestone = f"{format_span(step * every)} running"
        note = f"progress:{milestone}"
        if step < 1 or note in live.notes:
            return ()
        from core.monitor.alerts import progress_event

        return (progress_event(running.record, milestone, _progress_text(running), note),)

    return check


def stalls(health: HealthConfig) -> Check:
    """One "stalled" message when progress stops for longer than its budget, one "resumed" when it moves;
    with `cancel_on_stall`, one more when it is still stuck that long after the stalled message, and the
    monitor scancels it.

    A failed read of a log is never a stall (nor is a failed squeue: no check runs then)."""

    def check(running: Running) -> Sequence[Event]:
        from core.monitor.live import activity, open_stall
        from core.progress.health import stalled_for

        live = running.live
        if live is None or running.read_errors or running.headline.state is not JobState.RUNNING:
            return ()
        if not any(log.inode for log in live.logs):
            return ()  # no log seen from here (not created yet, or on a filesystem this host lacks): no source
        stall = open_stall(live.notes)
        idle = stalled_for(activity(live), health.stall, running.now)
        if stall is None and idle is None:
            return ()  # moving: nothing to say (and no message module to load)
        from core.monitor import alerts

        if stall is None:
            if idle is None:
                return ()
            return (alerts.stalled_event(running.record, idle, _progress_text(running), live.last_lines,
                                         health.cancel_on_stall),)
        said_at = _stall_said_at(running, stall)
        if live.advanced_at > said_at:  # progress moved (a checkpoint line alone does not end a stall)
            stuck = live.advanced_at - live.advanced_before
            return (alerts.resumed_event(running.record, stall, stuck, _progress_text(running)),)
        if (health.cancel_on_stall is not None and running.now - said_at >= health.cancel_on_stall
                and CANCEL_NOTE not in live.notes):
            stuck = running.now - max(live.advanced_at, live.started_at)
            return (alerts.stall_cancel_event(running.record, stuck, _progress_text(running), live.last_lines),)
        return ()

    return check


def _stall_said_at(running: Running, sequence: int) -> float:
    key = f"{running.record.job_id}:{EventKind.STALLED.value}:{sequence}"
    return next((entry.created_at for entry in running.record.outbox if entry.key == key), running.now)


def hangs(patterns: Callable[[], Sequence[Pattern]]) -> Check:
    """A known hang signature (patterns marked `"hang": true`, like the NCCL watchdog's timeout) in the
    lines the running job just wrote: said at once, not when the time limit finally kills it."""
    loaded: List[Sequence[Pattern]] = []

    def check(running: Running) -> Sequence[Event]:
        live = running.live
        if live is None or not running.fresh or "hang" in live.notes:
            return ()
        if not loaded:
            loaded.append(tuple(pattern for pattern in patterns() if pattern.hang))
        from core.analysis.analyzer import analyze

        root = analyze(running.fresh, loaded[0], max_findings=1).root_cause
        if root is None:
            return ()
        from core.monitor.alerts import hang_event

        return (hang_event(running.record, root.category, root.hint, root.line, live.last_lines),)

    return check


def time_limits(health: HealthConfig) -> Check:
    """Once per threshold of the time limit (80 %, 90 %, 10 minutes left ...), and once when the progress
    projects the end past the limit. The limit is read at every poll: `scontrol update` may change it."""

    def check(running: Running) -> Sequence[Event]:
        live, entry = running.live, running.headline
        limit, left = parse_duration(entry.time_limit), parse_duration(entry.time_left)
        if live is None or limit is None or left is None or entry.state is not JobState.RUNNING:
            return ()
        used = limit - left
        fresh = [t for t in health.time_limit_warn
                 if t.crossed(used, limit) and f"time:{t.label}:{limit:g}" not in live.notes]
        from core.monitor.live import eta_of
        from core.progress.eta import format_span

        if fresh:  # several at once (a late start, a lowered limit): one message, the furthest one named
            from core.monitor import alerts

            newest = max(fresh, key=lambda t: t.fires_at(limit))
            headline = f"{newest.label} of its time limit used" if newest.fraction else f"{newest.label}"
            notes = tuple(f"time:{t.label}:{limit:g}" for t in fresh)
            return (alerts.time_limit_event(running.record, headline, limit, left, _progress_text(running), notes),)
        eta = eta_of(live, running.now)
        note = f"time:projected:{limit:g}"
        ends_at = running.now + left
        if eta is None or note in live.notes or eta.low_at <= ends_at:
            return ()
        headline = f"projected to finish {format_span(eta.end_at - ends_at)} after its time limit"
        from core.monitor import alerts

        return (alerts.time_limit_event(running.record, headline, limit, left, _progress_text(running), (note,)),)

    return check


# -- resources (issue 11): read every sstat_interval by the sampler, judged here -----------------------

#: A low CPU use says something only after the job had time to start working.
CPU_LOW_AFTER = 1800.0
#: Under this share free, the second (last) disk warning.
DISK_CRITICAL = 0.01
MEMORY_NOTE, CPU_LOW_NOTE, GPU_IDLE_NOTE, STALE_NOTE = "memory", "cpu_low", "gpu_idle", "checkpoint_stale"
DISK_LOW_NOTE, DISK_CRITICAL_NOTE = "disk:low", "disk:critical"


def sampler(source: UsageSource, config: UsageConfig) -> Sampler:
    """Looks at a running job's resources at most every `sstat_interval` (the code is loaded at the first look)."""

    def sample(record: JobRecord, entry: QueueEntry, live: LiveState, now: float) -> LiveState:
        if 0.0 <= now - live.sampled_at < config.sstat_interval:
            return live
        from core.monitor.usage import sample as look

        return look(record, entry, live, now, config, source)

    return sample


def disk_low(disk: DiskSpace, config: UsageConfig) -> bool:
    """Below `disk_free_warn`: the larger of its share of the filesystem and its size."""
    return disk.free_bytes < max(config.disk_free_fraction * disk.total_bytes, float(config.disk_free_bytes))


def disk_critical(disk: DiskSpace) -> bool:
    return disk.free_bytes < DISK_CRITICAL * disk.total_bytes


def _running_live(running: Running) -> Optional[LiveState]:
    live = running.live
    return live if live is not None and running.headline.state is JobState.RUNNING else None


def memory(config: UsageConfig) -> Check:
    """One warning when the job's memory passes `memory_warn` of its request (never from an unknown value)."""

    def check(running: Running) -> Sequence[Event]:
        live = _running_live(running)
        usage = live.usage if live is not None else None
        if live is None or usage is None or usage.error or MEMORY_NOTE in live.notes or config.memory_warn is None:
            return ()
        fraction = usage.memory_fraction
        if fraction is None or fraction < config.memory_warn or not usage.max_rss_bytes or not usage.req_mem_bytes:
            return ()
        from core.monitor.alerts import memory_event

        return (memory_event(running.record, usage.max_rss_bytes, usage.req_mem_bytes, MEMORY_NOTE),)

    return check


def cpu_low(config: UsageConfig) -> Check:
    """One warning when, after CPU_LOW_AFTER, the job's CPU time is below `cpu_low_warn` of its CPUs'."""

    def check(running: Running) -> Sequence[Event]:
        live = _running_live(running)
        usage = live.usage if live is not None else None
        elapsed = parse_duration(running.headline.time_used) or 0.0
        if (live is None or usage is None or usage.error or usage.cpu_fraction is None or config.cpu_low_warn is None
                or CPU_LOW_NOTE in live.notes or elapsed < CPU_LOW_AFTER or usage.alloc_cpus < 1):
            return ()
        if usage.cpu_fraction >= config.cpu_low_warn:
            return ()
        from core.monitor.alerts import cpu_low_event

        return (cpu_low_event(running.record, usage.cpu_fraction, usage.alloc_cpus, elapsed, CPU_LOW_NOTE),)

    return check


def gpu_idle(config: UsageConfig) -> Check:
    """One warning when every look for `gpu_idle_after` saw the GPU at 0 % (never where GPUs are not accounted)."""

    def check(running: Running) -> Sequence[Event]:
        live = _running_live(running)
        usage = live.usage if live is not None else None
        if (live is None or usage is None or usage.error or not usage.gpu_idle_since or config.gpu_idle_after is None
                or GPU_IDLE_NOTE in live.notes):
            return ()
        idle_for = usage.updated_at - usage.gpu_idle_since
        if idle_for < config.gpu_idle_after:
            return ()
        from core.monitor.alerts import gpu_idle_event

        return (gpu_idle_event(running.record, idle_for, usage.gpu_mem_bytes, GPU_IDLE_NOTE),)

    return check


def disk(config: UsageConfig) -> Check:
    """One warning below `disk_free_warn`, one more under 1 % (both at once if it drops that fast: one message)."""

    def check(running: Running) -> Sequence[Event]:
        live = _running_live(running)
        if live is None or DISK_CRITICAL_NOTE in live.notes:
            return ()
        critical = next((d for d in live.disks if disk_critical(d)), None)
        low = next((d for d in live.disks if disk_low(d, config)), None)
        from core.monitor.alerts import disk_event

        if critical is not None:
            return (disk_event(running.record, critical.path, critical.free_bytes, critical.total_bytes, True,
                               (DISK_LOW_NOTE, DISK_CRITICAL_NOTE)),)
        if low is not None and DISK_LOW_NOTE not in live.notes:
            return (disk_event(running.record, low.path, low.free_bytes, low.total_bytes, False, (DISK_LOW_NOTE,)),)
        return ()

    return check


def checkpoint_stale(config: UsageConfig) -> Check:
    """One warning when nothing new matched `watch_files` for `checkpoint_stale_after` (counted from the run's
    start while nothing matches; files older than the run count as its start)."""

    def check(running: Running) -> Sequence[Event]:
        live = _running_live(running)
        after = config.checkpoint_stale_after
        if live is None or live.files is None or after is None or STALE_NOTE in live.notes:
            return ()
        files = live.files
        quiet_for = live.sampled_at - max(files.newest_at, live.started_at)
        if quiet_for < after:
            return ()
        from core.monitor.alerts import checkpoint_stale_event

        globs = [*config.watch_files, *running.record.watch_files]
        return (checkpoint_stale_event(running.record, globs, files.count, files.newest_path, quiet_for,
                                       STALE_NOTE),)

    return check


def resource_checks(config: UsageConfig) -> List[Check]:
    return [memory(config), cpu_low(config), gpu_idle(config), disk(config), checkpoint_stale(config)]


def checks_for(config: Config, patterns: Callable[[], Sequence[Pattern]]) -> List[Check]:
    """The checks a monitor runs at each poll, as configured."""
    health = config.health
    checks: List[Check] = [stalls(health), hangs(patterns), time_limits(health), *resource_checks(health.usage)]
    if config.notify_first_failure:
        checks.append(first_failure)
    if health.on_start:
        checks.append(started)
    if health.progress_every_fraction is not None or health.progress_every_seconds:
        checks.append(progress_every(health))
    return checks
