"""Per-poll checks: small functions that look at a job still in the queue and return events.

Each check runs at every poll of a job that has not ended (see core.monitor.poller.Running).
An event's key makes a repeat harmless, so a check need not remember what it already said; it
only avoids building a message it knows was already produced. Messages are built on demand, so
an idle daemon does not carry the message module.
"""
from __future__ import annotations

from typing import List, Sequence

from core import outcome
from core.config import Config
from core.monitor.poller import Check, Running
from core.notify.events import Event, EventKind


def first_failure(running: Running) -> Sequence[Event]:
    """An array's first failed task, before the summary (config `arrays.notify_first_failure`)."""
    record = running.record
    if any(entry.kind is EventKind.FIRST_FAILURE for entry in record.outbox):
        return ()
    failed = [key for job in record.targets for key in outcome.failed_queue_members(job, running.members)]
    if not failed:
        return ()
    from core.monitor.messages import first_failure_event

    return (first_failure_event(record, failed),)


def checks_for(config: Config) -> List[Check]:
    """The checks a monitor runs at each poll, as configured."""
    checks: List[Check] = []
    if config.notify_first_failure:
        checks.append(first_failure)
    return checks
