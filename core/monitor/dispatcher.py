"""The dispatcher: events become outbox entries (in the same write as what caused them), and the
outbox gets delivered by a Deliverer (a short-lived process in the daemon, so the daemon itself
never imports an HTTP library)."""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Protocol, Sequence

from core.logs import log
from core.monitor.records import Records
from core.notify import outbox
from core.notify.events import Event, EventKind, RouteFacts
from core.notify.message import Message
from core.notify.outbox import OutboxEntry
from core.state.model import JobRecord


def enqueue(record: JobRecord, events: Iterable[Event], now: float) -> None:
    """Add the events to the record's outbox (an event already there adds nothing)."""
    for entry in outbox.add_events(record.outbox, record.job_id, events, now):
        log.info("job %s: %s message queued (%s route)", record.job_id, entry.kind.value, entry.route.value)


class Deliverer(Protocol):
    def deliver(self, records: Records) -> Optional[float]:
        """Deliver what is due in the record's outbox; None when done, else how long to wait before
        trying again (another process is delivering it, or delivery could not run)."""


class Dispatcher:
    def __init__(self, deliverer: Deliverer, sinks_for: Callable[[RouteFacts], Sequence[str]], host: str) -> None:
        self.deliverer = deliverer
        self.sinks_for = sinks_for  # the sinks an event goes to (config.json's routes)
        self.host = host

    def deliver(self, records: Records, record: JobRecord, now: float) -> Optional[float]:
        """Deliver the outbox of `record` (the monitor's current copy, with something due); None when
        done, else how long to wait before trying again.

        Entries are routed (and messages carried over from schema 1 rendered) here, in the monitor's
        own process, so a deliverer that fails outright still leaves deliveries to count its failures on.
        """
        if any(not entry.routed_at or entry.message is None for entry in record.outbox):
            records.update(lambda current: self._prepare(current, now))
        return self.deliverer.deliver(records)

    def _prepare(self, record: JobRecord, now: float) -> None:
        for entry in record.outbox:
            if entry.message is None and not outbox.is_delivered([entry]):
                entry.message = self._carried_over(record, entry)
        outbox.route_new(record.outbox, self.sinks_for, now)

    def _carried_over(self, record: JobRecord, entry: OutboxEntry) -> Message:
        """A message undelivered when jobmon's schema 1 wrote the record kept no text: render it now."""
        from core.monitor.messages import build_message

        if entry.kind is EventKind.FINAL:
            return build_message(record, self.host)
        return Message(title=f"Job {record.job_id}: {entry.kind.value.replace('_', ' ')}",
                       description="Written by an older jobmon, which kept no text for this message.")
