"""tests/discord_receiver.py: the local Discord stand-in must be as strict and as faulty as asked."""
from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest

from tests.discord_receiver import DiscordReceiver, parse_behaviour, validate_payload

ROOT = Path(__file__).resolve().parents[2]


def call(
    url: str, body: Any = None, *, raw: Optional[bytes] = None, method: Optional[str] = None, timeout: float = 5
) -> Tuple[int, Dict[str, str], Any]:
    """One HTTP request with the standard library; returns (status, headers, decoded JSON or None)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, text = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, text = error.code, dict(error.headers), error.read()
    return status, headers, json.loads(text) if text else None


def embed(**extra: Any) -> Dict[str, Any]:
    return {"embeds": [{"title": "Job 1", "color": 0x2ECC71, **extra}]}


# ------------------------------------------------------------------- happy path


def test_accepts_and_answers_204(receiver: DiscordReceiver) -> None:
    url = receiver.webhook_url("success")
    assert url.startswith(receiver.base_url + "/api/webhooks/")
    status, _, body = call(url, embed())
    assert (status, body) == (204, None)
    [message] = receiver.messages()
    assert message["webhook"] == "success"
    assert message["webhook_id"] == url.split("/")[-2]
    assert message["query"] == {}
    assert message["payload"] == embed()


def test_wait_true_answers_200_with_message(receiver: DiscordReceiver) -> None:
    status, headers, body = call(receiver.webhook_url("success") + "?wait=true", {"content": "hi", "username": "jm"})
    assert status == 200
    assert body["id"].isdigit() and body["content"] == "hi" and body["author"]["username"] == "jm"
    assert receiver.messages()[0]["message_id"] == body["id"]
    assert receiver.messages()[0]["query"] == {"wait": "true"}
    assert headers["X-RateLimit-Remaining"] != "0"


def test_webhook_urls_are_stable_per_name_and_filterable(receiver: DiscordReceiver) -> None:
    first, other = receiver.webhook_url("a"), receiver.webhook_url("b")
    assert receiver.webhook_url("a") == first and first != other
    call(first, embed())
    call(other, embed())
    call(other, embed())
    assert len(receiver.messages("a")) == 1 and len(receiver.messages("b")) == 2
    assert len(receiver.messages(other.split("/")[-2])) == 2
    assert len(receiver.messages()) == 3


def test_any_id_and_token_are_accepted(receiver: DiscordReceiver) -> None:
    status, _, _ = call(receiver.base_url + "/api/v10/webhooks/42/anything-at-all", {"content": "x"})
    assert status == 204
    assert receiver.messages()[0]["webhook"] == "42"


# ------------------------------------------------------------------- refusals


@pytest.mark.parametrize("path", ["/", "/api/webhooks/42", "/api/webhooks/abc/tok", "/api/webhooks/1/t/extra"])
def test_unknown_paths_are_unknown_webhooks(receiver: DiscordReceiver, path: str) -> None:
    assert call(receiver.base_url + path, {"content": "x"})[::2] == (404, {"message": "Unknown Webhook", "code": 10015})
    assert receiver.messages() == []


def test_get_on_a_webhook_is_not_allowed(receiver: DiscordReceiver) -> None:
    assert call(receiver.webhook_url(), method="GET")[0] == 405


def test_deleted_and_unauthorised_webhooks() -> None:
    with DiscordReceiver(deleted={"old"}, unauthorised={"7"}) as server:
        assert call(server.webhook_url("old"), embed())[::2] == (404, {"message": "Unknown Webhook", "code": 10015})
        status, _, body = call(server.base_url + "/api/webhooks/7/tok", embed())
        assert (status, body["code"]) == (401, 50027)
        url = server.webhook_url("later")
        assert call(url, embed())[0] == 204
        server.delete_webhook("later")
        assert call(url, embed())[0] == 404
        server.revoke_webhook(url.split("/")[-2])
        assert len(server.messages()) == 1


def fields(count: int, name: str = "n", value: str = "v") -> Dict[str, Any]:
    return {"fields": [{"name": name, "value": value} for _ in range(count)]}


INVALID = [
    ({"content": "x" * 2001}, "content: Must be 2000 or fewer in length."),
    ({"embeds": [{"title": "t"}] * 11}, "embeds: Must be 10 or fewer in length."),
    (embed(title="x" * 257), "embeds.0.title: Must be 256 or fewer in length."),
    (embed(description="x" * 4097), "embeds.0.description: Must be 4096 or fewer in length."),
    (embed(**fields(26)), "embeds.0.fields: Must be 25 or fewer in length."),
    (embed(**fields(1, name="x" * 257)), "embeds.0.fields.0.name: Must be 256 or fewer in length."),
    (embed(**fields(1, name="")), "embeds.0.fields.0.name: This field is required"),
    (embed(**fields(1, value="x" * 1025)), "embeds.0.fields.0.value: Must be 1024 or fewer in length."),
    (embed(**fields(1, value="")), "embeds.0.fields.0.value: This field is required"),
    (embed(**fields(1, value="  \n")), "embeds.0.fields.0.value: This field is required"),
    (embed(footer={"text": "x" * 2049}), "embeds.0.footer.text: Must be 2048 or fewer in length."),
    (embed(author={"name": "x" * 257}), "embeds.0.author.name: Must be 256 or fewer in length."),
    (embed(color=-1), "embeds.0.color: int value should be between 0 and 16777215."),
    (embed(color=0x1000000), "embeds.0.color: int value should be between 0 and 16777215."),
    (embed(color="red"), "embeds.0.color: int value should be between 0 and 16777215."),
    (embed(color=True), "embeds.0.color: int value should be between 0 and 16777215."),
    (embed(url="not a url"), "embeds.0.url: Not a well formed URL."),
    (embed(timestamp="yesterday"), "embeds.0.timestamp: Could not parse timestamp."),
    (embed(title=5), "embeds.0.title: Could not interpret value as string."),
    ({"embeds": [{"description": "x" * 4000}, {"description": "y" * 2001}]},
     "embeds: Embed size exceeds maximum size of 6000"),
    (embed(description="x" * 3000, footer={"text": "f" * 2000}, **fields(1, name="n" * 256, value="v" * 1000)),
     "embeds: Embed size exceeds maximum size of 6000"),
    ({"content": "x", "username": "u" * 81}, "username: Must be 80 or fewer in length."),
    ({"content": "x", "allowed_mentions": {"parse": ["everybody"]}}, "allowed_mentions: Invalid allowed_mentions."),
    ({"embeds": ["not an object"]}, "embeds.0: Only dictionaries may be used in a ModelType"),
    ([{"content": "x"}], "body: Only dictionaries may be used in a ModelType"),
]


@pytest.mark.parametrize("payload, reason", INVALID)
def test_invalid_payloads_get_invalid_form_body(receiver: DiscordReceiver, payload: Any, reason: str) -> None:
    status, _, body = call(receiver.webhook_url("v"), payload)
    assert status == 400
    assert (body["message"], body["code"]) == ("Invalid Form Body", 50035)
    assert isinstance(body["errors"], dict) and body["errors"]
    [rejected] = receiver.rejected()
    assert reason in rejected["reasons"]
    assert rejected["webhook"] == "v" and rejected["payload"] == payload
    assert receiver.messages() == []


def test_errors_object_is_nested_like_discords() -> None:
    from tests.discord_receiver import _errors_tree

    tree = _errors_tree(validate_payload(embed(title="x" * 300)))
    assert tree == {"embeds": {"0": {"title": {"_errors": [
        {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 256 or fewer in length."}
    ]}}}}


VALID_AT_LIMITS = [
    {"content": "x" * 2000},
    {"embeds": [{"title": "t"}] * 10},
    embed(title="x" * 256, description="d" * 4096),
    embed(**fields(25, name="n" * 100, value="v" * 100)),
    embed(**fields(1, name="n" * 256, value="v" * 1024)),
    embed(footer={"text": "f" * 2048}, author={"name": "a" * 256}),
    embed(color=0) | {"username": "u" * 80},
    embed(color=0xFFFFFF, timestamp="2024-05-01T12:00:00Z", url="https://example.org"),
    {"embeds": [{"description": "x" * 4000}, {"description": "y" * 2000}]},
]


@pytest.mark.parametrize("payload", VALID_AT_LIMITS)
def test_payloads_exactly_at_the_limits_are_accepted(receiver: DiscordReceiver, payload: Dict[str, Any]) -> None:
    assert validate_payload(payload) == []
    assert call(receiver.webhook_url(), payload)[0] == 204
    assert receiver.rejected() == []


def test_empty_message_is_refused(receiver: DiscordReceiver) -> None:
    for payload in ({}, {"content": ""}, {"embeds": []}, {"content": "   "}):
        status, _, body = call(receiver.webhook_url(), payload)
        assert (status, body) == (400, {"message": "Cannot send an empty message", "code": 50006})
    assert len(receiver.rejected()) == 4 and receiver.messages() == []


def test_invalid_json_is_refused(receiver: DiscordReceiver) -> None:
    status, _, body = call(receiver.webhook_url(), raw=b"{not json")
    assert (status, body["code"]) == (400, 50109)
    assert receiver.rejected()[0]["reasons"] == ["body: not valid JSON"]


# ------------------------------------------------------------------ behaviours


def test_behaviours_are_used_in_order_then_normal_service(receiver: DiscordReceiver) -> None:
    receiver.enqueue(("status", 500), ("status", 502))
    url = receiver.webhook_url()
    assert [call(url, embed())[0] for _ in range(3)] == [500, 502, 204]
    assert [hit["result"] for hit in receiver.hits()] == ["status 500", "status 502", "accepted"]
    assert len(receiver.messages()) == 1 and receiver.pending() == 0


def test_ratelimit_answers_like_discord(receiver: DiscordReceiver) -> None:
    receiver.enqueue(("ratelimit", 2.5))
    status, headers, body = call(receiver.webhook_url(), embed())
    assert status == 429
    assert headers["Retry-After"] == "2.5"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert body == {"message": "You are being rate limited.", "retry_after": 2.5, "global": False}
    assert receiver.messages() == []


def test_bucket_empty_accepts_but_signals_pause(receiver: DiscordReceiver) -> None:
    receiver.enqueue(("bucket_empty", 4))
    status, headers, _ = call(receiver.webhook_url(), embed())
    assert status == 204
    assert (headers["X-RateLimit-Remaining"], headers["X-RateLimit-Reset-After"]) == ("0", "4")
    assert len(receiver.messages()) == 1


def test_close_drops_the_connection(receiver: DiscordReceiver) -> None:
    receiver.enqueue(("close",))
    with pytest.raises((urllib.error.URLError, HTTPException, ConnectionError)):
        call(receiver.webhook_url(), embed())
    assert receiver.messages() == []
    assert call(receiver.webhook_url(), embed())[0] == 204


def test_hang_times_out_the_client_and_accepts_nothing(receiver: DiscordReceiver) -> None:
    receiver.enqueue(("hang", 0.6))
    started = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError, urllib.error.URLError)):
        call(receiver.webhook_url(), embed(), timeout=0.2)
    assert time.monotonic() - started < 0.6
    assert receiver.wait_idle(timeout=5)
    assert receiver.messages() == [] and receiver.rejected() == []
    assert [hit["result"] for hit in receiver.hits()] == ["hang 0.6s"]


def test_hang_that_outlasts_a_patient_client_still_accepts_nothing(receiver: DiscordReceiver) -> None:
    receiver.enqueue(("hang", 0.2))
    with pytest.raises((urllib.error.URLError, HTTPException, ConnectionError)):
        call(receiver.webhook_url(), embed(), timeout=5)
    assert receiver.messages() == []


def test_stop_releases_a_hanging_request() -> None:
    server = DiscordReceiver()
    server.start()
    server.enqueue(("hang", 60))
    outcome = []

    def client_call() -> None:
        try:
            outcome.append(call(server.webhook_url(), embed(), timeout=60))
        except (urllib.error.URLError, HTTPException, ConnectionError) as exc:
            outcome.append(exc)

    client = threading.Thread(target=client_call)
    client.start()
    deadline = time.monotonic() + 5
    while not server.hits() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    client.join(timeout=10)
    assert not client.is_alive()
    assert time.monotonic() - started < 5
    assert len(outcome) == 1 and isinstance(outcome[0], Exception)
    assert server.messages() == []


@pytest.mark.parametrize(
    "bad", [("bogus",), ("status", 200), ("status", "500"), ("hang", -1), ("close", 1), ("ratelimit",), (), 5]
)
def test_bad_behaviours_are_refused_before_queueing(receiver: DiscordReceiver, bad: Any) -> None:
    with pytest.raises(ValueError):
        receiver.enqueue(("status", 500), bad)
    assert receiver.pending() == 0


def test_parse_behaviour_accepts_json_lists() -> None:
    assert parse_behaviour(["ratelimit", 1]) == ("ratelimit", 1.0)
    assert parse_behaviour(["close"]) == ("close",)
    assert parse_behaviour("close") == ("close",)


# ------------------------------------------------------------ waiting and threads


def test_wait_for_returns_when_messages_arrive(receiver: DiscordReceiver) -> None:
    url = receiver.webhook_url("late")
    timer = threading.Timer(0.2, call, args=(url, embed()))
    timer.start()
    found = receiver.wait_for(1, timeout=5, webhook="late")
    timer.join()
    assert len(found) == 1 and found[0]["webhook"] == "late"


def test_wait_for_times_out_with_a_count(receiver: DiscordReceiver) -> None:
    call(receiver.webhook_url(), embed())
    with pytest.raises(TimeoutError, match="got 1 of 2"):
        receiver.wait_for(2, timeout=0.2)


def test_concurrent_posts_are_all_recorded(receiver: DiscordReceiver) -> None:
    url = receiver.webhook_url() + "?wait=true"
    ids = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            status, _, body = call(url, embed())
            assert status == 200
            with lock:
                ids.append(body["id"])

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 100 and len(set(ids)) == 100
    assert sorted(m["message_id"] for m in receiver.messages()) == sorted(ids)


def test_binds_loopback_on_a_free_port_by_default(receiver: DiscordReceiver) -> None:
    assert receiver.base_url.startswith("http://127.0.0.1:")
    assert not receiver.base_url.endswith(":0")


# --------------------------------------------------------------- HTTP control


def test_control_over_http(receiver: DiscordReceiver) -> None:
    base = receiver.base_url
    assert call(base + "/_control/enqueue", [["status", 503], ["ratelimit", 0.5]])[::2] == (200, {"pending": 2})
    url = call(base + "/_control/webhook_url?name=demo")[2]["url"]
    assert url == receiver.webhook_url("demo")
    assert call(url, embed())[0] == 503
    assert call(url, embed())[0] == 429
    assert call(url, embed())[0] == 204
    status, _, messages = call(base + "/_control/messages?webhook=demo")
    assert status == 200 and [m["payload"] for m in messages] == [embed()]
    call(url, {"content": "x" * 3000})
    assert len(call(base + "/_control/rejected")[2]) == 1
    assert call(base + "/_control/reset", raw=b"")[0] == 200
    assert call(base + "/_control/messages")[2] == [] and receiver.rejected() == []


@pytest.mark.parametrize("raw", [b"[[\"nope\"]]", b"{\"status\": 500}", b"not json"])
def test_control_enqueue_refuses_bad_input(receiver: DiscordReceiver, raw: bytes) -> None:
    status, _, body = call(receiver.base_url + "/_control/enqueue", raw=raw)
    assert status == 400 and body["message"]
    assert receiver.pending() == 0


def test_unknown_control_request(receiver: DiscordReceiver) -> None:
    assert call(receiver.base_url + "/_control/nothing")[0] == 404


# ------------------------------------------------------------------ script mode


def test_script_prints_and_records(tmp_path: Path) -> None:
    record = tmp_path / "received.jsonl"
    script = ROOT / "tests" / "discord_receiver.py"
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--print", "--record", str(record)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 10)
        assert ready, "receiver printed nothing within 10 s"
        banner = process.stdout.readline()
        assert banner.startswith("listening on http://127.0.0.1:")
        webhook = banner.split("example webhook: ")[1].rstrip(")\n")
        payload = {"embeds": [{"title": "Job 7 failed", "color": 0xE74C3C, "description": "exit 1",
                               "fields": [{"name": "State", "value": "FAILED"}], "footer": {"text": "jobmon"}}]}
        assert call(webhook + "?wait=true", payload)[0] == 200
        assert call(webhook, {"content": "y" * 2001})[0] == 400
        deadline = time.monotonic() + 10
        while (not record.exists() or len(record.read_text().splitlines()) < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        accepted, rejected = [json.loads(line) for line in record.read_text().splitlines()]
        assert accepted["event"] == "accepted" and accepted["payload"] == payload and accepted["webhook"] == "demo"
        assert rejected["event"] == "rejected" and rejected["reasons"] == ["content: Must be 2000 or fewer in length."]
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "[red] Job 7 failed" in out and "| exit 1" in out and "* State: FAILED" in out and "-- jobmon" in out
    assert "! content: Must be 2000 or fewer in length." in out
