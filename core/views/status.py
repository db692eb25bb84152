"""`jobmon status` rows and `jobmon recover`, computed from the state files and one squeue call."""
from __future__ import annotations

import socket
import time
from typing import Dict, List, Optional, Tuple

from core.config import Paths
from core.daemon.main import (
    HEALTH_CANCELLED,
    HEALTH_DEAD,
    HEALTH_DONE,
    monitor_health,
    start_monitor,
)
from core.errors import JobmonError, StateError
from core.slurm.client import QueueEntry
from core.state.store import JobRecord, StateStore

RECENT = 24 * 3600.0
RETRYABLE_NOTIFICATIONS = ("pending", "sending", "failed", "gone")


def _row(record: JobRecord, queue: Dict[str, QueueEntry], host: str, now: float) -> Dict[str, object]:
    health = monitor_health(record, host, now)
    entry = queue.get(record.target)
    if record.final is not None:
        state = record.final.state + (" (incomplete)" if record.final.incomplete else "")
    elif entry is not None:
        state = entry.state.value
    else:
        state = record.observation.state or "UNKNOWN"
    chain = record.chain
    if chain is not None:
        level = "/".join(str(v) for v in chain.level.values())
        step = f"round {chain.round}" if record.array_spec else f"attempt {len(chain.attempts)}"
        state += f" ({step} of {chain.max_retries + 1}" + (f", {level})" if level else ")")
    elapsed = record.final.elapsed if record.final is not None else (entry.time_used if entry else "")
    note = record.notification
    problem = ""
    if note.status == "gone":
        problem = f"webhook gone: {note.last_error}; fix config.json and run `jobmon recover`"
    elif note.status in ("failed", "sending") or (note.status == "pending" and health == HEALTH_DEAD):
        problem = f"notification not delivered yet ({note.last_error or note.status}); `jobmon recover` retries"
    elif record.observation.controller_down_since and record.final is None:
        since = time.strftime("%H:%M:%S", time.localtime(record.observation.controller_down_since))
        problem = f"Slurm controller unreachable since {since}"
    elif record.observation.accounting_down_since and record.final is None:
        problem = "sacct unavailable; waiting for the final record"
    return {
        "job_id": record.job_id,
        "current_job": record.target,
        "name": record.name,
        "state": state,
        "monitor": health,
        "elapsed": elapsed,
        "host": record.monitor.host,
        "pid": record.monitor.pid,
        "last_poll": (now - record.monitor.heartbeat) if record.monitor.heartbeat else None,
        "notification": note.status,
        "categories": list(record.categories),
        "problem": problem,
    }


def _visible(record: JobRecord, now: float, include_old: bool) -> bool:
    if include_old or not (record.done or record.monitor.stop_requested):
        return True
    ended = record.notification.sent_at or (record.final.decided_at if record.final else 0.0) or record.created_at
    return now - ended < RECENT


def collect_status(store: StateStore, slurm, *, include_old: bool) -> Tuple[List[Dict[str, object]], str]:
    """Rows for every visible record, with at most one squeue call; returns (rows, warning)."""
    now = time.time()
    host = socket.gethostname()
    loaded = list(store.load_all())
    records = [r for _, r, _ in loaded if r is not None and _visible(r, now, include_old)]
    live_ids = [r.target for r in records if r.final is None]
    queue: Dict[str, QueueEntry] = {}
    warning = ""
    if live_ids:
        try:
            queue = slurm.query_queue(live_ids)
        except JobmonError as exc:
            warning = f"squeue unavailable, showing the last known states ({exc})"
    rows: List[Dict[str, object]] = []
    for job_id, record, error in loaded:
        if record is None:
            rows.append({"job_id": job_id, "name": "", "state": "UNREADABLE", "monitor": "UNREADABLE",
                         "elapsed": "", "host": "", "pid": 0, "last_poll": None, "notification": "",
                         "categories": [], "problem": error})
        elif record in records:
            rows.append(_row(record, queue, host, now))
    return rows, warning


def recover_all(paths: Paths, store: StateStore) -> List[str]:
    """Restart every DEAD monitor and re-deliver undelivered notifications; one line per action."""
    now = time.time()
    host = socket.gethostname()
    actions = []
    for job_id, record, error in store.load_all():
        if record is None:
            actions.append(f"job {job_id}: skipped, {error}")
            continue
        action = _recover_one(paths, store, record, host, now)
        if action:
            actions.append(f"job {job_id}: {action}")
    return actions


def _recover_one(paths: Paths, store: StateStore, record: JobRecord, host: str, now: float) -> Optional[str]:
    health = monitor_health(record, host, now)
    if health == HEALTH_CANCELLED:
        return None
    if health == HEALTH_DONE:
        if record.notification.status not in RETRYABLE_NOTIFICATIONS:
            return None

        def reopen(current: JobRecord) -> None:
            current.done = False
            current.notification.status = "pending"
            current.monitor.heartbeat_deadline = 0.0

        store.update(record.job_id, reopen)
        what = "re-sending its notification"
    elif health == HEALTH_DEAD:
        what = "monitor restarted" if record.final is None else "delivering its pending notification"
    else:
        return None
    try:
        pid = start_monitor(paths, record.job_id, allow_restart=True)
    except StateError as exc:
        return f"not restarted: {exc}"
    return f"{what} (daemon pid {pid})"
