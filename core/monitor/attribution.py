"""Before a job's final message is first sent: ask the attribution service (config `notify.sinks`, type
attrsvc) about the job's output file, and write its recommendation into the stored message, which
every sink then sends. Runs in the deliverer (a short-lived child of the daemon), holding the job's
delivery lock, so nothing is sent meanwhile; the service's wait is bounded (core.notify.attrsvc).

The message is amended once (`attributed_at`), and only while no sink has been tried with it: a
message some sink already has is never changed, so every sink gets the same one, once.
"""
from __future__ import annotations

from typing import Callable, List

from core.logs import log
from core.monitor.records import Records
from core.notify.attrsvc import Attribution, amend
from core.notify.events import EventKind
from core.notify.outbox import DeliveryStatus, OutboxEntry
from core.state.model import JobRecord

#: Asks the service: (log_path, user, job_id) -> its answer.
Ask = Callable[[str, str, str], Attribution]


def needs_attribution(entry: OutboxEntry) -> bool:
    """A final message not amended yet, and not tried at any sink."""
    return (entry.kind is EventKind.FINAL and entry.message is not None and not entry.attributed_at
            and all(d.status is DeliveryStatus.PENDING and d.attempts == 0 for d in entry.deliveries.values()))


def output_file(record: JobRecord) -> str:
    """The job's output file, the log the service analyses (its stderr when only that is known)."""
    return record.stdout_path or next(iter(record.log_paths), "")


def attribute_finals(records: Records, ask: Ask, clock: Callable[[], float]) -> int:
    """Amend every final message that needs it with one answer of the service; returns how many."""
    record = records.load()
    keys: List[str] = [entry.key for entry in record.outbox if needs_attribution(entry)]
    if not keys:
        return 0
    path = output_file(record)
    answer = ask(path, record.user, record.job_id) if path else Attribution(problem="the job's output file is unknown")
    if answer.found:
        log.info("job %s: the attribution service recommends %s", record.job_id, answer.action)
    else:
        log.warning("job %s: no attribution: %s", record.job_id, answer.problem)
    amended: List[str] = []

    def change(current: JobRecord) -> None:
        for entry in current.outbox:
            if entry.key in keys and needs_attribution(entry) and entry.message is not None:
                entry.message = amend(entry.message, answer)
                entry.attributed_at = clock()
                amended.append(entry.key)

    records.update(change)
    return len(amended)
