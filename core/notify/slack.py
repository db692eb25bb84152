"""The Slack sink: an incoming webhook, Block Kit blocks plus a plain `text` fallback, within Slack's limits.

Slack's documented limits (Block Kit reference, docs.slack.dev/reference/block-kit/blocks): a header
block's plain_text at most 150 characters; a section's text at most 3000, its `fields` at most 10
of at most 2000 each; at most 50 blocks per message. Posting messages: about 1 per second per
webhook, short bursts allowed (docs.slack.dev/apis/web-api/rate-limits); a 429 carries Retry-After.
Errors of an incoming webhook: 400 invalid_payload, 403 action_prohibited / invalid_token,
404 no_service / channel_not_found, 410 channel_is_archived (all GONE by core.notify.http's rule).

Text: mrkdwn reads `&`, `<` and `>` as markup, so they are escaped as Slack asks (&amp; &lt; &gt;);
Slack has no escape for `*`, `_` or `~`, so a job name with them may show formatted. The excerpt goes
into a code block, with runs of backticks broken up so the log cannot close it.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from core.notify.http import ELLIPSIS, UrlSink, fit, fit_tail, post, secrets_of
from core.notify.message import Envelope, Message, Tone
from core.notify.outbox import Outcome
from core.notify.plain import render_text

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
FIELDS_PER_SECTION = 10
BLOCKS_LIMIT = 50
CONTEXT_LIMIT = 2000
#: The notification text (the fallback): Slack shows up to 40,000 characters; a phone shows far less.
TEXT_LIMIT = 3000

ICONS = {Tone.SUCCESS: "✅", Tone.FAILURE: "❌", Tone.WARNING: "⚠️", Tone.INFO: "ℹ️"}


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str, limit: int) -> Dict[str, str]:
    """Escaped text cut to `limit` after escaping (an escape is never split)."""
    escaped = escape(text)
    if len(escaped) > limit:
        kept, room = [], limit - len(ELLIPSIS)
        for token in map(escape, text[:limit]):
            if len(token) > room:
                break
            kept.append(token)
            room -= len(token)
        escaped = "".join(kept) + ELLIPSIS
    return {"type": "mrkdwn", "text": escaped}


def render_payload(message: Message) -> Dict[str, Any]:
    title = fit(f"{ICONS[message.tone]} {message.title}".strip(), HEADER_LIMIT)
    blocks: List[Dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}}]
    if message.description.strip():
        blocks.append({"type": "section", "text": _mrkdwn(message.description, SECTION_LIMIT)})
    fields = [_mrkdwn(f"*{f.name}*\n{f.value.strip() or '—'}", FIELD_LIMIT) for f in message.fields]
    for start in range(0, len(fields), FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": fields[start:start + FIELDS_PER_SECTION]})
    excerpt = re.sub(r"`(?=`)", "`\u200d", escape(message.excerpt.rstrip()))
    if excerpt:
        room = SECTION_LIMIT - len("```\n\n```")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```\n{fit_tail(excerpt, room)}\n```"}})
    if message.footer.strip():
        blocks.append({"type": "context", "elements": [_mrkdwn(message.footer, CONTEXT_LIMIT)]})
    if len(blocks) > BLOCKS_LIMIT:
        blocks = blocks[:BLOCKS_LIMIT]
    text = fit(escape(render_text(Message(message.title, message.description), TEXT_LIMIT, title=True,
                                  size=len)), TEXT_LIMIT)
    return {"text": text, "blocks": blocks}


class SlackSink(UrlSink):
    """A Slack incoming webhook (https://hooks.slack.com/services/...)."""

    kind = "slack"
    min_spacing = 1.0  # about one message per second per webhook
    per_minute = 50

    def render(self, message: Message, envelope: Optional[Envelope] = None) -> Dict[str, Any]:
        return render_payload(message)

    def deliver(self, payload: Any, timeout: float) -> Outcome:
        return post(self.url, "Slack", secrets_of(self.url), timeout, self._post, json=payload)
