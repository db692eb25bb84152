"""The poll loop of one job's daemon: watch Slurm until the truth is known, analyse, notify once.

Everything with side effects comes in through `MonitorDeps`, so tests drive a whole job story
(PENDING -> RUNNING -> controller down -> FAILED) in milliseconds with recorded Slurm answers.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from core import outcome as groups
from core.config import Config
from core.errors import SlurmError, StateError
from core.slurm.arrays import parse_array_spec
from core.slurm.client import (
    TERMINAL_PENDING_REASONS,
    AccountingRecord,
    JobState,
    QueueEntry,
    SbatchRejected,
    is_unavailable_error,
)
from core.state.store import FinalRecord, JobRecord, StateStore, TaskOutcome

if TYPE_CHECKING:  # analysis and notification are imported when a job ends, not while it runs
    from core.analysis.analyzer import Pattern
    from core.notify.discord import Delivery

log = logging.getLogger("jobmon.monitor")

#: How long a record with placeholder details (sacct's first stub) is waited on before being used.
PLACEHOLDER_WAIT = 30.0
#: Without a known task list, an array counts as ended once sacct's rows stop changing this long.
GROUP_SETTLE = 10.0
#: Delivery is retried this long by the daemon; afterwards `recover` retries it.
DELIVERY_GIVE_UP = 6 * 3600.0
#: The longest one `send` may take (retries, timeouts, 429 waits): announced in the heartbeat.
SEND_BUDGET = 300.0


@dataclass
class MonitorDeps:
    slurm: object  # core.shared_slurm.SharedSlurm, or a test double with the same methods
    store: StateStore
    config: Config
    patterns: Callable[[], Sequence[Pattern]]  # loaded when a job ends: idle daemons stay small
    send: Callable[[str, dict], Delivery]
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    host: str = field(default_factory=lambda: os.uname().nodename)  # = socket.gethostname(), lighter
    pid: int = field(default_factory=os.getpid)
    start_ticks: int = 0
    should_stop: Callable[[], bool] = lambda: False
    #: (record, level, attempt number, array tasks spec) -> (job id, stdout, stderr): sbatch of a chain attempt
    resubmit: Callable = None  # type: ignore[assignment]
    #: (record, attempt number, array tasks spec) -> like `resubmit`, for a job submitted before a crash; or None
    find_submitted: Callable = lambda record, attempt, tasks: None


@dataclass(frozen=True)
class Step:
    """What one poll learned: either a final record, or the next delay and what was seen."""

    final: Optional[FinalRecord]
    delay: float
    note: str = ""
    tasks: Tuple[TaskOutcome, ...] = ()


def heartbeat_deadline(now: float, delay: float, grace: float) -> float:
    """After this time a silent daemon is considered stale (it should have polled again)."""
    return now + delay + grace


def final_from_accounting(record: AccountingRecord, now: float, reason: str = "") -> FinalRecord:
    return FinalRecord(
        state=record.state.value,
        state_text=record.state_text,
        exit_code=record.exit_code,
        signal=record.signal,
        elapsed=record.elapsed,
        time_limit=record.time_limit,
        max_rss_bytes=record.max_rss_bytes,
        req_mem="" if record.req_mem.endswith("?") else record.req_mem,
        nodes=record.nodes if record.nodes not in ("None assigned", "(null)") else "",
        partition=record.partition,
        work_dir=record.work_dir,
        start=record.start,
        end=record.end,
        alloc_cpus=record.alloc_cpus,
        reason=reason,
        source="sacct",
        incomplete=record.is_placeholder,
        decided_at=now,
    )


def round_tasks(record: JobRecord) -> List[int]:
    """The array task ids of the current round: the whole array first, then those resubmitted."""
    chain = record.chain
    if chain is None or chain.round == 1 or not record.array_spec:
        return record.expected_tasks
    ids = set()
    for attempt in chain.attempts:
        if attempt.round == chain.round and attempt.tasks:
            ids.update(parse_array_spec(attempt.tasks).task_ids)
    return sorted(ids)


def _merge_round(
    record: JobRecord, final: FinalRecord, tasks: List[TaskOutcome], categories: List[str], findings: List[Dict],
    excerpt: str,
) -> None:
    """An array chain's whole view after a round: each task's latest outcome, and only the findings
    (and excerpt) of tasks still failing (an OOM fixed by the retry is no longer a cause)."""
    record.tasks = groups.merge_latest(record.tasks, tasks)
    failing = {f"task {t.task_id}:" for t in record.tasks if groups.is_failure(t)}
    if excerpt or record.excerpt.split("\n", 1)[0] not in failing:  # excerpts start "task N:"
        record.excerpt = excerpt
    record.final = groups.with_task_fields(final, record.tasks)
    live = {category for task in record.tasks if groups.is_failure(task) for category in task.categories}
    record.findings = [f for f in findings + record.findings if f["category"] in live]
    record.categories = [c for c in dict.fromkeys(categories + record.categories) if c in live]


def accounting_backoff(waited: float, interval: float) -> float:
    """Short retries first (sacct usually catches up within seconds), then the normal interval."""
    return max(0.2, min(interval, 1.0 + waited / 4.0))


class Monitor:
    """Watches one job; `run()` returns when the job's story is told or monitoring is cancelled."""

    def __init__(self, job_id: str, deps: MonitorDeps) -> None:
        self.job_id = job_id
        self.deps = deps
        self._delivery_failures = 0
        self._delivery_started = 0.0
        self._unsaved: Optional[JobRecord] = None  # our record while the disk refuses writes

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> str:
        while True:
            record = self._load()
            if record.monitor.stop_requested or self.deps.should_stop():
                log.info("job %s: monitoring stopped on request", self.job_id)
                return "cancelled"
            if record.done:
                return "done"
            if record.chain is not None and record.chain.pending:
                self.carry_out_resubmission(record)
                continue
            if record.final is None:
                step = self.poll(record)
                if step.final is None:
                    self._beat(step.delay, step.note)
                    self.deps.sleep(step.delay)
                    continue
                record = self.finalize(step)
                if record.chain is not None and record.chain.pending:
                    continue
            outcome = self.deliver(record)
            if outcome in ("sent", "gone"):
                return "done"
            delay = self._delivery_delay()
            if delay is None:
                log.error("job %s: giving up delivery for now; `jobmon recover` will retry", self.job_id)
                return "undelivered"
            self._beat(delay, "waiting to retry the notification")
            self.deps.sleep(delay)

    def _beat(self, delay: float, note: str) -> None:
        now = self.deps.clock()

        def change(record: JobRecord) -> None:
            record.monitor.heartbeat = now
            record.monitor.heartbeat_deadline = heartbeat_deadline(now, delay, self.deps.config.heartbeat_grace)
            record.monitor.pid = self.deps.pid
            record.monitor.host = self.deps.host
            record.monitor.start_ticks = self.deps.start_ticks

        self._update(change)
        if note:
            log.debug("job %s: %s; next poll in %.1f s", self.job_id, note, delay)

    def _load(self) -> JobRecord:
        """The record on disk, or the newer copy we hold while the disk refuses writes."""
        return self._unsaved if self._unsaved is not None else self.deps.store.load(self.job_id)

    def _update(self, change: Callable[[JobRecord], None]) -> JobRecord:
        """Write state, but keep monitoring and notifying when the disk refuses (full or read-only).

        Until a write succeeds again the record lives in memory, so a lost write can never make
        the loop redo a step (and, say, send a notification twice).
        """
        if self._unsaved is None:
            try:
                return self.deps.store.update(self.job_id, change)
            except StateError as exc:
                log.error("job %s: %s; keeping the record in memory until the disk accepts it", self.job_id, exc)
                self._unsaved = self.deps.store.load(self.job_id)
                change(self._unsaved)
                return self._unsaved
        change(self._unsaved)
        try:
            self.deps.store.save(self._unsaved)
        except StateError:
            return self._unsaved
        log.info("job %s: state written again", self.job_id)
        record, self._unsaved = self._unsaved, None
        return record

    # -- polling ---------------------------------------------------------------------------
    def poll(self, record: JobRecord) -> Step:
        now = self.deps.clock()
        config = self.deps.config
        targets = record.targets
        try:
            queue = self.deps.slurm.query_queue(targets, not_before=record.created_at)
        except SlurmError as exc:
            return self._controller_down(now, str(exc))
        active = groups.active_members(queue)
        if not active:
            return self._ask_accounting(record, queue, now)
        if all(e.state is JobState.PENDING and e.reason in TERMINAL_PENDING_REASONS for e in active):
            return Step(self._final_from_queue(active[0], now), 0.0)
        entry = groups.headline_entry(active)
        self._observe(entry, now)
        if self.deps.config.notify_first_failure and not record.first_failure_notified:
            self._notify_first_failure([key for job in targets for key in groups.failed_queue_members(job, queue)])
        interval = config.pending_interval if entry.state is JobState.PENDING else config.running_interval
        delay = self.deps.slurm.next_poll_delay(interval, record.target)
        return Step(None, delay, f"{entry.state.value} {entry.reason}".strip())

    def _controller_down(self, now: float, error: str) -> Step:
        def change(record: JobRecord) -> None:
            if not record.observation.controller_down_since:
                record.observation.controller_down_since = now
                log.warning("job %s: controller unreachable, will retry: %s", self.job_id, error)
            record.observation.last_error = error

        self._update(change)
        return Step(None, self.deps.config.running_interval, "controller unreachable")

    def _observe(self, entry: QueueEntry, now: float) -> None:
        def change(record: JobRecord) -> None:
            if record.observation.state != entry.state.value:
                log.info("job %s: %s %s", self.job_id, entry.state.value, entry.reason)
            if record.observation.controller_down_since:
                log.info("job %s: controller reachable again", self.job_id)
            if record.observation.final_seen_at:
                log.info("job %s: back to %s (requeued?); waiting for the real end", self.job_id, entry.state.value)
            record.observation.state = entry.state.value
            record.observation.reason = entry.reason
            record.observation.seen_at = now
            record.observation.controller_down_since = 0.0
            record.observation.final_seen_at = 0.0
            record.observation.last_error = ""

        self._update(change)

    def _final_from_queue(self, entry: QueueEntry, now: float, incomplete: bool = False) -> FinalRecord:
        return FinalRecord(
            state=entry.state.value, state_text=entry.state.value, reason=entry.reason,
            source="squeue", incomplete=incomplete, decided_at=now,
        )

    def _ask_accounting(self, record: JobRecord, queue: Dict[str, QueueEntry], now: float) -> Step:
        """squeue says final (or forgot the job): only sacct has the details, and it may lag."""
        target = record.target
        entry = queue.get(target)
        first_seen = record.observation.final_seen_at or now
        waited = now - first_seen
        config = self.deps.config
        delay = accounting_backoff(waited, config.running_interval)
        try:
            accounting = self.deps.slurm.query_accounting(record.targets)
        except SlurmError as exc:
            self._note_final_seen(first_seen, entry, accounting_error=str(exc))
            if waited >= config.accounting_wait:
                log.warning("job %s: sacct still failing after %.0f s; reporting what squeue knew", self.job_id, waited)
                return Step(self._fallback_final(record, entry, now), 0.0)
            return Step(None, delay, f"sacct unavailable: {exc}")
        self._note_final_seen(first_seen, entry)
        if len(record.targets) > 1 or groups.is_group(target, list(queue) + list(accounting), record.array_spec):
            return self._group_final(record, queue, accounting, waited, delay, now)
        found = accounting.get(target)
        if found is not None and found.state.is_final:
            disagree = entry is not None and entry.state.is_final and found.state is not entry.state
            if (disagree or found.is_placeholder) and waited < PLACEHOLDER_WAIT:
                return Step(None, delay, "sacct has only a placeholder or lagging record yet")
            reason = entry.reason if entry is not None else ""
            return Step(final_from_accounting(found, now, reason if reason != "None" else ""), 0.0)
        if waited >= config.accounting_wait:
            log.warning("job %s: sacct has no final record after %.0f s", self.job_id, waited)
            return Step(self._fallback_final(record, entry, now), 0.0)
        what = found.state.value if found is not None else "no record"
        return Step(None, delay, f"waiting for sacct's final record (now: {what})")

    def _group_final(
        self, record: JobRecord, queue: Dict[str, QueueEntry], accounting: Dict[str, AccountingRecord],
        waited: float, delay: float, now: float,
    ) -> Step:
        """An array or het job ends when every member has a final sacct record (sacct lags per task)."""
        tasks = [task for target in record.targets for task in groups.collect_tasks(target, accounting)]
        expected = round_tasks(record)
        missing = groups.missing_tasks(tasks, expected)
        settled = (bool(expected) or waited >= GROUP_SETTLE
                   or groups.het_components_recorded(record.target, queue, tasks))
        if groups.all_final(tasks, accounting) and not missing and settled:
            return Step(groups.summarize(tasks, accounting, now=now), 0.0, tasks=tuple(tasks))
        if waited >= self.deps.config.accounting_wait:
            log.warning("job %s: %d task(s) never reached sacct: %s", self.job_id, len(missing), missing[:20])
            tasks += groups.missing_placeholders(missing)
            final = groups.summarize(tasks, accounting, now=now, incomplete=True)
            return Step(final, 0.0, tasks=tuple(tasks))
        return Step(None, delay, f"waiting for sacct: {len(tasks)} task record(s), {len(missing)} missing")

    def _note_final_seen(self, first_seen: float, entry: Optional[QueueEntry], accounting_error: str = "") -> None:
        def change(record: JobRecord) -> None:
            record.observation.final_seen_at = first_seen
            record.observation.controller_down_since = 0.0
            if entry is not None:
                record.observation.state = entry.state.value
                record.observation.reason = entry.reason
            if accounting_error:
                if not record.observation.accounting_down_since:
                    record.observation.accounting_down_since = self.deps.clock()
                    log.warning("job %s: %s; retrying", self.job_id, accounting_error)
                record.observation.last_error = accounting_error
            else:
                record.observation.accounting_down_since = 0.0

        self._update(change)

    def _fallback_final(self, record: JobRecord, entry: Optional[QueueEntry], now: float) -> FinalRecord:
        if entry is not None:
            return self._final_from_queue(entry, now, incomplete=True)
        state = record.observation.state if JobState.parse(record.observation.state).is_final else "UNKNOWN"
        return FinalRecord(state=state, state_text=state, source="squeue", incomplete=True, decided_at=now)

    def _notify_first_failure(self, failed_members: List[str]) -> None:
        """Optional early warning for arrays: the first failed task, before the summary."""
        if not failed_members:
            return
        record = self._update(lambda current: setattr(current, "first_failure_notified", True))
        url = self.deps.config.webhook_for("error")
        if url:
            from core.monitor.messages import build_first_failure_message
            from core.notify.discord import render_payload

            message = build_first_failure_message(record, failed_members)
            delivery = self.deps.send(url, render_payload(message, username=self.deps.config.username))
            log.info("job %s: first-failure message %s", self.job_id, delivery.outcome)

    # -- the end ---------------------------------------------------------------------------
    def finalize(self, step: Step) -> JobRecord:
        """Analyse the logs' tails, store the outcome and mark the notification pending, in one write.

        In a chain, the decision about the next attempt is written in the same write (before any sbatch).
        """
        from core.analysis.logs import analyze_group_logs, analyze_logs, log_files, ordered_findings
        from core.monitor.messages import channel_for, redact_secrets

        final = step.final
        record = self._load()
        patterns, tail_lines = self.deps.patterns(), self.deps.config.tail_lines
        if step.tasks:
            tasks, analysis, excerpt = analyze_group_logs(record, list(step.tasks), patterns, tail_lines)
        else:
            tasks = []
            analysis, excerpt = analyze_logs(log_files(record), patterns, tail_lines)
        if not self.deps.config.send_excerpt:
            excerpt = ""
        categories, findings = list(analysis.categories), ordered_findings(analysis)
        array_round = record.chain is not None and bool(record.array_spec)
        if array_round and not tasks:  # sacct never answered for this round: its tasks are unknown, not gone
            tasks = groups.missing_placeholders(round_tasks(record))
        plan = self._plan_round(record, tasks, final.state_text) if array_round else None
        decision = self._decide(record, final, categories) if record.chain is not None and not array_round else None

        def change(current: JobRecord) -> None:
            chain = current.chain
            if plan is not None:
                _merge_round(current, final, tasks, categories, findings, redact_secrets(excerpt))
            else:
                current.final, current.tasks, current.categories, current.findings = final, tasks, categories, findings
                current.excerpt = redact_secrets(excerpt)
            current.observation.final_seen_at = current.observation.final_seen_at or final.decided_at
            next_round = []
            if plan is not None:
                from core.chain.policy import close_round

                close_round(chain, tasks, final, plan)
                next_round = list(plan.submissions)
            elif decision is not None:
                from core.chain.policy import close_attempt

                close_attempt(chain, final, categories, decision.reason)
                if decision.resubmit:
                    next_round = [{"level_index": decision.level_index, "level": decision.level.to_dict(),
                                   "action": decision.action, "tasks": ""}]
            if next_round:  # written before sbatch runs: see carry_out_resubmission
                chain.pending = {"round": chain.round + 1, "submissions": next_round, "decided_at": final.decided_at}
                return
            current.notification.status = "pending"
            current.notification.channel = channel_for(current.final)

        log.info("job %s: final state %s (exit %s:%s, via %s%s); findings: %s", self.job_id, final.state,
                 final.exit_code, final.signal, final.source, ", incomplete" if final.incomplete else "",
                 ", ".join(analysis.categories) or "none")
        return self._update(change)

    # -- escalation chains ------------------------------------------------------------------
    def _decide(self, record: JobRecord, final: FinalRecord, categories: List[str]):
        from core.chain.policy import decide_next_attempt

        decision = decide_next_attempt(record.chain, final, categories, self.deps.config.escalation)
        log.info("job %s: attempt %d ended %s: %s -> %s", self.job_id, len(record.chain.attempts), final.state,
                 decision.reason, decision.action)
        return decision

    def _plan_round(self, record: JobRecord, tasks: List[TaskOutcome], counts: str):
        from core.chain.policy import plan_array_round

        throttle = parse_array_spec(record.array_spec).max_running
        plan = plan_array_round(record.chain, tasks, self.deps.config.escalation, throttle=throttle)
        log.info("job %s: round %d ended (%s): %s", self.job_id, record.chain.round, counts, plan.describe())
        return plan

    def carry_out_resubmission(self, record: JobRecord) -> None:
        """sbatch each submission of the next round exactly once; a job tagged for that attempt is adopted.

        Each new job id is written right after its sbatch, so `recover` continues where a killed
        daemon stopped; the round starts once every submission has a job id (or was refused).
        """
        pending_round = record.chain.pending["round"]
        previous = [a for a in record.chain.attempts if a.round < pending_round][-1]
        for index, submission in enumerate(record.chain.pending["submissions"]):
            if submission.get("job_id") or submission.get("refused"):
                continue
            if record.monitor.stop_requested or self.deps.should_stop():
                return  # run() sees the request; `jobmon cancel --job` knows the jobs submitted so far
            record = self._submit_one(record, index, submission)
            if record is None:
                return
        self._start_round(record, previous)

    def _submit_one(self, record: JobRecord, index: int, submission: Dict) -> Optional[JobRecord]:
        """One sbatch of a round (or the adoption of its tagged job); None means retry later.

        `sbatch_started` is written before sbatch runs: only then can a tagged job exist, so only
        then is Slurm searched for it (the search needs sacct once squeue has forgotten the job).
        """
        from core.chain.policy import Level
        from core.state.store import Attempt

        level, attempt = Level(**submission["level"]), len(record.chain.attempts) + 1
        round_number, spec = record.chain.pending["round"], submission.get("tasks", "")
        try:
            found = self.deps.find_submitted(record, attempt, spec) if submission.get("sbatch_started") else None
            if found:
                log.info("job %s: attempt %d was already submitted as %s; adopting it", self.job_id, attempt, found[0])
            else:
                started = self.deps.clock()
                record = self._update(
                    lambda current: current.chain.pending["submissions"][index].update(sbatch_started=started))
            job_id, stdout, stderr = found or self.deps.resubmit(record, level, attempt, spec)
        except SbatchRejected as exc:
            if is_unavailable_error(str(exc)):
                self._retry_later(f"sbatch could not reach the controller: {exc}")
                return None
            why = str(exc)
            log.error("job %s: resubmission refused: %s", self.job_id, why)
            return self._update(lambda current: current.chain.pending["submissions"][index].update(refused=why))
        except SlurmError as exc:
            self._retry_later(str(exc))
            return None

        def recorded(current: JobRecord) -> None:
            current.chain.attempts.append(Attempt(job_id=job_id, level_index=submission["level_index"],
                                                  resources=level.to_dict(), round=round_number, tasks=spec))
            current.chain.pending["submissions"][index].update(job_id=job_id, stdout=stdout, stderr=stderr)

        log.info("job %s: attempt %d submitted as %s with %s%s", self.job_id, attempt, job_id, level.describe(),
                 f" for task(s) {spec}" if spec else "")
        return self._update(recorded)

    def _start_round(self, record: JobRecord, previous) -> None:
        """Every submission of the round is made: follow the new jobs (or end the chain if none was accepted)."""
        from core.state.store import NotificationStatus, Observation

        submissions = record.chain.pending["submissions"]
        made = [s for s in submissions if s.get("job_id")]
        refused = [s for s in submissions if s.get("refused")]
        refusals = "; ".join(("resubmission" + (f" of {s['tasks']}" if s.get("tasks") else "")
                              + f" refused by sbatch: {s['refused']}") for s in refused)
        now = self.deps.clock()

        def advance(current: JobRecord) -> None:
            chain = current.chain
            if refusals:
                (chain.rounds[-1] if chain.rounds else chain.attempts[-1]).decision += f"; {refusals}"
            if refused and chain.rounds:
                from core.chain.policy import drop_refused

                drop_refused(chain.rounds[-1], [(s["refused"], s["tasks"]) for s in refused])
            chain.pending = {}
            if not made:  # the chain ends here, and says why
                current.notification.status = "pending"
                current.notification.channel = "error"
                return
            top = max(made, key=lambda s: s["level_index"])
            chain.round += 1
            chain.current_job = made[-1]["job_id"]
            chain.level_index, chain.level = top["level_index"], dict(top["level"])
            current.final = None
            current.observation = Observation()
            current.notification = NotificationStatus()
            current.created_at = now
            if not current.array_spec:
                current.tasks, current.categories, current.findings, current.excerpt = [], [], [], ""
                current.stdout_path, current.stderr_path = made[0]["stdout"], made[0]["stderr"]

        record = self._update(advance)
        if made:
            self._announce(record, previous)

    def _retry_later(self, why: str) -> None:
        log.warning("job %s: cannot resubmit yet (%s); retrying", self.job_id, why)
        self._beat(self.deps.config.running_interval, "waiting to resubmit")
        self.deps.sleep(self.deps.config.running_interval)

    def _announce(self, record: JobRecord, previous) -> None:
        """One message per escalation step (per round for arrays); the chain's final message lists them all."""
        from core.monitor.messages import build_escalation_message
        from core.notify.discord import render_payload

        url = self.deps.config.webhook_for("error")
        if not url:
            return
        message = build_escalation_message(record, previous)
        delivery = self.deps.send(url, render_payload(message, username=self.deps.config.username))
        log.info("job %s: escalation message %s", self.job_id, delivery.outcome)

    def deliver(self, record: JobRecord) -> str:
        """Send the pending notification once; returns the notification status afterwards."""
        from core.monitor.messages import build_message, channel_for
        from core.notify.discord import render_payload

        config = self.deps.config
        channel = record.notification.channel or channel_for(record.final or FinalRecord())
        url = config.webhook_for(channel)
        if not url:
            def no_webhook(current: JobRecord) -> None:
                current.notification.status = "failed"
                current.notification.last_error = f"no webhook configured for the {channel} channel"

            self._update(no_webhook)
            return "failed"
        if not self._delivery_started:
            self._delivery_started = self.deps.clock()
        payload = render_payload(build_message(record, self.deps.host), username=config.username)

        def claim(current: JobRecord) -> None:
            current.notification.status = "sending"
            current.notification.claimed_by = f"{self.deps.host}:{self.deps.pid}"

        self._update(claim)
        self._beat(SEND_BUDGET, "sending the notification")
        delivery = self.deps.send(url, payload)
        now = self.deps.clock()

        def settle(current: JobRecord) -> None:
            note = current.notification
            note.attempts += delivery.attempts
            note.claimed_by = ""
            if delivery.outcome == "delivered":
                note.status = "sent"
                note.sent_at = now
                note.message_id = delivery.message_id or ""
                note.last_error = ""
                current.done = True
            elif delivery.outcome == "gone":
                note.status = "gone"
                note.last_error = delivery.detail
                current.done = True
            else:
                note.status = "failed"
                note.last_error = delivery.detail

        record = self._update(settle)
        if delivery.outcome == "delivered":
            log.info("job %s: notification delivered to the %s channel", self.job_id, channel)
        elif delivery.outcome == "gone":
            log.error("job %s: webhook for the %s channel is gone (%s); not retrying. Fix config.json, then "
                      "run `jobmon recover`", self.job_id, channel, delivery.detail)
        else:
            log.warning("job %s: delivery failed: %s", self.job_id, delivery.detail)
        return record.notification.status

    def _delivery_delay(self) -> Optional[float]:
        self._delivery_failures += 1
        if self.deps.clock() - self._delivery_started > DELIVERY_GIVE_UP:
            return None
        return min(3600.0, 30.0 * 2 ** (self._delivery_failures - 1))
