"""Who delivers a job's outbox: this process (the CLI), or a short-lived child (a monitor daemon).

Both hold the job's delivery lock while they deliver, so an outbox is never sent by two processes
at once, whoever started them (a daemon, its orphaned child, `recover`, the CLI).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional

from core.config import Config, Paths, SinkConfig, SinkKind
from core.daemon.process import child_env, module_argv, run_child
from core.errors import StateError
from core.logs import log
from core.monitor.monitor import DELIVERY_BUDGET
from core.monitor.records import Records
from core.notify.outbox import fail_due
from core.state.store import StateStore

if TYPE_CHECKING:
    from core.notify.sink import Sink


#: The child's exit code when another process holds the job's delivery lock.
BUSY = 75
#: How long a deliverer waits for the delivery lock before leaving the work to its holder.
LOCK_WAIT = 2.0
#: After another process was delivering: wait this long.
BUSY_RETRY = 5.0


def build_sink(name: str, config: SinkConfig) -> Sink:
    """One configured sink; imports its module (and so its libraries) only now."""
    if config.kind is SinkKind.SLACK:
        from core.notify.slack import SlackSink

        return SlackSink(name, config.url)
    if config.kind is SinkKind.TEAMS:
        from core.notify.teams import TeamsSink

        return TeamsSink(name, config.url)
    if config.kind is SinkKind.NTFY:
        from core.notify.ntfy import NtfySink

        return NtfySink(name, config.url, config.token)
    if config.kind is SinkKind.WEBHOOK:
        from core.notify.webhook import WebhookSink

        return WebhookSink(name, config.url, config.secret, config.source)
    if config.kind is SinkKind.EMAIL:
        from core.daemon.process import run_sendmail
        from core.notify.mail import MailSink

        return MailSink(name, sender=config.sender, to=config.to, smtp=config.smtp, starttls=config.starttls,
                        ssl=config.ssl, user=config.user, password=config.password, sendmail=config.sendmail,
                        send_local=run_sendmail)
    from core.notify.discord import DiscordSink

    return DiscordSink(name, config.url, config.username)


def build_sinks(configured: Mapping[str, SinkConfig]) -> Dict[str, Sink]:
    """The configured sinks by name."""
    return {name: build_sink(name, config) for name, config in configured.items()}


class InProcessDelivery:
    """Delivers in this process: it imports the sinks (and `requests`) when it first sends."""

    def __init__(self, store: StateStore, config: Config, owner: str, clock: Callable[[], float] = time.time,
                 pacer_sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.config = config
        self.owner = owner
        self.clock = clock
        self.pacer_sleep = pacer_sleep

    def deliver(self, records: Records) -> Optional[float]:
        """Deliver what is due; None when done, or how long to wait when another process is at it."""
        from core.notify.deliver import deliver_due

        lock = self.store.delivery_lock(records.job_id, LOCK_WAIT)
        try:
            lock.acquire()
        except TimeoutError:
            return BUSY_RETRY
        except OSError as exc:  # no lock file in a read-only folder: only this process can deliver then
            if not records.in_memory:
                raise StateError(f"cannot lock the outbox of job {records.job_id}: {exc.strerror or exc}") from None
            lock = None
        try:
            if self.config.attribution is not None:
                self._attribute(records, self.config.attribution.url)
            deliver_due(records, build_sinks(self.config.sinks), self.config.sinks_for, pacer_folder=self.store.folder,
                        owner=self.owner, clock=self.clock, pacer_sleep=self.pacer_sleep)
        finally:
            if lock is not None:
                lock.release()
        return None

    def _attribute(self, records: Records, url: str) -> None:
        """Put the attribution service's recommendation into final messages about to be sent first."""
        from core.monitor.attribution import attribute_finals
        from core.notify.attrsvc import AttributionClient

        client = AttributionClient(url, clock=self.clock, sleep=self.pacer_sleep)
        attribute_finals(records, client.attribute, self.clock)


class ChildDelivery:
    """A monitor daemon's deliverer: `python -m core.daemon.deliver JOBID`, so the daemon itself never
    imports an HTTP library. While the record lives only in memory (the disk refuses writes), the
    child could not see it: then this process delivers itself."""

    def __init__(self, paths: Paths, in_process: Callable[[], InProcessDelivery], should_stop: Callable[[], bool]):
        self.paths = paths
        self.in_process = in_process
        self.should_stop = should_stop

    def deliver(self, records: Records) -> Optional[float]:
        if records.in_memory:
            return self.in_process().deliver(records)
        argv = module_argv("core.daemon.deliver", records.job_id)
        code = run_child(argv, child_env(self.paths), DELIVERY_BUDGET, self.should_stop)
        if code == BUSY:
            return BUSY_RETRY
        if code not in (0, None):  # it could not even try: count a failed attempt on what was due
            detail = f"the delivery process failed (exit {code}; see this job's monitor log)"
            log.error("job %s: %s", records.job_id, detail)
            records.update(lambda record: fail_due(record.outbox, time.time(), detail))
        return None
