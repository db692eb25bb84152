"""What `jobmon serve` answers, as plain data: pure functions of the status rows (core/views/status.py),
one job's detail (core/views/detail.py) and the counters the shared Slurm snapshots keep.

`/healthz`, `/stats`, `/jobs` and `/jobs/<id>` are JSON built here; `/metrics` is core/serve/metrics.py.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

from core.daemon.liveness import Health
from core.notify.outbox import DeliveryStatus
from core.slurm.shared import SchedulerCalls
from core.state.codec import encode
from core.views.detail import JobDetail
from core.views.status import StatusRow

#: Delivery states that no process is working on: someone has to act (`jobmon recover`, fix config.json).
STUCK = (DeliveryStatus.FAILED.value, DeliveryStatus.GONE.value)


def state_word(row: StatusRow) -> str:
    """`RUNNING` of `RUNNING (attempt 2 of 4, 4G)`; UNKNOWN when nothing is known."""
    return (row.state.split() or ["UNKNOWN"])[0]


def undelivered(rows: Sequence[StatusRow]) -> List[Dict[str, str]]:
    """Deliveries nobody will make without help: failed or gone, or pending while the job's monitor is dead."""
    found = []
    for row in rows:
        for event in row.events:
            for sink, status in event["deliveries"].items():
                if status in STUCK or (status == DeliveryStatus.PENDING.value and row.monitor == Health.DEAD.value):
                    found.append({"job_id": row.job_id, "event": event["key"], "sink": sink, "status": status})
    return found


def scheduler_json(calls: SchedulerCalls, warning: str, now: float) -> Dict[str, Any]:
    """Whether Slurm answered the last shared squeue (None: no snapshot yet, e.g. nothing monitored), and the
    counters."""
    if warning:
        reachable: Optional[bool] = False
    elif calls.squeue_taken_at:
        reachable = not calls.squeue_error
    else:
        reachable = None
    return {
        "reachable": reachable,
        "error": warning or calls.squeue_error,
        "snapshot_age_seconds": round(now - calls.squeue_taken_at, 1) if calls.squeue_taken_at else None,
        "calls": {"squeue": calls.squeue_calls, "sacct": calls.sacct_calls},
        "failures": {"squeue": calls.squeue_failures, "sacct": calls.sacct_failures},
    }


def health_json(rows: Sequence[StatusRow], calls: SchedulerCalls, warning: str,
                now: float) -> Tuple[int, Dict[str, Any]]:
    """(HTTP status, body): 200 and "ok", or 503 and "degraded" with the reasons."""
    scheduler = scheduler_json(calls, warning, now)
    dead = [row.job_id for row in rows if row.monitor == Health.DEAD.value]
    stuck = undelivered(rows)
    unreadable = [row.job_id for row in rows if row.monitor == Health.UNREADABLE.value]
    reasons = []
    if scheduler["reachable"] is False:
        reasons.append(f"Slurm unreachable: {scheduler['error']}")
    if dead:
        reasons.append(f"{len(dead)} dead monitor(s): `jobmon recover` restarts them")
    if stuck:
        reasons.append(f"{len(stuck)} undelivered notification(s)")
    if unreadable:
        reasons.append(f"{len(unreadable)} unreadable state file(s)")
    body = {
        "status": "degraded" if reasons else "ok", "reasons": reasons,
        "scheduler_reachable": scheduler["reachable"], "dead_monitors": dead, "undelivered": stuck,
        "unreadable": unreadable, "jobs": len(rows),
    }
    return (503 if reasons else 200), body


def deliveries(rows: Sequence[StatusRow]) -> Dict[str, Dict[str, int]]:
    """sink -> delivery status -> how many events."""
    table: Dict[str, Counter] = {}
    for row in rows:
        for event in row.events:
            for sink, status in event["deliveries"].items():
                table.setdefault(sink, Counter())[status] += 1
    return {sink: dict(sorted(counts.items())) for sink, counts in sorted(table.items())}


def stats_json(rows: Sequence[StatusRow], calls: SchedulerCalls, warning: str, now: float,
               server: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return {
        "jobs": len(rows),
        "states": dict(sorted(Counter(state_word(row) for row in rows).items())),
        "monitors": dict(sorted(Counter(row.monitor or "UNKNOWN" for row in rows).items())),
        "notifications": dict(sorted(Counter(row.notification or "none" for row in rows).items())),
        "flags": dict(sorted(Counter(flag for row in rows for flag in row.flags).items())),
        "deliveries": deliveries(rows),
        "scheduler": scheduler_json(calls, warning, now),
        "server": server or {},
    }


def jobs_json(rows: Sequence[StatusRow], warning: str = "") -> Dict[str, Any]:
    """`{"jobs": [status rows], "count": N}`: the rows `jobmon status --json` prints."""
    body: Dict[str, Any] = {"jobs": [row.as_dict() for row in rows], "count": len(rows)}
    if warning:
        body["warning"] = warning
    return body


def detail_json(detail: JobDetail) -> Dict[str, Any]:
    """One job: its status row, its whole record (outbox included: its events), the ends of its logs, and the
    series the dashboard draws. Memory over time is not recorded by the monitors: `memory` stays empty."""
    record = detail.record
    live = record.live if record is not None else None
    return {
        "job": detail.row.as_dict(),
        "events": detail.row.events,
        "record": encode(record) if record is not None else None,
        "logs": [asdict(log) for log in detail.logs],
        "progress": [[sample.at, sample.fraction] for sample in (live.samples if live is not None else [])],
        "memory": [],
        "problem": detail.problem,
    }
