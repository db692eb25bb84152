"""The channels: Slack, Teams, ntfy, e-mail and CloudEvents webhook sinks against local receivers that
enforce each service's documented limits; routes; `${ENV}` secrets."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from core.config import Config, Paths, load_config, parse_config
from core.daemon.delivery import InProcessDelivery, build_sinks
from core.errors import ConfigError
from core.monitor.records import Records
from core.notify.deliver import deliver_due, send_once
from core.notify.events import Event, EventKind, Route, RouteFacts
from core.notify.http import classify_status
from core.notify.mail import MailSink, classify_smtp, subject_of
from core.notify.message import Envelope, Facts, Field, Message, Tone
from core.notify.ntfy import NtfySink
from core.notify.outbox import Answer, DeliveryStatus, next_attempt_at
from core.notify.sink import Sink
from core.notify.slack import SlackSink
from core.notify.teams import TeamsSink
from core.notify.webhook import WebhookSink
from core.state.model import JobRecord
from core.state.store import StateStore
from tests.channel_receivers import (
    ChannelReceiver,
    SmtpReceiver,
    cloudevent_problems,
    slack_problems,
    teams_problems,
)
from tests.support import FakeClock, FakeResponse, MemoryOutbox

TOKEN = "tk_phone_token_0123456789abcdef"
SECRET = "hook-shared-secret-0123456789"
FACTS = Facts(job_id="123", name="train", state="FAILED", exit_code="1", findings=("cuda_oom", "nccl"),
              efficiency="peak memory 3.0 GiB of 4G", progress="40%")


def huge() -> Message:
    """Everything far over every service's limits, with markup and multi-byte characters."""
    return Message(title="Jöb 123 (train_*x*) <b>&" * 40, description="Likely cause: cuda_oom — ✓ " * 800,
                   tone=Tone.FAILURE, fields=tuple(Field(f"F{n} é", "välue <&> " * 400) for n in range(30)),
                   excerpt="```\n" + "log line ✗ with `ticks` <tag>\n" * 5000 + "the very last line",
                   footer="jobmon on host " * 100, url="https://example.org/job/123", facts=FACTS)


@pytest.fixture
def receiver() -> Iterator[ChannelReceiver]:
    server = ChannelReceiver(ntfy_token=TOKEN, hook_secret=SECRET).start()
    yield server
    server.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    server = SmtpReceiver(user="alice", password="pw-0123456789").start()
    yield server
    server.stop()


# ------------------------------------------------------------------ rendering within limits


def test_slack_renders_huge_messages_within_block_kit_limits_keeping_the_log_tail():
    payload = SlackSink("s", "https://hooks.slack.com/services/T/B/x").render(huge())
    assert slack_problems(payload) == []
    texts = [block["text"]["text"] for block in payload["blocks"] if block["type"] == "section" and "text" in block]
    assert texts[-1].endswith("the very last line\n```") and "&lt;tag&gt;" in texts[-1] and "<tag>" not in texts[-1]
    assert "```" not in texts[-1][3:-3]  # the log cannot close the code block early


def test_teams_renders_huge_messages_within_28_kb_in_the_workflows_envelope():
    body = TeamsSink("t", "https://x.logic.azure.com/workflows/1").render(huge())
    assert teams_problems(body) == [] and len(body) <= 28 * 1024
    card = json.loads(body)["attachments"][0]["content"]
    assert card["body"][0]["color"] == "Attention"
    assert not any(block.get("fontType") == "Monospace" for block in card["body"])  # the excerpt went first
    long_log = Message("x", description="d", fields=(Field("a", "b"),), excerpt=huge().excerpt)
    card = json.loads(TeamsSink("t", "https://x").render(long_log))["attachments"][0]["content"]
    assert card["body"][2]["facts"] == [{"title": "a", "value": "b"}]
    assert card["body"][3]["fontType"] == "Monospace" and card["body"][3]["text"].endswith("the very last line")


def test_ntfy_body_fits_4096_bytes_the_title_survives_non_ascii_and_errors_are_high_priority():
    body, headers = NtfySink("n", "https://ntfy.sh/topic").render(huge())
    assert len(body) <= 4096 and body.decode("utf-8")
    assert headers["Priority"] == "high" and headers["Tags"] == "x" and headers["Click"] == "https://example.org/job/123"
    headers["Title"].encode("ascii")  # RFC 2047 on the wire
    small_body, small = NtfySink("n", "https://ntfy.sh/topic").render(Message("done", tone=Tone.SUCCESS))
    assert small["Priority"] == "default" and small_body == b"done"


def test_webhook_is_a_cloudevent_with_the_stable_key_and_a_bounded_body():
    envelope = Envelope("123:final:1", "final", 1_700_000_000.0)
    body, headers = WebhookSink("h", "https://ci.example.org/hook", secret=SECRET).render(huge(), envelope)
    event = json.loads(body)
    assert cloudevent_problems(event) == [] and len(body) <= 64 * 1024
    assert (event["id"], event["type"], event["time"]) == ("123:final:1", "org.jobmon.job.final",
                                                           "2023-11-14T22:13:20+00:00")
    assert event["data"]["job"]["state"] == "FAILED" and event["data"]["job"]["findings"] == ["cuda_oom", "nccl"]
    assert event["data"]["excerpt"] == ""  # the excerpt went first, then the longest texts were cut
    assert headers["X-Jobmon-Signature"].startswith("sha256=")
    long_log = Message("x", fields=(Field("a", "b"),), excerpt=huge().excerpt, facts=FACTS)
    body, _ = WebhookSink("h", "https://ci.example.org/hook").render(long_log, envelope)
    data = json.loads(body)["data"]
    assert len(body) <= 64 * 1024 and data["excerpt"].endswith("the very last line")
    assert data["fields"][0]["value"] == "b"


def test_mail_subject_names_job_state_and_cause_and_the_body_is_bounded():
    mail = MailSink("m", sender="jobmon@example.org", to=["me@example.org"], smtp="localhost:25").render(
        huge(), Envelope("123:final:1", "final", 1.0))
    assert mail["Subject"] == "[jobmon] Job 123 (train) FAILED: cuda_oom"
    text = mail.get_body(("plain",)).get_content()
    assert len(text.encode("utf-8")) <= 256 * 1024 + 2 and text.rstrip().endswith("jobmon on host")
    assert "the very last line" in text and "&lt;tag&gt;" in mail.get_body(("html",)).get_content()
    stalled = Message("Job 123 (train) stalled", facts=Facts(job_id="123", state="RUNNING"))
    assert subject_of(stalled, Envelope("123:stalled:1", "stalled", 1.0)) == "[jobmon] Job 123 (train) stalled"


# ------------------------------------------------------------------------- classifying answers


@pytest.mark.parametrize("status, headers, answer, wait", [
    (200, {}, Answer.DELIVERED, None), (202, {}, Answer.DELIVERED, None), (204, {}, Answer.DELIVERED, None),
    (429, {"Retry-After": "7"}, Answer.RETRY, 7.0), (429, {}, Answer.RETRY, None),
    (500, {}, Answer.RETRY, None), (503, {}, Answer.RETRY, None), (408, {}, Answer.RETRY, None),
    (401, {}, Answer.GONE, None), (403, {}, Answer.GONE, None), (404, {}, Answer.GONE, None),
    (410, {}, Answer.GONE, None), (400, {}, Answer.GONE, None), (413, {}, Answer.GONE, None),
])
def test_one_rule_for_every_http_answer(status, headers, answer, wait):
    outcome = classify_status(FakeResponse(status, headers, text=f"no_service at /services/{SECRET}"), "Slack",
                              [SECRET])
    assert outcome.answer is answer and outcome.retry_after == wait
    assert SECRET not in outcome.detail


def test_smtp_answers_temporary_is_retry_permanent_is_gone():
    import smtplib

    assert classify_smtp(smtplib.SMTPAuthenticationError(535, b"bad"), []).answer is Answer.GONE
    assert classify_smtp(smtplib.SMTPResponseException(451, b"try later"), []).answer is Answer.RETRY
    assert classify_smtp(smtplib.SMTPResponseException(554, b"no"), []).answer is Answer.GONE
    assert classify_smtp(smtplib.SMTPRecipientsRefused({"a@b": (550, b"no")}), []).answer is Answer.GONE
    assert classify_smtp(smtplib.SMTPRecipientsRefused({"a@b": (450, b"later")}), []).answer is Answer.RETRY
    assert classify_smtp(smtplib.SMTPServerDisconnected(), []).answer is Answer.RETRY
    assert classify_smtp(ConnectionRefusedError(), []).answer is Answer.RETRY


def test_mail_goes_through_smtp_with_login_and_a_bad_password_is_gone(smtp):
    good = MailSink("m", sender="jobmon@example.org", to=["me@example.org"], smtp=smtp.address,
                    user="alice", password="pw-0123456789")
    assert send_once(good, huge()).answer is Answer.DELIVERED
    got = smtp.messages[0]
    assert got["to"] == ["me@example.org"] and got["message"]["Subject"].startswith("[jobmon] Job 123 (train)")
    assert got["message"].get_body(("html",)) is not None and smtp.rejected == []
    bad = MailSink("m", sender="jobmon@example.org", to=["me@example.org"], smtp=smtp.address,
                   user="alice", password="wrong-password")
    outcome = send_once(bad, Message("x"))
    assert outcome.answer is Answer.GONE and "login refused" in outcome.detail
    assert "wrong-password" not in outcome.detail


def test_sendmail_is_handed_the_whole_message():
    seen: List[bytes] = []

    def send_local(argv, data, timeout):
        seen.append(data)
        return (0, "") if len(seen) == 1 else (75, "queue full")

    sink = MailSink("m", sender="a@b.org", to=["c@d.org"], sendmail="/usr/sbin/sendmail", send_local=send_local)
    assert send_once(sink, Message("x")).answer is Answer.DELIVERED and b"Subject: [jobmon] x" in seen[0]
    assert sink.deliver(sink.render(Message("y")), 1).answer is Answer.RETRY


# ------------------------------------------------------------------- exactly once at four sinks


def test_a_job_routed_to_four_sinks_gets_exactly_one_valid_message_at_each(tmp_path, receiver):
    """Slack answers 429 twice, Teams 500 once: each still gets the message once; ntfy and the signed
    webhook get theirs at the first try and are never sent it again."""
    env = {"SLACK_URL": receiver.url("slack", "T1/B1/s3cr3tslackpath"), "NTFY_TOKEN": TOKEN, "HOOK_SECRET": SECRET}
    config = parse_config(json.dumps({"notify": {
        "sinks": {"team": {"type": "slack", "url": "${SLACK_URL}"},
                  "teams": {"type": "teams", "url": receiver.url("teams")},
                  "phone": {"type": "ntfy", "url": receiver.url("ntfy", "my-topic"), "token": "${NTFY_TOKEN}"},
                  "hook": {"type": "webhook", "url": receiver.url("hook"), "secret": "${HOOK_SECRET}"}},
        "routes": [{"events": ["final"], "states": ["FAILED"], "sinks": ["team", "teams", "phone", "hook"]},
                   {"events": ["stalled"], "names": "^train", "sinks": ["phone"]}]}}), "config.json", None, env=env)
    receiver.enqueue("slack", ("ratelimit", 2), ("ratelimit", 3))
    receiver.enqueue("teams", ("status", 500))
    clock, box = FakeClock(), MemoryOutbox()
    box.add("123", [Event(EventKind.FINAL, 1, Route.ERROR, huge())], clock.now)
    sinks: Dict[str, Sink] = build_sinks(config.sinks)
    for _ in range(20):
        deliver_due(box, sinks, config.sinks_for, pacer_folder=str(tmp_path / "pace"), owner="t:1",
                    clock=clock.time, pacer_sleep=clock.sleep)
        at = next_attempt_at(box.load_outbox())
        if at is None:
            break
        clock.now = max(clock.now, at)
    entry = box.load_outbox()[0]
    assert {name: d.status for name, d in entry.deliveries.items()} == dict.fromkeys(
        ["team", "teams", "phone", "hook"], DeliveryStatus.DELIVERED)
    assert entry.deliveries["team"].attempts == 3 and entry.deliveries["teams"].attempts == 2
    assert {service: len(receiver.messages.get(service, [])) for service in ("slack", "teams", "ntfy", "hook")} == \
        {"slack": 1, "teams": 1, "ntfy": 1, "hook": 1}
    assert receiver.rejected == {}
    assert receiver.hits["slack"] == ["ratelimit", "ratelimit", "200"] and receiver.hits["teams"] == ["status", "202"]
    assert receiver.messages["hook"][0]["event"]["id"] == "123:final:1"
    assert receiver.messages["ntfy"][0]["title"].startswith("Jöb 123")


def test_a_refused_token_stops_that_sink_and_status_shows_why(tmp_path, receiver):
    clock, box = FakeClock(), MemoryOutbox()
    box.add("9", [Event(EventKind.FINAL, 1, Route.ERROR, Message("x", facts=FACTS))], clock.now)
    sinks: Dict[str, Sink] = {"phone": NtfySink("phone", receiver.url("ntfy", "t"), token="wrong-token-123456")}
    deliver_due(box, sinks, lambda facts: ("phone",), pacer_folder=str(tmp_path), owner="t:1", clock=clock.time,
                pacer_sleep=clock.sleep)
    delivery = box.load_outbox()[0].deliveries["phone"]
    assert delivery.status is DeliveryStatus.GONE and "HTTP 401" in delivery.last_error
    assert "wrong-token-123456" not in delivery.last_error
    assert next_attempt_at(box.load_outbox()) is None


# ----------------------------------------------------------------------------------- routes


def routes_config(routes: list, env: Dict[str, str] = {}) -> Config:  # noqa: B006 - never mutated
    return parse_config(json.dumps({
        "discord": {"error_webhook": "https://discord.com/api/webhooks/1/abcdefgh"},
        "notify": {"sinks": {"team": {"type": "slack", "url": "https://hooks.slack.com/services/T/B/x"},
                             "phone": {"type": "ntfy", "url": "https://ntfy.sh/topic"}},
                   "routes": routes}}), "config.json", None, env=env)


def test_routes_filter_by_event_state_and_name_and_the_discord_shorthand_still_hears_everything():
    config = routes_config([
        {"events": ["final"], "states": ["FAILED", "OUT_OF_MEMORY", "TIMEOUT"], "sinks": ["team", "phone"]},
        {"events": ["stalled", "time_limit"], "names": "^train-", "sinks": ["phone"]}])
    assert config.sinks_for(RouteFacts(EventKind.FINAL, Route.ERROR, "OUT_OF_MEMORY", "x")) == (
        "discord-error", "team", "phone")
    assert config.sinks_for(RouteFacts(EventKind.FINAL, Route.SUCCESS, "COMPLETED", "x")) == ("discord-error",)
    assert config.sinks_for(RouteFacts(EventKind.STALLED, Route.ERROR, "RUNNING", "train-7")) == (
        "discord-error", "phone")
    assert config.sinks_for(RouteFacts(EventKind.STALLED, Route.ERROR, "RUNNING", "eval")) == ("discord-error",)


def test_named_sinks_without_routes_hear_everything():
    config = parse_config(json.dumps({"notify": {"sinks": {"p": {"type": "ntfy", "url": "https://ntfy.sh/t"}}}}),
                          "c", None)
    assert config.sinks_for(RouteFacts(EventKind.START, Route.SUCCESS)) == ("p",)


@pytest.mark.parametrize("notify, key", [
    ({"sinks": {"x": {"type": "telegram", "url": "https://t.me"}}}, "notify.sinks.x.type"),
    ({"sinks": {"x": {"type": "slack"}}}, "notify.sinks.x.url"),
    ({"sinks": {"x": {"type": "slack", "url": "https://h", "tokn": "t"}}}, "unknown key 'tokn'"),
    ({"sinks": {"x": {"type": "slack", "url": "http://example.org/h"}}}, "must use https"),
    ({"sinks": {"x": {"type": "ntfy", "url": "https://n/t"}}, "routes": [{"sinks": ["y"]}]},
     "notify.routes[0].sinks[0]: no sink named 'y'"),
    ({"sinks": {"x": {"type": "ntfy", "url": "https://n/t"}}, "routes": [{"sinks": ["x"], "names": "(["}]},
     "notify.routes[0].names is not a valid regular expression"),
    ({"sinks": {"x": {"type": "ntfy", "url": "https://n/t"}}, "routes": [{"sinks": ["x"], "events": ["ended"]}]},
     "notify.routes[0].events[0]: unknown event 'ended'"),
    ({"sinks": {"x": {"type": "ntfy", "url": "https://n/t"}}, "routes": [{"sinks": ["x"], "states": ["FAIL"]}]},
     "notify.routes[0].states[0]"),
    ({"sinks": {"m": {"type": "email", "from": "a@b.org", "to": ["c@d.org"], "smtp": "h:25", "ssl": True,
                      "starttls": True}}}, "starttls and ssl exclude each other"),
    ({"sinks": {"m": {"type": "email", "from": "a@b.org", "to": ["nobody"], "smtp": "h:25"}}}, "notify.sinks.m.to[0]"),
])
def test_bad_channel_config_is_one_clear_error_naming_the_key(notify, key):
    from core.notify.discord import validate_webhook_url

    with pytest.raises(ConfigError) as error:
        parse_config(json.dumps({"notify": notify}), "/home/a/config.json", validate_webhook_url)
    assert key in str(error.value)


def test_plain_http_is_allowed_to_loopback_only():
    from core.notify.discord import validate_webhook_url

    parse_config(json.dumps({"notify": {"sinks": {"x": {"type": "webhook", "url": "http://127.0.0.1:8000/h"}}}}),
                 "c", validate_webhook_url)


# ---------------------------------------------------------------------------------- secrets


def test_a_missing_variable_is_a_clear_error_naming_key_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("NTFY_TOKEN", raising=False)
    (tmp_path / "config.json").write_text(json.dumps({"notify": {"sinks": {
        "phone": {"type": "ntfy", "url": "https://ntfy.sh/t", "token": "${NTFY_TOKEN}"}}}}))
    with pytest.raises(ConfigError, match=r"notify\.sinks\.phone\.token: \$\{NTFY_TOKEN\} is not set"):
        load_config(Paths(str(tmp_path)), require_webhook=False)
    # commands that send nothing (status) go on without it
    assert load_config(Paths(str(tmp_path)), require_webhook=False, need_secrets=False).sinks["phone"].token == \
        "${NTFY_TOKEN}"


def test_env_secrets_appear_in_no_state_file_and_no_log(tmp_path, receiver, monkeypatch, caplog, log_lines):
    slack_url = receiver.url("slack", "T0/B0/slack-url-secret-42")
    monkeypatch.setenv("SLACK_URL", slack_url)
    monkeypatch.setenv("NTFY_TOKEN", "ntfy-token-secret-42")  # the receiver wants TOKEN: this one is refused
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    home = tmp_path / "home"
    paths = Paths(str(home))
    paths.ensure()
    (home / "config.json").write_text(json.dumps({"notify": {"sinks": {
        "team": {"type": "slack", "url": "${SLACK_URL}"},
        "phone": {"type": "ntfy", "url": receiver.url("ntfy", "t"), "token": "${NTFY_TOKEN}"},
        "hook": {"type": "webhook", "url": receiver.url("hook"), "secret": "${HOOK_SECRET}"}}}}))
    config = load_config(paths, require_webhook=True)
    store = StateStore(paths.state)
    record = JobRecord("55", name="train")
    store.create(record)
    records = Records(store, "55")
    records.update(lambda r: r.outbox.extend(_entries()))
    receiver.enqueue("slack", ("status", 503))
    caplog.set_level(logging.INFO)  # what the libraries log (urllib3 logs request paths at DEBUG), beside log_lines
    InProcessDelivery(store, config, owner="t:1").deliver(records)
    outbox = {name: d for entry in store.load("55").outbox for name, d in entry.deliveries.items()}
    assert outbox["hook"].status is DeliveryStatus.DELIVERED and outbox["phone"].status is DeliveryStatus.GONE
    assert outbox["team"].status is DeliveryStatus.PENDING
    written = "".join(path.read_text(errors="replace") for path in home.rglob("*") if path.is_file()
                      and path.name != "config.json")
    for secret in ("slack-url-secret-42", "ntfy-token-secret-42", SECRET):
        assert secret not in written and secret not in caplog.text and secret not in log_lines.getvalue()
    assert "${SLACK_URL}" in (home / "config.json").read_text()


def _entries():
    from core.notify.outbox import add_events

    entries: list = []
    add_events(entries, "55", [Event(EventKind.FINAL, 1, Route.ERROR, Message("Job 55 failed", facts=FACTS))], 1.0)
    return entries


def test_test_notify_reports_each_sink(tmp_path, receiver, monkeypatch, capsys):
    import jobmon

    monkeypatch.setenv("JOBMON_HOME", str(tmp_path))
    monkeypatch.setenv("NTFY_TOKEN", TOKEN)
    (tmp_path / "config.json").write_text(json.dumps({"notify": {"sinks": {
        "team": {"type": "slack", "url": receiver.url("slack")},
        "phone": {"type": "ntfy", "url": receiver.url("ntfy", "t"), "token": "${NTFY_TOKEN}"},
        "gone": {"type": "teams", "url": receiver.url("teams")}}}}))
    os.chmod(tmp_path / "config.json", 0o600)
    receiver.enqueue("teams", ("status", 404))
    assert jobmon.main(["test-notify"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("team: OK (slack http://127.0.0.1:") and out[1].startswith("phone: OK (ntfy ")
    assert out[2].startswith("gone: FAILED (teams ") and "HTTP 404" in out[2]
    assert jobmon.main(["test-notify", "phone"]) == 0 and len(receiver.messages["ntfy"]) == 2
    assert jobmon.main(["test-notify", "nope"]) == 1
    assert "no sink named 'nope'" in capsys.readouterr().err


def test_messages_carry_the_facts_routes_filter_on():
    from core.monitor.messages import final_event
    from core.slurm.model import JobState
    from core.state.model import FinalRecord

    record = JobRecord("77", name="train-a", final=FinalRecord(state=JobState.OUT_OF_MEMORY, exit_code=0,
                                                                signal=125))
    facts = final_event(record).message.facts
    assert (facts.job_id, facts.name, facts.state) == ("77", "train-a", "OUT_OF_MEMORY")


def test_the_sink_modules_know_nothing_of_slurm():
    root = Path(__file__).resolve().parents[2] / "core" / "notify"
    for name in ("slack", "teams", "ntfy", "mail", "webhook", "http", "plain"):
        text = (root / f"{name}.py").read_text()
        assert "core.slurm" not in text and "core.state" not in text, name
