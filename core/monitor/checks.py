"""Per-poll checks: small functions that look at a job still in the queue and return events.

Each check runs at every poll of a job that has not ended (see core.monitor.poller.Running).
An event's key makes a repeat harmless; checks that say a thing once per run (a threshold
crossed, a stall begun) remember it through the event's `notes`, which the poller adds to the
run's LiveState in the same write as the event. Messages are built on demand, so an idle daemon
does not carry the message modules.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Sequence

from core import outcome
from core.config import Config, HealthConfig
from core.monitor.poller import CANCEL_NOTE, Check, Running
from core.notify.events import Event, EventKind
from core.slurm.model import JobState
from core.slurm.parse import parse_duration, seconds_between

if TYPE_CHECKING:
    from core.analysis.analyzer import Pattern


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
        from core.monitor import alerts
        from core.monitor.live import eta_of
        from core.progress.eta import format_span

        if fresh:  # several at once (a late start, a lowered limit): one message, the furthest one named
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
        return (alerts.time_limit_event(running.record, headline, limit, left, _progress_text(running), (note,)),)

    return check


def checks_for(config: Config, patterns: Callable[[], Sequence[Pattern]]) -> List[Check]:
    """The checks a monitor runs at each poll, as configured."""
    health = config.health
    checks: List[Check] = [stalls(health), hangs(patterns), time_limits(health)]
    if config.notify_first_failure:
        checks.append(first_failure)
    if health.on_start:
        checks.append(started)
    if health.progress_every_fraction is not None or health.progress_every_seconds:
        checks.append(progress_every(health))
    return checks
