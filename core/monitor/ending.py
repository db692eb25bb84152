"""The end of a job: what its logs say, and how that goes into the record.

Imported only when a job ends (the analyzer and the pattern library cost memory an idle daemon
should not carry).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Sequence

from core.analysis.analyzer import Pattern
from core.analysis.finding import Finding
from core.analysis.jobend import JobEnd
from core.analysis.logs import analyze_group_logs, analyze_logs, ordered_findings, redact_secrets
from core.state.model import FinalRecord, JobRecord, TaskOutcome


@dataclass
class End:
    """How the job (or the round's jobs) ended and what the logs say about it."""

    final: FinalRecord
    tasks: List[TaskOutcome] = field(default_factory=list)
    categories: List[str] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)
    excerpt: str = ""
    warnings: List[Finding] = field(default_factory=list)  # scary lines that are no failure (a clean end's)


def analyse_end(
    record: JobRecord, final: FinalRecord, tasks: Sequence[TaskOutcome], patterns: Sequence[Pattern],
    tail_lines: int, send_excerpt: bool,
) -> End:
    """Read the tails of the logs (each failed task's own, for a group) knowing how the job ended, and pick
    the excerpt (secrets masked). A clean end gets no cause, only the warnings its log shows."""
    ended = list(tasks)
    if ended:
        analysis, excerpt = analyze_group_logs(record, ended, patterns, tail_lines)
    else:
        outcome = JobEnd(final.state.value, final.exit_code, final.signal)
        analysis, excerpt = analyze_logs(record.log_paths, patterns, tail_lines, outcome)
    return End(final=final, tasks=ended, categories=list(analysis.categories), findings=ordered_findings(analysis),
               excerpt=redact_secrets(excerpt) if send_excerpt else "",
               warnings=[replace(w, line=redact_secrets(w.line)) for w in analysis.warnings])


def apply_end(record: JobRecord, end: End) -> None:
    """Write a job's (or a whole group's) end into its record."""
    record.final, record.tasks = end.final, list(end.tasks)
    record.categories, record.findings, record.excerpt = list(end.categories), list(end.findings), end.excerpt
    record.warnings = list(end.warnings)
