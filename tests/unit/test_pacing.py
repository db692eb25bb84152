"""core.notify.pacing: many processes, one webhook, no 429 storm and no lost message.

`Pacer.run(destination, attempt)` waits for the destination's turn, makes the attempt once and
records it (with the pause the service asked for, `Outcome.pace`); retrying is the outbox's job.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import select
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from filelock import FileLock

from core.notify.discord import DiscordSink
from core.notify.outbox import Answer, Outcome
from core.notify.pacing import (
    MAX_PAUSE,
    WINDOW,
    Pacer,
    next_send_time,
    parse_pace_state,
    record_send,
    webhook_key,
)
from tests.discord_receiver import DiscordReceiver, parse_rate_limit
from tests.support import FakeClock, FakeSink

ROOT = Path(__file__).resolve().parents[2]
URL = "https://discord.com/api/webhooks/123456789012345678/s3cret-T0ken_abcdefghijklmnopqrstuvwxyz"
TOKEN = URL.rsplit("/", 1)[1]


def near(expected: Any) -> Any:
    """Equal within a microsecond (pytest.approx alone would allow 1 s around an epoch time)."""
    return pytest.approx(expected, rel=0, abs=1e-6)


def delivered(pace: float = 0.0) -> Outcome:
    """A sink's answer: delivered, and (with `pace`) asked to pause before the next message."""
    return Outcome(Answer.DELIVERED, "delivered", pace=pace)


def fake_sink(clock: FakeClock, paces: Optional[List[float]] = None, duration: float = 0.0) -> FakeSink:
    """A sink whose attempts take `duration` on the fake clock and answer with the given pacing hints."""
    return FakeSink("hook", [delivered(p) for p in paces or [0.0]], clock=clock, duration=duration)


def pacer(folder: Path, clock: FakeClock, **options: Any) -> Pacer:
    return Pacer(str(folder), clock=clock.time, sleep=clock.sleep, **options)


def send(paced: Pacer, sink: FakeSink, content: str, destination: str = URL) -> Outcome:
    """One paced attempt of `sink` (its payload says which message it was)."""
    return paced.run(destination, lambda: sink.deliver({"content": content}, 10.0))


# ------------------------------------------------------------- next_send_time


@pytest.mark.parametrize(
    "state, now, expected",
    [
        ({}, 100.0, 100.0),
        ({"next_allowed_at": 103.0}, 100.0, 103.0),
        ({"next_allowed_at": 90.0}, 100.0, 100.0),
        ({"recent": [99.8]}, 100.0, 100.3),  # last send + min_spacing, even without next_allowed_at
        ({"recent": [99.8], "next_allowed_at": 104.0}, 100.0, 104.0),
        ({"recent": [50.0, 99.0]}, 100.0, 100.0),
        # 3 per minute: the 3rd most recent send (at 70) reopens the window at 130
        ({"recent": [70.0, 80.0, 90.0]}, 100.0, 130.0),
        ({"recent": [90.0, 70.0, 80.0]}, 100.0, 130.0),  # order does not matter
        ({"recent": [40.0, 70.0, 80.0, 90.0]}, 100.0, 130.0),  # only the newest 3 count
        ({"recent": [10.0, 20.0, 30.0]}, 100.0, 100.0),  # the window has passed
        ({"recent": [80.0, 90.0]}, 100.0, 100.0),  # below the limit
        # values a damaged file could hold are ignored
        ({"next_allowed_at": "soon", "recent": ["x", None, True, float("nan"), 99.9]}, 100.0, 100.4),
        ({"next_allowed_at": float("inf")}, 100.0, 100.0),
        ({"recent": "not a list"}, 100.0, 100.0),
    ],
)
def test_next_send_time(state: Dict[str, Any], now: float, expected: float) -> None:
    assert next_send_time(state, now, 0.5, 3) == near(expected)


def test_next_send_time_is_never_before_now() -> None:
    for state in ({}, {"next_allowed_at": 0.0}, {"recent": [1.0, 2.0, 3.0]}):
        assert next_send_time(state, 5000.0, 2.0, 1) >= 5000.0


def test_record_send_spaces_by_min_spacing_or_the_servers_hint() -> None:
    assert record_send({}, 100.0, 0.0, 0.5)["next_allowed_at"] == 100.5
    assert record_send({}, 100.0, 3.25, 0.5)["next_allowed_at"] == 103.25
    assert record_send({}, 100.0, 0.1, 0.5)["next_allowed_at"] == 100.5  # a hint never shortens the spacing
    assert record_send({}, 100.0, float("nan"), 0.5)["next_allowed_at"] == 100.5
    assert record_send({}, 100.0, -4.0, 0.5)["next_allowed_at"] == 100.5


def test_record_send_keeps_only_the_last_minute() -> None:
    state = {"recent": [100.0 - WINDOW - 1, 100.0 - WINDOW, 50.0, 99.0, 500.0, "x"], "next_allowed_at": 1.0}
    new = record_send(state, 100.0, 0.0, 0.5)
    # older than the window and "future" sends (the clock was set back) are dropped
    assert new["recent"] == [50.0, 99.0, 100.0]
    assert new["schema_version"] == 1 and new["updated_at"] == 100.0
    assert state["recent"][0] == 100.0 - WINDOW - 1  # the input is not changed


@pytest.mark.parametrize(
    "text",
    ["", "{", "null", "[1, 2]", '"text"', '{"next_allowed_at": "later", "recent": {"a": 1}}', "\x00\x01",
     '{"next_allowed_at": 1e999, "recent": [NaN, Infinity, ' + "9" * 400 + "]}"],
)
def test_parse_pace_state_treats_damage_as_empty(text: str) -> None:
    assert parse_pace_state(text) == {}


def test_parse_pace_state_keeps_good_values() -> None:
    text = json.dumps({"schema_version": 1, "next_allowed_at": 12.5, "recent": [3, "x", 1.5], "other": 1})
    assert parse_pace_state(text) == {"next_allowed_at": 12.5, "recent": [1.5, 3.0]}


# ---------------------------------------------------------- pacer, faked time


def test_run_makes_the_attempt_once_and_returns_its_outcome(tmp_path: Path) -> None:
    clock = FakeClock()
    answer = Outcome(Answer.RETRY, "server error HTTP 503")
    calls: List[float] = []

    def attempt() -> Outcome:
        calls.append(clock.now)
        return answer

    assert pacer(tmp_path, clock).run(URL, attempt) is answer
    assert calls == [clock.now] and clock.sleeps == []


def test_back_to_back_sends_are_spaced(tmp_path: Path) -> None:
    clock = FakeClock()
    sink = fake_sink(clock, duration=0.1)
    paced = pacer(tmp_path, clock, min_spacing=0.5)
    start = clock.now
    for n in range(4):
        assert send(paced, sink, str(n)).answer is Answer.DELIVERED
    # each send waits 0.5 s after the previous one finished (0.1 s later than it started)
    assert sink.times == near([start, start + 0.6, start + 1.2, start + 1.8])
    assert [payload["content"] for payload in sink.attempts] == ["0", "1", "2", "3"]


def test_pacers_in_the_same_folder_share_the_pace(tmp_path: Path) -> None:
    """Two pacer objects stand for two daemon processes: the state lives in the folder."""
    clock = FakeClock()
    sink = fake_sink(clock)
    send(pacer(tmp_path, clock, min_spacing=2.0), sink, "a")
    send(pacer(tmp_path, clock, min_spacing=2.0), sink, "b")
    assert sink.times[1] - sink.times[0] == near(2.0)


def test_pacers_in_different_folders_do_not(tmp_path: Path) -> None:
    """The control for the test above."""
    clock = FakeClock()
    sink = fake_sink(clock)
    send(pacer(tmp_path / "one", clock, min_spacing=2.0), sink, "a")
    send(pacer(tmp_path / "two", clock, min_spacing=2.0), sink, "b")
    assert sink.times[1] == sink.times[0] and clock.sleeps == []


def test_an_empty_bucket_hint_pushes_the_next_send_back(tmp_path: Path) -> None:
    clock = FakeClock()
    sink = fake_sink(clock, paces=[4.0, 0.0])
    paced = pacer(tmp_path, clock, min_spacing=0.5)
    for n in range(3):
        send(paced, sink, str(n))
    assert sink.times[1] - sink.times[0] == near(4.0)
    assert sink.times[2] - sink.times[1] == near(0.5)


def test_a_rate_limited_attempt_paces_the_next_one_too(tmp_path: Path) -> None:
    """A 429's Retry-After is both the outbox's retry time and the destination's pause for everyone."""
    clock = FakeClock()
    sink = FakeSink("hook", [Outcome(Answer.RETRY, "rate limited for 7s", retry_after=7.0, pace=7.0), "delivered"],
                    clock=clock)
    paced = pacer(tmp_path, clock, min_spacing=0.5)
    assert send(paced, sink, "a").answer is Answer.RETRY
    assert send(paced, sink, "b").answer is Answer.DELIVERED
    assert sink.times[1] - sink.times[0] == near(7.0)


def test_no_more_than_per_minute_sends_in_any_60_seconds(tmp_path: Path) -> None:
    clock = FakeClock()
    sink = fake_sink(clock)
    paced = pacer(tmp_path, clock, min_spacing=0.5, per_minute=25)
    for n in range(60):
        send(paced, sink, str(n))
    times = sink.times
    assert len(times) == 60
    for i, first in enumerate(times):
        assert sum(1 for t in times[i:] if t < first + WINDOW) <= 25
    assert times[25] - times[0] == near(WINDOW)  # the 26th waits for the window


def test_webhooks_are_paced_independently(tmp_path: Path) -> None:
    clock = FakeClock()
    sink = fake_sink(clock, paces=[30.0])
    paced = pacer(tmp_path, clock)
    send(paced, sink, "a")
    send(paced, sink, "b", destination=URL + "-other")
    assert clock.sleeps == [] and sink.times[0] == sink.times[1]


def test_a_huge_hint_is_capped(tmp_path: Path) -> None:
    clock = FakeClock()
    sink = fake_sink(clock, paces=[10 * MAX_PAUSE])
    paced = pacer(tmp_path, clock)
    send(paced, sink, "a")
    send(paced, sink, "b")
    assert clock.sleeps == [near(MAX_PAUSE)]


@pytest.mark.parametrize("hint", [-5.0, math.nan, math.inf])
def test_a_nonsense_hint_counts_as_none(tmp_path: Path, hint: float) -> None:
    clock = FakeClock()
    sink = fake_sink(clock, paces=[hint, 0.0])
    paced = pacer(tmp_path, clock, min_spacing=0.5)
    send(paced, sink, "a")
    send(paced, sink, "b")
    assert clock.sleeps == [near(0.5)]


def test_state_files_are_named_by_hash_and_never_hold_the_url(tmp_path: Path) -> None:
    clock = FakeClock()
    send(pacer(tmp_path, clock), fake_sink(clock, paces=[1.5]), "a")
    key = hashlib.sha256(URL.encode()).hexdigest()[:16]
    assert webhook_key(URL) == key
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"pace-{key}.json", f"pace-{key}.lock"]
    text = (tmp_path / f"pace-{key}.json").read_text()
    assert TOKEN not in text and "discord.com" not in text and "webhooks" not in text
    state = json.loads(text)
    assert state["next_allowed_at"] == near(clock.now + 1.5)
    assert state["recent"] == [clock.now]
    assert (tmp_path / f"pace-{key}.json").stat().st_mode & 0o077 == 0


def test_the_lock_file_stays_and_the_folder_is_created(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "pace"
    clock = FakeClock()
    paced = pacer(folder, clock)
    send(paced, fake_sink(clock), "a")
    send(paced, fake_sink(clock), "b")
    assert os.path.exists(paced.lock_path(URL))
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_corrupt_pace_file_counts_as_empty_and_is_rewritten(tmp_path: Path) -> None:
    clock = FakeClock()
    paced = pacer(tmp_path, clock)
    path = Path(paced.state_path(URL))
    path.write_bytes(b'{"next_allowed_at": 99999999999, "recent": [1, 2')
    sink = fake_sink(clock)
    send(paced, sink, "a")
    assert clock.sleeps == [] and len(sink.attempts) == 1
    assert json.loads(path.read_text())["recent"] == [clock.now]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_held_lock_delays_then_sends_anyway(tmp_path: Path) -> None:
    clock = FakeClock()
    paced = pacer(tmp_path, clock, lock_timeout=0.2)
    sink = fake_sink(clock)
    with FileLock(paced.lock_path(URL), timeout=1):
        outcome = send(paced, sink, "a")
    assert outcome.answer is Answer.DELIVERED and len(sink.attempts) == 1
    assert not os.path.exists(paced.state_path(URL))  # sent without the lock: not recorded


def test_waiters_queue_on_the_lock_while_one_sends(tmp_path: Path) -> None:
    """The lock is held during the attempt itself: a second one starts only after the first ends."""
    events: List[str] = []
    first_inside = threading.Event()
    release_first = threading.Event()

    def slow(content: str) -> Outcome:
        events.append(f"start {content}")
        if content == "a":
            first_inside.set()
            release_first.wait(5)
        events.append(f"end {content}")
        return delivered()

    paced = Pacer(str(tmp_path), min_spacing=0.0)
    worker = threading.Thread(target=paced.run, args=(URL, lambda: slow("a")))
    worker.start()
    assert first_inside.wait(5)
    second = threading.Thread(target=paced.run, args=(URL, lambda: slow("b")))
    second.start()
    second.join(0.3)
    assert second.is_alive() and events == ["start a"]  # waiting for the lock
    release_first.set()
    worker.join(5)
    second.join(5)
    assert events == ["start a", "end a", "start b", "end b"]


def test_an_unusable_folder_still_sends(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    clock = FakeClock()
    sink = fake_sink(clock)
    outcome = send(pacer(blocker, clock), sink, "a")
    assert outcome.answer is Answer.DELIVERED and len(sink.attempts) == 1


def test_a_failing_attempt_is_recorded_and_releases_the_lock(tmp_path: Path) -> None:
    clock = FakeClock()
    paced = pacer(tmp_path, clock, min_spacing=1.0)

    def broken() -> Outcome:
        raise RuntimeError("bug in the sink")

    with pytest.raises(RuntimeError):
        paced.run(URL, broken)
    sink = fake_sink(clock)
    send(paced, sink, "b")  # would hang for lock_timeout if the lock were kept
    assert clock.sleeps == [near(1.0)] and len(sink.attempts) == 1


@pytest.mark.parametrize(
    "options",
    [{"min_spacing": -1}, {"min_spacing": math.nan}, {"per_minute": 0}, {"per_minute": 2.5},
     {"per_minute": True}, {"lock_timeout": -1}],
)
def test_bad_settings_are_refused(tmp_path: Path, options: Dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Pacer(str(tmp_path), **options)


# ------------------------------------------- the receiver's rate-limit emulation


def post(url: str, body: Any = None, *, raw: Optional[bytes] = None) -> Tuple[int, Dict[str, str], Any]:
    """One request with the standard library: (status, headers, decoded JSON or None)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, headers, text = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, text = error.code, dict(error.headers), error.read()
    return status, headers, json.loads(text) if text else None


def test_rate_limit_emulation_is_off_by_default() -> None:
    with DiscordReceiver() as receiver:
        url = receiver.webhook_url()
        assert [post(url, {"content": "x"})[0] for _ in range(12)] == [204] * 12
        assert receiver.rate_limited() == 0 and receiver.rate_limit is None


def test_rate_limit_emulation_answers_like_discord() -> None:
    with DiscordReceiver(rate_limit=(3, 30.0)) as receiver:
        url = receiver.webhook_url("limited")
        answers = [post(url, {"content": f"m{n}"}) for n in range(3)]
        assert [status for status, _, _ in answers] == [204] * 3
        assert [h["X-RateLimit-Remaining"] for _, h, _ in answers] == ["2", "1", "0"]
        for _, headers, _ in answers:
            assert headers["X-RateLimit-Limit"] == "3"
            assert 0 < float(headers["X-RateLimit-Reset-After"]) <= 30
            assert float(headers["X-RateLimit-Reset"]) > time.time()
            assert headers["X-RateLimit-Bucket"] == answers[0][1]["X-RateLimit-Bucket"]
        status, headers, body = post(url, {"content": "one too many"})
        assert status == 429
        assert set(body) == {"message", "retry_after", "global"} and body["global"] is False
        assert 0 < body["retry_after"] <= 30 and float(headers["Retry-After"]) == body["retry_after"]
        assert headers["X-RateLimit-Remaining"] == "0" and headers["X-RateLimit-Scope"] == "shared"
        assert [m["payload"]["content"] for m in receiver.messages()] == ["m0", "m1", "m2"]
        assert [h["result"] for h in receiver.hits()] == ["accepted"] * 3 + ["rate-limited"]
        assert receiver.rate_limited() == 1
        # each webhook has its own window
        assert post(receiver.webhook_url("other"), {"content": "x"})[0] == 204
        receiver.reset()
        assert receiver.rate_limited() == 0 and post(url, {"content": "again"})[0] == 204


@pytest.mark.slow
def test_the_window_reopens_and_refusals_count() -> None:
    with DiscordReceiver(rate_limit=(2, 0.3)) as receiver:
        url = receiver.webhook_url()
        assert post(url, {"content": "y" * 2001})[0] == 400  # a refused message uses up the window too
        status, headers, _ = post(url, {"content": "ok"})
        assert (status, headers["X-RateLimit-Remaining"]) == (204, "0")
        status, _, body = post(url, {"content": "late"})
        assert status == 429
        time.sleep(body["retry_after"])
        assert post(url, {"content": "late"})[0] == 204
        assert receiver.rate_limited() == 1


def test_scripted_429s_are_counted_too() -> None:
    with DiscordReceiver() as receiver:
        receiver.enqueue(("ratelimit", 0.1))
        assert post(receiver.webhook_url(), {"content": "x"})[0] == 429
        assert receiver.rate_limited() == 1


@pytest.mark.parametrize("good, expected", [("5/2", (5, 2.0)), ((5, 2.0), (5, 2.0)), ("1/0.5", (1, 0.5))])
def test_parse_rate_limit(good: Any, expected: Any) -> None:
    assert parse_rate_limit(good) == expected


@pytest.mark.parametrize("bad", ["5", "five/2", "5/0", "0/2", "5/-1", "5/nan", "5/inf", (5,), (2.5, 1), (True, 1), 5])
def test_parse_rate_limit_refuses_nonsense(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_rate_limit(bad)


def test_script_mode_rate_limit(tmp_path: Path) -> None:
    script = ROOT / "tests" / "discord_receiver.py"
    record = tmp_path / "received.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--rate-limit", "2/60", "--record", str(record)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 10)
        assert ready, "receiver printed nothing within 10 s"
        banner = process.stdout.readline()
        webhook = banner.split("example webhook: ")[1].rstrip(")\n")
        base = banner.split()[2]
        assert [post(webhook, {"content": str(n)})[0] for n in range(3)] == [204, 204, 429]
        assert post(base + "/_control/rate_limited")[2] == {"count": 1}
        deadline = time.monotonic() + 10
        while (not record.exists() or len(record.read_text().splitlines()) < 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        events = [json.loads(line)["event"] for line in record.read_text().splitlines()]
        assert events == ["accepted", "accepted", "ratelimited"]
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    refused = subprocess.run([sys.executable, str(script), "--rate-limit", "lots"], capture_output=True, text=True)
    assert refused.returncode == 2 and "N/SECONDS" in refused.stderr


# ------------------------------------------- real HTTP, real processes, real time


def test_without_the_pacer_sends_hit_the_limit_and_are_left_for_the_outbox() -> None:
    """The control for the test below: the receiver's limit does bite, and each 429 is one RETRY answer."""
    with DiscordReceiver(rate_limit=(2, 30.0)) as receiver:
        sink = DiscordSink("s", receiver.webhook_url("unpaced"))
        outcomes = [sink.deliver({"content": f"m{n}"}, 5) for n in range(5)]
        assert [o.answer for o in outcomes] == [Answer.DELIVERED] * 2 + [Answer.RETRY] * 3
        assert all(o.retry_after is not None and 0 < o.retry_after <= 30 for o in outcomes[2:])
        assert receiver.rate_limited() == 3
        assert [m["payload"]["content"] for m in receiver.messages("unpaced")] == ["m0", "m1"]


@pytest.mark.slow
def test_the_pacer_obeys_an_empty_bucket_from_the_headers(tmp_path: Path) -> None:
    """min_spacing 0: only X-RateLimit-Remaining 0 + X-RateLimit-Reset-After keep this under 2 per 0.5 s."""
    with DiscordReceiver(rate_limit=(2, 0.5)) as receiver:
        sink = DiscordSink("s", receiver.webhook_url("paced"))
        paced = Pacer(str(tmp_path), min_spacing=0.0)
        for n in range(5):
            payload = {"content": f"m{n}"}
            outcome = paced.run(sink.destination, functools.partial(sink.deliver, payload, 5))
            assert outcome.answer is Answer.DELIVERED
        assert receiver.rate_limited() == 0
        assert [m["payload"]["content"] for m in receiver.messages("paced")] == [f"m{n}" for n in range(5)]


# Each child is a job's deliverer: one FINAL message in its outbox, delivered by deliver_due with the
# real clock (sleeping until the outbox's next attempt time, like a monitor daemon). It imports
# everything (requests too) first, says "ready", waits for "go" on stdin, then delivers.
# "paced": every child shares one pacing folder (a user's state folder); "unpaced": each has its own,
# so each paces only itself, like processes that do not know of each other.
CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import requests
    from core.notify.deliver import deliver_due
    from core.notify.discord import DiscordSink
    from core.notify.events import Event, EventKind, Route
    from core.notify.message import Message
    from core.notify.outbox import next_attempt_at
    from tests.support import MemoryOutbox
    folder, url, number, mode = sys.argv[1:5]
    if mode == "unpaced":
        folder = os.path.join(folder, number)
    sink = DiscordSink("discord-error", url)
    box = MemoryOutbox()
    box.add(number, [Event(EventKind.FINAL, 1, Route.ERROR, Message(f"job {number} ended"))], time.time())
    print("ready", flush=True)
    sys.stdin.readline()
    while True:
        deliver_due(box, {sink.name: sink}, lambda route: (sink.name,), pacer_folder=folder, owner=f"child:{number}")
        at = next_attempt_at(box.load_outbox())
        if at is None:
            break
        time.sleep(max(0.0, at - time.time()))
    [entry] = box.load_outbox()
    delivery = entry.deliveries[sink.name]
    print(json.dumps({"status": delivery.status.value, "attempts": delivery.attempts}), flush=True)
    """
)


def burst(folder: Path, url: str, count: int, mode: str) -> List[Dict[str, Any]]:
    """Start ``count`` deliverer processes, release them together, return what each reported."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(folder), url, str(n), mode],
            cwd=str(ROOT), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n in range(count)
    ]
    try:
        for child in children:
            ready, _, _ = select.select([child.stdout], [], [], 30)
            assert ready and child.stdout.readline().strip() == "ready", child.stderr.read()
        for child in children:  # the burst: every process is past its imports and starts now
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def titles(receiver: DiscordReceiver, webhook: str) -> List[str]:
    return sorted(m["payload"]["embeds"][0]["title"] for m in receiver.messages(webhook))


BURST = 12  # 12 x 0.5 s of spacing: ~6 s of sending, plus the processes' start-up


@pytest.mark.slow
def test_a_burst_from_separate_processes_arrives_once_each_without_429(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    with DiscordReceiver(rate_limit=(5, 2.0)) as receiver:
        url = receiver.webhook_url("burst")
        token = url.rsplit("/", 1)[1]
        results = burst(folder, url, BURST, "paced")
        assert results == [{"status": "delivered", "attempts": 1}] * BURST
        assert receiver.rate_limited() == 0
        assert {h["result"] for h in receiver.hits()} == {"accepted"}
        assert titles(receiver, "burst") == sorted(f"job {n} ended" for n in range(BURST))
    key = webhook_key(url)
    assert sorted(p.name for p in folder.iterdir()) == [f"pace-{key}.json", f"pace-{key}.lock"]
    text = (folder / f"pace-{key}.json").read_text()
    assert url not in text and token not in text and "/api/webhooks/" not in text
    assert len(json.loads(text)["recent"]) == BURST


@pytest.mark.slow
def test_the_same_burst_without_shared_pacing_gets_429s_and_the_outbox_still_delivers_once(tmp_path: Path) -> None:
    """The control: the burst test above would fail if the shared pacing did nothing."""
    with DiscordReceiver(rate_limit=(5, 2.0)) as receiver:
        url = receiver.webhook_url("storm")
        results = burst(tmp_path, url, BURST, "unpaced")
        # Released together, all 12 land in the first 2 s window, of which 5 fit: 7 or more 429s
        # were measured. Only "some" is asserted, so a very slow machine cannot make this flaky.
        assert receiver.rate_limited() > 0
        # the outbox's retry after Retry-After still delivers each message exactly once
        assert [r["status"] for r in results] == ["delivered"] * BURST
        assert titles(receiver, "storm") == sorted(f"job {n} ended" for n in range(BURST))
        assert sum(r["attempts"] for r in results) == BURST + receiver.rate_limited()  # each 429: one retry
