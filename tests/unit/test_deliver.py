"""core.notify.deliver: deliver_due over an in-memory outbox with fake sinks and a fake clock, and send_once."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

from core.notify.deliver import deliver_due, send_once
from core.notify.events import Event, EventKind, Route
from core.notify.message import Message
from core.notify.outbox import (
    Answer,
    DeliveryStatus,
    OutboxEntry,
    Outcome,
    SinkDelivery,
    next_attempt_at,
    problems,
)
from core.notify.sink import Sink
from tests.support import FakeClock, FakeSink, MemoryOutbox, Routes

JOB = "7"
FINAL = f"{JOB}:final:1"
ESCALATION = f"{JOB}:escalation:2"


def again(detail: str = "server error HTTP 500", retry_after: Optional[float] = None) -> Outcome:
    return Outcome(Answer.RETRY, detail, retry_after=retry_after)


class Setup:
    """An in-memory outbox, fake sinks, a route table and a fake clock, delivered by deliver_due."""

    def __init__(self, tmp_path: Path, sinks: Sequence[FakeSink], table: Optional[Dict[Route, Sequence[str]]] = None):
        self.clock = FakeClock()
        self.start = self.clock.now
        self.box = MemoryOutbox()
        self.sinks: Dict[str, Sink] = {sink.name: sink for sink in sinks}
        self.routes = Routes(table if table is not None else {Route.ERROR: [s.name for s in sinks]})
        self.folder = tmp_path / "pace"

    def add(self, *events: Event) -> None:
        self.box.add(JOB, events, self.clock.now)

    def deliver(self) -> int:
        return deliver_due(self.box, self.sinks, self.routes, pacer_folder=str(self.folder), owner="test:1",
                           clock=self.clock.time, pacer_sleep=self.clock.sleep)

    def delivery(self, key: str, sink: str) -> SinkDelivery:
        return self.box.entry(key).deliveries[sink]

    def run(self, limit: int = 50) -> int:
        """Deliver at each next attempt time until nothing is left to try; returns the runs made."""
        for runs in range(1, limit + 1):
            self.deliver()
            at = next_attempt_at(self.box.load_outbox())
            if at is None:
                return runs
            self.clock.now = max(self.clock.now, at)
        raise AssertionError(f"still delivering after {limit} runs")


def final(title: str = "Job 7 failed", route: Route = Route.ERROR) -> Event:
    return Event(EventKind.FINAL, 1, route, Message(title))


def escalation(title: str = "Job 7 resubmitted with more memory") -> Event:
    return Event(EventKind.ESCALATION, 2, Route.ERROR, Message(title))


def titles(sink: FakeSink) -> List[str]:
    return [message.title for message in sink.attempts]


# ------------------------------------------------------------------------------ routing


def test_routing_happens_once_per_entry_with_the_config_of_that_time(tmp_path: Path) -> None:
    a, b = FakeSink("a", [again()]), FakeSink("b")
    setup = Setup(tmp_path, [a, b], {Route.ERROR: ["a"]})
    setup.add(final(), escalation())
    assert setup.deliver() == 2
    assert setup.routes.calls == [Route.ERROR, Route.ERROR]  # one per entry
    assert setup.box.entry(FINAL).routed_at == setup.start
    setup.routes.table[Route.ERROR] = ("b",)  # the config changes: routed entries keep their sinks
    setup.clock.now += 3600
    assert setup.deliver() == 2
    assert setup.routes.calls == [Route.ERROR, Route.ERROR]
    assert list(setup.box.entry(FINAL).deliveries) == ["a"] and b.attempts == []
    setup.add(Event(EventKind.ROUND, 3, Route.ERROR, Message("round 3")))  # a new event is routed now
    setup.deliver()
    assert setup.routes.calls == [Route.ERROR] * 3
    assert list(setup.box.entry(f"{JOB}:round:3").deliveries) == ["b"] and titles(b) == ["round 3"]


def test_each_route_goes_to_its_own_sinks(tmp_path: Path) -> None:
    good, bad = FakeSink("discord-success"), FakeSink("discord-error")
    setup = Setup(tmp_path, [good, bad], {Route.SUCCESS: ["discord-success"], Route.ERROR: ["discord-error"]})
    setup.add(final("Job 7 completed", Route.SUCCESS), escalation())
    assert setup.deliver() == 2
    assert titles(good) == ["Job 7 completed"] and titles(bad) == ["Job 7 resubmitted with more memory"]


def test_a_route_without_sinks_is_routed_to_none_and_shown_as_a_problem(tmp_path: Path) -> None:
    setup = Setup(tmp_path, [], {})
    setup.add(final())
    assert setup.deliver() == 0
    entry = setup.box.entry(FINAL)
    assert entry.routed_at and entry.deliveries == {}
    assert next_attempt_at(setup.box.load_outbox()) is None  # not a busy loop
    assert problems(setup.box.load_outbox()) == ["final message: no sink is configured for the error route"]


def test_a_run_with_nothing_due_writes_nothing(tmp_path: Path) -> None:
    setup = Setup(tmp_path, [FakeSink("a", [again()])])
    setup.add(final())
    setup.deliver()
    writes = setup.box.updates
    setup.clock.now += 0.5  # the retry is due after 1 s
    assert setup.deliver() == 0
    assert setup.box.updates == writes


# ------------------------------------------------------------------------------ attempts


def test_each_due_delivery_is_attempted_once_per_call(tmp_path: Path) -> None:
    """A sink asking to be retried at once (Retry-After: 0) is tried once per deliverer run, and not
    again within the second every retry waits at least."""
    a, b = FakeSink("a", [again(retry_after=0.0)]), FakeSink("b", [again(retry_after=0.0)])
    setup = Setup(tmp_path, [a, b])
    setup.add(final(), escalation())
    assert setup.deliver() == 4
    assert titles(a) == titles(b) == ["Job 7 failed", "Job 7 resubmitted with more memory"]
    assert setup.deliver() == 0
    setup.clock.now += 1.0
    assert setup.deliver() == 4
    assert len(a.attempts) == len(b.attempts) == 4
    assert setup.delivery(FINAL, "a").attempts == 2


def test_deliveries_go_oldest_event_first(tmp_path: Path) -> None:
    sink = FakeSink("a")
    setup = Setup(tmp_path, [sink])
    setup.add(escalation())
    setup.clock.now += 10
    setup.add(final())
    setup.clock.now += 10
    assert setup.deliver() == 2
    assert titles(sink) == ["Job 7 resubmitted with more memory", "Job 7 failed"]


def test_a_delivery_not_due_yet_is_left_alone(tmp_path: Path) -> None:
    sink = FakeSink("a", [again(), "delivered"])
    setup = Setup(tmp_path, [sink])
    setup.add(final())
    assert setup.deliver() == 1
    assert setup.delivery(FINAL, "a").next_attempt_at == setup.start + 1
    setup.clock.now = setup.start + 0.999
    assert setup.deliver() == 0 and len(sink.attempts) == 1
    setup.clock.now = setup.start + 1
    assert setup.deliver() == 1 and setup.delivery(FINAL, "a").status is DeliveryStatus.DELIVERED


def test_retries_follow_the_outbox_schedule_and_deliver_exactly_once(tmp_path: Path) -> None:
    sink = FakeSink("a", [again(), again(), again("rate limited for 30s", 30.0), "delivered"])
    setup = Setup(tmp_path, [sink])
    sink.clock = setup.clock  # records the attempt times
    setup.add(final())
    setup.run()
    assert [t - setup.start for t in sink.times] == [0, 1, 3, 33]  # 1 s, 2 s, then the server's 30 s
    assert len(sink.delivered) == 1
    delivery = setup.delivery(FINAL, "a")
    assert (delivery.status, delivery.attempts, delivery.message_id) == (DeliveryStatus.DELIVERED, 4, "m1")
    assert delivery.delivered_at == setup.start + 33
    assert setup.clock.sleeps == []  # the waits were the outbox's (the run loop's), not the pacer's


def test_a_delivered_sink_is_never_sent_again_while_another_sink_is_retried(tmp_path: Path) -> None:
    a, b = FakeSink("a"), FakeSink("b", [again(), again(), "delivered"])
    setup = Setup(tmp_path, [a, b])
    setup.add(final())
    setup.run()
    assert len(a.attempts) == 1 and len(b.attempts) == 3
    assert {name: d.status for name, d in setup.box.entry(FINAL).deliveries.items()} == {
        "a": DeliveryStatus.DELIVERED, "b": DeliveryStatus.DELIVERED}


def test_a_gone_sink_stops_while_another_delivers(tmp_path: Path) -> None:
    a, b = FakeSink("a", ["gone"]), FakeSink("b", [again(), "delivered"])
    setup = Setup(tmp_path, [a, b])
    setup.add(final())
    setup.run()
    assert len(a.attempts) == 1 and len(b.delivered) == 1
    assert setup.delivery(FINAL, "a").status is DeliveryStatus.GONE
    assert problems(setup.box.load_outbox()) == ["final message to a: gone (gone detail)"]


def test_an_attempt_is_claimed_before_it_is_made(tmp_path: Path) -> None:
    seen: List[SinkDelivery] = []
    setup = Setup(tmp_path, [FakeSink("a", on_attempt=lambda payload: seen.append(setup.delivery(FINAL, "a")))])
    setup.add(final())
    setup.deliver()
    [during] = seen
    assert (during.status, during.claimed_by, during.attempts) == (DeliveryStatus.SENDING, "test:1", 0)
    after = setup.delivery(FINAL, "a")
    assert (after.status, after.claimed_by, after.attempts) == (DeliveryStatus.DELIVERED, "", 1)


def test_sending_left_by_a_dead_deliverer_is_sent_again(tmp_path: Path) -> None:
    """The documented at-least-once window: a deliverer killed after the sink accepted, before recording it."""
    def crash(payload: Any) -> None:
        raise KeyboardInterrupt("killed mid-send")

    dying = FakeSink("a", on_attempt=crash)
    setup = Setup(tmp_path, [dying])
    setup.add(final())
    with pytest.raises(KeyboardInterrupt):
        setup.deliver()
    left = setup.delivery(FINAL, "a")
    assert (left.status, left.claimed_by) == (DeliveryStatus.SENDING, "test:1")
    assert next_attempt_at(setup.box.load_outbox()) is not None  # not forgotten

    sink = FakeSink("a")  # the next deliverer (after a restart, or `recover`)
    setup.sinks["a"] = sink
    assert setup.deliver() == 1 and len(sink.delivered) == 1
    assert (setup.delivery(FINAL, "a").status, setup.delivery(FINAL, "a").claimed_by) == (DeliveryStatus.DELIVERED, "")


def test_sending_is_due_whatever_its_next_attempt_time(tmp_path: Path) -> None:
    sink = FakeSink("a")
    setup = Setup(tmp_path, [sink])
    setup.add(final())

    def claimed_by_a_dead_process(entries: List[OutboxEntry]) -> None:
        entries[0].routed_at = setup.start
        entries[0].deliveries = {"a": SinkDelivery(status=DeliveryStatus.SENDING, attempts=2,
                                                   next_attempt_at=setup.start + 3600, claimed_by="otherhost:99")}

    setup.box.update_outbox(claimed_by_a_dead_process)
    assert setup.deliver() == 1 and len(sink.delivered) == 1
    assert setup.delivery(FINAL, "a").attempts == 3


def test_an_unknown_sink_is_gone_without_an_attempt(tmp_path: Path) -> None:
    setup = Setup(tmp_path, [], {Route.ERROR: ["discord-error"]})  # routed to a sink no longer configured
    setup.add(final())
    assert setup.deliver() == 1
    delivery = setup.delivery(FINAL, "discord-error")
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.GONE, 1)
    assert delivery.last_error == "sink 'discord-error' is not in config.json any more"
    assert next_attempt_at(setup.box.load_outbox()) is None
    setup.clock.now += 86400
    assert setup.deliver() == 0


def test_entries_without_a_message_are_skipped(tmp_path: Path) -> None:
    """An undelivered entry carried over from schema 1 has no message until the monitor renders it."""
    sink = FakeSink("a")
    setup = Setup(tmp_path, [sink])
    setup.box.update_outbox(lambda entries: entries.extend([
        OutboxEntry(key=FINAL, kind=EventKind.FINAL, route=Route.ERROR, created_at=1.0, message=None),
        OutboxEntry(key=ESCALATION, kind=EventKind.ESCALATION, route=Route.ERROR, created_at=2.0,
                    message=None, routed_at=2.0, deliveries={"a": SinkDelivery()}),
    ]))
    setup.add(Event(EventKind.ROUND, 3, Route.ERROR, Message("round 3")))
    assert setup.deliver() == 1
    assert titles(sink) == ["round 3"]
    carried = setup.box.entry(FINAL)
    assert carried.routed_at and carried.deliveries == {"a": SinkDelivery()}  # routed, not sent
    assert setup.box.entry(ESCALATION).deliveries == {"a": SinkDelivery()}


def test_attempts_are_paced_with_the_sinks_spacing(tmp_path: Path) -> None:
    sink = FakeSink("a")
    sink.min_spacing = 0.5
    setup = Setup(tmp_path, [sink])
    sink.clock = setup.clock
    setup.add(final(), escalation())
    assert setup.deliver() == 2
    assert setup.clock.sleeps == [0.5]
    assert [t - setup.start for t in sink.times] == [0.0, 0.5]
    assert setup.delivery(ESCALATION, "a").delivered_at == setup.start + 0.5  # recorded at the paced time
    assert [p.suffix for p in sorted(setup.folder.iterdir())] == [".json", ".lock"]


# ------------------------------------------------------------------------------ send_once


@pytest.mark.parametrize(
    "answers, attempts, sleeps, answer",
    [
        (["delivered"], 1, [], Answer.DELIVERED),
        (["gone"], 1, [], Answer.GONE),
        ([again(), "delivered"], 2, [1.0], Answer.DELIVERED),
        ([again(retry_after=0.25), "delivered"], 2, [0.25], Answer.DELIVERED),
        ([again(retry_after=300.0), "delivered"], 2, [5.0], Answer.DELIVERED),  # a test message waits 5 s at most
        ([again(), again(), "delivered"], 2, [1.0], Answer.RETRY),  # no sleep after the last attempt
        ([again(), "gone"], 2, [1.0], Answer.GONE),
    ],
)
def test_send_once(answers: List[Any], attempts: int, sleeps: List[float], answer: Answer) -> None:
    sink = FakeSink("a", answers)
    slept: List[float] = []
    outcome = send_once(sink, Message("jobmon test message"), sleep=slept.append)
    assert outcome.answer is answer
    assert titles(sink) == ["jobmon test message"] * attempts
    assert slept == sleeps


def test_send_once_with_more_attempts() -> None:
    sink = FakeSink("a", [again()])
    slept: List[float] = []
    outcome = send_once(sink, Message("t"), attempts=3, sleep=slept.append)
    assert outcome == again() and len(sink.attempts) == 3 and slept == [1.0, 1.0]
