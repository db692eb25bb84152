"""How a job ended, from what Slurm said: one job, or a group (array tasks, het components). Pure.

An array `52` shows up as tasks `52_0 … 52_9` (the last task keeps the array's raw id in
sacct), a het job `60` as components `60+0`, `60+1`. A monitor follows the group as one job and
sends one summary when the last member has ended.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from core.slurm.arrays import compress_ids, format_task_counts
from core.slurm.model import AccountingRecord, JobState, QueueEntry, member_suffix
from core.slurm.parse import parse_duration
from core.state.model import FinalRecord, FinalSource, TaskOutcome

#: Most telling state first: the group's headline state is the first one any member has.
SEVERITY_ORDER = (
    JobState.NODE_FAIL, JobState.BOOT_FAIL, JobState.OUT_OF_MEMORY, JobState.FAILED, JobState.TIMEOUT,
    JobState.DEADLINE, JobState.CANCELLED, JobState.REVOKED, JobState.PREEMPTED, JobState.UNKNOWN,
    JobState.COMPLETED,
)


def final_from_accounting(record: AccountingRecord, now: float, reason: str = "") -> FinalRecord:
    """A job's end as sacct recorded it (a placeholder record is marked incomplete)."""
    return FinalRecord(
        state=record.state, state_text=record.state_text, exit_code=record.exit_code, signal=record.signal,
        elapsed=record.elapsed, time_limit=record.time_limit, max_rss_bytes=record.max_rss_bytes,
        req_mem=record.real_req_mem, nodes=record.real_nodes, partition=record.partition,
        work_dir=record.work_dir, start=record.start, end=record.end, alloc_cpus=record.alloc_cpus,
        total_cpu=record.total_cpu, used_mem_bytes=record.used_mem_bytes, alloc_nodes=record.alloc_nodes,
        alloc_gpus=record.alloc_gpus, gpu_util=record.gpu_util,
        reason=reason, source=FinalSource.SACCT, incomplete=record.is_placeholder, decided_at=now,
    )


def final_from_queue(entry: QueueEntry, now: float, *, incomplete: bool = False) -> FinalRecord:
    """A job's end as squeue showed it: all there is when sacct never answers (or never will: a
    job that can never start)."""
    return FinalRecord(state=entry.state, state_text=entry.state.value, reason=entry.reason,
                       source=FinalSource.SQUEUE, incomplete=incomplete, decided_at=now)


def is_group(job_id: str, keys: Iterable[str], array_spec: str = "") -> bool:
    return bool(array_spec) or any(member_suffix(key, job_id) is not None for key in keys)


def active_members(entries: Mapping[str, QueueEntry]) -> List[QueueEntry]:
    return [entry for entry in entries.values() if not entry.state.is_final]


def headline_entry(active: Sequence[QueueEntry]) -> QueueEntry:
    """What to show for a group still in the queue: RUNNING if any member runs."""
    running = [entry for entry in active if entry.state is JobState.RUNNING]
    return (running or list(active))[0]


def failed_queue_members(job_id: str, entries: Mapping[str, QueueEntry]) -> List[str]:
    """Members squeue already shows as ended badly (for an early "first failure" message). squeue knows
    no exit codes, so a member it shows COMPLETED counts as fine here (sacct decides at the end)."""
    return sorted(
        key for key, entry in entries.items()
        if member_suffix(key, job_id) is not None and entry.state.is_final and entry.state is not JobState.COMPLETED
    )


def collect_tasks(job_id: str, records: Mapping[str, AccountingRecord]) -> List[TaskOutcome]:
    tasks = []
    for key, record in records.items():
        suffix = member_suffix(key, job_id)
        if suffix is None or "[" in suffix:
            continue  # `52_[3-9]`: tasks not started yet have no record of their own
        tasks.append(TaskOutcome(
            task_id=suffix, job_id=key, raw_id=record.job_id_raw, state=record.state,
            exit_code=record.exit_code, signal=record.signal, elapsed=record.elapsed,
            max_rss_bytes=record.max_rss_bytes, req_mem=record.real_req_mem, time_limit=record.time_limit,
            alloc_cpus=record.alloc_cpus, total_cpu=record.total_cpu, used_mem_bytes=record.used_mem_bytes,
            alloc_nodes=record.alloc_nodes, alloc_gpus=record.alloc_gpus, gpu_util=record.gpu_util,
        ))
    return sorted(tasks, key=_task_sort_key)


def _task_sort_key(task: TaskOutcome) -> Tuple[int, str]:
    digits = task.task_id.lstrip("+")
    return (int(digits) if digits.isdecimal() else 0, task.task_id)


def missing_tasks(tasks: Sequence[TaskOutcome], expected: Sequence[int]) -> List[int]:
    seen = {int(t.task_id) for t in tasks if t.task_id.isdecimal()}
    return [task for task in expected if task not in seen]


def het_components_recorded(job_id: str, queue_keys: Iterable[str], tasks: Sequence[TaskOutcome]) -> bool:
    """squeue lists het components and sacct has a record of each: none can be missing.

    squeue keeps every component until the whole het job is purged, so its list is complete (seen
    on Slurm 22.05); array tasks leave squeue one by one, so for arrays it proves nothing.
    """
    components = {key for key in queue_keys if (member_suffix(key, job_id) or "").startswith("+")}
    return bool(components) and components <= {task.job_id for task in tasks}


def all_final(tasks: Sequence[TaskOutcome], records: Mapping[str, AccountingRecord]) -> bool:
    return bool(tasks) and all(t.state.is_final and not records[t.job_id].is_placeholder for t in tasks)


def headline_state(states: Mapping[str, int]) -> JobState:
    """The group's state: the most telling one any member has (a state not ranked counts if alone)."""
    headline = next((state for state in SEVERITY_ORDER if states.get(state.value)), JobState.UNKNOWN)
    if headline is JobState.UNKNOWN and states and not states.get(JobState.UNKNOWN.value):
        headline = JobState.parse(Counter(states).most_common(1)[0][0])
    return headline


def summarize(
    tasks: Sequence[TaskOutcome], records: Mapping[str, AccountingRecord], *, now: float, incomplete: bool = False,
) -> FinalRecord:
    """One FinalRecord for the group: worst state first, counts per state, failing ids compressed."""
    sample = records.get(tasks[0].job_id) if tasks else None
    final = FinalRecord(
        time_limit=sample.time_limit if sample else "",
        req_mem=sample.real_req_mem if sample else "",
        nodes=_join_nodes(records.get(t.job_id) for t in tasks),
        partition=sample.partition if sample else "",
        work_dir=sample.work_dir if sample else "",
        start=min((r.start for r in records.values() if r.start[:1].isdecimal()), default=""),
        end=max((r.end for r in records.values() if r.end[:1].isdecimal()), default=""),
        alloc_cpus=sample.alloc_cpus if sample else 0,
        source=FinalSource.SACCT,
        decided_at=now,
    )
    return with_task_fields(final, tasks, incomplete=incomplete)


def with_task_fields(final: FinalRecord, tasks: Sequence[TaskOutcome], *, incomplete: bool = False) -> FinalRecord:
    """`final` with everything that comes from the tasks (state, counts, failing ids, slowest) recomputed."""
    states: Dict[str, int] = dict(Counter(task.state.value for task in tasks))
    failed = [t for t in tasks if t.is_failure]
    slowest = max(tasks, key=lambda t: parse_duration(t.elapsed) or 0.0, default=None)
    rss = [t.max_rss_bytes for t in tasks if t.max_rss_bytes]
    worst = max(failed, key=lambda t: (t.exit_code, t.signal), default=None)
    return replace(
        final,
        state=headline_state(states),
        state_text=format_task_counts(states),
        exit_code=worst.exit_code if worst else 0,
        signal=worst.signal if worst else 0,
        elapsed=slowest.elapsed if slowest else "",
        max_rss_bytes=max(rss) if rss else None,
        incomplete=incomplete or final.incomplete or bool(states.get(JobState.UNKNOWN.value)),
        task_counts=states,
        failed_tasks=failed_tasks_text(tasks),
        slowest_task=slowest.task_id if slowest else "",
    )


def failed_tasks_text(tasks: Sequence[TaskOutcome]) -> str:
    """The failed members as one short text: array ids compressed (`3,17,42-45`), het ones listed."""
    failed = [t for t in tasks if t.is_failure]
    failed_ids = [int(t.task_id) for t in failed if t.task_id.isdecimal()]
    return compress_ids(failed_ids) if failed_ids else ", ".join(t.task_id for t in failed)


def missing_placeholders(missing: Sequence[int]) -> List[TaskOutcome]:
    """Tasks that never reached sacct, counted as UNKNOWN (and as failed) in a summary."""
    return [TaskOutcome(task_id=str(task_id), state=JobState.UNKNOWN) for task_id in missing]


def merge_latest(earlier: Sequence[TaskOutcome], latest: Sequence[TaskOutcome]) -> List[TaskOutcome]:
    """Each task's most recent outcome: a chain round's results replace the same tasks' earlier ones."""
    merged = {task.task_id: task for task in earlier}
    merged.update((task.task_id, task) for task in latest)
    return sorted(merged.values(), key=_task_sort_key)


def _join_nodes(records: Iterable[Optional[AccountingRecord]], limit: int = 8) -> str:
    nodes = sorted({r.real_nodes for r in records if r is not None and r.real_nodes})
    shown = ",".join(nodes[:limit])
    return shown + (f" (+{len(nodes) - limit} more)" if len(nodes) > limit else "")
