"""The dispatcher: events become outbox entries (in the same write as what caused them), and the
outbox gets delivered by a Deliverer (a short-lived process in the daemon, so the daemon itself
never imports an HTTP library)."""
from __future__ import annotations

import logging
from typing import Iterable, List, Optional, Protocol

from core.monitor.records import Records
from core.notify import outbox
from core.notify.events import Event, EventKind
from core.notify.outbox import OutboxEntry
from core.state.model import JobRecord

log = logging.getLogger("jobmon.monitor")


def enqueue(record: JobRecord, events: Iterable[Event], now: float) -> List[OutboxEntry]:
    """Add the events to the record's outbox (an event already there adds nothing)."""
    added = outbox.add_events(record.outbox, record.job_id, events, now)
    for entry in added:
        log.info("job %s: %s message queued (%s route)", record.job_id, entry.kind.value, entry.route.value)
    return added


class Deliverer(Protocol):
    def deliver(self, records: Records) -> Optional[float]:
        """Deliver what is due in the record's outbox; None when done, else how long to wait before
        trying again (another process is delivering it, or delivery could not run)."""


class Dispatcher:
    def __init__(self, deliverer: Deliverer, host: str) -> None:
        self.deliverer = deliverer
        self.host = host

    def deliver_due(self, records: Records, now: float) -> Optional[float]:
        """Deliver if anything is due now; None when done, else how long to wait before trying again."""
        record = records.load()
        if not outbox.due(record.outbox, now):
            return None
        if any(entry.message is None for entry in record.outbox if not outbox.is_delivered([entry])):
            records.update(self._render_carried_over)
        return self.deliverer.deliver(records)

    def _render_carried_over(self, record: JobRecord) -> None:
        """A message undelivered when the record was written by jobmon's schema 1 kept no text: render it now."""
        from core.monitor.messages import build_message

        for entry in record.outbox:
            if entry.message is None and entry.kind is EventKind.FINAL:
                entry.message = build_message(record, self.host)
