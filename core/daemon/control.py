"""`jobmon cancel` and `jobmon recover`: stopping monitors, and restarting dead ones and their messages."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from core.config import Config, Paths
from core.daemon.launcher import start_monitor
from core.daemon.liveness import Health, monitor_health, stop_monitor, this_host
from core.errors import JobmonError, StateError
from core.notify import outbox
from core.slurm.client import Slurm
from core.state.model import JobRecord
from core.state.store import StateStore


@dataclass(frozen=True)
class Cancelled:
    record: JobRecord
    cancelled_jobs: Tuple[str, ...] = ()
    failures: Tuple[str, ...] = ()


def cancel(store: StateStore, record: JobRecord, slurm: Optional[Slurm] = None) -> Cancelled:
    """Stop monitoring a job (its monitor stops at once on this host, at its next poll elsewhere); with
    `slurm`, also scancel every Slurm job the record is answerable for, each one tried."""
    now = time.time()

    def request_stop(current: JobRecord) -> None:
        current.monitor.stop_requested = True
        current.monitor.stopped_at = current.monitor.stopped_at or now

    record = store.update(record.job_id, request_stop)
    stop_monitor(record.monitor)
    if slurm is None:
        return Cancelled(record)
    cancelled, failures = [], []
    for job in record.slurm_jobs:
        try:
            slurm.cancel(job)
            cancelled.append(job)
        except JobmonError as exc:
            failures.append(str(exc))
    return Cancelled(record, tuple(cancelled), tuple(failures))


def recover_all(paths: Paths, store: StateStore, config: Config) -> List[str]:
    """Restart every dead monitor and send again what was not delivered; one line per action."""
    now = time.time()
    host = this_host()
    actions = []
    for job_id, record, error in store.load_current():
        if record is None:
            actions.append(f"job {job_id}: skipped, {error}")
            continue
        try:
            action = _recover_one(paths, store, config, record, host, now)
        except StateError as exc:  # this job is busy or its file refuses: the others still recover
            action = f"skipped, {exc}"
        if action:
            actions.append(f"job {job_id}: {action}")
    watcher = _recover_watcher(paths, now)
    if watcher:
        actions.append(f"watch --all: {watcher}")
    return actions


def _recover_watcher(paths: Paths, now: float) -> Optional[str]:
    """Start `watch --all` again, with its filters, when it died (not when it was stopped)."""
    from core.daemon.watchall import load_watcher, parse_filter_args, start_watcher, watcher_health

    record = load_watcher(paths.state)
    if record is None or watcher_health(record, now) is not Health.DEAD:
        return None
    try:
        started = start_watcher(paths, parse_filter_args(record.args))
    except JobmonError as exc:
        return f"not restarted: {exc}"
    return f"watcher restarted (pid {started.pid})"


def _recover_one(paths: Paths, store: StateStore, config: Config, record: JobRecord, host: str,
                 now: float) -> Optional[str]:
    health = monitor_health(record, host, now)
    if health in (Health.CANCELLED, Health.ALIVE, Health.SUSPECT):
        return None
    if not record.story_over:
        what = "monitor restarted"
    elif outbox.has_undelivered(record.outbox):
        def reopen(current: JobRecord) -> None:
            outbox.reopen(current.outbox, config.sinks_for)

        record = store.update(record.job_id, reopen)
        if outbox.next_attempt_at(record.outbox) is None:  # nothing can be sent: no daemon for nothing
            return f"not sent: {'; '.join(outbox.problems(record.outbox))}; fix config.json first"
        what = "re-sending its notification" if health is Health.DONE else "delivering its pending notification"
    else:
        return None
    try:
        pid = start_monitor(paths, record.job_id, allow_restart=True)
    except StateError as exc:
        return f"not restarted: {exc}"
    return f"{what} (daemon pid {pid})"
