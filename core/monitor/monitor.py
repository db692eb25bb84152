"""The monitor of one job: `step(now) -> next_wake`, called by a loop that sleeps in between.

A step does what is due now and says when it wants to run again (None: the story is told, or
monitoring was stopped):
1. a decided resubmission is carried out (core.monitor.chains);
2. while the job has not ended, one poll (core.monitor.poller) with its per-poll checks; its
   observation, its events and the heartbeat go into one write;
3. when the job ends, its logs are analysed, the outcome is written with the chain's decision
   and the final message, all in one write, before anything is submitted or sent;
4. what is due in the outbox is delivered (core.monitor.dispatcher).
Everything with side effects comes in through the constructor, so tests drive whole job stories
with recorded Slurm answers, a fake clock and fake sinks in milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from core.config import Config
from core.logs import log
from core.monitor.dispatcher import Dispatcher, enqueue
from core.monitor.poller import Poll, Poller, round_tasks
from core.monitor.records import Records
from core.notify import outbox
from core.state.model import FinalRecord, JobRecord

if TYPE_CHECKING:  # imported when a job ends or has a chain, not while an idle daemon waits
    from core.analysis.analyzer import Pattern
    from core.monitor.chains import ChainRunner


#: A delivery (a child process: pacing waits, request timeouts) may take this long; its monitor's
#: heartbeat promises the next beat within it, and stops waiting for the child after it.
DELIVERY_BUDGET = 900.0
#: The longest one step's Slurm and sbatch calls may take (each has a 60 s timeout; the shared
#: snapshot's lock waits up to 180 s): what a monitor promises when it starts and before each sbatch.
STEP_BUDGET = 300.0


@dataclass(frozen=True)
class Identity:
    """Who runs this monitor (written into the record's heartbeat)."""

    host: str
    pid: int
    start_ticks: int = 0

    @property
    def owner(self) -> str:
        """`host:pid`, what a claimed outbox delivery records as its sender."""
        return f"{self.host}:{self.pid}"


class Monitor:
    """Follows one job until its story is told; one `step` at a time."""

    def __init__(
        self, records: Records, *, config: Config, poller: Poller, dispatcher: Dispatcher,
        chains: Callable[[], ChainRunner], patterns: Callable[[], Sequence[Pattern]], identity: Identity,
        should_stop: Callable[[], bool] = lambda: False, scancel: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.records = records
        self.config = config
        self.poller = poller
        self.dispatcher = dispatcher
        self._chains = chains
        self.patterns = patterns  # loaded when a job ends: idle daemons stay small
        self.identity = identity
        self.should_stop = should_stop
        self.scancel = scancel  # health.cancel_on_stall; None: this monitor never cancels a job

    @property
    def job_id(self) -> str:
        return self.records.job_id

    def announce(self, now: float) -> None:
        """A new monitor's first sign of life (its pid, before its first poll): it is not taken for dead."""
        self._beat(now, now + STEP_BUDGET)

    def step(self, now: float) -> Optional[float]:
        """Do what is due at `now`; returns when to step again, or None when monitoring is over."""
        record = self.records.load()
        if record.cancelled or self.should_stop():
            log.info("job %s: monitoring stopped on request", self.job_id)
            return None
        if record.chain is not None and record.chain.pending is not None:
            wait = self._chains().carry_out(self.records, lambda at: self._beat(at, at + STEP_BUDGET))
            if wait is not None:
                return self._beat(now, now + wait)
            record = self.records.load()
        poll_at: Optional[float] = None
        if record.final is None:
            poll = self.poller.poll(record, now)
            if poll.final is None:
                record = self.records.update(lambda current: self._observe(current, poll, now))
                poll_at = now + poll.delay
                if poll.cancel:
                    self._cancel_stalled(record.target)
                if poll.note:
                    log.debug("job %s: %s; next poll in %.1f s", self.job_id, poll.note, poll.delay)
            else:
                record = self._finish(record, poll, poll.final, now)
                if record.chain is not None and record.chain.pending is not None:
                    return now  # carry out the decision at once
        delivered = bool(outbox.due(record.outbox, now))
        if delivered:
            self._beat(now, now + DELIVERY_BUDGET)
            wait = self.dispatcher.deliver(self.records, record, now)
            if wait is not None:
                return self._beat(now, now + wait)
            record = self.records.load()
        wakes = [t for t in (poll_at, outbox.next_attempt_at(record.outbox)) if t is not None]
        if not wakes:
            if not record.done:
                log.error("job %s: giving up delivery for now; `jobmon recover` will retry", self.job_id)
            return None
        wake = max(now, min(wakes))
        return self._beat(now, wake) if delivered or poll_at is None else wake

    def _cancel_stalled(self, job_id: str) -> None:
        """scancel a job stuck past `cancel_on_stall` (the message saying so is already in the outbox);
        its end is then seen and reported like any other."""
        from core.errors import SlurmError

        if self.scancel is None:
            log.error("job %s: stalled past cancel_on_stall, but this monitor cannot scancel", job_id)
            return
        log.warning("job %s: stalled past cancel_on_stall: scancel", job_id)
        try:
            self.scancel(job_id)
        except SlurmError as exc:
            log.error("job %s: %s", job_id, exc)

    def _observe(self, record: JobRecord, poll: Poll, now: float) -> None:
        """One poll's write: what was seen, what the checks said, and the heartbeat."""
        record.observation = poll.observation
        if poll.live is not None:
            record.live = poll.live
        enqueue(record, poll.events, now)
        self._set_heartbeat(record, now + poll.delay, now)

    def _beat(self, now: float, wake: float) -> float:
        """Promise the next sign of life by `wake` (plus the grace); returns `wake`."""
        self.records.update(lambda record: self._set_heartbeat(record, wake, now))
        return wake

    def _set_heartbeat(self, record: JobRecord, wake: float, now: float) -> None:
        monitor = record.monitor
        monitor.heartbeat = now
        monitor.heartbeat_deadline = wake + self.config.heartbeat_grace
        monitor.pid, monitor.host = self.identity.pid, self.identity.host
        monitor.start_ticks = self.identity.start_ticks

    def _finish(self, record: JobRecord, poll: Poll, final: FinalRecord, now: float) -> JobRecord:
        """Analyse the logs' tails, then write the outcome, the chain's decision and the final message
        in one write (before any sbatch or send)."""
        from core.monitor.ending import analyse_end, apply_end
        from core.monitor.messages import final_event
        from core.outcome import missing_placeholders

        tasks = list(poll.tasks)
        if not tasks and record.chain is not None and record.array_spec:
            tasks = missing_placeholders(round_tasks(record))  # sacct never answered: unknown, not gone
        end = analyse_end(record, final, tasks, self.patterns(), self.config.tail_lines, self.config.send_excerpt)
        log.info("job %s: final state %s (exit %s:%s, via %s%s); findings: %s", self.job_id, final.state.value,
                 final.exit_code, final.signal, final.source.value, ", incomplete" if final.incomplete else "",
                 ", ".join(end.categories) or "none")

        def change(current: JobRecord) -> None:
            current.observation = poll.observation
            current.observation.final_seen_at = current.observation.final_seen_at or final.decided_at
            if current.chain is not None:
                self._chains().close(current, current.chain, end)
            else:
                apply_end(current, end)
            if current.story_over:
                enqueue(current, [final_event(current, self.identity.host)], now)
            self._set_heartbeat(current, now, now)

        return self.records.update(change)
