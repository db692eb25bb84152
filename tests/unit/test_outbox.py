"""core.notify.outbox: the pure rules of the outbox, table-driven (no I/O, no clock, no sink)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from core.notify.events import Event, EventKind, Route, event_key
from core.notify.message import Message, Tone
from core.notify.outbox import (
    DELIVERY_GIVE_UP,
    MAX_RETRY_DELAY,
    Answer,
    DeliveryStatus,
    OutboxEntry,
    Outcome,
    SinkDelivery,
    add_events,
    due,
    has_undelivered,
    is_delivered,
    next_attempt_at,
    problems,
    record_outcome,
    reopen,
    retry_delay,
    route_entry,
    summary_status,
)

P, S, D, F, G = (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.DELIVERED, DeliveryStatus.FAILED,
                 DeliveryStatus.GONE)
NOW = 1_000_000.0
MESSAGE = Message("Job 7 failed", tone=Tone.FAILURE)
SUCCESS_SINK, ERROR_SINK = "discord-success", "discord-error"


def entry(key: str = "7:final:1", *, kind: EventKind = EventKind.FINAL, route: Route = Route.ERROR,
          created_at: float = 0.0, routed: bool = True, message: Optional[Message] = MESSAGE,
          deliveries: Optional[Dict[str, SinkDelivery]] = None) -> OutboxEntry:
    return OutboxEntry(key=key, kind=kind, route=route, created_at=created_at, message=message,
                       routed_at=NOW - 100 if routed else 0.0, deliveries=dict(deliveries or {}))


def delivery(status: DeliveryStatus = P, **values: object) -> SinkDelivery:
    return SinkDelivery(status=status, **values)


def one(status: DeliveryStatus, sink: str = ERROR_SINK, **values: object) -> OutboxEntry:
    """An entry routed to one sink whose delivery is in `status`."""
    return entry(deliveries={sink: delivery(status, **values)})


def routes(route: Route) -> Sequence[str]:
    """Both webhooks configured: each route has its own sink."""
    return (SUCCESS_SINK,) if route is Route.SUCCESS else (ERROR_SINK,)


def event(kind: EventKind = EventKind.FINAL, sequence: int = 1, route: Route = Route.ERROR,
          title: str = "Job 7 failed") -> Event:
    return Event(kind, sequence, route, Message(title))


# ------------------------------------------------------------------ keys and add_events


@pytest.mark.parametrize(
    "job_id, kind, sequence, key",
    [("123", EventKind.FINAL, 1, "123:final:1"), ("123", EventKind.ESCALATION, 2, "123:escalation:2"),
     ("55_3", EventKind.ROUND, 4, "55_3:round:4"), ("9", EventKind.FIRST_FAILURE, 1, "9:first_failure:1")],
)
def test_event_keys_are_stable(job_id: str, kind: EventKind, sequence: int, key: str) -> None:
    assert event_key(job_id, kind, sequence) == key
    assert Event(kind, sequence, Route.ERROR, MESSAGE).key(job_id) == key


def test_add_events_appends_new_events_unrouted_with_their_message() -> None:
    outbox: List[OutboxEntry] = []
    first, second = event(EventKind.ESCALATION, 2, title="resubmitted"), event(route=Route.SUCCESS, title="done")
    added = add_events(outbox, "7", [first, second], NOW)
    assert added == outbox
    assert [(e.key, e.kind, e.route, e.created_at, e.routed_at, e.deliveries) for e in outbox] == [
        ("7:escalation:2", EventKind.ESCALATION, Route.ERROR, NOW, 0.0, {}),
        ("7:final:1", EventKind.FINAL, Route.SUCCESS, NOW, 0.0, {}),
    ]
    assert [e.message for e in outbox] == [first.message, second.message]


@pytest.mark.parametrize(
    "before, events, added_keys",
    [
        ([], [event(), event(title="the same event, said again")], ["7:final:1"]),  # within one batch
        (["7:final:1"], [event()], []),  # after a crash, on the next poll
        (["7:final:1"], [event(title="other text")], []),  # the key decides, not the text
        (["7:escalation:1"], [event(EventKind.ESCALATION, 2)], ["7:escalation:2"]),  # another sequence
        (["7:final:1"], [event(EventKind.ROUND, 1)], ["7:round:1"]),  # another kind
        (["8:final:1"], [event()], ["7:final:1"]),  # another job
    ],
)
def test_add_events_dedupes_by_key(before: List[str], events: List[Event], added_keys: List[str]) -> None:
    outbox = [entry(key, created_at=1.0) for key in before]
    added = add_events(outbox, "7", events, NOW)
    assert [e.key for e in added] == added_keys
    assert [e.key for e in outbox] == before + added_keys


def test_an_event_already_there_changes_nothing_in_its_entry() -> None:
    """A carried-over entry (no message) or a delivered one is never replaced by the same event again."""
    old = entry(message=None, created_at=5.0, deliveries={ERROR_SINK: delivery(D, delivered_at=6.0)})
    outbox = [old]
    assert add_events(outbox, "7", [event(title="new text")], NOW) == []
    assert outbox == [entry(message=None, created_at=5.0, deliveries={ERROR_SINK: delivery(D, delivered_at=6.0)})]


# ------------------------------------------------------------------------- route_entry


@pytest.mark.parametrize(
    "sinks, expected",
    [((), []), ((ERROR_SINK,), [ERROR_SINK]), ((ERROR_SINK, SUCCESS_SINK), [ERROR_SINK, SUCCESS_SINK]),
     ((ERROR_SINK, SUCCESS_SINK, ERROR_SINK), [ERROR_SINK, SUCCESS_SINK])],
)
def test_route_entry_gives_each_sink_a_fresh_pending_delivery(sinks: Tuple[str, ...], expected: List[str]) -> None:
    routed = entry(routed=False)
    route_entry(routed, sinks, NOW)
    assert routed.routed_at == NOW
    assert list(routed.deliveries) == expected
    assert all(d == SinkDelivery() for d in routed.deliveries.values())
    assert due([routed], NOW) == [(routed, name) for name in expected]


# ------------------------------------------------------------------ retry_delay and record_outcome


@pytest.mark.parametrize(
    "attempts, delay",
    [(0, 1), (1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (11, 1024), (12, 2048), (13, 3600), (14, 3600), (100, 3600),
     (10**9, 3600)],
)
def test_retry_delay_doubles_up_to_an_hour(attempts: int, delay: float) -> None:
    assert retry_delay(attempts) == delay
    assert MAX_RETRY_DELAY == 3600


def test_record_outcome_delivered() -> None:
    sent = delivery(S, attempts=2, first_attempt_at=NOW - 3, next_attempt_at=NOW - 1, last_error="server error",
                    claimed_by="host:1")
    record_outcome(sent, Outcome(Answer.DELIVERED, "delivered", message_id="99"), NOW)
    assert sent == SinkDelivery(status=D, attempts=3, first_attempt_at=NOW - 3, next_attempt_at=NOW - 1,
                                last_error="", delivered_at=NOW, message_id="99", claimed_by="")


def test_record_outcome_gone_is_final_and_keeps_why() -> None:
    sent = delivery(S, claimed_by="host:1")
    record_outcome(sent, Outcome(Answer.GONE, "webhook deleted or invalid (HTTP 404: Unknown Webhook)"), NOW)
    assert (sent.status, sent.attempts, sent.first_attempt_at, sent.claimed_by) == (G, 1, NOW, "")
    assert sent.last_error == "webhook deleted or invalid (HTTP 404: Unknown Webhook)"
    assert next_attempt_at([entry(deliveries={ERROR_SINK: sent})]) is None


@pytest.mark.parametrize(
    "attempts_before, retry_after, wait",
    [
        (0, None, 1.0),  # first failure: 1 s
        (1, None, 2.0),
        (2, None, 4.0),
        (12, None, 3600.0),  # capped
        (0, 30.0, 30.0),  # a 429 says how long: longer than the backoff
        (5, 2.5, 2.5),  # ... or shorter: the server knows best
        (5, 0.25, 1.0),  # but at least a second: a `Retry-After: 0` must not start a storm
        (3, 0.0, 1.0),
        (0, 3600.0, 3600.0),
        (0, 10 * 3600.0, MAX_RETRY_DELAY),  # never longer than MAX_RETRY_DELAY, whatever a server says
        (0, 1e12, MAX_RETRY_DELAY),  # (a PENDING delivery is not reopened by `recover`: it must come due)
    ],
)
def test_record_outcome_retry_waits_the_backoff_or_what_the_server_asked(
    attempts_before: int, retry_after: Optional[float], wait: float
) -> None:
    sent = delivery(S, attempts=attempts_before, first_attempt_at=NOW - 10 if attempts_before else 0.0,
                    claimed_by="host:1")
    record_outcome(sent, Outcome(Answer.RETRY, "server error HTTP 503", retry_after=retry_after), NOW)
    assert (sent.status, sent.attempts, sent.next_attempt_at) == (P, attempts_before + 1, NOW + wait)
    assert (sent.last_error, sent.claimed_by) == ("server error HTTP 503", "")
    assert sent.first_attempt_at == (NOW - 10 if attempts_before else NOW)  # set by the first attempt only


@pytest.mark.parametrize(
    "failing_for, status",
    [(0.0, P), (DELIVERY_GIVE_UP - 1, P), (DELIVERY_GIVE_UP, F), (DELIVERY_GIVE_UP + 3600, F)],
)
@pytest.mark.parametrize("retry_after", [None, 5.0])
def test_record_outcome_gives_up_after_delivery_give_up(failing_for: float, status: DeliveryStatus,
                                                        retry_after: Optional[float]) -> None:
    sent = delivery(S, attempts=7, first_attempt_at=NOW - failing_for)
    record_outcome(sent, Outcome(Answer.RETRY, "rate limited", retry_after=retry_after), NOW)
    assert sent.status is status and sent.last_error == "rate limited"
    assert DELIVERY_GIVE_UP == 6 * 3600


def test_the_whole_backoff_sequence_until_give_up() -> None:
    """A delivery that fails every time it is tried, tried exactly when due."""
    tried = delivery()
    times = []
    now = NOW
    while tried.status is not F:
        assert len(times) < 100
        times.append(now - NOW)
        record_outcome(tried, Outcome(Answer.RETRY, "server error HTTP 500"), now)
        now = tried.next_attempt_at
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600, 3600, 3600, 3600]
    assert tried.attempts == 18 and times[-1] >= DELIVERY_GIVE_UP > times[-2]


# ------------------------------------------------------------------------------- reopen


def test_reopen_makes_gone_and_failed_pending_again_with_a_fresh_give_up_time() -> None:
    outbox = [one(G, first_attempt_at=NOW - 50, next_attempt_at=NOW - 40, attempts=1, last_error="404"),
              entry("7:escalation:2", kind=EventKind.ESCALATION,
                    deliveries={ERROR_SINK: delivery(F, first_attempt_at=NOW - 30000, next_attempt_at=NOW - 100,
                                                     attempts=18)})]
    reopen(outbox, routes)
    for reopened in outbox:
        d = reopened.deliveries[ERROR_SINK]
        assert (d.status, d.first_attempt_at, d.next_attempt_at, d.attempts) == (P, 0.0, 0.0, 0)
        assert list(reopened.deliveries) == [ERROR_SINK]
    assert [name for _, name in due(outbox, NOW)] == [ERROR_SINK, ERROR_SINK]
    # fresh give-up time: the next failure is retried, not given up at once
    failed_before = outbox[1].deliveries[ERROR_SINK]
    record_outcome(failed_before, Outcome(Answer.RETRY, "server error HTTP 500"), NOW)
    assert failed_before.status is P


@pytest.mark.parametrize("status", [P, S, D])
def test_reopen_leaves_pending_sending_and_delivered_alone(status: DeliveryStatus) -> None:
    before = one(status, attempts=2, first_attempt_at=NOW - 9, next_attempt_at=NOW + 7, last_error="x")
    outbox = [one(status, attempts=2, first_attempt_at=NOW - 9, next_attempt_at=NOW + 7, last_error="x")]
    reopen(outbox, routes)
    assert outbox == [before]


@pytest.mark.parametrize("status", [P, S, F, G])
def test_reopen_moves_an_undelivered_entry_from_a_removed_sink_to_the_routes_sinks(status: DeliveryStatus) -> None:
    outbox = [one(status, sink="old-sink", attempts=3, last_error="x")]
    reopen(outbox, routes)
    assert outbox[0].deliveries == {ERROR_SINK: SinkDelivery()}


def test_reopen_keeps_a_delivery_to_a_removed_sink_that_arrived_and_sends_no_more() -> None:
    outbox = [one(D, sink="old-sink", delivered_at=NOW - 5)]
    reopen(outbox, routes)
    assert outbox[0].deliveries == {"old-sink": delivery(D, delivered_at=NOW - 5)}


def test_reopen_drops_a_removed_sink_even_when_no_sink_is_left() -> None:
    outbox = [one(G, sink="old-sink")]
    reopen(outbox, lambda route: ())
    assert outbox[0].deliveries == {}
    assert problems(outbox) == ["final message: no sink is configured for the error route"]


def test_reopen_gives_an_entry_that_had_no_sink_the_sinks_configured_now() -> None:
    outbox = [entry(deliveries={})]
    reopen(outbox, routes)
    assert outbox[0].deliveries == {ERROR_SINK: SinkDelivery()}


def test_reopen_sends_to_the_routes_sink_now_not_to_the_fallback_it_once_had() -> None:
    """The error message once fell back to the success webhook (then gone); the error webhook is configured
    now: the message goes there, once, and not to both."""
    outbox = [one(G, sink=SUCCESS_SINK, last_error="404")]
    reopen(outbox, routes)
    assert {name: d.status for name, d in outbox[0].deliveries.items()} == {ERROR_SINK: P}


def test_reopen_leaves_unrouted_entries_to_the_deliverer() -> None:
    outbox = [entry(routed=False)]
    reopen(outbox, routes)
    assert outbox == [entry(routed=False)]


# ------------------------------------------------------------------ due and next_attempt_at


@pytest.mark.parametrize(
    "status, next_at, is_due",
    [(P, 0.0, True), (P, NOW - 1, True), (P, NOW, True), (P, NOW + 0.001, False),
     (S, NOW + 500, True),  # its claimant died mid-send: sent again (at-least-once, documented)
     (D, 0.0, False), (G, 0.0, False), (F, 0.0, False)],
)
def test_due(status: DeliveryStatus, next_at: float, is_due: bool) -> None:
    outbox = [one(status, next_attempt_at=next_at)]
    assert due(outbox, NOW) == ([(outbox[0], ERROR_SINK)] if is_due else [])


def test_due_lists_unrouted_entries_for_routing_and_goes_oldest_first() -> None:
    newer = entry("7:final:1", created_at=20.0, deliveries={ERROR_SINK: delivery(), SUCCESS_SINK: delivery(D)})
    unrouted = entry("7:round:2", kind=EventKind.ROUND, created_at=15.0, routed=False)
    older = entry("7:escalation:1", kind=EventKind.ESCALATION, created_at=10.0,
                  deliveries={ERROR_SINK: delivery(next_attempt_at=NOW - 5)})
    assert due([newer, unrouted, older], NOW) == [(older, ERROR_SINK), (unrouted, None), (newer, ERROR_SINK)]


def test_due_lists_entries_without_a_message_too() -> None:
    """The deliverer skips them (nothing to send yet); the monitor renders them first."""
    carried = entry(message=None, deliveries={ERROR_SINK: delivery()})
    assert due([carried], NOW) == [(carried, ERROR_SINK)]


@pytest.mark.parametrize(
    "outbox, expected",
    [
        ([], None),
        ([entry(routed=False)], 0.0),  # routing is due at once
        ([one(P, next_attempt_at=NOW + 4)], NOW + 4),
        ([one(S, next_attempt_at=NOW + 4)], NOW + 4),
        ([one(D), one(G), one(F)], None),  # nothing left to try
        ([entry(deliveries={})], None),  # no sink: nothing to try
        ([one(P, next_attempt_at=NOW + 9), one(D), one(P, next_attempt_at=NOW + 2)], NOW + 2),
        ([entry(deliveries={ERROR_SINK: delivery(next_attempt_at=NOW + 9), SUCCESS_SINK: delivery(
            next_attempt_at=NOW + 3)})], NOW + 3),
    ],
)
def test_next_attempt_at(outbox: List[OutboxEntry], expected: Optional[float]) -> None:
    assert next_attempt_at(outbox) == expected


# ------------------------------------------------- is_delivered, has_undelivered, status, problems

TABLE = [
    # (outbox, is_delivered: nothing left to try, has_undelivered: something did not arrive, summary)
    ([], True, False, "none"),
    ([one(D)], True, False, "sent"),
    ([entry(deliveries={ERROR_SINK: delivery(D), SUCCESS_SINK: delivery(D)})], True, False, "sent"),
    ([one(P)], False, True, "pending"),
    ([entry(routed=False)], False, True, "pending"),
    ([one(D), entry("7:round:1", routed=False)], False, True, "pending"),
    ([one(S)], False, True, "sending"),
    ([one(G)], True, True, "gone"),
    ([one(F)], False, True, "failed"),
    ([entry(deliveries={})], True, True, "no sink"),
    ([entry(deliveries={ERROR_SINK: delivery(D), SUCCESS_SINK: delivery(G)})], True, True, "gone"),
    ([one(D), one(P)], False, True, "pending"),
    # the most urgent wins: sending, gone, failed, no sink, pending, sent
    ([one(S), one(G), one(F), entry(deliveries={}), one(P), one(D)], False, True, "sending"),
    ([one(G), one(F), entry(deliveries={}), one(P), one(D)], False, True, "gone"),
    ([one(F), entry(deliveries={}), one(P), one(D)], False, True, "failed"),
    ([entry(deliveries={}), one(P), one(D)], False, True, "no sink"),
    ([entry(deliveries={}), entry(routed=False)], False, True, "no sink"),
]


@pytest.mark.parametrize("outbox, delivered, undelivered, summary", TABLE)
def test_is_delivered_has_undelivered_and_summary_status(outbox: List[OutboxEntry], delivered: bool,
                                                         undelivered: bool, summary: str) -> None:
    assert is_delivered(outbox) is delivered
    assert has_undelivered(outbox) is undelivered
    assert summary_status(outbox) == summary


def test_problems_name_each_delivery_that_did_not_arrive() -> None:
    outbox = [
        entry(deliveries={SUCCESS_SINK: delivery(D), ERROR_SINK: delivery(
            G, last_error="webhook deleted or invalid (HTTP 404: Unknown Webhook)")}),
        entry("7:escalation:2", kind=EventKind.ESCALATION,
              deliveries={ERROR_SINK: delivery(F, last_error="server error HTTP 503")}),
        entry("7:first_failure:1", kind=EventKind.FIRST_FAILURE, route=Route.SUCCESS, deliveries={}),
        entry("7:round:2", kind=EventKind.ROUND, routed=False),  # not routed yet: not a problem yet
        entry("7:round:3", kind=EventKind.ROUND, deliveries={ERROR_SINK: delivery(S)}),
    ]
    assert problems(outbox) == [
        f"final message to {ERROR_SINK}: gone (webhook deleted or invalid (HTTP 404: Unknown Webhook))",
        f"escalation message to {ERROR_SINK}: failed (server error HTTP 503)",
        "first_failure message: no sink is configured for the success route",
        f"round message to {ERROR_SINK}: sending",
    ]


def test_problems_of_a_pending_delivery_say_why_it_waits() -> None:
    [line] = problems([one(P, last_error="rate limited for 30s")])
    assert line == f"final message to {ERROR_SINK}: pending (rate limited for 30s)"
    assert problems([one(D)]) == [] and problems([]) == []

