"""The ntfy sink: the message as text POSTed to a topic URL, with its title, priority and tags as headers.

Documented facts (docs.ntfy.sh/publish): publish by POST/PUT of the message body to the topic URL;
headers `Title`, `Priority` (1-5 or min/low/default/high/max), `Tags` (comma-separated; emoji short
codes show as emojis) and `Click` (a URL opened on tap); an access token goes in
`Authorization: Bearer <token>`. A body over 4096 bytes is not shown as a message but turned into an
attachment, so the text is kept within 4096 bytes (the log excerpt shrinks first). ntfy.sh limits
each visitor (by default a burst of 60 requests, then one per 5 s) and answers 429 beyond it.

Header values must be ASCII on the wire: a title with other characters is sent RFC 2047-encoded
(`=?utf-8?b?...?=`), which ntfy decodes.
"""
from __future__ import annotations

from email.header import Header
from typing import Any, Dict, Optional, Tuple

from core.notify.http import UrlSink, fit, post, scrub, secrets_of
from core.notify.message import Envelope, Message, Tone
from core.notify.outbox import Outcome
from core.notify.plain import render_text

BODY_LIMIT = 4096
TITLE_LIMIT = 250
PRIORITIES = {Tone.FAILURE: "high", Tone.WARNING: "high", Tone.SUCCESS: "default", Tone.INFO: "default"}
TAGS = {Tone.FAILURE: "x", Tone.WARNING: "warning", Tone.SUCCESS: "white_check_mark", Tone.INFO: "information_source"}


def header_text(text: str) -> str:
    """A header value on one line, RFC 2047-encoded when it is not plain ASCII."""
    line = " ".join(text.split())
    try:
        line.encode("ascii")
        return line
    except UnicodeEncodeError:
        return Header(line, "utf-8").encode(maxlinelen=10_000)


def render_request(message: Message) -> Tuple[bytes, Dict[str, str]]:
    body = render_text(message, BODY_LIMIT)
    headers = {"Title": header_text(fit(message.title, TITLE_LIMIT)), "Priority": PRIORITIES[message.tone],
               "Tags": TAGS[message.tone], "Content-Type": "text/plain; charset=utf-8"}
    if message.url.startswith(("https://", "http://")) and message.url.isascii():
        headers["Click"] = message.url
    return (body or message.title or "jobmon").encode("utf-8"), headers


class NtfySink(UrlSink):
    """An ntfy topic (https://ntfy.sh/<topic> or a self-hosted server), with an optional access token."""

    min_spacing = 1.0
    per_minute = 12  # ntfy.sh's default sustained rate per visitor: one request per 5 s

    kind = "ntfy"

    def __init__(self, name: str, url: str, token: str = "", post_with: Optional[Any] = None) -> None:
        super().__init__(name, url, post_with)
        self.token = token

    def describe(self) -> str:
        return super().describe() + (" (with token)" if self.token else "")

    def render(self, message: Message, envelope: Optional[Envelope] = None) -> Tuple[bytes, Dict[str, str]]:
        return render_request(message)

    def deliver(self, payload: Any, timeout: float) -> Outcome:
        body, headers = payload
        if self.token:
            headers = dict(headers, Authorization=f"Bearer {self.token}")
        secrets = [*secrets_of(self.url), self.token]
        outcome = post(self.url, "ntfy", secrets, timeout, self._post, data=body, headers=headers)
        return Outcome(outcome.answer, scrub(outcome.detail, secrets), outcome.retry_after, outcome.message_id,
                       outcome.pace)
