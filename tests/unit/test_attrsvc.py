"""The attribution service (nvrx-attrsvc): its recommendation goes into the final message before any
sink has it; a slow, busy, failing or absent service delays that message by at most the bounded
wait, and it still reaches every sink exactly once. Driven against a local stand-in with a fake
clock (real HTTP, no real waiting)."""
from __future__ import annotations

import json
import socket
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from core.config import SinkKind, parse_config
from core.daemon.delivery import InProcessDelivery
from core.errors import ConfigError
from core.monitor.attribution import attribute_finals, needs_attribution
from core.monitor.records import Records
from core.notify.attrsvc import ATTRIBUTION_WAIT, Attribution, AttributionClient, amend, parse_result
from core.notify.events import Event, EventKind, Route, RouteFacts
from core.notify.message import Facts, Message, Tone
from core.notify.outbox import DeliveryStatus, OutboxEntry, SinkDelivery, add_events
from core.state.codec import decode, encode
from core.state.model import JobRecord
from core.state.store import StateStore
from tests.attrsvc_receiver import AttrsvcReceiver
from tests.channel_receivers import ChannelReceiver
from tests.support import FakeClock

FINAL = Message("Job 77 (train) FAILED", description="Likely cause: nccl_timeout", tone=Tone.FAILURE,
                facts=Facts(job_id="77", name="train", state="FAILED"))
STALLED = Message("Job 77 (train) stalled", tone=Tone.WARNING, facts=Facts(job_id="77", name="train", state="RUNNING"))


@pytest.fixture
def sinks() -> Iterator[ChannelReceiver]:
    server = ChannelReceiver().start()
    yield server
    server.stop()


def served(**options: Any) -> AttrsvcReceiver:
    return AttrsvcReceiver(**options).start()


Setup = Tuple[InProcessDelivery, Records, StateStore, FakeClock]


def setup(tmp_path, sinks: ChannelReceiver, attrsvc_url: str) -> Setup:
    config = parse_config(json.dumps({"notify": {"sinks": {
        "attr": {"type": "attrsvc", "url": attrsvc_url},
        "phone": {"type": "ntfy", "url": sinks.url("ntfy", "topic")},
        "ops": {"type": "teams", "url": sinks.url("teams")}}}}), "config.json", None)
    store = StateStore(str(tmp_path / "state"))
    store.create(JobRecord("77", name="train", user="alice", stdout_path="/logs/slurm-77.out"))
    records = Records(store, "77")
    clock = FakeClock()
    records.update(lambda r: add_events(r.outbox, "77", [Event(EventKind.STALLED, 1, Route.ERROR, STALLED),
                                                         Event(EventKind.FINAL, 1, Route.ERROR, FINAL)], clock.now))
    deliverer = InProcessDelivery(store, config, owner="t:1", clock=clock.time, pacer_sleep=clock.sleep)
    return deliverer, records, store, clock


def delivered(sinks: ChannelReceiver) -> Dict[str, List[str]]:
    """What each sink received, as text: ntfy's bodies, Teams' cards."""
    return {"ntfy": [m["body"] for m in sinks.messages.get("ntfy", [])],
            "teams": [json.dumps(m["payload"], ensure_ascii=False) for m in sinks.messages.get("teams", [])]}


def deliver_until_done(deliverer: InProcessDelivery, records: Records, clock: FakeClock) -> None:
    for _ in range(5):
        deliverer.deliver(records)
        clock.now += 3600


def final_entry(store: StateStore) -> OutboxEntry:
    return next(entry for entry in store.load("77").outbox if entry.kind is EventKind.FINAL)


# ------------------------------------------------------------------------------- the whole path


def test_the_final_message_carries_the_recommendation_and_every_sink_gets_each_message_once(tmp_path, sinks):
    service = served(polls_before_done=3)  # the analysis takes a few polls
    try:
        deliverer, records, store, clock = setup(tmp_path, sinks, service.url)
        start = clock.now
        deliver_until_done(deliverer, records, clock)
    finally:
        service.stop()
    assert service.submitted == [{"log_path": "/logs/slurm-77.out", "user": "alice", "job_id": "77",
                                  "analysis_intent": "terminal"}]
    assert service.hits == {"POST": ["200"], "GET": ["200"] * 4}  # asked once, never again on later runs
    final = final_entry(store)
    assert final.attributed_at - start <= ATTRIBUTION_WAIT
    assert {d.status for d in final.deliveries.values()} == {DeliveryStatus.DELIVERED}
    got = delivered(sinks)
    assert {name: len(texts) for name, texts in got.items()} == {"ntfy": 2, "teams": 2}  # stalled + final
    for texts in got.values():
        final_text = next(text for text in texts if "Likely cause" in text)
        stalled_text = next(text for text in texts if "Likely cause" not in text)
        assert "RESTART: NCCL timeout on one node: safe to restart" in final_text
        assert "Attribution" not in stalled_text  # only final messages are amended


def test_a_busy_or_failing_service_is_asked_again_within_the_wait(tmp_path, sinks):
    service = served(polls_before_done=1)
    service.enqueue("POST", (503, "job_limit_reached"), (503, "job_limit_reached"))
    service.enqueue("GET", (500, ""), (429, 5))
    try:
        deliverer, records, store, clock = setup(tmp_path, sinks, service.url)
        start = clock.now
        deliverer.deliver(records)
    finally:
        service.stop()
    assert service.hits["POST"] == ["503", "503", "200"] and service.hits["GET"] == ["500", "429", "200", "200"]
    assert 5 in clock.sleeps  # the 429's Retry-After
    assert final_entry(store).attributed_at - start <= ATTRIBUTION_WAIT
    for texts in delivered(sinks).values():
        assert "RESTART: NCCL timeout" in next(t for t in texts if "Likely cause" in t)


@pytest.mark.parametrize("never_done, script, expected", [
    (True, [], "no answer within 60s (last: analysis not completed yet)"),
    (False, [(503, "job_limit_reached")] * 100,
     "no answer within 60s (last: HTTP 503 job_limit_reached: scripted 503)"),
])
def test_a_slow_or_busy_service_delays_the_final_message_at_most_the_wait_and_never_loses_it(
        tmp_path, sinks, never_done, script, expected):
    service = served(never_done=never_done)
    service.enqueue("POST", *script)
    try:
        deliverer, records, store, clock = setup(tmp_path, sinks, service.url)
        start = clock.now
        deliver_until_done(deliverer, records, clock)
    finally:
        service.stop()
    final = final_entry(store)
    assert 0 < final.attributed_at - start <= ATTRIBUTION_WAIT
    assert len(service.hits["POST"]) + len(service.hits["GET"]) < 30  # backoff, not a storm
    got = delivered(sinks)
    assert {name: len(texts) for name, texts in got.items()} == {"ntfy": 2, "teams": 2}
    for texts in got.values():
        final_text = next(text for text in texts if "Likely cause" in text)
        assert expected in final_text and final_text.count("Attribution service") == 1


def test_a_service_that_is_down_costs_the_bounded_wait_then_the_message_goes_out(tmp_path, sinks):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    deliverer, records, store, clock = setup(tmp_path, sinks, f"http://127.0.0.1:{port}")
    start = clock.now
    deliverer.deliver(records)
    final = final_entry(store)
    assert 0 < final.attributed_at - start <= ATTRIBUTION_WAIT
    assert {d.status for d in final.deliveries.values()} == {DeliveryStatus.DELIVERED}
    assert all("no recommendation: no answer within 60s (last: connection refused" in
               next(t for t in texts if "Likely cause" in t) for texts in delivered(sinks).values())


def test_a_refusal_is_final_and_costs_no_waiting(tmp_path, sinks):
    service = served()
    service.enqueue("POST", (400, "INVALID_PATH"))
    try:
        deliverer, records, store, clock = setup(tmp_path, sinks, service.url)
        start = clock.now
        deliverer.deliver(records)
    finally:
        service.stop()
    assert service.hits == {"POST": ["400"], "GET": []}
    assert final_entry(store).attributed_at == start
    assert all("refused the log (HTTP 400 INVALID_PATH: scripted 400)" in next(t for t in texts if "Likely cause" in t)
               for texts in delivered(sinks).values())


# ----------------------------------------------------------------------------------- pieces


@pytest.mark.parametrize("body, expected", [
    ({"status": "in_progress"}, None),
    ({"mode": "SINGLE"}, None),
    ({"status": "completed", "recommendation": {"action": "stop", "reason": "bad  config\nline"}},
     Attribution("STOP", "bad config line")),
    ({"status": "completed", "recommendation": {"action": "CONTINUE", "summary": "job done"}},
     Attribution("CONTINUE", "job done")),
    ({"status": "completed", "result": {}}, Attribution(problem="the analysis completed without a recommendation")),
    ([1, 2], None),
])
def test_a_result_is_read_only_once_completed(body, expected):
    assert parse_result(body) == expected


def test_a_message_some_sink_already_tried_is_never_changed():
    clock = FakeClock()
    asked: List[str] = []

    class Memory:
        def __init__(self, record: JobRecord) -> None:
            self.record = record

        def load(self) -> JobRecord:
            return self.record

        def update(self, change: Any) -> JobRecord:
            change(self.record)
            return self.record

    record = JobRecord("5", user="bob", stdout_path="/l/5.out")
    add_events(record.outbox, "5", [Event(EventKind.FINAL, 1, Route.ERROR, FINAL)], clock.now)
    record.outbox[0].deliveries = {"a": SinkDelivery(attempts=1), "b": SinkDelivery()}
    assert not needs_attribution(record.outbox[0])

    def ask(path: str, user: str, job_id: str) -> Attribution:
        asked.append(path)
        return Attribution("STOP")

    assert attribute_finals(Memory(record), ask, clock.time) == 0 and asked == []  # type: ignore[arg-type]
    record.outbox[0].deliveries["a"] = SinkDelivery()
    assert attribute_finals(Memory(record), ask, clock.time) == 1 and asked == ["/l/5.out"]  # type: ignore[arg-type]
    assert record.outbox[0].message == amend(FINAL, Attribution("STOP"))
    assert attribute_finals(Memory(record), ask, clock.time) == 0 and asked == ["/l/5.out"]  # type: ignore[arg-type]


def test_a_record_written_before_attribution_existed_still_reads():
    entry = OutboxEntry("1:final:1", EventKind.FINAL, Route.ERROR, message=FINAL)
    data = encode(entry)
    del data["attributed_at"]
    assert decode(OutboxEntry, data) == entry


def test_the_client_gives_up_at_the_deadline_even_when_each_call_is_slow():
    clock = FakeClock()

    def slow_get(url: str, **request: Any) -> Any:
        clock.now += request["timeout"]  # every poll uses up its whole timeout
        raise TimeoutError("read timed out")

    def post(url: str, **request: Any) -> Any:
        return type("R", (), {"status_code": 200, "headers": {}, "json": lambda self: {"mode": "SINGLE"}})()

    client = AttributionClient("http://localhost:8000", clock=clock.time, sleep=clock.sleep, post_with=post,
                               get_with=slow_get)
    start = clock.now
    answer = client.attribute("/l/1.out", "u", "1")
    assert not answer.found and answer.problem.startswith("no answer within 60s")
    assert clock.now - start <= ATTRIBUTION_WAIT


# ----------------------------------------------------------------------------------- config


def test_the_attrsvc_entry_is_the_attribution_service_not_a_destination():
    config = parse_config(json.dumps({"notify": {"sinks": {
        "attr": {"type": "attrsvc", "url": "http://localhost:8000"},
        "phone": {"type": "ntfy", "url": "https://ntfy.sh/t"}}}}), "config.json", None)
    assert config.attribution is not None and config.attribution.kind is SinkKind.ATTRSVC
    assert config.attribution.url == "http://localhost:8000"
    assert list(config.sinks) == ["phone"]
    assert config.sinks_for(RouteFacts(EventKind.FINAL, Route.ERROR)) == ("phone",)


@pytest.mark.parametrize("notify, key", [
    ({"sinks": {"attr": {"type": "attrsvc", "url": "http://attr.example.org:8000"}}}, "notify.sinks.attr.url"),
    ({"sinks": {"attr": {"type": "attrsvc"}}}, "notify.sinks.attr.url"),
    ({"sinks": {"a": {"type": "attrsvc", "url": "http://localhost:1"}, "b": {"type": "attrsvc",
                                                                         "url": "http://localhost:2"}}},
     "notify.sinks.b"),
    ({"sinks": {"attr": {"type": "attrsvc", "url": "http://localhost:8000"},
                "phone": {"type": "ntfy", "url": "https://ntfy.sh/t"}},
      "routes": [{"sinks": ["phone", "attr"]}]}, "notify.routes[0].sinks"),
])
def test_bad_attrsvc_config_is_one_error_naming_the_key(notify, key):
    from core.notify.discord import validate_webhook_url

    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_config(json.dumps({"notify": notify}), "config.json", validate_webhook_url)
