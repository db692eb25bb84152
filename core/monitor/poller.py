"""One poll of one job: what Slurm says now, whether the job has ended, and what the checks noticed.

The poller reads the shared squeue snapshot (and sacct once the queue says the job ended), updates
a copy of the record's observation, runs the per-poll checks while the job is in the queue, and
returns all of it as a `Poll`; the monitor writes it. It never sleeps and never writes state.

What it guards: a controller outage is never taken for the end of a job; a final state is
confirmed by sacct, which may lag, answer with a placeholder or be down (then, after
`accounting_wait`, what squeue knew is used, marked incomplete); a requeued job goes on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Set, Tuple

from core import outcome
from core.config import Config
from core.errors import SlurmError
from core.logs import log
from core.notify.events import Event
from core.slurm.arrays import parse_array_spec
from core.slurm.model import TERMINAL_PENDING_REASONS, AccountingRecord, JobState, QueueEntry
from core.state.model import FinalRecord, JobRecord, LiveState, Observation, TaskOutcome

#: The note of a check's event that asks for the job to be scancelled (health.cancel_on_stall).
CANCEL_NOTE = "cancel:stalled"

#: How long sacct's final state may disagree with squeue's before sacct's is used (a placeholder record, sacct's
#: first stub, is waited on for `accounting_wait`, like a missing one).
PLACEHOLDER_WAIT = 30.0
#: Without a known task list, an array counts as ended once sacct's rows stop changing this long.
GROUP_SETTLE = 10.0


class SlurmView(Protocol):
    """What a monitor asks Slurm (core.slurm.shared.SharedSlurm, or a test double)."""

    def query_queue(self, job_ids: Sequence[str], *, not_before: float = 0.0) -> Dict[str, QueueEntry]: ...

    def query_accounting(self, job_ids: Sequence[str]) -> Dict[str, AccountingRecord]: ...

    def next_poll_delay(self, interval: float, job_id: str) -> float: ...


@dataclass(frozen=True)
class Running:
    """What a per-poll check sees: the record, its rows in the queue (at least one not final), the time,
    and for a running job what its logs say now (`live`), the lines they just gained, read errors."""

    record: JobRecord
    members: Mapping[str, QueueEntry]
    headline: QueueEntry
    now: float
    live: Optional[LiveState] = None
    fresh: Tuple[str, ...] = ()
    read_errors: Tuple[str, ...] = ()


#: A per-poll check: small, pure where it can be, returning the events it noticed (keys make repeats harmless).
Check = Callable[[Running], Sequence[Event]]
#: Looks at a running job's resources (sstat, watched files, free disk) and returns the next LiveState;
#: it decides itself how often it really looks (core.monitor.checks.sampler).
Sampler = Callable[[JobRecord, QueueEntry, LiveState, float], LiveState]


@dataclass(frozen=True)
class Poll:
    """What one poll learned: the observation to store, and either the job's end or when to poll again."""

    observation: Observation
    delay: float = 0.0
    final: Optional[FinalRecord] = None
    tasks: Tuple[TaskOutcome, ...] = ()
    events: Tuple[Event, ...] = ()
    note: str = ""
    live: Optional[LiveState] = None  # what the running job's logs said (None: not followed this poll)
    cancel: bool = False  # a check asks for the job to be scancelled (health.cancel_on_stall)


def accounting_backoff(waited: float, interval: float) -> float:
    """Short retries first (sacct usually catches up within seconds), then the normal interval."""
    return max(0.2, min(interval, 1.0 + waited / 4.0))


def round_tasks(record: JobRecord) -> List[int]:
    """The array task ids of the current round: the whole array first, then those resubmitted."""
    chain = record.chain
    if chain is None or chain.round == 1 or not record.array_spec:
        return record.expected_tasks
    ids: Set[int] = set()
    for attempt in chain.attempts:
        if attempt.round == chain.round and attempt.tasks:
            ids.update(parse_array_spec(attempt.tasks).task_ids)
    return sorted(ids)


class Poller:
    def __init__(self, slurm: SlurmView, config: Config, checks: Sequence[Check] = (),
                 sampler: Optional[Sampler] = None) -> None:
        self.slurm = slurm
        self.config = config
        self.checks = tuple(checks)
        self.sampler = sampler
        self.progress_patterns = tuple(re.compile(p) for p in config.health.progress_patterns)

    def poll(self, record: JobRecord, now: float) -> Poll:
        seen = record.observation
        try:
            queue = self.slurm.query_queue(record.targets, not_before=record.created_at)
        except SlurmError as exc:
            if not seen.controller_down_since:
                log.warning("job %s: controller unreachable, will retry: %s", record.job_id, exc)
            down = replace(seen, controller_down_since=seen.controller_down_since or now, last_error=str(exc))
            return Poll(down, self.config.running_interval, note="controller unreachable")
        active = outcome.active_members(queue)
        if not active:
            return self._ask_accounting(record, queue, now)
        if all(e.state is JobState.PENDING and e.reason in TERMINAL_PENDING_REASONS for e in active):
            return Poll(seen, final=outcome.final_from_queue(active[0], now))
        entry = outcome.headline_entry(active)
        observed = self._observed(record, entry, now)
        running = self._running(record, queue, entry, now)
        events = tuple(event for check in self.checks for event in check(running))
        live = running.live
        if live is not None:
            live.notes.extend(note for event in events for note in event.notes)
        interval = self.config.pending_interval if entry.state is JobState.PENDING else self.config.running_interval
        delay = self.slurm.next_poll_delay(interval, record.target)
        cancel = any(CANCEL_NOTE in event.notes for event in events)
        return Poll(observed, delay, events=events, note=f"{entry.state.value} {entry.reason}".strip(), live=live,
                    cancel=cancel)

    def _running(self, record: JobRecord, queue: Mapping[str, QueueEntry], entry: QueueEntry, now: float) -> Running:
        """What the checks see; a running single job's logs are followed first (imported only then)."""
        from core.monitor.live import current, follows_logs, observe

        if entry.state is not JobState.RUNNING:
            return Running(record, queue, entry, now, live=current(record))
        if not follows_logs(record):
            return Running(record, queue, entry, now)
        seen = observe(record, entry.start_time, now, self.progress_patterns)
        for error in seen.errors:
            log.warning("job %s: cannot read %s", record.job_id, error)
        live = self.sampler(record, entry, seen.live, now) if self.sampler is not None else seen.live
        return Running(record, queue, entry, now, live, seen.fresh, seen.errors)

    @staticmethod
    def _observed(record: JobRecord, entry: QueueEntry, now: float) -> Observation:
        seen = record.observation
        if seen.state is not entry.state:
            log.info("job %s: %s %s", record.job_id, entry.state.value, entry.reason)
        if seen.controller_down_since:
            log.info("job %s: controller reachable again", record.job_id)
        if seen.final_seen_at:
            log.info("job %s: back to %s (requeued?); waiting for the real end", record.job_id, entry.state.value)
        return Observation(state=entry.state, reason=entry.reason, seen_at=now,
                           accounting_down_since=seen.accounting_down_since)

    def _ask_accounting(self, record: JobRecord, queue: Dict[str, QueueEntry], now: float) -> Poll:
        """squeue says final (or forgot the job): only sacct has the details, and it may lag."""
        entry = queue.get(record.target)
        seen = record.observation
        first_seen = seen.final_seen_at or now
        waited = now - first_seen
        delay = accounting_backoff(waited, self.config.running_interval)
        observed = replace(seen, final_seen_at=first_seen, controller_down_since=0.0)
        if entry is not None:
            observed = replace(observed, state=entry.state, reason=entry.reason)
        try:
            accounting = self.slurm.query_accounting(record.targets)
        except SlurmError as exc:
            if not seen.accounting_down_since:
                log.warning("job %s: %s; retrying", record.job_id, exc)
            observed = replace(observed, accounting_down_since=seen.accounting_down_since or now,
                               last_error=str(exc))
            if waited >= self.config.accounting_wait:
                log.warning("job %s: sacct still failing after %.0f s; reporting what squeue knew",
                            record.job_id, waited)
                return Poll(observed, final=self._fallback_final(record, entry, now))
            return Poll(observed, delay, note=f"sacct unavailable: {exc}")
        observed = replace(observed, accounting_down_since=0.0)
        if len(record.targets) > 1 or outcome.is_group(record.target, [*queue, *accounting], record.array_spec):
            return self._group_final(record, observed, queue, accounting, waited, delay, now)
        found = accounting.get(record.target)
        if found is not None and found.state.is_final:
            disagree = entry is not None and entry.state.is_final and found.state is not entry.state
            if found.is_placeholder and waited < self.config.accounting_wait:
                # a stub's exit code and state text are not the job's: under a busy slurmdbd it lasts longer
                # than a few seconds, and taking it gave a FAILED job exit code 0
                return Poll(observed, delay, note="sacct has only a placeholder record yet")
            if disagree and waited < PLACEHOLDER_WAIT:
                return Poll(observed, delay, note="sacct's record lags behind squeue's final state")
            reason = entry.reason if entry is not None and entry.reason != "None" else ""
            return Poll(observed, final=outcome.final_from_accounting(found, now, reason))
        if waited >= self.config.accounting_wait:
            log.warning("job %s: sacct has no final record after %.0f s", record.job_id, waited)
            return Poll(observed, final=self._fallback_final(record, entry, now))
        what = found.state.value if found is not None else "no record"
        return Poll(observed, delay, note=f"waiting for sacct's final record (now: {what})")

    def _group_final(
        self, record: JobRecord, observed: Observation, queue: Dict[str, QueueEntry],
        accounting: Dict[str, AccountingRecord], waited: float, delay: float, now: float,
    ) -> Poll:
        """An array or het job ends when every member has a final sacct record (sacct lags per task)."""
        tasks = [task for target in record.targets for task in outcome.collect_tasks(target, accounting)]
        expected = round_tasks(record)
        missing = outcome.missing_tasks(tasks, expected)
        settled = (bool(expected) or waited >= GROUP_SETTLE
                   or outcome.het_components_recorded(record.target, queue, tasks))
        if outcome.all_final(tasks, accounting) and not missing and settled:
            return Poll(observed, final=outcome.summarize(tasks, accounting, now=now), tasks=tuple(tasks))
        if waited >= self.config.accounting_wait:
            log.warning("job %s: %d task(s) never reached sacct: %s", record.job_id, len(missing), missing[:20])
            tasks += outcome.missing_placeholders(missing)
            final = outcome.summarize(tasks, accounting, now=now, incomplete=True)
            return Poll(observed, final=final, tasks=tuple(tasks))
        return Poll(observed, delay, note=f"waiting for sacct: {len(tasks)} task record(s), {len(missing)} missing")

    @staticmethod
    def _fallback_final(record: JobRecord, entry: Optional[QueueEntry], now: float) -> FinalRecord:
        if entry is not None:
            return outcome.final_from_queue(entry, now, incomplete=True)
        state = record.observation.state
        final_state = state if state is not None and state.is_final else JobState.UNKNOWN
        return outcome.final_from_queue(QueueEntry(record.target, final_state, ""), now, incomplete=True)
