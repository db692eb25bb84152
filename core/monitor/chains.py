"""The chain runner: what an escalation chain does when an attempt (or an array round) ends.

`close` writes how the attempt or round ended and, when something is to be resubmitted, the
decision (`chain.pending`), all in the same write as the job's end: before any sbatch. `carry_out`
then runs each sbatch of the decision exactly once, writing each new job id right after its
sbatch, so a monitor killed halfway is finished by the next one; a job already submitted with the
attempt's tag is adopted instead of submitted twice. When every submission is made, the next round
starts and its escalation message goes into the outbox in that same write.

Imported only for jobs that have a chain (it brings the escalation policy).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from core import outcome
from core.chain.policy import close_attempt, close_round, decide_next_attempt, drop_refused, plan_array_round
from core.errors import SbatchRejected, SlurmError, StateError
from core.logs import log
from core.monitor.dispatcher import enqueue
from core.monitor.ending import End, apply_end
from core.monitor.messages import escalation_event, final_event
from core.monitor.records import Records
from core.slurm.arrays import parse_array_spec
from core.slurm.parse import is_unavailable_error
from core.state.model import Attempt, Chain, JobRecord, Level, Observation, PendingRound, PendingSubmission

#: (record, level, attempt number, array tasks spec) -> (job id, stdout, stderr): sbatch of an attempt.
Resubmit = Callable[[JobRecord, Level, int, str], Tuple[str, str, str]]
#: (record, attempt number, array tasks spec) -> the same for a job submitted before a crash, or None.
FindSubmitted = Callable[[JobRecord, int, str], Optional[Tuple[str, str, str]]]


def merge_round(record: JobRecord, end: End) -> None:
    """An array chain's whole view after a round: each task's latest outcome, and only the findings
    (and excerpt) of tasks still failing (an OOM fixed by the retry is no longer a cause)."""
    record.tasks = outcome.merge_latest(record.tasks, end.tasks)
    failing = {f"task {t.task_id}:" for t in record.tasks if t.is_failure}
    if end.excerpt or record.excerpt.split("\n", 1)[0] not in failing:  # excerpts start "task N:"
        record.excerpt = end.excerpt
    record.final = outcome.with_task_fields(end.final, record.tasks)
    live = {category for task in record.tasks if task.is_failure for category in task.categories}
    record.findings = [f for f in end.findings + record.findings if f.category in live]
    record.categories = [c for c in dict.fromkeys(end.categories + record.categories) if c in live]


class ChainRunner:
    def __init__(
        self, *, escalation: Any, resubmit: Resubmit, find_submitted: FindSubmitted, host: str,
        clock: Callable[[], float], should_stop: Callable[[], bool], retry_delay: float,
    ) -> None:
        self.escalation = escalation  # config.json's "escalation" section
        self.retry_delay = retry_delay  # after sbatch could not reach the controller
        self.resubmit = resubmit
        self.find_submitted = find_submitted
        self.host = host
        self.clock = clock
        self.should_stop = should_stop

    # -- an attempt or a round ended ------------------------------------------------------------
    def close(self, record: JobRecord, chain: Chain, end: End) -> None:
        """Write how the attempt (or array round) ended and decide what comes next (`chain.pending`)."""
        if record.array_spec:
            throttle = parse_array_spec(record.array_spec).max_running
            plan = plan_array_round(chain, end.tasks, self.escalation, throttle=throttle)
            log.info("job %s: round %d ended (%s): %s", record.job_id, chain.round, end.final.state_text,
                     plan.describe())
            merge_round(record, end)
            close_round(chain, end.tasks, end.final, plan)
            submissions = list(plan.submissions)
        else:
            decision = decide_next_attempt(chain, end.final, end.categories, self.escalation)
            log.info("job %s: attempt %d ended %s: %s -> %s", record.job_id, len(chain.attempts),
                     end.final.state.value, decision.reason, decision.action.value)
            apply_end(record, end)
            close_attempt(chain, end.final, end.categories, decision.reason)
            submissions = [decision.submission()] if decision.resubmit else []
        if submissions:
            chain.pending = PendingRound(chain.round + 1, decided_at=end.final.decided_at, submissions=submissions)

    # -- carrying out a decision ----------------------------------------------------------------
    def carry_out(self, records: Records, beat: Callable[[float], object]) -> Optional[float]:
        """sbatch each submission of the pending round once; None when the round has started (or the
        chain ended), else how long to wait before trying again. `beat` renews the monitor's
        heartbeat before each sbatch: a round of several can take longer than the heartbeat's grace."""
        record = records.load()
        chain = record.chain
        if chain is None or chain.pending is None:
            return None
        for index, submission in enumerate(chain.pending.submissions):
            if submission.job_id or submission.refused:
                continue
            if record.cancelled or self.should_stop():
                return 0.0  # the monitor sees the request; `jobmon cancel --job` knows the jobs submitted so far
            beat(self.clock())
            wait = self._submit_one(records, record, chain.pending, index, submission)
            if wait is not None:
                return wait
            record = records.load()
        self._start_round(records)
        return None

    def _submit_one(
        self, records: Records, record: JobRecord, pending: PendingRound, index: int, submission: PendingSubmission,
    ) -> Optional[float]:
        """One sbatch of a round (or the adoption of its tagged job); a delay means retry later.

        `sbatch_started` is written before sbatch runs: only then can a tagged job exist, so only
        then is Slurm searched for it (the search needs sacct once squeue has forgotten the job).
        """
        attempt, spec = len(_pending_of(record)[0].attempts) + 1, submission.tasks
        try:
            found = self.find_submitted(record, attempt, spec) if submission.sbatch_started else None
            if found:
                log.info("job %s: attempt %d was already submitted as %s; adopting it", record.job_id, attempt,
                         found[0])
            else:
                started = self.clock()
                record = records.update(_set_started(index, started))
            job_id, stdout, stderr = found or self.resubmit(record, submission.level, attempt, spec)
        except SbatchRejected as exc:
            if is_unavailable_error(str(exc)):
                return self._retry_later(record, f"sbatch could not reach the controller: {exc}")
            why = str(exc)
            log.error("job %s: resubmission refused: %s", record.job_id, why)
            records.update(_set_refused(index, why))
            return None
        except SlurmError as exc:
            return self._retry_later(record, str(exc))

        def recorded(current: JobRecord) -> None:
            chain, now_pending = _pending_of(current)
            chain.attempts.append(Attempt(job_id=job_id, level_index=submission.level_index,
                                          resources=submission.level, round=pending.round, tasks=spec))
            made = now_pending.submissions[index]
            made.job_id, made.stdout, made.stderr = job_id, stdout, stderr

        log.info("job %s: attempt %d submitted as %s with %s%s", record.job_id, attempt, job_id,
                 submission.level.describe(), f" for task(s) {spec}" if spec else "")
        records.update(recorded)
        return None

    def _retry_later(self, record: JobRecord, why: str) -> float:
        log.warning("job %s: cannot resubmit yet (%s); retrying", record.job_id, why)
        return self.retry_delay

    def _start_round(self, records: Records) -> None:
        """Every submission of the round is made: follow the new jobs, and say so; or, if none was
        accepted, end the chain and tell its story."""
        now = self.clock()

        def advance(current: JobRecord) -> None:
            chain, pending = _pending_of(current)
            made = [s for s in pending.submissions if s.job_id]
            refused = [s for s in pending.submissions if s.refused]
            previous = [a for a in chain.attempts if a.round < pending.round][-1]
            if refused:
                refusals = "; ".join(("resubmission" + (f" of {s.tasks}" if s.tasks else "")
                                      + f" refused by sbatch: {s.refused}") for s in refused)
                (chain.rounds[-1] if chain.rounds else chain.attempts[-1]).decision += f"; {refusals}"
                if chain.rounds:
                    drop_refused(chain.rounds[-1], [(s.refused, s.tasks) for s in refused])
            chain.pending = None
            if not made:  # the chain ends here, and says why
                enqueue(current, [final_event(current, self.host)], now)
                return
            top = max(made, key=lambda s: s.level_index)
            chain.round += 1
            chain.current_job = made[-1].job_id
            chain.level_index, chain.level = top.level_index, top.level
            current.final = None
            current.observation = Observation()
            current.created_at = now
            if not current.array_spec:
                current.tasks, current.categories, current.findings, current.excerpt = [], [], [], ""
                current.warnings = []
                current.stdout_path, current.stderr_path = made[0].stdout, made[0].stderr
            enqueue(current, [escalation_event(current, chain, previous)], now)

        records.update(advance)


def _pending_of(record: JobRecord) -> Tuple[Chain, PendingRound]:
    """The chain and its pending round, which the caller has seen: gone now means the file was replaced."""
    chain = record.chain
    if chain is None or chain.pending is None:
        raise StateError(f"job {record.job_id}: the pending resubmission vanished from its state file")
    return chain, chain.pending


def _set_started(index: int, started: float) -> Callable[[JobRecord], None]:
    def change(record: JobRecord) -> None:
        _pending_of(record)[1].submissions[index].sbatch_started = started
    return change


def _set_refused(index: int, why: str) -> Callable[[JobRecord], None]:
    def change(record: JobRecord) -> None:
        _pending_of(record)[1].submissions[index].refused = why
    return change


