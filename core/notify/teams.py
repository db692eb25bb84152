"""The Microsoft Teams sink: a Workflows webhook ("When a Teams webhook request is received"), one
Adaptive Card per message, within Teams' size limit.

Documented facts (learn.microsoft.com, microsoftteams/platform webhooks-and-connectors "Create and
send messages"): Workflows accept Adaptive Cards only, in the envelope
``{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
"content": {...}}]}``; a message may be at most about 28 KB (the service counts bytes, so the
body is measured in UTF-8 and sent with an explicit charset). A Workflow answers 202 Accepted;
throttling is a 429 with Retry-After.

The card: the title (coloured by tone), the description, the fields as a FactSet, the log excerpt
in monospace and the footer in small print. When the card would pass the budget the excerpt
shrinks first (its last lines kept), then the longest fact values, then the description.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from core.notify.http import UrlSink, fit, fit_tail, post, secrets_of
from core.notify.message import Envelope, Message, Tone
from core.notify.outbox import Outcome

#: 28 KB as Teams documents it, less room for the HTTP framing it may count too.
SIZE_LIMIT = 28 * 1024 - 512
TITLE_LIMIT = 300
COLORS = {Tone.SUCCESS: "Good", Tone.FAILURE: "Attention", Tone.WARNING: "Warning", Tone.INFO: "Accent"}


def _card(message: Message, description: str, values: List[str], excerpt: str) -> Dict[str, Any]:
    body: List[Dict[str, Any]] = [{"type": "TextBlock", "text": fit(message.title, TITLE_LIMIT), "size": "Medium",
                                   "weight": "Bolder", "wrap": True, "color": COLORS[message.tone]}]
    if description:
        body.append({"type": "TextBlock", "text": description, "wrap": True})
    if message.fields:
        body.append({"type": "FactSet", "facts": [{"title": f.name, "value": value or "—"}
                                                   for f, value in zip(message.fields, values)]})
    if excerpt:
        body.append({"type": "TextBlock", "text": excerpt, "fontType": "Monospace", "wrap": True, "size": "Small"})
    if message.footer:
        body.append({"type": "TextBlock", "text": message.footer, "isSubtle": True, "size": "Small", "wrap": True})
    content: Dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                               "type": "AdaptiveCard", "version": "1.4", "body": body, "msteams": {"width": "Full"}}
    if message.url.startswith(("https://", "http://")):
        content["actions"] = [{"type": "Action.OpenUrl", "title": "Open", "url": message.url}]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": content}]}


def size_of(payload: Dict[str, Any]) -> int:
    return len(encode(payload))


def encode(payload: Dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render_payload(message: Message, limit: int = SIZE_LIMIT) -> Dict[str, Any]:
    description = message.description
    values = [f.value.strip() for f in message.fields]
    excerpt = message.excerpt.rstrip()
    payload = _card(message, description, values, excerpt)
    while size_of(payload) > limit:
        excess = size_of(payload) - limit
        if excerpt:
            excerpt = fit_tail(excerpt, len(excerpt) - excess) if len(excerpt) > excess + 1 else ""
        elif any(len(value) > 40 for value in values):
            longest = max(range(len(values)), key=lambda n: len(values[n]))
            values[longest] = fit(values[longest], max(40, len(values[longest]) - excess))
        elif len(description) > 40:
            description = fit(description, max(40, len(description) - excess))
        else:  # titles and names alone cannot pass 28 KB unless fields are absurdly many: drop the last
            message = Message(message.title, tone=message.tone, fields=message.fields[:-1] or (),
                              footer=message.footer)
            values = values[:len(message.fields)]
            if not message.fields:
                description, excerpt = fit(description, 40), ""
                return _card(message, description, [], "")
        payload = _card(message, description, values, excerpt)
    return payload


class TeamsSink(UrlSink):
    """A Teams Workflows webhook URL (https://....logic.azure.com/... or ...powerplatform.com/...)."""

    kind = "teams"
    min_spacing = 1.0
    per_minute = 30

    def render(self, message: Message, envelope: Optional[Envelope] = None) -> bytes:
        return encode(render_payload(message))

    def deliver(self, payload: Any, timeout: float) -> Outcome:
        return post(self.url, "Teams", secrets_of(self.url), timeout, self._post, data=payload,
                    headers={"Content-Type": "application/json; charset=utf-8"})
