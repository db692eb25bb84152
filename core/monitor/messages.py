"""Turn a finished job record into a notification message, and pick the channel. Pure."""
from __future__ import annotations

import re
from typing import List, Optional, Sequence

from core.chain.policy import Level
from core.notify.discord import Field, Message
from core.slurm.arrays import format_task_counts
from core.slurm.client import explicit_time_limit
from core.state.store import Attempt, FinalRecord, JobRecord

WARNING_STATES = frozenset({"TIMEOUT", "CANCELLED"})
MAX_FINDINGS_SHOWN = 6
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


def is_success(final: FinalRecord) -> bool:
    return final.state == "COMPLETED" and final.exit_code == 0 and final.signal == 0


def channel_for(final: FinalRecord) -> str:
    """The success webhook hears only clean completions; everything else goes to the error webhook."""
    return "success" if is_success(final) else "error"


def colour_for(final: FinalRecord) -> str:
    if is_success(final):
        return "success"
    if final.state in WARNING_STATES:
        return "warning"
    return "failure"


def outcome_label(final: FinalRecord) -> str:
    if final.state == "PENDING" and final.reason:
        return f"NEVER STARTS ({final.reason})"
    return final.state or "UNKNOWN"


def format_bytes(count: Optional[int]) -> str:
    if count is None:
        return "unknown"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def exit_label(final: FinalRecord) -> str:
    """sacct's `exit:signal`; Slurm puts non-signal codes there too (OUT_OF_MEMORY is `0:125`)."""
    if 0 < final.signal < 65:
        return f"{final.exit_code} (signal {final.signal})"
    if final.signal:
        return f"{final.exit_code}:{final.signal}"
    return str(final.exit_code)


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


def kind_label(record: JobRecord) -> str:
    if record.array_spec or any(t.task_id.isdecimal() for t in record.tasks):
        return "Array"
    return "Het job" if record.tasks else "Job"


def build_message(record: JobRecord, host: str = "") -> Message:
    final = record.final or FinalRecord(state="UNKNOWN", incomplete=True)
    name = f" ({record.name})" if record.name else ""
    grouped = bool(final.task_counts)
    headline = final.state_text if grouped else outcome_label(final)
    title = f"{kind_label(record)} {record.job_id}{name}: {headline}"
    chain = record.chain
    if chain is not None and len(chain.rounds) > 1:
        title = f"Array chain {record.job_id}{name}: {headline} after {len(chain.rounds)} rounds"
    elif chain is not None and len(chain.attempts) > 1:
        title = f"Chain {record.job_id}{name}: {headline} after {len(chain.attempts)} attempts (last {record.target})"
    description: List[str] = []
    if final.incomplete:
        description.append("Accounting (sacct) never confirmed this result: details may be missing.")
    if record.findings:
        root = record.findings[0]
        description.append(f"Likely cause: {root['category']} — {root.get('hint', '')}".rstrip(" —"))
    elif not is_success(final):
        description.append("No known error pattern matched the end of the log.")
    if final.state == "PENDING" and final.reason:
        description.append("The job can never start; cancel it with scancel and fix its dependency.")
    time_limit = explicit_time_limit(final.time_limit)
    limit = f" of {time_limit} limit" if time_limit else ""
    requested = f" of {final.req_mem} requested" if final.req_mem else ""
    peak = format_bytes(final.max_rss_bytes) if final.max_rss_bytes else "not sampled"
    if grouped:
        fields = [Field("Tasks", final.state_text)]
        if final.failed_tasks:
            fields.append(Field("Failed tasks", final.failed_tasks))
        slowest = f" (task {final.slowest_task})" if final.slowest_task else ""
        fields.append(Field("Slowest task", f"{final.elapsed or '?'}{slowest}{limit}"))
    else:
        state_text = final.state_text or final.state
        if final.reason and final.reason not in ("None", state_text):
            state_text = f"{state_text} ({final.reason})"
        fields = [
            Field("State", state_text or "UNKNOWN"),
            Field("Exit code", exit_label(final)),
            Field("Elapsed", f"{final.elapsed or '?'}{limit}"),
        ]
    fields += [
        Field("Peak memory", f"{peak}{requested}"),
        Field("Node(s)", final.nodes or "none"),
        Field("Partition", final.partition or "?"),
        Field("Working dir", final.work_dir or record.submit_dir or "?", inline=False),
    ]
    if record.findings:
        fields.append(Field("Findings", "\n".join(_finding_lines(record)), inline=False))
    if chain is not None and chain.rounds:  # an array chain: its attempts' core-hours are failed tasks only
        fields.append(Field("Rounds", "\n".join(round_lines(chain)), inline=False))
        fields.append(Field("Wasted core-hours", f"{sum(a.core_hours for a in chain.attempts):.2f}"))
        left = [f"task(s) {spec} ({why})" for r in chain.rounds for why, spec in r.not_retried.items()]
        if left:
            description.append(f"Not retried: {'; '.join(left)}.")
    elif chain is not None and chain.attempts:
        fields.append(Field("Attempts", "\n".join(attempt_lines(chain)), inline=False))
        wasted = sum(a.core_hours for a in chain.attempts if a.state and a.state != "COMPLETED")
        fields.append(Field("Wasted core-hours", f"{wasted:.2f}"))
        if chain.attempts[-1].decision and not is_success(final):
            description.append(f"Chain ended: {chain.attempts[-1].decision}.")
    log_paths = [record.stderr_path] if record.stderr_path else []
    if record.stdout_path and record.stdout_path != record.stderr_path:
        log_paths.append(record.stdout_path)
    if log_paths:
        fields.append(Field("Log", "\n".join(log_paths), inline=False))
    footer = "jobmon" + (f" on {host}" if host else "")
    return Message(
        title=title,
        description="\n".join(description),
        color=colour_for(final),
        fields=tuple(fields),
        excerpt=record.excerpt,
        footer=footer,
    )


def attempt_lines(chain) -> List[str]:
    """`1. 123 1G/00:10:00 OUT_OF_MEMORY in 00:00:05`, one line per attempt."""
    lines = []
    for number, attempt in enumerate(chain.attempts, 1):
        resources = "/".join(str(v) for v in attempt.resources.values()) or "as submitted"
        ended = f"{attempt.state or 'RUNNING'}" + (f" in {attempt.elapsed}" if attempt.elapsed else "")
        lines.append(f"{number}. {attempt.job_id} {resources}: {ended}")
    return lines


def round_lines(chain) -> List[str]:
    """`1. 123: 2 OUT_OF_MEMORY, 1 COMPLETED → retried 0-1`, one line per array round."""
    return [f"{r.number}. {', '.join(r.jobs)}: {format_task_counts(r.task_counts)}"
            + (f" → retried {r.retried_tasks}" if r.retried_tasks else "") for r in chain.rounds]


def build_escalation_message(record: JobRecord, previous: Attempt) -> Message:
    """Sent when a chain resubmits: what ended how, and what runs next with which resources."""
    chain = record.chain
    name = f" ({record.name})" if record.name else ""
    if chain.rounds:
        ended = chain.rounds[-1]
        started = [a for a in chain.attempts if a.round == chain.round]
        jobs = ", ".join(a.job_id for a in started)
        lines = [f"Task(s) {a.tasks} → job {a.job_id} with {describe_resources(a.resources)}" for a in started]
        return Message(
            title=f"Array {record.job_id}{name} round {ended.number}: {format_task_counts(ended.task_counts)} "
                  f"→ resubmitted {ended.retried_tasks} as {jobs}",
            description="\n".join([f"Round {chain.round} of at most {chain.max_retries + 1}.", *lines,
                                   f"Decision: {ended.decision}."]),
            color="warning", footer="jobmon escalation",
        )
    used = previous.resources.get("mem") or previous.resources.get("time") or "its resources"
    return Message(
        title=f"Job {previous.job_id}{name} {previous.state} at {used} → resubmitted as {chain.current_job} "
              f"with {describe_resources(chain.level)}",
        description=f"Attempt {len(chain.attempts)} of at most {chain.max_retries + 1}. {previous.decision}.",
        color="warning", footer="jobmon escalation",
    )


def describe_resources(resources: dict) -> str:
    """`4G/02:00:00 on big`: a level's resources as stored in the state file."""
    return Level(**resources).describe()


def _finding_lines(record: JobRecord) -> List[str]:
    """One line per category; for arrays, how many failed tasks showed it."""
    lines = []
    for finding in _first_per_category(record.findings)[:MAX_FINDINGS_SHOWN]:
        category = finding["category"]
        affected = sum(category in task.categories for task in record.tasks)
        count = f" ({affected} task{'s' if affected != 1 else ''})" if record.tasks else ""
        lines.append(f"{category}{count}: {finding.get('hint', '')}".rstrip(": "))
    return lines


def build_first_failure_message(record: JobRecord, failed_members: Sequence[str]) -> Message:
    """The optional early warning for an array: a task failed, the summary follows at the end."""
    name = f" ({record.name})" if record.name else ""
    shown = ", ".join(failed_members[:10]) + (" …" if len(failed_members) > 10 else "")
    return Message(
        title=f"{kind_label(record)} {record.job_id}{name}: first task failure",
        description=f"Failed so far: {shown}. The other tasks keep running; a summary follows when all have ended.",
        color="failure",
        footer="jobmon",
    )


def _first_per_category(findings: Sequence[dict]) -> List[dict]:
    seen = set()
    chosen = []
    for finding in findings:
        if finding["category"] not in seen:
            seen.add(finding["category"])
            chosen.append(finding)
    return chosen
