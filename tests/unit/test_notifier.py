"""core.notify.discord: payload limits and escaping, URL checks, and send() against a real local receiver."""
from __future__ import annotations

import random
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

import pytest
import requests

from core.errors import ConfigError
from core.notify.discord import (
    COLORS,
    Delivery,
    Field,
    Markdown,
    Message,
    escape_markdown,
    redact_url,
    render_payload,
    send,
    validate_webhook_url,
)
from tests.discord_receiver import DiscordReceiver, validate_payload

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "SeCrEtToKeN_abc-123XYZ"


def embed_of(payload: Dict[str, Any]) -> Dict[str, Any]:
    assert len(payload["embeds"]) == 1
    return payload["embeds"][0]


def embed_size(embed: Dict[str, Any]) -> int:
    """What Discord counts toward the 6000-character total."""
    return (
        len(embed.get("title", ""))
        + len(embed.get("description", ""))
        + len(embed.get("footer", {}).get("text", ""))
        + len(embed.get("author", {}).get("name", ""))
        + sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
    )


def assert_discord_accepts(payload: Dict[str, Any]) -> None:
    assert validate_payload(payload) == []
    assert embed_size(embed_of(payload)) <= 6000


# ------------------------------------------------------------------ render_payload


def test_basic_payload_shape() -> None:
    now = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    message = Message(
        title="Job 4242 finished",
        description="**COMPLETED** after 3 min",
        color="success",
        fields=(Field("State", "COMPLETED"), Field("Node", "cn01", inline=False)),
        footer="jobmon on login1",
        url="https://example.org/jobs/4242",
    )
    payload = render_payload(message, username="slurm-bot", now=now)
    embed = embed_of(payload)
    assert payload["allowed_mentions"] == {"parse": []}
    assert payload["username"] == "slurm-bot"
    assert "content" not in payload
    assert embed["title"] == "Job 4242 finished"
    assert embed["description"] == "**COMPLETED** after 3 min"
    assert embed["color"] == 0x2ECC71
    assert embed["timestamp"] == "2024-05-01T12:30:00+00:00"
    assert embed["fields"] == [
        {"name": "State", "value": "COMPLETED", "inline": True},
        {"name": "Node", "value": "cn01", "inline": False},
    ]
    assert embed["footer"] == {"text": "jobmon on login1"}
    assert embed["url"] == "https://example.org/jobs/4242"
    assert_discord_accepts(payload)


@pytest.mark.parametrize(
    "color, value",
    [("success", 0x2ECC71), ("failure", 0xE74C3C), ("warning", 0xE67E22), ("info", COLORS["info"])],
)
def test_colours(color: str, value: int) -> None:
    assert embed_of(render_payload(Message("t", color=color)))["color"] == value


def test_unknown_colour_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="colour"):
        Message("t", color="purple")


def test_timestamp_defaults_to_now_in_utc() -> None:
    stamp = datetime.fromisoformat(embed_of(render_payload(Message("t")))["timestamp"])
    assert stamp.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 5


def test_fields_list_is_frozen_into_a_tuple() -> None:
    fields = [Field("a", "b")]
    message = Message("t", fields=fields)  # type: ignore[arg-type]
    fields.append(Field("c", "d"))
    assert message.fields == (Field("a", "b"),)


def test_each_single_limit_is_truncated_with_marker() -> None:
    message = Message(
        title="T" * 1000,
        description="D" * 10000,
        fields=(Field("N" * 1000, "V" * 5000),),
        footer="F" * 5000,
    )
    payload = render_payload(message, username="U" * 200)
    embed = embed_of(payload)
    assert len(embed["title"]) == 256 and embed["title"].endswith("…")
    assert len(embed["fields"][0]["name"]) == 256 and embed["fields"][0]["name"].endswith("…")
    assert len(embed["fields"][0]["value"]) <= 1024 and embed["fields"][0]["value"].endswith("…")
    assert len(embed["description"]) <= 4096 and embed["description"].endswith("…")
    assert len(embed["footer"]["text"]) <= 2048
    assert len(payload["username"]) == 80
    assert_discord_accepts(payload)


def test_values_exactly_at_the_limits_are_untouched() -> None:
    message = Message(title="T" * 256, fields=(Field("N" * 256, "V" * 1024),), footer="F" * 2048)
    embed = embed_of(render_payload(message))
    assert embed["title"] == "T" * 256
    assert embed["fields"][0] == {"name": "N" * 256, "value": "V" * 1024, "inline": True}
    assert embed["footer"]["text"] == "F" * 2048


def test_thirty_fields_become_twenty_five() -> None:
    message = Message("t", fields=tuple(Field(f"f{i}", str(i)) for i in range(30)))
    embed = embed_of(render_payload(message))
    assert [f["name"] for f in embed["fields"]] == [f"f{i}" for i in range(25)]


def test_total_over_6000_shrinks_excerpt_first_keeping_fields() -> None:
    fields = tuple(Field(f"f{i}", "v" * 400) for i in range(10))  # 4000+ chars of fields
    message = Message("t", description="intro", fields=fields, excerpt="x" * 3000 + "\nLAST LINE")
    embed = embed_of(render_payload(message))
    assert [f["value"] for f in embed["fields"]] == ["v" * 400] * 10
    assert embed["description"].startswith("intro\n```\n…")
    assert embed["description"].endswith("LAST LINE\n```")
    assert embed_size(embed) == 6000


def test_total_over_6000_shrinks_field_values_after_the_excerpt() -> None:
    fields = tuple(Field(f"f{i}", ("short" if i == 0 else "w" * 1024)) for i in range(25))
    message = Message("T" * 256, fields=fields, excerpt="log\n" * 2000, footer="F" * 2048)
    payload = render_payload(message)
    embed = embed_of(payload)
    assert "description" not in embed  # the excerpt went first
    assert embed["title"] == "T" * 256 and embed["footer"]["text"] == "F" * 2048
    values = [f["value"] for f in embed["fields"]]
    assert values[0] == "short"  # longest values shrink, short ones survive
    assert all(v.endswith("…") for v in values[1:])
    assert embed_size(embed) <= 6000
    assert_discord_accepts(payload)


def test_pathological_input_still_fits() -> None:
    message = Message(
        title="t_*" * 500,
        description="d" * 9000,
        fields=tuple(Field("n*" * 300, "v_" * 900) for _ in range(30)),
        excerpt="e" * 50000,
        footer="f" * 9000,
    )
    assert_discord_accepts(render_payload(message))


@pytest.mark.parametrize("seed", range(40))
def test_random_messages_always_fit(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "ab *_~`|>#-\n@[]()\\é"

    def text(longest: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))

    message = Message(
        title=text(400),
        description=text(5000),
        fields=tuple(Field(text(300), text(1500), rng.random() < 0.5) for _ in range(rng.randint(0, 30))),
        excerpt=text(8000),
        footer=text(2500),
    )
    assert_discord_accepts(render_payload(message))


def test_excerpt_keeps_the_tail() -> None:
    excerpt = "FIRST LINE\n" + "middle\n" * 2000 + "Traceback: boom\nLAST LINE"
    description = embed_of(render_payload(Message("t", excerpt=excerpt)))["description"]
    assert len(description) <= 4096
    assert description.startswith("```\n…")
    assert description.endswith("Traceback: boom\nLAST LINE\n```")
    assert "FIRST LINE" not in description


def test_excerpt_goes_after_description_in_a_code_block() -> None:
    description = embed_of(render_payload(Message("t", description="Exit 1", excerpt="error: x\n\n")))["description"]
    assert description == "Exit 1\n```\nerror: x\n```"


@pytest.mark.parametrize("fence", ["```", "````", "`````", "``````", "```python"])
def test_backtick_runs_in_excerpt_cannot_close_the_block(fence: str) -> None:
    excerpt = f"before\n{fence}\n@everyone inside\n{fence}\nafter `x` ``y``"
    description = embed_of(render_payload(Message("t", excerpt=excerpt)))["description"]
    assert description.count("```") == 2  # only our own opening and closing fence
    assert description.startswith("```\n") and description.endswith("\n```")
    assert "``" not in description[3:-3]
    assert description.replace("\u200d", "")[4:-4] == excerpt


def test_everyone_in_excerpt_stays_but_cannot_ping() -> None:
    payload = render_payload(Message("t", excerpt="@everyone @here <@123> look"))
    assert "@everyone @here <@123> look" in embed_of(payload)["description"]
    assert payload["allowed_mentions"] == {"parse": []}


def test_empty_field_names_and_values_are_replaced() -> None:
    embed = embed_of(render_payload(Message("t", fields=(Field("", "x"), Field("State", ""), Field(" ", "\n")))))
    assert [(f["name"], f["value"]) for f in embed["fields"]] == [("—", "x"), ("State", "—"), ("—", "—")]


def test_plain_text_is_escaped_and_markdown_passes_through() -> None:
    message = Message(
        "run_*1*",
        description="**bold** stays",
        fields=(
            Field("Name", "my_job *v2* ~x~ `q` |a| [l](u) <@1>"),
            Field("# Head", "> quote\n- item\nin-line # ok"),
            Field("Log", Markdown("[open](https://example.org/x_y)")),
        ),
        footer="footer_*kept*",
    )
    embed = embed_of(render_payload(message))
    assert embed["title"] == r"run\_\*1\*"
    assert embed["description"] == "**bold** stays"
    assert embed["fields"][0]["value"] == r"my\_job \*v2\* \~x\~ \`q\` \|a\| \[l\](u) \<@1>"
    assert embed["fields"][1]["name"] == r"\# Head"
    assert embed["fields"][1]["value"] == "\\> quote\n\\- item\nin-line # ok"
    assert embed["fields"][2]["value"] == "[open](https://example.org/x_y)"
    assert embed["footer"]["text"] == "footer_*kept*"


def test_escape_markdown_round_trip_of_backslash() -> None:
    assert escape_markdown(r"C:\path_x") == r"C:\\path\_x"


def test_truncation_never_splits_an_escape() -> None:
    value = embed_of(render_payload(Message("t", fields=(Field("n", "*" * 2000),))))["fields"][0]["value"]
    assert len(value) <= 1024 and value.endswith("…")
    body = value[:-1]
    assert body == "\\*" * (len(body) // 2)


@pytest.mark.parametrize(
    "url, kept",
    [("https://example.org/x", True), ("http://127.0.0.1/x", True), ("javascript:alert(1)", False),
     ("not a url", False), ("", False), ("https://" + "a" * 3000, False)],
)
def test_embed_url_is_dropped_when_discord_would_refuse_it(url: str, kept: bool) -> None:
    assert ("url" in embed_of(render_payload(Message("t", url=url)))) is kept


def test_empty_title_and_description_are_omitted() -> None:
    embed = embed_of(render_payload(Message("", fields=(Field("a", "b"),))))
    assert "title" not in embed and "description" not in embed


# ------------------------------------------------------------------ URL handling


@pytest.mark.parametrize(
    "url",
    [
        f"https://discord.com/api/webhooks/123456789/{TOKEN}",
        f"https://discord.com/api/webhooks/123456789/{TOKEN}?thread_id=42",
        f"http://127.0.0.1:8765/api/webhooks/1/{TOKEN}",
        f"http://127.3.2.1/api/webhooks/1/{TOKEN}",
        f"http://localhost:8765/api/webhooks/1/{TOKEN}",
        f"http://LOCALHOST/api/webhooks/1/{TOKEN}",
        f"http://[::1]:8765/api/webhooks/1/{TOKEN}",
    ],
)
def test_valid_webhook_urls(url: str) -> None:
    assert validate_webhook_url(f"  {url}\n", name="webhooks.failure") == url


@pytest.mark.parametrize(
    "url, why",
    [
        (f"http://example.com/api/webhooks/1/{TOKEN}", "https"),
        (f"http://discord.com/api/webhooks/1/{TOKEN}", "https"),
        (f"http://10.0.0.1/api/webhooks/1/{TOKEN}", "https"),
        (f"ftp://discord.com/api/webhooks/1/{TOKEN}", "https"),
        (f"discord.com/api/webhooks/1/{TOKEN}", "https"),
        (f"garbage {TOKEN}", "spaces"),
        (f"https://discord.com/api/webhooks/1/{TOKEN}\nmore", "spaces"),
        ("", "empty"),
        ("   ", "empty"),
        ("https://", "host"),
        (f"https:///api/webhooks/1/{TOKEN}", "host"),
        (f"https://discord.com:99999/api/webhooks/1/{TOKEN}", "valid URL"),
        (f"https://[::1/api/webhooks/1/{TOKEN}", "valid URL"),
    ],
)
def test_invalid_webhook_urls(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_webhook_url(url, name="webhooks.failure")
    text = str(caught.value)
    assert text.startswith("webhooks.failure ")
    assert why in text
    assert "\n" not in text
    assert TOKEN not in text


@pytest.mark.parametrize(
    "url",
    [
        f"https://discord.com/api/webhooks/123456/{TOKEN}",
        f"https://discord.com/api/v10/webhooks/123456/{TOKEN}/github?wait=true",
        f"https://discord.com/api/webhooks/123456/{TOKEN}#frag",
        f"https://discord.com/api/webhooks/{TOKEN}",
        f"https://discord.com/api/webhooks/123456?token={TOKEN}",
        f"https://user:{TOKEN}@discord.com/api/webhooks/1/x",
        f"https://discord.com/{TOKEN}",
        f"https://discord.com?{TOKEN}",
        f"discord.com/api/webhooks/1/{TOKEN}",
        f"garbage {TOKEN}",
        f"http://[::1/{TOKEN}",
        f"https://discord.com:99999/{TOKEN}",
        f"ht!tp://x/{TOKEN}",
        f"https://bad host/{TOKEN}",
        TOKEN,
        "",
    ],
)
def test_redact_url_never_leaks_the_token(url: str) -> None:
    assert TOKEN not in redact_url(url)


def test_redact_url_keeps_what_helps_debugging() -> None:
    assert redact_url(f"https://discord.com/api/webhooks/123456/{TOKEN}?x=1") == "https://discord.com/api/webhooks/123456/****"
    assert redact_url(f"http://127.0.0.1:8765/api/v10/webhooks/9/{TOKEN}") == "http://127.0.0.1:8765/api/v10/webhooks/9/****"
    assert redact_url("https://example.org") == "https://example.org"


# -------------------------------------------------------------- send: real HTTP


class Sleeps(list):
    """An injected sleep that records the asked delays instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def simple_payload(title: str = "Job 1 done") -> Dict[str, Any]:
    return render_payload(Message(title, color="success", fields=(Field("State", "COMPLETED"),)))


def results(receiver: DiscordReceiver) -> List[str]:
    return [hit["result"] for hit in receiver.hits()]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_delivered_with_message_id(receiver: DiscordReceiver, sleeps: Sleeps) -> None:
    url = receiver.webhook_url("success")
    delivery = send(url, simple_payload(), sleep=sleeps)
    assert delivery == Delivery("delivered", 200, "delivered", 1, delivery.message_id, 0.0)
    [message] = receiver.messages("success")
    assert delivery.message_id == message["message_id"] and delivery.message_id.isdigit()
    assert message["query"] == {"wait": "true"}
    assert message["payload"]["embeds"][0]["title"] == "Job 1 done"
    assert sleeps == []


def test_wait_is_merged_with_an_existing_query(receiver: DiscordReceiver) -> None:
    delivery = send(receiver.webhook_url("t") + "?thread_id=77&wait=false", simple_payload(), sleep=Sleeps())
    assert delivery.outcome == "delivered"
    assert receiver.messages()[0]["query"] == {"thread_id": "77", "wait": "true"}


def test_204_counts_as_delivered(receiver: DiscordReceiver) -> None:
    def post_without_wait(url: str, **kwargs: Any) -> Any:
        return requests.post(url.replace("wait=true", "wait=false"), **kwargs)

    delivery = send(receiver.webhook_url(), simple_payload(), post=post_without_wait, sleep=Sleeps())
    assert (delivery.outcome, delivery.http_status, delivery.message_id) == ("delivered", 204, None)
    assert len(receiver.messages()) == 1


def test_rate_limited_then_delivered(receiver: DiscordReceiver, sleeps: Sleeps) -> None:
    receiver.enqueue(("ratelimit", 1.5))
    delivery = send(receiver.webhook_url(), simple_payload(), sleep=sleeps)
    assert (delivery.outcome, delivery.attempts) == ("delivered", 2)
    assert sleeps == [1.5]
    assert results(receiver) == ["ratelimit 1.5s", "accepted"]
    assert len(receiver.messages()) == 1


def test_rate_limit_longer_than_max_wait_is_left_to_the_caller(receiver: DiscordReceiver, sleeps: Sleeps) -> None:
    receiver.enqueue(("ratelimit", 500))
    delivery = send(receiver.webhook_url(), simple_payload(), sleep=sleeps, max_wait=300)
    assert (delivery.outcome, delivery.http_status, delivery.attempts) == ("failed", 429, 1)
    assert delivery.retry_after_hint == 500
    assert "max_wait" in delivery.detail
    assert sleeps == [] and receiver.messages() == []


def test_rate_limits_count_against_max_attempts(receiver: DiscordReceiver, sleeps: Sleeps) -> None:
    receiver.enqueue(*[("ratelimit", 0.25)] * 5)
    delivery = send(receiver.webhook_url(), simple_payload(), sleep=sleeps, max_attempts=3)
    assert (delivery.outcome, delivery.attempts, delivery.http_status) == ("failed", 3, 429)
    assert sleeps == [0.25, 0.25]  # no pointless sleep after the last attempt
    assert "rate limited" in delivery.detail


def test_server_errors_then_delivered(receiver: DiscordReceiver, sleeps: Sleeps) -> None:
    receiver.enqueue(("status", 500), ("status", 500))
    delivery = send(receiver.webhook_url(), simple_payload(), sleep=sleeps)
    assert (delivery.outcome, delivery.attempts) == ("delivered", 3)
    assert sleeps == [1.0, 2.0]
    assert len(receiver.messages()) == 1


def test_backoff_doubles_and_is_capped(receiver: DiscordReceiver, sleeps: Sleeps) -> None:
    receiver.enqueue(*[("status", 503)] * 9)
    delivery = send(receiver.webhook_url(), simple_payload(), sleep=sleeps, max_attempts=9)
    assert sleeps == [1, 2, 4, 8, 16, 32, 60, 60]
    assert (delivery.outcome, delivery.http_status, delivery.attempts) == ("failed", 503, 9)
    assert delivery.detail == "gave up after 9 attempts: server error HTTP 503"
    assert receiver.messages() == []


def test_hang_past_timeout_then_delivered_once(receiver: DiscordReceiver, sleeps: Sleeps) -> None:
    receiver.enqueue(("hang", 2))
    delivery = send(receiver.webhook_url(), simple_payload(), sleep=sleeps, timeout=0.5)
    assert (delivery.outcome, delivery.attempts) == ("delivered", 2)
    assert sleeps == [1.0]
    assert receiver.wait_idle(timeout=5)  # the hung request has ended too
    assert results(receiver) == ["hang 2s", "accepted"]
    assert len(receiver.messages()) == 1


def test_hang_every_time_fails_with_timeout_detail(receiver: DiscordReceiver, sleeps: Sleeps) -> None:
    receiver.enqueue(("hang", 5), ("hang", 5))
    url = receiver.webhook_url()
    delivery = send(url, simple_payload(), sleep=sleeps, timeout=0.3, max_attempts=2)
    assert (delivery.outcome, delivery.http_status, delivery.attempts) == ("failed", None, 2)
    assert delivery.detail == "gave up after 2 attempts: no answer within 0.3s"
    assert url.rsplit("/", 1)[1] not in delivery.detail


def test_dropped_connection_is_retried(receiver: DiscordReceiver, sleeps: Sleeps) -> None:
    receiver.enqueue(("close",))
    delivery = send(receiver.webhook_url(), simple_payload(), sleep=sleeps)
    assert (delivery.outcome, delivery.attempts) == ("delivered", 2)
    assert sleeps == [1.0]


def test_connection_refused_gives_up_with_clear_detail(sleeps: Sleeps) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/webhooks/1/{TOKEN}"
    delivery = send(url, simple_payload(), sleep=sleeps, timeout=2)
    assert (delivery.outcome, delivery.http_status, delivery.attempts) == ("failed", None, 5)
    assert sleeps == [1, 2, 4, 8]
    assert delivery.detail.startswith("gave up after 5 attempts: connection refused")
    assert TOKEN not in delivery.detail


def test_deleted_webhook_is_gone_at_once(receiver: DiscordReceiver, sleeps: Sleeps) -> None:
    url = receiver.webhook_url("old")
    receiver.delete_webhook("old")
    delivery = send(url, simple_payload(), sleep=sleeps)
    assert (delivery.outcome, delivery.http_status, delivery.attempts) == ("gone", 404, 1)
    assert "Unknown Webhook" in delivery.detail
    assert sleeps == [] and receiver.messages() == []


def test_revoked_token_is_gone(receiver: DiscordReceiver) -> None:
    url = receiver.webhook_url("revoked")
    receiver.revoke_webhook("revoked")
    delivery = send(url, simple_payload(), sleep=Sleeps())
    assert (delivery.outcome, delivery.http_status, delivery.attempts) == ("gone", 401, 1)


def test_unknown_path_is_gone(receiver: DiscordReceiver) -> None:
    delivery = send(receiver.base_url + "/api/webhooks/not-a-webhook", simple_payload(), sleep=Sleeps())
    assert (delivery.outcome, delivery.http_status) == ("gone", 404)


def test_oversized_payload_fails_at_once_with_discords_message(receiver: DiscordReceiver, sleeps: Sleeps) -> None:
    raw = {"embeds": [{"title": "x" * 300, "description": "ok"}]}
    delivery = send(receiver.webhook_url(), raw, sleep=sleeps)
    assert (delivery.outcome, delivery.http_status, delivery.attempts) == ("failed", 400, 1)
    assert "Invalid Form Body" in delivery.detail and "256 or fewer" in delivery.detail
    assert "\n" not in delivery.detail and len(delivery.detail) < 400
    assert sleeps == []
    [rejected] = receiver.rejected()
    assert rejected["reasons"] == ["embeds.0.title: Must be 256 or fewer in length."]


def test_empty_bucket_gives_a_pacing_hint(receiver: DiscordReceiver) -> None:
    receiver.enqueue(("bucket_empty", 3))
    first = send(receiver.webhook_url(), simple_payload(), sleep=Sleeps())
    second = send(receiver.webhook_url(), simple_payload(), sleep=Sleeps())
    assert (first.outcome, first.retry_after_hint) == ("delivered", 3.0)
    assert (second.outcome, second.retry_after_hint) == ("delivered", 0.0)


def test_huge_rendered_message_is_accepted_by_the_receiver(receiver: DiscordReceiver) -> None:
    message = Message(
        title="Job 99 failed: " + "x" * 500,
        description="Exit code 1",
        color="failure",
        fields=tuple(Field(f"field {i}", "value " * 300) for i in range(30)),
        excerpt="Traceback ```\n" * 3000 + "@everyone final line",
        footer="f" * 3000,
    )
    delivery = send(receiver.webhook_url("failure"), render_payload(message), sleep=Sleeps())
    assert delivery.outcome == "delivered", delivery.detail
    assert receiver.rejected() == []


# ---------------------------------------------------- send: response parsing


class FakeResponse:
    def __init__(self, status: int, headers: Dict[str, str], body: Any, text: str = "") -> None:
        self.status_code, self.headers, self._body = status, headers, body
        self.text = text or str(body)

    def json(self) -> Any:
        if isinstance(self._body, Exception):
            raise self._body
        return self._body


def scripted_post(*responses: Any):
    calls: List[Dict[str, Any]] = []
    queue = list(responses)

    def post(url: str, **kwargs: Any) -> Any:
        calls.append({"url": url, **kwargs})
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    post.calls = calls  # type: ignore[attr-defined]
    return post


def test_retry_after_uses_the_larger_of_header_and_body(sleeps: Sleeps) -> None:
    post = scripted_post(
        FakeResponse(429, {"retry-after": "1"}, {"retry_after": 2.5}),
        FakeResponse(204, {}, ValueError("no body")),
    )
    delivery = send("https://discord.com/api/webhooks/1/t", {}, post=post, sleep=sleeps, timeout=7)
    assert delivery.outcome == "delivered" and sleeps == [2.5]
    assert post.calls[0]["timeout"] == 7 and post.calls[0]["url"].endswith("?wait=true")


def test_rate_limit_without_time_backs_off(sleeps: Sleeps) -> None:
    post = scripted_post(FakeResponse(429, {}, ValueError("no json")), FakeResponse(200, {}, {"id": "5"}))
    delivery = send("https://discord.com/api/webhooks/1/t", {}, post=post, sleep=sleeps)
    assert (delivery.outcome, delivery.message_id, sleeps) == ("delivered", "5", [1.0])


@pytest.mark.parametrize(
    "error, expected",
    [
        (socket.gaierror(-2, "Name or service not known"), "host name could not be resolved"),
        (ConnectionResetError(104, "reset"), "connection closed by the server"),
        (TimeoutError("timed out"), "no answer within 10s"),
        (OSError(f"weird failure for {TOKEN}"), "network error (OSError)"),
    ],
)
def test_transport_errors_never_escape_or_leak(error: OSError, expected: str) -> None:
    post = scripted_post(error)
    delivery = send(f"https://discord.com/api/webhooks/1/{TOKEN}", {}, post=post, sleep=Sleeps(), max_attempts=1)
    assert (delivery.outcome, delivery.attempts) == ("failed", 1)
    assert expected in delivery.detail
    assert TOKEN not in delivery.detail


@pytest.mark.parametrize(
    "url, attempts",
    [(f"not a url {TOKEN}", 1), (f"https:///{TOKEN}", 1), (f"http://[::1/{TOKEN}", 0)],  # 0: not even splittable
)
def test_unusable_url_fails_at_once_without_leaking(url: str, attempts: int, sleeps: Sleeps) -> None:
    delivery = send(url, {}, sleep=sleeps)  # the real requests.post refuses it before any network use
    assert (delivery.outcome, delivery.http_status, delivery.attempts, sleeps) == ("failed", None, attempts, [])
    assert "not a usable webhook URL" in delivery.detail and TOKEN not in delivery.detail


@pytest.mark.parametrize("status, outcome", [(400, "failed"), (404, "gone")])
def test_error_text_echoing_the_url_is_masked(status: int, outcome: str) -> None:
    page = f"<html>Not Found: /api/webhooks/1/{TOKEN}?thread_id=99 was not found</html>"
    post = scripted_post(FakeResponse(status, {}, ValueError("not json"), text=page))
    delivery = send(f"https://proxy.example/api/webhooks/1/{TOKEN}?thread_id=99", {}, post=post, sleep=Sleeps())
    assert delivery.outcome == outcome
    assert "Not Found: /api/webhooks/1/****?thread_id=99 was not found" in delivery.detail
    assert TOKEN not in delivery.detail


def test_other_client_errors_are_not_retried(sleeps: Sleeps) -> None:
    post = scripted_post(FakeResponse(413, {}, {"message": "Request entity too large", "code": 40005}))
    delivery = send("https://discord.com/api/webhooks/1/t", {}, post=post, sleep=sleeps)
    assert (delivery.outcome, delivery.http_status, delivery.attempts, sleeps) == ("failed", 413, 1, [])
    assert "Request entity too large" in delivery.detail


# -------------------------------------------------------------- module hygiene


def test_requests_is_imported_lazily() -> None:
    code = "import sys, core.notify.discord; sys.exit('requests' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


