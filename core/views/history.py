"""`jobmon report` and `jobmon history`: jobs, chains and their errors, from the state folder.

`history` reads the history summaries and the current records (never every record file);
`report` reads one record, found by its id or by the id of any attempt of its chain.
"""
from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from core.errors import JobmonError, StateError
from core.slurm.arrays import format_task_counts
from core.slurm.efficiency import Efficiency, EfficiencySpread
from core.slurm.model import base_job_id, member_suffix
from core.state.history import HistoryEntry, summarize
from core.state.model import JobRecord
from core.state.store import StateStore

HISTORY_COLUMNS = ("job_id", "name", "submitted", "state", "exit_code", "elapsed", "attempts", "causes")
REPORT_COLUMNS = ("attempt", "job_id", "resources", "state", "exit_code", "elapsed", "core_hours", "causes",
                  "decision")
ARRAY_REPORT_COLUMNS = ("attempt", "round", "job_id", "tasks", "resources", "state", "failed_tasks", "exit_code",
                        "elapsed", "core_hours", "causes", "decision")
_SINCE_RE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float) -> float:
    """`7d`, `12h`, `30m` or a date `2026-11-01` -> an epoch time."""
    match = _SINCE_RE.match(text.strip())
    if match:
        return now - int(match.group(1)) * _UNITS[match.group(2)]
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%d"))
    except ValueError:
        raise JobmonError(f"--since {text!r}: use a duration like 7d, 12h, 30m or a date like 2026-11-01") from None


def history_entries(store: StateStore, since: float) -> List[HistoryEntry]:
    """Every job submitted since `since`: the summaries, with the current records' own view on top."""
    entries = store.read_history(since)
    for _, record, _ in store.load_current():
        if record is not None and record.created_at >= since:
            entries[record.job_id] = summarize(record)
    return sorted(entries.values(), key=lambda e: (e.created_at, e.job_id))


def efficiency_json(single: Optional[Efficiency], spread: Optional[EfficiencySpread]) -> Optional[Dict[str, Any]]:
    """`{"cpu_percent", "memory_percent", "time_percent", "gpu_percent"}` (null where Slurm gave nothing);
    for an array each is `{"min", "median", "max", "count"}` across its tasks, plus `tasks`; None before the end."""
    if spread is not None:
        return dataclasses.asdict(spread)
    return dataclasses.asdict(single) if single is not None else None


def history_row(entry: HistoryEntry) -> Dict[str, Any]:
    return {
        "job_id": entry.job_id if entry.last_job == entry.job_id else f"{entry.job_id}->{entry.last_job}",
        "name": entry.name,
        "submitted": time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.created_at)),
        "state": entry.state,
        "exit_code": "" if entry.exit_code is None else entry.exit_code,
        "elapsed": entry.elapsed,
        "attempts": entry.attempts,
        "causes": ",".join(entry.causes),
        "efficiency": efficiency_json(entry.efficiency, entry.efficiency_spread),
    }


def report_columns(record: JobRecord) -> Tuple[str, ...]:
    """An array's report also says which tasks each submission ran and which failed."""
    return ARRAY_REPORT_COLUMNS if record.array_spec else REPORT_COLUMNS


def report_rows(record: JobRecord) -> List[Dict[str, Any]]:
    """One row per attempt (a plain job is a chain of one), plus array task counts when there are any."""
    running = record.observation.state.value if record.observation.state else "RUNNING"
    if record.chain is not None and record.chain.attempts:
        return [{
            "attempt": number, "round": a.round, "job_id": a.job_id, "tasks": a.tasks or record.array_spec,
            "resources": "as submitted" if a.resources.is_empty else a.resources.describe(),
            "state": format_task_counts(a.task_counts) if a.task_counts else (a.state.value if a.state else running),
            "failed_tasks": a.failed_tasks, "exit_code": a.exit_code,
            "elapsed": a.elapsed, "core_hours": a.core_hours, "causes": ",".join(a.categories),
            "decision": a.decision, "efficiency": efficiency_json(a.efficiency, a.efficiency_spread),
        } for number, a in enumerate(record.chain.attempts, 1)]
    final = record.final
    return [{
        "attempt": 1, "round": 1, "job_id": record.job_id, "tasks": record.array_spec, "resources": "as submitted",
        "state": final.summary if final else running,
        "failed_tasks": final.failed_tasks if final else "",
        "exit_code": final.exit_code if final else "", "elapsed": final.elapsed if final else "",
        "core_hours": "", "causes": ",".join(record.categories), "decision": "",
        "efficiency": efficiency_json(record.efficiency, record.efficiency_spread),
    }]


def report_title(record: JobRecord) -> str:
    final = record.final
    state = (final.state_text or final.state.value) if final else (
        record.observation.state.value if record.observation.state else "running")
    return f"{record.job_id} ({record.name}): {state}"


def covering_array(store: StateStore, job_id: str) -> Optional[JobRecord]:
    """The record of the array a task id (`92_3`) belongs to, when jobmon monitors or monitored that array:
    its summary covers the task, so `watch 92_3` would tell the same story twice."""
    base = base_job_id(job_id)
    task = member_suffix(job_id, base)
    if task is None or not task.isdecimal() or not store.exists(base):
        return None
    record = store.load(base)
    if not record.array_spec or (record.expected_tasks and int(task) not in record.expected_tasks):
        return None
    return record


def find_record(store: StateStore, job_id: str) -> JobRecord:
    """A record by its own id, or the chain one of whose attempts has this id (current ones first)."""
    if store.exists(job_id):
        return store.load(job_id)
    for _, record, _ in store.load_current():
        if record is not None and record.chain is not None and any(a.job_id == job_id for a in record.chain.attempts):
            return record
    found: Optional[HistoryEntry] = store.find_in_history(job_id)
    if found is not None and store.exists(found.job_id):
        return store.load(found.job_id)
    raise StateError(f"job {job_id} is not monitored (see `jobmon status --all`)")
