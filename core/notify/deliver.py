"""Deliver what is due in one outbox: route new entries, then one attempt per due delivery.

Each attempt is claimed in the state first (SENDING, by whom), made through the destination's
pacer, and its outcome recorded right after; the caller holds the job's delivery lock, so no
two processes send the same outbox. A process killed between a sink's acceptance and the
record of it leaves a SENDING delivery that the next deliverer sends again: the one window
where delivery is at-least-once. Knows outboxes and sinks, nothing of Slurm or job records.
"""
from __future__ import annotations

import time
from typing import Callable, List, Mapping, Optional, Protocol, Sequence, Set, Tuple

from core.logs import log
from core.notify.events import RouteFacts
from core.notify.message import Envelope, Message
from core.notify.outbox import (
    Answer,
    DeliveryStatus,
    OutboxEntry,
    Outcome,
    due,
    record_outcome,
    route_new,
)
from core.notify.pacing import Pacer
from core.notify.sink import Sink

#: One HTTP request may take this long before it counts as failed (and is retried later).
REQUEST_TIMEOUT = 10.0


class OutboxAccess(Protocol):
    """Where the outbox lives (a job's state file, or a record held in memory)."""

    def load_outbox(self) -> List[OutboxEntry]: ...

    def update_outbox(self, change: Callable[[List[OutboxEntry]], None]) -> None: ...


def deliver_due(
    access: OutboxAccess, sinks: Mapping[str, Sink], sinks_for: Callable[[RouteFacts], Sequence[str]], *,
    pacer_folder: str, owner: str, clock: Callable[[], float] = time.time,
    pacer_sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Route unrouted entries, then make one attempt for each delivery due now; returns the attempts made."""
    now = clock()
    if any(not entry.routed_at for entry in access.load_outbox()):
        access.update_outbox(lambda entries: route_new(entries, sinks_for, now))
    attempted: Set[Tuple[str, str]] = set()
    while True:
        work = _next_delivery(access.load_outbox(), clock(), attempted)
        if work is None:
            return len(attempted)
        envelope, message, name = work
        attempted.add((envelope.key, name))
        _attempt(access, envelope, message, name, sinks.get(name), pacer_folder, owner, clock, pacer_sleep)


def _next_delivery(
    entries: List[OutboxEntry], now: float, attempted: Set[Tuple[str, str]],
) -> Optional[Tuple[Envelope, Message, str]]:
    """(envelope, message, sink) of the oldest delivery due and not yet tried in this run."""
    for entry, name in due(entries, now):
        if name is not None and entry.message is not None and (entry.key, name) not in attempted:
            return entry.envelope(), entry.message, name
    return None


def _attempt(
    access: OutboxAccess, envelope: Envelope, message: Message, name: str, sink: Optional[Sink], pacer_folder: str,
    owner: str, clock: Callable[[], float], pacer_sleep: Callable[[float], None],
) -> None:
    """Claim one delivery, make one paced attempt, record how it went."""
    key = envelope.key
    access.update_outbox(lambda entries: _claim(entries, key, name, owner))
    if sink is None:
        outcome = Outcome(Answer.GONE, f"sink {name!r} is not in config.json any more")
    else:
        pacer = Pacer(pacer_folder, clock=clock, sleep=pacer_sleep, min_spacing=sink.min_spacing,
                      per_minute=sink.per_minute)
        try:
            payload = sink.render(message, envelope)
            outcome = pacer.run(sink.destination, lambda: sink.deliver(payload, REQUEST_TIMEOUT))
        except Exception as exc:  # a sink's bug costs this attempt, not the deliveries after it
            # Only the type is kept: a library's exception text may carry the URL and its token.
            outcome = Outcome(Answer.RETRY, f"internal error in the {name} sink ({type(exc).__name__})")
    access.update_outbox(lambda entries: _settle(entries, key, name, outcome, clock()))
    log.info("%s to %s: %s%s", key, name, outcome.answer.value,
             f" ({outcome.detail})" if outcome.answer is not Answer.DELIVERED else "")


def _find(entries: List[OutboxEntry], key: str) -> Optional[OutboxEntry]:
    return next((entry for entry in entries if entry.key == key), None)


def _claim(entries: List[OutboxEntry], key: str, sink: str, owner: str) -> None:
    entry = _find(entries, key)
    if entry is not None and sink in entry.deliveries:
        entry.deliveries[sink].status = DeliveryStatus.SENDING
        entry.deliveries[sink].claimed_by = owner


def _settle(entries: List[OutboxEntry], key: str, sink: str, outcome: Outcome, now: float) -> None:
    entry = _find(entries, key)
    if entry is not None and sink in entry.deliveries:
        record_outcome(entry.deliveries[sink], outcome, now)


def send_once(sink: Sink, message: Message, attempts: int = 2, sleep: Callable[[float], None] = time.sleep,
              envelope: Optional[Envelope] = None) -> Outcome:
    """Deliver a message right now, outside any outbox (`jobmon test-notify`): a retry or two, then the answer."""
    payload = sink.render(message, envelope)
    outcome = Outcome(Answer.RETRY, "no attempt made")
    for attempt in range(attempts):
        outcome = sink.deliver(payload, REQUEST_TIMEOUT)
        if outcome.answer is not Answer.RETRY or attempt + 1 == attempts:
            break
        sleep(min(5.0, outcome.retry_after if outcome.retry_after is not None else 1.0))
    return outcome
