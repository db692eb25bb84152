"""What each event says: a job record turned into a sink-neutral message. Pure.

The final message (state, exit code, elapsed vs limit, peak memory vs request, findings, excerpt,
the chain's attempts or the array's rounds), one per escalation step or array round, and the
optional first-failure warning of an array. Each names its route: the success route hears only
clean completions.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from core.analysis.finding import Finding
from core.monitor.alerts import describe_progress
from core.notify.events import Event, EventKind, Route
from core.notify.message import Facts, Field, Message, Tone
from core.slurm import efficiency as efficiency_rules
from core.slurm.arrays import format_task_counts
from core.slurm.model import JobState, is_clean_end
from core.slurm.parse import explicit_time_limit
from core.state.model import Attempt, Chain, FinalRecord, JobRecord

WARNING_STATES = frozenset({JobState.TIMEOUT, JobState.CANCELLED})
MAX_FINDINGS_SHOWN = 6
#: A warning seen shows this much of its log line.
WARNING_LINE_CHARS = 120


def route_for(final: FinalRecord) -> Route:
    """The success route hears only clean completions; everything else goes to the error route."""
    return Route.SUCCESS if final.is_success else Route.ERROR


def tone_for(final: FinalRecord) -> Tone:
    if final.is_success:
        return Tone.SUCCESS
    if final.state in WARNING_STATES:
        return Tone.WARNING
    return Tone.FAILURE


def outcome_label(final: FinalRecord) -> str:
    if final.state is JobState.PENDING and final.reason:
        return f"NEVER STARTS ({final.reason})"
    return final.state.value


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


def kind_label(record: JobRecord) -> str:
    if record.array_spec or any(t.task_id.isdecimal() for t in record.tasks):
        return "Array"
    return "Het job" if record.tasks else "Job"


def job_facts(record: JobRecord, state: str, **more: str) -> Facts:
    """What route filters and machine-readable sinks see of a job: id, name, state, findings (and `more`)."""
    findings = tuple(dict.fromkeys(finding.category for finding in record.findings))
    return Facts(job_id=record.job_id, name=record.name, state=state, findings=findings, **more)


def final_event(record: JobRecord, host: str = "") -> Event:
    """The story's end: one per job (or chain), to the success route only if it ended cleanly."""
    final = record.final or FinalRecord(state=JobState.UNKNOWN, incomplete=True)
    return Event(EventKind.FINAL, 1, route_for(final), build_message(record, host))


def build_message(record: JobRecord, host: str = "") -> Message:
    final = record.final or FinalRecord(state=JobState.UNKNOWN, incomplete=True)
    name = f" ({record.name})" if record.name else ""
    headline = final.summary if final.is_group else outcome_label(final)
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
        description.append(f"Likely cause: {root.category} — {root.hint}".rstrip(" —"))
    elif not final.is_success:
        description.append("No known error pattern matched the end of the log.")
    if final.is_success and record.warnings:
        kinds = ", ".join(dict.fromkeys(w.category for w in record.warnings))
        description.append(f"Completed, but its log shows warnings: {kinds}. "
                           "Check that the run learned what it should.")
    if final.state is JobState.PENDING and final.reason:
        description.append("The job can never start; cancel it with scancel and fix its dependency.")
    reached = progress_reached(record)
    if reached:
        description.append(reached)
    time_limit = explicit_time_limit(final.time_limit)
    limit = f" of {time_limit} limit" if time_limit else ""
    if final.max_rss_bytes:
        peak = format_bytes(final.max_rss_bytes) + (f" of {final.req_mem} requested" if final.req_mem else "")
    else:  # sacct has no MaxRSS: the job ended before Slurm's accounting sampled it, or it samples none here
        peak = "not recorded by Slurm" + (f" ({final.req_mem} requested)" if final.req_mem else "")
    if final.is_group:
        fields = [Field("Tasks", final.state_text)]
        if final.failed_tasks:
            fields.append(Field("Failed tasks", final.failed_tasks))
        slowest = f" (task {final.slowest_task})" if final.slowest_task else ""
        fields.append(Field("Slowest task", f"{final.elapsed or '?'}{slowest}{limit}"))
    else:
        state_text = final.state_text or final.state.value
        if final.reason and final.reason not in ("None", state_text):
            state_text = f"{state_text} ({final.reason})"
        fields = [
            Field("State", state_text),
            Field("Exit code", exit_label(final)),
            Field("Elapsed", f"{final.elapsed or '?'}{limit}"),
        ]
    fields += [
        Field("Peak memory", peak),
    ]
    usage = efficiency_text(record)
    if usage:
        fields.append(Field("Efficiency", usage, inline=False))
    fields += [
        Field("Node(s)", final.nodes or "none"),
        Field("Partition", final.partition or "?"),
        Field("Working dir", final.work_dir or record.submit_dir or "?", inline=False),
    ]
    if record.findings:
        fields.append(Field("Findings", "\n".join(_finding_lines(record)), inline=False))
    if record.warnings:
        fields.append(Field("Warnings seen", "\n".join(warning_lines(record)), inline=False))
    if chain is not None and chain.rounds:  # an array chain: its attempts' core-hours are failed tasks only
        fields.append(Field("Rounds", "\n".join(round_lines(chain)), inline=False))
        fields.append(Field("Wasted core-hours", f"{sum(a.core_hours for a in chain.attempts):.2f}"))
        left = [f"task(s) {spec} ({why})" for r in chain.rounds for why, spec in r.not_retried.items()]
        if left:
            description.append(f"Not retried: {'; '.join(left)}.")
    elif chain is not None and chain.attempts:
        fields.append(Field("Attempts", "\n".join(attempt_lines(chain)), inline=False))
        wasted = sum(a.core_hours for a in chain.attempts if a.state and not is_clean_end(a.state, a.exit_code, 0))
        fields.append(Field("Wasted core-hours", f"{wasted:.2f}"))
        if chain.attempts[-1].decision and not final.is_success:
            description.append(f"Chain ended: {chain.attempts[-1].decision}.")
    if record.log_paths:
        fields.append(Field("Log", "\n".join(record.log_paths), inline=False))
    facts = job_facts(record, final.state.value, exit_code="" if final.is_group else exit_label(final),
                      efficiency=f"peak memory {peak}")
    return Message(title=title, description="\n".join(description), tone=tone_for(final), fields=tuple(fields),
                   excerpt=record.excerpt, footer="jobmon" + (f" on {host}" if host else ""), facts=facts)


def efficiency_text(record: JobRecord) -> str:
    """`CPU 98 %, memory 12 %, time 17 %` (an array: each value's spread across its tasks), then at most
    two lines of advice when it is clear; "" when Slurm gave nothing to compute it from."""
    spread = record.efficiency_spread
    if spread is not None:
        return efficiency_rules.describe_spread(spread)
    single = record.efficiency
    if single is None or record.final is None:
        return ""
    return "\n".join(line for line in [efficiency_rules.describe(single), *record.final.advice] if line)


#: Endings after which "how far it got" is worth saying: the run stopped before it was done.
UNFINISHED_STATES = frozenset({JobState.FAILED, JobState.TIMEOUT, JobState.OUT_OF_MEMORY, JobState.NODE_FAIL,
                               JobState.CANCELLED, JobState.PREEMPTED, JobState.DEADLINE})


def progress_reached(record: JobRecord) -> str:
    """`Reached 71%, 5/7 epoch.` for a job that failed or timed out, from the last progress line the
    monitor understood; "" when it saw none (or the job ended cleanly)."""
    final = record.final
    live = record.live
    if final is None or final.is_success or final.state not in UNFINISHED_STATES or final.is_group:
        return ""
    if live is None or live.reading is None or (live.target and live.target != record.target):
        return ""
    return f"Reached {describe_progress(live.reading, None, 0.0)}."


def attempt_lines(chain: Chain) -> List[str]:
    """`1. 123 1G/00:10:00: OUT_OF_MEMORY in 00:00:05`, one line per attempt."""
    lines = []
    for number, attempt in enumerate(chain.attempts, 1):
        resources = attempt.resources.describe() if not attempt.resources.is_empty else "as submitted"
        state = attempt.state.value if attempt.state else "RUNNING"
        ended = state + (f" in {attempt.elapsed}" if attempt.elapsed else "")
        lines.append(f"{number}. {attempt.job_id} {resources}: {ended}")
    return lines


def round_lines(chain: Chain) -> List[str]:
    """`1. 123: 2 OUT_OF_MEMORY, 1 COMPLETED → retried 0-1`, one line per array round."""
    return [f"{r.number}. {', '.join(r.jobs)}: {format_task_counts(r.task_counts)}"
            + (f" → retried {r.retried_tasks}" if r.retried_tasks else "") for r in chain.rounds]


def escalation_event(record: JobRecord, chain: Chain, previous: Attempt) -> Event:
    """Sent when a chain resubmits: what ended how, and what runs next with which resources.

    One per step (keyed by the round that starts), one per round for arrays.
    """
    name = f" ({record.name})" if record.name else ""
    if chain.rounds:
        ended = chain.rounds[-1]
        started = [a for a in chain.attempts if a.round == chain.round]
        jobs = ", ".join(a.job_id for a in started)
        lines = [f"Task(s) {a.tasks} → job {a.job_id} with {a.resources.describe()}" for a in started]
        message = Message(
            title=f"Array {record.job_id}{name} round {ended.number}: {format_task_counts(ended.task_counts)} "
                  f"→ resubmitted {ended.retried_tasks} as {jobs}",
            description="\n".join([f"Round {chain.round} of at most {chain.max_retries + 1}.", *lines,
                                   f"Decision: {ended.decision}."]),
            tone=Tone.WARNING, footer="jobmon escalation", facts=job_facts(record, ""),
        )
        return Event(EventKind.ROUND, ended.number, Route.ERROR, message)
    used = previous.resources.mem or previous.resources.time or "its resources"
    state = previous.state.value if previous.state else "ended"
    message = Message(
        title=f"Job {previous.job_id}{name} {state} at {used} → resubmitted as {chain.current_job} "
              f"with {chain.level.describe()}",
        description=f"Attempt {len(chain.attempts)} of at most {chain.max_retries + 1}. {previous.decision}.",
        tone=Tone.WARNING, footer="jobmon escalation",
        facts=job_facts(record, previous.state.value if previous.state else ""),
    )
    return Event(EventKind.ESCALATION, len(chain.attempts), Route.ERROR, message)


def _finding_lines(record: JobRecord) -> List[str]:
    """One line per category; for arrays, how many failed tasks showed it."""
    lines = []
    for finding in first_of_each_category(record.findings):
        affected = sum(finding.category in task.categories for task in record.tasks)
        count = f" ({affected} task{'s' if affected != 1 else ''})" if record.tasks else ""
        lines.append(f"{finding.category}{count}: {finding.hint}".rstrip(": "))
    return lines[:MAX_FINDINGS_SHOWN]


def first_of_each_category(findings: Sequence[Finding]) -> List[Finding]:
    """The first finding of each category, in the order given."""
    first: Dict[str, Finding] = {}
    for finding in findings:
        first.setdefault(finding.category, finding)
    return list(first.values())


def warning_lines(record: JobRecord) -> List[str]:
    """One line per kind of warning seen: where it was first seen and what the line said."""
    lines = []
    for warning in first_of_each_category(record.warnings):
        text = warning.line if len(warning.line) <= WARNING_LINE_CHARS else warning.line[:WARNING_LINE_CHARS - 1] + "…"
        lines.append(f"{warning.category} (line {warning.line_no}): {text}")
    return lines[:MAX_FINDINGS_SHOWN]


def first_failure_event(record: JobRecord, failed_members: Sequence[str]) -> Event:
    """The optional early warning for an array: a task failed, the summary follows at the end."""
    name = f" ({record.name})" if record.name else ""
    shown = ", ".join(failed_members[:10]) + (" …" if len(failed_members) > 10 else "")
    message = Message(
        title=f"{kind_label(record)} {record.job_id}{name}: first task failure",
        description=f"Failed so far: {shown}. The other tasks keep running; a summary follows when all have ended.",
        tone=Tone.FAILURE, footer="jobmon", facts=job_facts(record, JobState.FAILED.value),
    )
    return Event(EventKind.FIRST_FAILURE, 1, Route.ERROR, message)
