"""`/metrics`: the Prometheus text exposition format (version 0.0.4), from the status rows and the counters
of the shared Slurm snapshots. Pure: rows in, text out."""
from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from core.daemon.liveness import Health
from core.serve.views import deliveries, state_word
from core.slurm.shared import SchedulerCalls
from core.views.status import StatusRow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = Tuple[Dict[str, str], float]


def escape_label(value: str) -> str:
    """A label value as the format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def family(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> List[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        inner = ",".join(f'{key}="{escape_label(text)}"' for key, text in labels.items())
        lines.append(f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}")
    return lines


def render_metrics(rows: Sequence[StatusRow], calls: SchedulerCalls, reachable: Optional[bool], now: float) -> str:
    states = Counter(state_word(row) for row in rows)
    health = Counter(row.monitor for row in rows)
    lines = family("jobmon_jobs", "gauge", "Current jobs (those `jobmon status` shows) by Slurm state.",
                   (({"state": state}, count) for state, count in sorted(states.items())))
    lines += family("jobmon_monitors", "gauge", "Current jobs by the health of their monitor.",
                    (({"health": item.value}, health.get(item.value, 0)) for item in Health))
    lines += family("jobmon_events", "gauge", "Deliveries of current jobs' events by sink and status.",
                    (({"sink": sink, "status": status}, count)
                     for sink, counts in deliveries(rows).items() for status, count in counts.items()))
    lines += family("jobmon_scheduler_calls_total", "counter",
                    "Slurm queries made through the shared snapshots of this state folder.",
                    [({"command": "squeue"}, calls.squeue_calls), ({"command": "sacct"}, calls.sacct_calls)])
    lines += family("jobmon_scheduler_failures_total", "counter", "Of those, the ones that failed.",
                    [({"command": "squeue"}, calls.squeue_failures), ({"command": "sacct"}, calls.sacct_failures)])
    if reachable is not None:
        lines += family("jobmon_scheduler_up", "gauge", "1 when the last shared squeue answered.",
                        [({}, 1 if reachable else 0)])
    if calls.squeue_taken_at:
        lines += family("jobmon_scheduler_snapshot_age_seconds", "gauge", "Age of the shared squeue snapshot.",
                        [({}, round(max(0.0, now - calls.squeue_taken_at), 3))])
    return "\n".join(lines) + "\n"
