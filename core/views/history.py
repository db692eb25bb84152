"""`jobmon report` and `jobmon history`: the record of jobs, chains and their errors, from state files."""
from __future__ import annotations

import csv
import io
import json
import re
import time
from typing import Dict, Iterable, List, Optional, Tuple

from core.errors import JobmonError
from core.slurm.arrays import format_task_counts
from core.state.store import JobRecord

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


def history_rows(records: Iterable[JobRecord], since: float = 0.0) -> List[Dict[str, object]]:
    rows = []
    for record in sorted(records, key=lambda r: r.created_at):
        if record.created_at < since:
            continue
        final = record.final
        attempts = len(record.chain.attempts) if record.chain is not None else 1
        if final is None:
            state = record.observation.state or "UNKNOWN"
        else:
            state = final.state_text if final.task_counts else final.state
        rows.append({
            "job_id": record.job_id if record.target == record.job_id else f"{record.job_id}->{record.target}",
            "name": record.name,
            "submitted": time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created_at)),
            "state": state,
            "exit_code": final.exit_code if final else "",
            "elapsed": final.elapsed if final else "",
            "attempts": attempts,
            "causes": ",".join(record.categories),
        })
    return rows


def report_columns(record: JobRecord) -> Tuple[str, ...]:
    """An array's report also says which tasks each submission ran and which failed."""
    return ARRAY_REPORT_COLUMNS if record.array_spec else REPORT_COLUMNS


def report_rows(record: JobRecord) -> List[Dict[str, object]]:
    """One row per attempt (a plain job is a chain of one), plus array task counts when there are any."""
    if record.chain is not None and record.chain.attempts:
        return [{
            "attempt": number, "round": a.round, "job_id": a.job_id, "tasks": a.tasks or record.array_spec,
            "resources": " ".join(f"{k}={v}" for k, v in a.resources.items()) or "as submitted",
            "state": format_task_counts(a.task_counts) if a.task_counts else a.state or (
                record.observation.state or "RUNNING"),
            "failed_tasks": a.failed_tasks, "exit_code": a.exit_code,
            "elapsed": a.elapsed, "core_hours": a.core_hours, "causes": ",".join(a.categories),
            "decision": a.decision,
        } for number, a in enumerate(record.chain.attempts, 1)]
    final = record.final
    return [{
        "attempt": 1, "round": 1, "job_id": record.job_id, "tasks": record.array_spec, "resources": "as submitted",
        "state": (final.state_text if final.task_counts else final.state) if final else record.observation.state,
        "failed_tasks": final.failed_tasks if final else "",
        "exit_code": final.exit_code if final else "", "elapsed": final.elapsed if final else "",
        "core_hours": "", "causes": ",".join(record.categories), "decision": "",
    }]


def render(rows: List[Dict[str, object]], columns: Iterable[str], fmt: str, title: str = "") -> str:
    """`table` (aligned text), `markdown`, `csv` or `json`."""
    columns = list(columns)
    if fmt == "json":
        return json.dumps({"title": title, "rows": rows}, indent=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    if fmt == "markdown":
        lines = [f"## {title}", ""] if title else []
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = [title] if title else []
    lines.append("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def find_record(records: Iterable[JobRecord], job_id: str) -> Optional[JobRecord]:
    """A record by its own id, or by the id of any attempt of its chain."""
    for record in records:
        if record.job_id == job_id:
            return record
        if record.chain is not None and any(a.job_id == job_id for a in record.chain.attempts):
            return record
    return None
