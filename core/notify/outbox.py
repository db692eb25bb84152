"""The outbox: every event a job produced, with its delivery to each sink. Pure rules, no I/O.

An entry is written to the job's state (with its message) before it is sent. When it is first
delivered it is *routed*: its route facts (kind, success/error route, the job's state and name)
choose the sinks it goes to (config.json's routes), each getting a delivery of its own, so a sink
that failed is retried alone and one that accepted is never sent the same event again. A delivery
is PENDING until a sink accepts it (DELIVERED), refuses it for good (GONE: deleted webhook, bad
token, sink no longer configured) or has failed for DELIVERY_GIVE_UP seconds (FAILED); `jobmon
recover` reopens GONE and FAILED deliveries.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from core.notify.events import Event, EventKind, Route, RouteFacts
from core.notify.message import Envelope, Message

#: A delivery that keeps failing is retried by its monitor this long; afterwards `recover` retries it.
DELIVERY_GIVE_UP = 6 * 3600.0
#: The longest pause between two attempts of one delivery.
MAX_RETRY_DELAY = 3600.0


class DeliveryStatus(str, enum.Enum):
    PENDING = "pending"  # to be sent (at next_attempt_at)
    SENDING = "sending"  # claimed by a deliverer that is sending it now
    DELIVERED = "delivered"
    FAILED = "failed"  # kept failing for DELIVERY_GIVE_UP: `jobmon recover` retries
    GONE = "gone"  # the sink refuses it for good (deleted webhook, bad token): fix config, then recover


@dataclass
class SinkDelivery:
    """One event's delivery to one sink."""

    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    first_attempt_at: float = 0.0
    next_attempt_at: float = 0.0
    last_error: str = ""
    delivered_at: float = 0.0
    message_id: str = ""
    claimed_by: str = ""


@dataclass
class OutboxEntry:
    """One event of a job: what to say (the message) and how its delivery to each sink went."""

    key: str
    kind: EventKind
    route: Route
    created_at: float = 0.0
    message: Optional[Message] = None  # None only for an entry carried over from schema 1, until re-rendered
    routed_at: float = 0.0  # 0: its sinks are not chosen yet
    attributed_at: float = 0.0  # a final message: when the attribution service's answer (or its lack) went in
    deliveries: Dict[str, SinkDelivery] = field(default_factory=dict)

    def route_facts(self) -> RouteFacts:
        """What routing looks at: the kind and route, and the job's state and name the message carries."""
        facts = self.message.facts if self.message is not None else None
        return RouteFacts(self.kind, self.route, facts.state if facts else "", facts.name if facts else "")

    def envelope(self) -> Envelope:
        return Envelope(self.key, self.kind.value, self.created_at)


class Answer(str, enum.Enum):
    """How a sink classified one attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"  # 5xx, timeout, refused connection, 429: try again later
    GONE = "gone"  # will never accept this message at this address


@dataclass(frozen=True)
class Outcome:
    """One attempt's result, as a sink reports it; `detail` never holds a secret."""

    answer: Answer
    detail: str = ""
    retry_after: Optional[float] = None  # seconds the service asked us to wait (429), if it said
    message_id: str = ""
    pace: float = 0.0  # seconds the service asked before the next message (its rate limit)


# -- writing -----------------------------------------------------------------------------------
def add_events(outbox: List[OutboxEntry], job_id: str, events: Iterable[Event], now: float) -> List[OutboxEntry]:
    """Append the events whose key is new; returns the entries added (an event seen before adds nothing)."""
    known = {entry.key for entry in outbox}
    added = []
    for event in events:
        key = event.key(job_id)
        if key in known:
            continue
        known.add(key)
        entry = OutboxEntry(key=key, kind=event.kind, route=event.route, created_at=now, message=event.message)
        outbox.append(entry)
        added.append(entry)
    return added


def route_entry(entry: OutboxEntry, sinks: Sequence[str], now: float) -> None:
    """Choose the entry's sinks once: each gets a pending delivery (none at all is shown as a problem)."""
    entry.deliveries = {name: SinkDelivery() for name in dict.fromkeys(sinks)}
    entry.routed_at = now


def route_new(outbox: List[OutboxEntry], sinks_for: Callable[[RouteFacts], Sequence[str]], now: float) -> None:
    """Route every entry not routed yet to the sinks its route names now."""
    for entry in outbox:
        if not entry.routed_at:
            route_entry(entry, sinks_for(entry.route_facts()), now)


def retry_delay(attempts: int) -> float:
    """1, 2, 4, 8 ... seconds after each failed attempt, at most MAX_RETRY_DELAY."""
    return float(min(MAX_RETRY_DELAY, 2.0 ** max(0, min(attempts - 1, 20))))


def record_outcome(delivery: SinkDelivery, outcome: Outcome, now: float) -> None:
    """A delivery after one attempt: delivered, gone, or pending again (later), or failed after the give-up time."""
    delivery.attempts += 1
    delivery.first_attempt_at = delivery.first_attempt_at or now
    delivery.claimed_by = ""
    if outcome.answer is Answer.DELIVERED:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
        delivery.message_id = outcome.message_id
        delivery.last_error = ""
        return
    delivery.last_error = outcome.detail
    if outcome.answer is Answer.GONE:
        delivery.status = DeliveryStatus.GONE
        return
    if now - delivery.first_attempt_at >= DELIVERY_GIVE_UP:
        delivery.status = DeliveryStatus.FAILED
        return
    # A server's wait is bounded too: at least a second (a `Retry-After: 0` must not start a storm), at
    # most MAX_RETRY_DELAY (a PENDING delivery is not reopened by `recover`, so it must come due).
    asked = outcome.retry_after
    wait = retry_delay(delivery.attempts) if asked is None else min(max(asked, retry_delay(1)), MAX_RETRY_DELAY)
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = now + wait


def fail_due(outbox: List[OutboxEntry], now: float, detail: str) -> None:
    """Every delivery due now failed without an answer (the delivery process itself failed): record it as
    a failed attempt of each, so backoff and the give-up time apply as to any other failure."""
    for entry, name in due(outbox, now):
        if name is not None:
            record_outcome(entry.deliveries[name], Outcome(Answer.RETRY, detail), now)


def reopen(outbox: List[OutboxEntry], sinks_for: Callable[[RouteFacts], Sequence[str]]) -> None:
    """`jobmon recover`: send again what did not arrive, to the sinks its route names now.

    GONE and FAILED deliveries to those sinks become pending afresh (new give-up time, backoff from
    the start); an undelivered one to a sink the route no longer names is dropped; an entry that
    reached no sink at all goes to every sink of its route. What was delivered stays delivered.
    """
    for entry in outbox:
        if not entry.routed_at:
            continue
        route_sinks = list(sinks_for(entry.route_facts()))
        for name, delivery in list(entry.deliveries.items()):
            if delivery.status is DeliveryStatus.DELIVERED:
                continue
            if name not in route_sinks:
                del entry.deliveries[name]
            elif delivery.status in (DeliveryStatus.GONE, DeliveryStatus.FAILED):
                entry.deliveries[name] = SinkDelivery(last_error=delivery.last_error)
        if not any(d.status is DeliveryStatus.DELIVERED for d in entry.deliveries.values()):
            for name in route_sinks:
                entry.deliveries.setdefault(name, SinkDelivery())


# -- reading -----------------------------------------------------------------------------------
def due(outbox: Sequence[OutboxEntry], now: float) -> List[Tuple[OutboxEntry, Optional[str]]]:
    """What a deliverer should do now, oldest event first: (entry, None) to route it, (entry, sink) to send.

    A SENDING delivery is due too: a deliverer only sends while it holds the job's delivery lock, so
    a SENDING one it finds was left by a claimant that died mid-send (it may have reached the sink:
    that one case is at-least-once). The monitor looks without the lock, to know whether to start one.
    """
    work: List[Tuple[OutboxEntry, Optional[str]]] = []
    for entry in sorted(outbox, key=lambda e: e.created_at):
        if not entry.routed_at:
            work.append((entry, None))
            continue
        for name, delivery in entry.deliveries.items():
            waiting = delivery.status is DeliveryStatus.PENDING and delivery.next_attempt_at <= now
            if waiting or delivery.status is DeliveryStatus.SENDING:
                work.append((entry, name))
    return work


def next_attempt_at(outbox: Sequence[OutboxEntry]) -> Optional[float]:
    """When the next delivery attempt is due; None when nothing is left to try."""
    times = [0.0 for entry in outbox if not entry.routed_at]
    times += [d.next_attempt_at for entry in outbox for d in entry.deliveries.values()
              if d.status in (DeliveryStatus.PENDING, DeliveryStatus.SENDING)]
    return min(times) if times else None


def is_delivered(outbox: Sequence[OutboxEntry]) -> bool:
    """Every entry routed and every delivery ended for good (delivered, or refused by a gone sink)."""
    return all(entry.routed_at and all(d.status in (DeliveryStatus.DELIVERED, DeliveryStatus.GONE)
                                       for d in entry.deliveries.values()) for entry in outbox)


def has_undelivered(outbox: Sequence[OutboxEntry]) -> bool:
    """Something was not delivered: waiting, failing, refused, or with no sink to go to."""
    return any(not entry.deliveries or any(d.status is not DeliveryStatus.DELIVERED for d in entry.deliveries.values())
               for entry in outbox)


def summary_status(outbox: Sequence[OutboxEntry]) -> str:
    """One word for `status`: none, sending, gone, failed, no sink, pending or sent (the most urgent wins)."""
    if not outbox:
        return "none"
    statuses = {d.status for entry in outbox for d in entry.deliveries.values()}
    if not all(entry.routed_at for entry in outbox):
        statuses.add(DeliveryStatus.PENDING)
    for status in (DeliveryStatus.SENDING, DeliveryStatus.GONE, DeliveryStatus.FAILED):
        if status in statuses:
            return status.value
    if any(entry.routed_at and not entry.deliveries for entry in outbox):
        return "no sink"
    return "pending" if DeliveryStatus.PENDING in statuses else "sent"


def problems(outbox: Sequence[OutboxEntry]) -> List[str]:
    """One line per delivery that did not arrive (or entry with no sink), for `status`."""
    lines = []
    for entry in outbox:
        if entry.routed_at and not entry.deliveries:
            lines.append(f"{entry.kind.value} message: no sink is configured for the {entry.route.value} route")
        for name, delivery in entry.deliveries.items():
            if delivery.status is not DeliveryStatus.DELIVERED:
                why = f" ({delivery.last_error})" if delivery.last_error else ""
                lines.append(f"{entry.kind.value} message to {name}: {delivery.status.value}{why}")
    return lines

