"""What a finished job's logs say: where they are, the analysis of their tails, and the excerpt to show."""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

from core.analysis.analyzer import Analysis, Pattern, analyze, clean_line
from core.analysis.finding import Finding
from core.analysis.jobend import JobEnd
from core.analysis.logtail import read_tail
from core.errors import JobmonError
from core.slurm.jobscript import JobOptions, resolve_log_paths
from core.slurm.model import is_sigkilled
from core.state.model import JobRecord, TaskOutcome

#: At most this many failed tasks' logs are read for one array summary.
MAX_TASK_LOGS = 20
EXCERPT_LINES = 25

_SECRET_PATTERNS = (
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), "hf_***"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), "gh*_***"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "sk-***"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "AKIA***"),
    (re.compile(r"(?i)(authorization:\s*bearer\s+)\S+"), r"\1***"),
    (re.compile(r"(?i)\b(password|passwd|token|secret|api[_-]?key)(\s*[=:]\s*)\S+"), r"\1\2***"),
    (re.compile(r"https://(?:\w+\.)?discord(?:app)?\.com/api/webhooks/\S+"), "https://discord.com/api/webhooks/***"),
)


def redact_secrets(text: str) -> str:
    """Mask the usual token shapes before log text leaves the machine."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def choose_excerpt(lines: Sequence[str], anchor: Optional[int], size: int = EXCERPT_LINES) -> str:
    """The lines around the root cause (mostly before it: tracebacks lead up to it), else the tail."""
    if not lines:
        return ""
    if anchor is None:
        chosen = lines[-size:]
    else:
        end = min(len(lines), anchor + 4)
        chosen = lines[max(0, end - size):end]
    return "\n".join(chosen)


def ordered_findings(analysis: Analysis) -> List[Finding]:
    """Findings as stored in the record, root cause first (category importance, then line order)."""
    rank = {category: index for index, category in enumerate(analysis.categories)}
    ordered = sorted(analysis.findings, key=lambda f: (rank.get(f.category, len(rank)), f.line_no))
    return ordered


def job_options(record: JobRecord, array: Optional[str]) -> JobOptions:
    """The record's -o/-e/-J/-D as sbatch options again, to work out where a (re)submission writes."""
    options = record.log_options
    return JobOptions(output=options.output or None, error=options.error or None, job_name=record.name or None,
                      chdir=options.chdir or None, array=array)


def analyze_logs(
    paths: Sequence[str], patterns: Sequence[Pattern], tail_lines: int, outcome: Optional[JobEnd] = None,
) -> Tuple[Analysis, str]:
    """Analyse the tail of stderr (and stdout when it is another file), knowing how the job ended when
    `outcome` says; pick the excerpt."""
    lines: List[str] = []
    for path in paths:
        lines.extend(read_tail(path, tail_lines).lines)
    analysis = analyze(lines, patterns, outcome=outcome)
    root = analysis.root_cause
    anchor = root.line_no - 1 if root is not None and root.line_no > 0 else None  # line 0: Slurm's state
    return analysis, choose_excerpt([clean_line(line, keep_indent=True) for line in lines], anchor)


def task_log_files(record: JobRecord, task: TaskOutcome) -> List[str]:
    """Where one array task wrote: the job's -o/-e patterns expanded for that task."""
    if not task.task_id.isdecimal():
        return record.log_paths  # het components share the job's files
    options = job_options(record, array=record.array_spec or "0")
    try:
        paths = resolve_log_paths(
            options, submit_dir=record.submit_dir or "/", job_id=task.raw_id or task.job_id, user=record.user,
            default_job_name=record.name, array_task_id=task.task_id, array_job_id=task.job_id.split("_")[0],
        )
    except (JobmonError, ValueError):
        return record.log_paths
    return list(dict.fromkeys([paths.stderr, paths.stdout]))


def _analysis_priority(task: TaskOutcome) -> bool:
    """Tasks killed by signal 9 first: only their logs can tell a host-memory kill (which escalation
    retries with more memory) from anything else; the rest keep their order."""
    return not is_sigkilled(task.state, task.exit_code, task.signal)


def analyze_group_logs(
    record: JobRecord, tasks: Sequence[TaskOutcome], patterns: Sequence[Pattern], tail_lines: int,
) -> Tuple[Analysis, str]:
    """Analyse the logs of (up to MAX_TASK_LOGS) failed tasks, each with its own outcome, writing each
    task's categories into it; findings are merged, root cause first: a category ranks by the best place
    it took in any task's own order (then by the library), so a cause that led in one task precedes a
    wrapper that led in another."""
    rank = {pattern.id: index for index, pattern in enumerate(patterns)}
    place: Dict[str, Tuple[int, int]] = {}
    findings: List[Finding] = []
    warnings: List[Finding] = []
    excerpt = ""
    best: Tuple[int, int] = (len(rank) + 1, len(rank) + 1)
    for task in sorted((t for t in tasks if t.is_failure), key=_analysis_priority)[:MAX_TASK_LOGS]:
        outcome = JobEnd(task.state.value, task.exit_code, task.signal)
        analysis, task_excerpt = analyze_logs(task_log_files(record, task), patterns, tail_lines, outcome)
        task.categories = list(analysis.categories)
        findings.extend(analysis.findings)
        warnings.extend(analysis.warnings)
        for index, category in enumerate(analysis.categories):
            place[category] = min(place.get(category, (index, rank.get(category, len(rank)))),
                                  (index, rank.get(category, len(rank))))
        task_best = place[analysis.categories[0]] if analysis.categories else (len(rank), len(rank))
        if task_excerpt and (task_best < best or not excerpt):
            best = task_best
            excerpt = f"task {task.task_id}:\n{task_excerpt}"
    categories = tuple(sorted(place, key=lambda c: place[c]))
    return Analysis(findings=tuple(findings), categories=categories, warnings=tuple(warnings)), excerpt
