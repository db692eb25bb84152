"""`jobmon status`: one row per current job, from the index of current records and one squeue snapshot.

Its cost follows the live jobs (and those ended within a day), not the history: it reads only the
records in the index, and takes jobs that no longer belong there out of it as it goes. `--all`
adds one row per job of the history, from its summary.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from core.daemon.liveness import Health, monitor_health, this_host
from core.errors import JobmonError
from core.monitor.live import current, eta_of, health_flags
from core.monitor.poller import SlurmView
from core.notify import outbox
from core.notify.outbox import OutboxEntry
from core.progress.eta import format_span
from core.slurm.model import QueueEntry
from core.state.history import HistoryEntry
from core.state.model import JobRecord, LiveState
from core.state.store import StateStore, job_sort_key

COLUMNS = (("JOB", "job_id"), ("NAME", "name"), ("STATE", "state"), ("PROGRESS", "progress"),
           ("MONITOR", "monitor"), ("ELAPSED", "elapsed"), ("HOST", "host"), ("LAST POLL", "last_poll"),
           ("NOTIFY", "notification"))


@dataclass
class StatusRow:
    """One row of `status` (also what `status --json` prints for it)."""

    job_id: str
    current_job: str = ""
    name: str = ""
    state: str = ""
    monitor: str = ""
    elapsed: str = ""
    host: str = ""
    pid: int = 0
    last_poll: Optional[float] = None  # seconds since the monitor's last sign of life
    notification: str = ""
    categories: List[str] = field(default_factory=list)
    problem: str = ""
    events: List[Dict[str, Any]] = field(default_factory=list)  # the outbox: key, kind, route, sink -> status
    progress: Optional[Dict[str, Any]] = None  # see progress_json; None when no progress line was understood
    flags: List[str] = field(default_factory=list)  # STALLED, HUNG, TIME!, MEM!, GPU-idle, DISK!, CKPT-stale
    usage: Optional[Dict[str, Any]] = None  # see usage_json; None before the first look at a running job
    files: Optional[Dict[str, Any]] = None  # see files_json; None without watch_files

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def cells(self) -> List[str]:
        return [self._cell(key) for _, key in COLUMNS]

    def _cell(self, key: str) -> str:
        value = getattr(self, key)
        if key == "job_id" and self.current_job not in ("", self.job_id):
            return f"{self.job_id}->{self.current_job}"
        if key == "last_poll":
            return "-" if value is None else f"{value:.0f}s ago"
        if key == "progress":
            return progress_cell(self.progress, self.flags, self.files)
        return "-" if value in (None, "") else str(value)


def _state_text(record: JobRecord, entry: Optional[QueueEntry]) -> str:
    if record.final is not None:
        state = record.final.state.value + (" (incomplete)" if record.final.incomplete else "")
    elif entry is not None:
        state = entry.state.value
    else:
        state = record.observation.state.value if record.observation.state else "UNKNOWN"
    chain = record.chain
    if chain is not None:
        step = f"round {chain.round}" if record.array_spec else f"attempt {len(chain.attempts)}"
        level = "" if chain.level.is_empty else f", {chain.level.describe()}"
        state += f" ({step} of {chain.max_retries + 1}{level})"
    return state


def _problem(record: JobRecord, health: Health) -> str:
    undelivered = "; ".join(outbox.problems(record.outbox))
    delivery = outbox.summary_status(record.outbox)
    if delivery == "gone":
        return f"webhook gone: {undelivered}; fix config.json and run `jobmon recover`"
    if delivery == "no sink":
        return f"{undelivered}; set discord.success_webhook or error_webhook in config.json, then `jobmon recover`"
    if delivery in ("failed", "sending") or (delivery == "pending" and health is Health.DEAD):
        return f"notification not delivered yet: {undelivered}; `jobmon recover` retries"
    if record.final is None and record.observation.controller_down_since:
        since = time.strftime("%H:%M:%S", time.localtime(record.observation.controller_down_since))
        return f"Slurm controller unreachable since {since}"
    if record.final is None and record.observation.accounting_down_since:
        return "sacct unavailable; waiting for the final record"
    live = current(record)
    if record.final is None and live is not None and live.usage is not None and live.usage.problem:
        return f"usage unknown: {live.usage.problem}"
    return ""


def status_row(record: JobRecord, queue: Dict[str, QueueEntry], host: str, now: float) -> StatusRow:
    health = monitor_health(record, host, now)
    entry = queue.get(record.target)
    elapsed = record.final.elapsed if record.final is not None else (entry.time_used if entry else "")
    return StatusRow(
        job_id=record.job_id, current_job=record.target, name=record.name, state=_state_text(record, entry),
        monitor=health.value, elapsed=elapsed, host=record.monitor.host, pid=record.monitor.pid,
        last_poll=(now - record.monitor.heartbeat) if record.monitor.heartbeat else None,
        notification=outbox.summary_status(record.outbox), categories=list(record.categories),
        problem=_problem(record, health), events=[_event(entry) for entry in record.outbox],
        progress=progress_json(current(record), now, running=record.final is None),
        flags=health_flags(current(record)) if record.final is None else [],
        usage=usage_json(current(record)) if record.final is None else None,
        files=files_json(current(record), now) if record.final is None else None,
    )


def usage_json(live: Optional[LiveState]) -> Optional[Dict[str, Any]]:
    """`status --json`'s usage of a running job (null values: unknown; `error` says why)."""
    usage = live.usage if live is not None else None
    if usage is None:
        return None
    fraction = usage.memory_fraction
    return {
        "max_rss_bytes": usage.max_rss_bytes, "req_mem_bytes": usage.req_mem_bytes,
        "memory_fraction": round(fraction, 3) if fraction is not None else None, "cpu_fraction": usage.cpu_fraction,
        "gpu_util_percent": usage.gpu_util_percent, "gpu_mem_bytes": usage.gpu_mem_bytes,
        "updated_at": usage.updated_at or None, "error": usage.problem or None,
    }


def files_json(live: Optional[LiveState], now: float) -> Optional[Dict[str, Any]]:
    """The job's watched files: how many, their size and growth since the look before, the newest and its age."""
    files = live.files if live is not None else None
    if files is None:
        return None
    return {"count": files.count, "total_bytes": files.total_bytes, "growth_bytes": files.growth_bytes,
            "newest": files.newest_path or None,
            "newest_age_seconds": round(max(0.0, now - files.newest_at), 1) if files.newest_at else None}


def progress_json(live: Optional[LiveState], now: float, running: bool) -> Optional[Dict[str, Any]]:
    """`status --json`'s progress: done, total, fraction, unit, ETA (seconds from now, with its range and
    whether to trust it; null once the job ended), source, epoch, when it was read."""
    if live is None or live.reading is None:
        return None
    reading = live.reading
    eta = eta_of(live, now) if running else None

    def left(at: Optional[float]) -> Optional[float]:
        return None if at is None else round(max(0.0, at - now), 1)

    return {
        "done": reading.done, "total": reading.total, "fraction": reading.fraction, "unit": reading.unit,
        "eta_seconds": left(eta.end_at if eta else None), "eta_low_seconds": left(eta.low_at if eta else None),
        "eta_high_seconds": left(eta.high_at if eta else None), "eta_confident": bool(eta and eta.confident),
        "source": reading.source.value, "epoch": reading.epoch, "epochs": reading.epochs, "updated_at": live.read_at,
    }


def progress_cell(progress: Optional[Dict[str, Any]], flags: Sequence[str],
                  files: Optional[Dict[str, Any]] = None) -> str:
    """`45%  ETA 1h12m`, `1200 it`, plus the flags and `last checkpoint 2h10m ago`; `-` when nothing is known."""
    parts = []
    if progress is not None:
        fraction = progress["fraction"]
        parts.append(f"{fraction * 100:.0f}%" if fraction is not None else f"{progress['done']:g} {progress['unit']}")
        if progress["eta_seconds"] is not None:
            parts.append(f"ETA {format_span(progress['eta_seconds'])}" + ("" if progress["eta_confident"] else "?"))
    parts.extend(flags)
    if files is not None and files["newest_age_seconds"] is not None:
        parts.append(f"last checkpoint {format_span(files['newest_age_seconds'])} ago")
    return "  ".join(parts) or "-"


def _event(entry: OutboxEntry) -> Dict[str, Any]:
    return {"key": entry.key, "kind": entry.kind.value, "route": entry.route.value, "created_at": entry.created_at,
            "deliveries": {name: delivery.status.value for name, delivery in entry.deliveries.items()}}


def history_status_row(entry: HistoryEntry) -> StatusRow:
    """A job no longer current, from its history line (`status --all`)."""
    health = Health.CANCELLED if entry.cancelled else Health.DONE
    return StatusRow(job_id=entry.job_id, current_job=entry.last_job,
                     name=entry.name, state=entry.state, monitor=health.value, elapsed=entry.elapsed,
                     notification=entry.notification, categories=list(entry.causes))


def _age_of_known_states(records: Sequence[JobRecord], now: float) -> str:
    """How old the states `status` falls back on are: each live job's state as its monitor last saw it."""
    seen = [record.observation.seen_at for record in records if record.final is None]
    if not seen or not all(seen):
        return "some were never seen by a monitor (STATE UNKNOWN or as submitted)"
    oldest, newest = now - min(seen), now - max(seen)
    if round(oldest) == round(newest):
        return f"they are {format_span(oldest)} old"
    return f"they are {format_span(newest)} to {format_span(oldest)} old"


def collect_status(store: StateStore, slurm: SlurmView, *, include_old: bool) -> Tuple[List[StatusRow], str]:
    """Rows for every current record (and with `include_old` the history's), with at most one squeue
    call; returns (rows, warning). Records that are no longer current leave the index here."""
    now = time.time()
    host = this_host()
    loaded = list(store.load_current())
    records = [record for _, record, _ in loaded if record is not None]
    live_ids = [record.target for record in records if record.final is None]
    queue: Dict[str, QueueEntry] = {}
    warning = ""
    if live_ids:
        try:
            queue = slurm.query_queue(live_ids)
        except JobmonError as exc:
            warning = f"squeue unavailable, showing the last known states ({exc}); {_age_of_known_states(records, now)}"
    rows: List[StatusRow] = []
    shown = set()
    for job_id, record, error in loaded:
        if record is None:
            rows.append(StatusRow(job_id=job_id, state=Health.UNREADABLE.value, monitor=Health.UNREADABLE.value,
                                  problem=error))
        elif record.is_current(now):
            rows.append(status_row(record, queue, host, now))
        else:
            store.retire(record.job_id, now)
            if include_old:
                rows.append(status_row(record, queue, host, now))
        shown.add(job_id)
    if include_old:
        old = [entry for job_id, entry in store.read_history().items() if job_id not in shown]
        rows += [history_status_row(entry) for entry in sorted(old, key=lambda e: job_sort_key(e.job_id))]
    return rows, warning


def rows_as_json(rows: Sequence[StatusRow]) -> Dict[str, Any]:
    return {"jobs": [row.as_dict() for row in rows]}
