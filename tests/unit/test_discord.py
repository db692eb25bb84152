"""core.notify.discord: payload limits and escaping, URL checks, one delivery attempt classified
(DiscordSink.deliver / classify), and the retry schedule the outbox gives a Discord sink (deliver_due
on a fake clock against the real local receiver)."""
from __future__ import annotations

import io
import logging
import random
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import requests

from core.errors import ConfigError
from core.notify import deliver as deliver_module
from core.notify.deliver import deliver_due
from core.notify.discord import (
    COLORS,
    DiscordSink,
    classify,
    redact_url,
    render_payload,
    validate_webhook_url,
)
from core.notify.events import Event, EventKind, Route
from core.notify.message import Field, Message, Tone
from core.notify.outbox import Answer, DeliveryStatus, Outcome, SinkDelivery, next_attempt_at, problems
from tests.discord_receiver import DiscordReceiver, validate_payload
from tests.support import FakeClock, FakeResponse, MemoryOutbox, ScriptedPost

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "SeCrEtToKeN_abc-123XYZ"
#: Webhook URLs validate_webhook_url accepts but requests/urllib3 cannot parse (an empty or a too long label).
ACCEPTED_BUT_UNUSABLE = [f"https://a..b/api/webhooks/1/{TOKEN}", f"https://{'a' * 64}.com/api/webhooks/1/{TOKEN}"]


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
        tone=Tone.SUCCESS,
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
    "tone, value",
    [(Tone.SUCCESS, 0x2ECC71), (Tone.FAILURE, 0xE74C3C), (Tone.WARNING, 0xE67E22), (Tone.INFO, 0x3498DB)],
)
def test_colours(tone: Tone, value: int) -> None:
    assert embed_of(render_payload(Message("t", tone=tone)))["color"] == value


def test_every_tone_has_a_colour_and_info_is_the_default() -> None:
    assert set(COLORS) == set(Tone)
    assert embed_of(render_payload(Message("t")))["color"] == COLORS[Tone.INFO]


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


def test_plain_text_is_escaped_and_jobmons_own_text_passes_through() -> None:
    message = Message(
        "run_*1*",
        description="**bold** stays",
        fields=(
            Field("Name", "my_job *v2* ~x~ `q` |a| [l](u) <@1>"),
            Field("# Head", "> quote\n- item\nin-line # ok"),
            Field("Log", "[open](https://example.org/x_y)"),
        ),
        footer="footer_*kept*",
    )
    embed = embed_of(render_payload(message))
    assert embed["title"] == r"run\_\*1\*"
    assert embed["description"] == "**bold** stays"
    assert embed["fields"][0]["value"] == r"my\_job \*v2\* \~x\~ \`q\` \|a\| \[l\](u) \<@1>"
    assert embed["fields"][1]["name"] == r"\# Head"
    assert embed["fields"][1]["value"] == "\\> quote\n\\- item\nin-line # ok"
    assert embed["fields"][2]["value"] == r"\[open\](https://example.org/x\_y)"  # field values are always plain
    assert embed["footer"]["text"] == "footer_*kept*"


def test_a_backslash_in_plain_text_is_escaped_too() -> None:
    title = render_payload(Message(title=r"C:\path_x"))["embeds"][0]["title"]
    assert title == r"C:\\path\_x"


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


# ---------------------------------------------------------- DiscordSink: the sink itself


def simple_message(title: str = "Job 1 done") -> Message:
    return Message(title, tone=Tone.SUCCESS, fields=(Field("State", "COMPLETED"),))


def simple_payload(title: str = "Job 1 done") -> Dict[str, Any]:
    return render_payload(simple_message(title))


def results(receiver: DiscordReceiver) -> List[str]:
    return [hit["result"] for hit in receiver.hits()]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_sink_names_its_destination_without_showing_the_token() -> None:
    url = f"https://discord.com/api/webhooks/123456/{TOKEN}"
    sink = DiscordSink("discord-error", f"  {url}\n", "slurm-bot")
    assert sink.name == "discord-error"
    assert sink.destination == url  # what the pacer keys on (hashed, never shown)
    assert sink.describe() == "discord https://discord.com/api/webhooks/123456/****"
    payload = sink.render(simple_message())
    assert payload["username"] == "slurm-bot" and embed_of(payload)["title"] == "Job 1 done"
    assert_discord_accepts(payload)


# ------------------------------------------------ DiscordSink.deliver: one attempt, real HTTP


def test_delivered_with_message_id(receiver: DiscordReceiver) -> None:
    outcome = DiscordSink("s", receiver.webhook_url("success")).deliver(simple_payload(), 5)
    [message] = receiver.messages("success")
    assert outcome == Outcome(Answer.DELIVERED, "delivered", message_id=message["message_id"])
    assert outcome.message_id.isdigit()
    assert message["query"] == {"wait": "true"}
    assert message["payload"]["embeds"][0]["title"] == "Job 1 done"


def test_wait_is_merged_with_an_existing_query(receiver: DiscordReceiver) -> None:
    outcome = DiscordSink("s", receiver.webhook_url("t") + "?thread_id=77&wait=false").deliver(simple_payload(), 5)
    assert outcome.answer is Answer.DELIVERED
    assert receiver.messages()[0]["query"] == {"thread_id": "77", "wait": "true"}


def test_204_counts_as_delivered(receiver: DiscordReceiver) -> None:
    def post_without_wait(url: str, **kwargs: Any) -> Any:
        return requests.post(url.replace("wait=true", "wait=false"), **kwargs)

    outcome = DiscordSink("s", receiver.webhook_url(), post=post_without_wait).deliver(simple_payload(), 5)
    assert (outcome.answer, outcome.message_id) == (Answer.DELIVERED, "")
    assert len(receiver.messages()) == 1


@pytest.mark.parametrize(
    "behaviour, answer, detail, hit",
    [
        (("status", 500), Answer.RETRY, "server error HTTP 500", "status 500"),
        (("status", 502), Answer.RETRY, "server error HTTP 502", "status 502"),
        (("status", 503), Answer.RETRY, "server error HTTP 503", "status 503"),
        (("close",), Answer.RETRY, "connection closed by the server before it answered", "close"),
        (("ratelimit", 1.5), Answer.RETRY, "rate limited for 1.5s", "ratelimit 1.5s"),
    ],
)
def test_one_failed_attempt_is_classified_and_not_retried_by_the_sink(
    receiver: DiscordReceiver, behaviour: Any, answer: Answer, detail: str, hit: str
) -> None:
    receiver.enqueue(behaviour)
    outcome = DiscordSink("s", receiver.webhook_url()).deliver(simple_payload(), 5)
    assert (outcome.answer, outcome.detail) == (answer, detail)
    assert results(receiver) == [hit]  # exactly one request: retrying is the outbox's job
    assert receiver.messages() == []


def test_a_rate_limit_says_how_long_to_wait_and_to_pace(receiver: DiscordReceiver) -> None:
    receiver.enqueue(("ratelimit", 1.5))
    outcome = DiscordSink("s", receiver.webhook_url()).deliver(simple_payload(), 5)
    assert (outcome.answer, outcome.retry_after, outcome.pace) == (Answer.RETRY, 1.5, 1.5)


def test_a_hang_past_the_timeout_is_a_retry(receiver: DiscordReceiver) -> None:
    receiver.enqueue(("hang", 1))
    url = receiver.webhook_url()
    outcome = DiscordSink("s", url).deliver(simple_payload(), 0.2)
    assert (outcome.answer, outcome.detail) == (Answer.RETRY, "no answer within 0.2s")
    assert url.rsplit("/", 1)[1] not in outcome.detail
    assert receiver.wait_idle(timeout=5)  # the hung request has ended too
    assert results(receiver) == ["hang 1s"] and receiver.messages() == []


def test_connection_refused_is_a_retry_with_a_clear_detail() -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/webhooks/1/{TOKEN}"
    outcome = DiscordSink("s", url).deliver(simple_payload(), 2)
    assert outcome.answer is Answer.RETRY
    assert outcome.detail.startswith("connection refused")
    assert TOKEN not in outcome.detail


def test_deleted_webhook_is_gone(receiver: DiscordReceiver) -> None:
    url = receiver.webhook_url("old")
    receiver.delete_webhook("old")
    outcome = DiscordSink("s", url).deliver(simple_payload(), 5)
    assert outcome.answer is Answer.GONE
    assert "HTTP 404" in outcome.detail and "Unknown Webhook" in outcome.detail
    assert receiver.messages() == []


def test_revoked_token_is_gone(receiver: DiscordReceiver) -> None:
    url = receiver.webhook_url("revoked")
    receiver.revoke_webhook("revoked")
    outcome = DiscordSink("s", url).deliver(simple_payload(), 5)
    assert outcome.answer is Answer.GONE and "HTTP 401" in outcome.detail and "Invalid Webhook Token" in outcome.detail


def test_unknown_path_is_gone(receiver: DiscordReceiver) -> None:
    outcome = DiscordSink("s", receiver.base_url + "/api/webhooks/not-a-webhook").deliver(simple_payload(), 5)
    assert outcome.answer is Answer.GONE and "HTTP 404" in outcome.detail


def test_oversized_payload_is_refused_for_good_with_discords_message(receiver: DiscordReceiver) -> None:
    raw = {"embeds": [{"title": "x" * 300, "description": "ok"}]}
    outcome = DiscordSink("s", receiver.webhook_url()).deliver(raw, 5)
    assert outcome.answer is Answer.GONE  # sending the same body again cannot help
    assert "HTTP 400" in outcome.detail
    assert "Invalid Form Body" in outcome.detail and "256 or fewer" in outcome.detail
    assert "\n" not in outcome.detail and len(outcome.detail) < 400
    [rejected] = receiver.rejected()
    assert rejected["reasons"] == ["embeds.0.title: Must be 256 or fewer in length."]


def test_empty_bucket_gives_a_pacing_hint(receiver: DiscordReceiver) -> None:
    receiver.enqueue(("bucket_empty", 3))
    sink = DiscordSink("s", receiver.webhook_url())
    first = sink.deliver(simple_payload(), 5)
    second = sink.deliver(simple_payload(), 5)
    assert (first.answer, first.pace, first.retry_after) == (Answer.DELIVERED, 3.0, None)
    assert (second.answer, second.pace) == (Answer.DELIVERED, 0.0)


def test_huge_rendered_message_is_accepted_by_the_receiver(receiver: DiscordReceiver) -> None:
    message = Message(
        title="Job 99 failed: " + "x" * 500,
        description="Exit code 1",
        tone=Tone.FAILURE,
        fields=tuple(Field(f"field {i}", "value " * 300) for i in range(30)),
        excerpt="Traceback ```\n" * 3000 + "@everyone final line",
        footer="f" * 3000,
    )
    sink = DiscordSink("s", receiver.webhook_url("failure"))
    outcome = sink.deliver(sink.render(message), 5)
    assert outcome.answer is Answer.DELIVERED, outcome.detail
    assert receiver.rejected() == []


# ------------------------------------------- DiscordSink.deliver and classify: scripted answers


@pytest.mark.parametrize(
    "response, expected",
    [
        (FakeResponse(200, {}, {"id": "5"}), Outcome(Answer.DELIVERED, "delivered", message_id="5")),
        (FakeResponse(204, {}, ValueError("no body")), Outcome(Answer.DELIVERED, "delivered")),
        (FakeResponse(200, {"x-ratelimit-remaining": "0", "X-RateLimit-Reset-After": "2.5"}, {"id": "6"}),
         Outcome(Answer.DELIVERED, "delivered", message_id="6", pace=2.5)),
        (FakeResponse(200, {"X-RateLimit-Remaining": "1", "X-RateLimit-Reset-After": "2.5"}, {"id": "7"}),
         Outcome(Answer.DELIVERED, "delivered", message_id="7")),  # the bucket is not empty: no pause
        # a 429's wait: the larger of header and body, so we never come back early
        (FakeResponse(429, {"retry-after": "1"}, {"retry_after": 2.5}),
         Outcome(Answer.RETRY, "rate limited for 2.5s", retry_after=2.5, pace=2.5)),
        (FakeResponse(429, {"Retry-After": "3"}, ValueError("no json")),
         Outcome(Answer.RETRY, "rate limited for 3s", retry_after=3.0, pace=3.0)),
        (FakeResponse(429, {}, ValueError("no json")), Outcome(Answer.RETRY, "rate limited without a retry time")),
        (FakeResponse(429, {"Retry-After": "-1"}, {"retry_after": "soon"}),
         Outcome(Answer.RETRY, "rate limited without a retry time")),
        (FakeResponse(429, {"Retry-After": "inf"}, {"retry_after": None}),
         Outcome(Answer.RETRY, "rate limited without a retry time")),
        (FakeResponse(500, {}, {"message": "oops"}), Outcome(Answer.RETRY, "server error HTTP 500")),
        (FakeResponse(599, {}, ValueError("html")), Outcome(Answer.RETRY, "server error HTTP 599")),
    ],
)
def test_classify(response: FakeResponse, expected: Outcome) -> None:
    assert classify(response, []) == expected


@pytest.mark.parametrize("status", [401, 403, 404])
def test_classify_refused_webhooks_as_gone(status: int) -> None:
    outcome = classify(FakeResponse(status, {}, {"message": "Unknown Webhook", "code": 10015}), [])
    assert outcome.answer is Answer.GONE
    assert outcome.detail == f"webhook deleted or invalid (HTTP {status}: Unknown Webhook)"


@pytest.mark.parametrize("status", [400, 405, 413, 422])
def test_other_client_errors_are_gone_with_the_reason(status: int) -> None:
    response = FakeResponse(status, {}, {"message": "Request entity too large", "code": 40005})
    outcome = classify(response, [])
    assert outcome == Outcome(Answer.GONE, f"Discord refused the message (HTTP {status}): Request entity too large")


def test_classify_puts_discords_error_tree_on_one_capped_line() -> None:
    errors = {"embeds": {"0": {"title": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "x" * 500}]}}}}
    outcome = classify(FakeResponse(400, {}, {"message": "Invalid Form Body", "errors": errors}), [])
    assert outcome.answer is Answer.GONE
    assert outcome.detail.startswith("Discord refused the message (HTTP 400): Invalid Form Body {")
    assert "\n" not in outcome.detail and len(outcome.detail) < 400 and outcome.detail.endswith("…")


def test_deliver_posts_once_with_wait_and_the_timeout() -> None:
    post = ScriptedPost(FakeResponse(200, {}, {"id": "5"}))
    outcome = DiscordSink("s", "https://discord.com/api/webhooks/1/tok?thread_id=9", post=post).deliver({"a": 1}, 7)
    assert outcome.answer is Answer.DELIVERED
    [call] = post.calls
    assert call == {"url": "https://discord.com/api/webhooks/1/tok?thread_id=9&wait=true", "json": {"a": 1},
                    "timeout": 7}


@pytest.mark.parametrize(
    "error, expected",
    [
        (socket.gaierror(-2, "Name or service not known"), "host name could not be resolved"),
        (ConnectionRefusedError(111, f"refused {TOKEN}"), "connection refused"),
        (ConnectionResetError(104, "reset"), "connection closed by the server"),
        (TimeoutError("timed out"), "no answer within 10s"),
        (requests.ConnectTimeout(f"connect timeout to {TOKEN}"), "could not connect within 10s"),
        (requests.ReadTimeout(f"read timeout for /api/webhooks/1/{TOKEN}"), "no answer within 10s"),
        (requests.ConnectionError(ConnectionRefusedError(111, TOKEN)), "connection refused"),
        (OSError(f"weird failure for {TOKEN}"), "network error (OSError)"),
    ],
)
def test_transport_errors_are_retries_that_never_escape_or_leak(error: OSError, expected: str) -> None:
    post = ScriptedPost(error)
    outcome = DiscordSink("s", f"https://discord.com/api/webhooks/1/{TOKEN}", post=post).deliver({}, 10)
    assert outcome.answer is Answer.RETRY
    assert expected in outcome.detail
    assert TOKEN not in outcome.detail
    assert len(post.calls) == 1


@pytest.mark.parametrize(
    "url", [f"not a url {TOKEN}", f"https:///{TOKEN}", f"http://[::1/{TOKEN}", *ACCEPTED_BUT_UNUSABLE]
)
def test_unusable_url_is_gone_at_once_without_leaking(url: str) -> None:
    outcome = DiscordSink("s", url).deliver({}, 2)  # the real requests.post refuses it before any network use
    assert outcome.answer is Answer.GONE
    assert "not a usable webhook URL" in outcome.detail and TOKEN not in outcome.detail


@pytest.mark.parametrize("url", ACCEPTED_BUT_UNUSABLE)
def test_a_url_that_passes_the_config_check_but_not_urllib3_is_gone_not_a_crash(tmp_path: Path, url: str) -> None:
    """urllib3 refuses these hosts with a ValueError that is not an OSError; a sink must not raise."""
    assert validate_webhook_url(url, name="discord.error_webhook") == url
    run = Schedule(tmp_path, url)
    assert run.run() == [0.0]
    assert run.delivery.status is DeliveryStatus.GONE and TOKEN not in run.delivery.last_error


@pytest.mark.parametrize("status, answer", [(400, Answer.GONE), (404, Answer.GONE), (502, Answer.RETRY)])
def test_error_text_echoing_the_url_is_masked(status: int, answer: Answer) -> None:
    page = f"<html>Not Found: /api/webhooks/1/{TOKEN}?thread_id=99 was not found</html>"
    post = ScriptedPost(FakeResponse(status, {}, ValueError("not json"), text=page))
    outcome = DiscordSink("s", f"https://proxy.example/api/webhooks/1/{TOKEN}?thread_id=99", post=post).deliver({}, 5)
    assert outcome.answer is answer
    if answer is Answer.GONE:
        assert "Not Found: /api/webhooks/1/****?thread_id=99 was not found" in outcome.detail
    assert TOKEN not in outcome.detail


# --------------------------------- the retry schedule: deliver_due, a fake clock, real HTTP

JOB = "4242"
KEY = f"{JOB}:final:1"
SINK = "discord-error"


class Schedule:
    """One job's FINAL message in an in-memory outbox, delivered to a real Discord sink by deliver_due.

    Time is a FakeClock: the outbox's waits are skipped by moving it to the next attempt time, and
    any pacing wait shows in `clock.sleeps`. Only the HTTP requests are real.
    """

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.clock = FakeClock()
        self.start = self.clock.now
        self.sink = DiscordSink(SINK, url)
        self.folder = str(tmp_path / "pace")
        self.box = MemoryOutbox()
        self.box.add(JOB, [Event(EventKind.FINAL, 1, Route.ERROR, simple_message("Job 4242 failed"))], self.start)

    def step(self) -> int:
        """One deliverer run at the clock's time; returns the attempts it made."""
        return deliver_due(self.box, {SINK: self.sink}, lambda route: (SINK,), pacer_folder=self.folder,
                           owner="test:1", clock=self.clock.time, pacer_sleep=self.clock.sleep)

    def at(self, offset: float) -> int:
        """Move the clock to `start + offset` and run the deliverer."""
        self.clock.now = self.start + offset
        return self.step()

    @property
    def delivery(self) -> SinkDelivery:
        return self.box.entry(KEY).deliveries[SINK]

    def next_at(self) -> Optional[float]:
        at = next_attempt_at(self.box.load_outbox())
        return None if at is None else at - self.start

    def run(self, limit: int = 100) -> List[float]:
        """Run the deliverer at every next attempt time until nothing is left; the offsets of its attempts."""
        times: List[float] = []
        for _ in range(limit):
            now = self.clock.now - self.start
            times += [now] * self.step()
            at = next_attempt_at(self.box.load_outbox())
            if at is None:
                return times
            self.clock.now = max(self.clock.now, at)
        raise AssertionError(f"still delivering after {limit} runs")


def test_server_errors_are_retried_on_schedule_and_delivered_exactly_once(tmp_path: Path,
                                                                         receiver: DiscordReceiver) -> None:
    receiver.enqueue(("status", 500), ("status", 502))
    run = Schedule(tmp_path, receiver.webhook_url("failure"))
    assert run.at(0) == 1
    delivery = run.delivery
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        DeliveryStatus.PENDING, 1, "server error HTTP 500")
    assert run.next_at() == 1.0
    assert run.at(0.999) == 0 and len(receiver.hits()) == 1  # not due yet: nothing sent
    assert run.at(1.0) == 1 and run.delivery.last_error == "server error HTTP 502"
    assert run.next_at() == 3.0  # 1 s, then 2 s
    assert run.at(3.0) == 1
    [message] = receiver.messages("failure")
    delivery = run.delivery
    assert (delivery.status, delivery.attempts, delivery.last_error) == (DeliveryStatus.DELIVERED, 3, "")
    assert delivery.message_id == message["message_id"] and delivery.delivered_at == run.start + 3.0
    assert run.next_at() is None
    assert run.at(86400) == 0  # delivered: never sent again
    assert results(receiver) == ["status 500", "status 502", "accepted"]
    assert len(receiver.messages()) == 1
    assert run.clock.sleeps == []  # 1 s and 2 s apart: the pacer's 0.5 s spacing never had to wait


def test_backoff_doubles_up_to_an_hour_then_gives_up_for_recover(tmp_path: Path, receiver: DiscordReceiver) -> None:
    receiver.enqueue(*[("status", 503)] * 30)
    run = Schedule(tmp_path, receiver.webhook_url())
    times = run.run()
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600, 3600, 3600, 3600]
    assert times[-2] < 6 * 3600 <= times[-1]  # the first attempt past DELIVERY_GIVE_UP is the last
    delivery = run.delivery
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        DeliveryStatus.FAILED, 18, "server error HTTP 503")
    assert len(receiver.hits()) == 18 and receiver.messages() == []
    assert run.at(30 * 86400) == 0  # failed: only `jobmon recover` sends it again
    assert problems(run.box.load_outbox()) == [f"final message to {SINK}: failed (server error HTTP 503)"]


@pytest.mark.parametrize("seconds", [1.5, 30])
def test_a_rate_limit_waits_at_least_retry_after(tmp_path: Path, receiver: DiscordReceiver, seconds: float) -> None:
    receiver.enqueue(("ratelimit", seconds))
    run = Schedule(tmp_path, receiver.webhook_url())
    assert run.at(0) == 1
    assert (run.delivery.status, run.delivery.last_error) == (DeliveryStatus.PENDING, f"rate limited for {seconds:g}s")
    assert run.next_at() == seconds  # the server's time, not the 1 s backoff
    assert run.at(seconds - 0.01) == 0 and results(receiver) == [f"ratelimit {seconds:g}s"]
    assert run.at(seconds) == 1
    assert run.delivery.status is DeliveryStatus.DELIVERED
    assert results(receiver) == [f"ratelimit {seconds:g}s", "accepted"] and len(receiver.messages()) == 1
    assert run.clock.sleeps == []


def test_a_deleted_webhook_is_gone_and_never_tried_again(tmp_path: Path, receiver: DiscordReceiver) -> None:
    url = receiver.webhook_url("old")
    receiver.delete_webhook("old")
    run = Schedule(tmp_path, url)
    assert run.run() == [0.0]
    delivery = run.delivery
    assert delivery.status is DeliveryStatus.GONE and delivery.attempts == 1
    assert "HTTP 404" in delivery.last_error and "Unknown Webhook" in delivery.last_error
    assert run.next_at() is None
    assert run.at(86400) == 0 and results(receiver) == ["404"]


def test_a_hang_is_retried_and_arrives_once(tmp_path: Path, receiver: DiscordReceiver,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deliver_module, "REQUEST_TIMEOUT", 0.2)
    receiver.enqueue(("hang", 1))
    run = Schedule(tmp_path, receiver.webhook_url())
    assert run.at(0) == 1
    assert (run.delivery.status, run.delivery.last_error) == (DeliveryStatus.PENDING, "no answer within 0.2s")
    assert receiver.wait_idle(timeout=5)  # the hung request has ended without posting anything
    assert receiver.messages() == []
    assert run.run() == [1.0]
    assert run.delivery.status is DeliveryStatus.DELIVERED
    assert results(receiver) == ["hang 1s", "accepted"] and len(receiver.messages()) == 1


def test_a_refused_connection_is_retried_until_the_server_is_back(tmp_path: Path) -> None:
    port = closed_port()
    run = Schedule(tmp_path, f"http://127.0.0.1:{port}/api/webhooks/1/{TOKEN}")
    assert run.at(0) == 1 and run.at(1) == 1
    delivery = run.delivery
    assert delivery.status is DeliveryStatus.PENDING and delivery.attempts == 2
    assert delivery.last_error.startswith("connection refused") and TOKEN not in delivery.last_error
    assert run.next_at() == 3.0


def test_no_secret_in_any_detail_log_line_problem_or_pace_file(tmp_path: Path, receiver: DiscordReceiver,
                                                                caplog: pytest.LogCaptureFixture,
                                                                log_lines: io.StringIO,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deliver_module, "REQUEST_TIMEOUT", 0.2)
    caplog.set_level(logging.INFO)  # what the libraries log (urllib3's DEBUG would show URLs), beside log_lines
    url = receiver.webhook_url("secret")
    token = url.rsplit("/", 1)[1]
    receiver.enqueue(("status", 500), ("close",), ("hang", 0.5), ("ratelimit", 2), ("status", 503))
    run = Schedule(tmp_path, url)
    seen: List[str] = []
    for offset in (0, 1, 3, 7, 9):
        assert run.at(offset) == 1, offset
        seen += [run.delivery.last_error, *problems(run.box.load_outbox())]
    assert receiver.wait_idle(timeout=5)
    receiver.delete_webhook("secret")
    assert run.at(100) == 1 and run.delivery.status is DeliveryStatus.GONE
    seen += [run.delivery.last_error, *problems(run.box.load_outbox()), run.sink.describe()]
    assert results(receiver) == ["status 500", "close", "hang 0.5s", "ratelimit 2s", "status 503", "404"]
    assert all(seen) and log_lines.getvalue()  # every step left a detail, and the deliverer logged
    texts = seen + [record.getMessage() for record in caplog.records] + log_lines.getvalue().splitlines()
    texts += [path.read_text() for path in Path(run.folder).iterdir() if path.suffix == ".json"]
    texts += [path.name for path in Path(run.folder).iterdir()]
    for text in texts:
        assert token not in text and url not in text, text


# -------------------------------------------------------------- module hygiene


@pytest.mark.parametrize("module", ["core.notify.discord", "core.notify.deliver", "core.notify.pacing"])
def test_requests_is_imported_lazily(module: str) -> None:
    code = f"import sys, {module}; sys.exit('requests' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
