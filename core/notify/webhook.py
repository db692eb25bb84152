"""The generic webhook sink: each event as a CloudEvents 1.0 JSON envelope, optionally signed.

CloudEvents 1.0 (github.com/cloudevents/spec, JSON event format, structured mode): required
attributes `specversion` ("1.0"), `id`, `source` (a URI-reference) and `type`; optional `time`
(RFC 3339), `subject`, `datacontenttype`; `data` holds the payload. Sent with the media type
`application/cloudevents+json`.

* `id` is the event's stable outbox key (`123:final:1`): a receiver can drop a repeat, which can
  happen only when a deliverer dies between the receiver's answer and its record of it.
* `type` is `org.jobmon.job.<kind>` (`org.jobmon.job.final`, `org.jobmon.job.stalled` ...).
* `data` is the job summary the message carries (id, name, state, exit code, findings, efficiency,
  progress) with the message's title, text and fields.
* With a shared secret, `X-Jobmon-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`.

The body is kept within BODY_LIMIT bytes: the log excerpt shrinks first, then the text fields.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone
from typing import Any, Dict, Optional, Tuple

from core.notify.http import UrlSink, fit, fit_tail, post, scrub, secrets_of
from core.notify.message import Envelope, Message
from core.notify.outbox import Outcome

SPEC_VERSION = "1.0"
TYPE_PREFIX = "org.jobmon.job."
DEFAULT_SOURCE = "urn:jobmon"
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
SIGNATURE_HEADER = "X-Jobmon-Signature"
BODY_LIMIT = 64 * 1024


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _data(message: Message, excerpt: str, text_limit: int) -> Dict[str, Any]:
    facts = message.facts
    return {
        "job": {"id": facts.job_id, "name": facts.name, "state": facts.state, "exit_code": facts.exit_code,
                "findings": list(facts.findings), "efficiency": facts.efficiency, "progress": facts.progress},
        "title": message.title,
        "tone": message.tone.value,
        "description": fit(message.description, text_limit),
        "fields": [{"name": f.name, "value": fit(f.value, text_limit)} for f in message.fields],
        "excerpt": excerpt,
    }


def render_event(message: Message, envelope: Optional[Envelope], source: str = DEFAULT_SOURCE,
                 limit: int = BODY_LIMIT) -> bytes:
    now = datetime.now(timezone.utc).timestamp()
    env = envelope or Envelope(f"test:{now:.0f}", "test", now)
    event: Dict[str, Any] = {
        "specversion": SPEC_VERSION, "id": env.key, "source": source or DEFAULT_SOURCE,
        "type": TYPE_PREFIX + env.kind,
        "time": datetime.fromtimestamp(env.created_at, timezone.utc).isoformat(timespec="seconds"),
        "datacontenttype": "application/json",
    }
    if message.facts.job_id:
        event["subject"] = message.facts.job_id
    excerpt, text_limit = message.excerpt.rstrip(), 4096
    while True:
        event["data"] = _data(message, excerpt, text_limit)
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        excess = len(body) - limit
        if excess <= 0:
            return body
        if excerpt:
            excerpt = fit_tail(excerpt, len(excerpt) - excess) if len(excerpt) > excess + 1 else ""
        elif text_limit > 64:
            text_limit //= 2
        else:
            event["data"] = {"job": event["data"]["job"], "title": fit(message.title, 256), "truncated": True}
            return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class WebhookSink(UrlSink):
    """Any https endpoint that takes CloudEvents (CI, a chat bridge, your own service)."""

    min_spacing = 0.2
    per_minute = 120

    kind = "webhook"

    def __init__(self, name: str, url: str, secret: str = "", source: str = "",
                 post_with: Optional[Any] = None) -> None:
        super().__init__(name, url, post_with)
        self.secret = secret
        self.source = source or DEFAULT_SOURCE

    def describe(self) -> str:
        return super().describe() + (" (signed)" if self.secret else "")

    def render(self, message: Message, envelope: Optional[Envelope] = None) -> Tuple[bytes, Dict[str, str]]:
        body = render_event(message, envelope, self.source)
        headers = {"Content-Type": CONTENT_TYPE}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        return body, headers

    def deliver(self, payload: Any, timeout: float) -> Outcome:
        body, headers = payload
        secrets = [*secrets_of(self.url), self.secret]
        outcome = post(self.url, "the webhook", secrets, timeout, self._post, data=body, headers=headers)
        return Outcome(outcome.answer, scrub(outcome.detail, secrets), outcome.retry_after, outcome.message_id,
                       outcome.pace)
