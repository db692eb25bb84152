"""The Discord sink: a message as a safe embed within Discord's limits, one POST, its answer classified.

This module knows nothing of Slurm. It imports ``requests`` only when it posts, so a process that
never sends does not load it (monitor daemons never do: delivery runs in a short-lived process).

Text handling, decided once here so callers need not think about it:

* ``Field.name``, ``Field.value`` and ``Message.title`` are plain text: Discord
  markdown specials in them are escaped, so a job named ``my_*run*`` shows as
  typed.
* ``Message.description`` is already formatted by jobmon (it is not copied from
  logs) and is sent as is.
* ``Message.excerpt`` is raw log text shown in a code block; only runs of
  backticks are broken up so the log cannot close the block early.
* ``Message.footer`` is not rendered as markdown by Discord and is sent as is.
* Mentions never ping: ``allowed_mentions`` is always empty.

Every documented Discord limit is enforced by truncating with ``…``, never by
failing. When the embed's total exceeds 6000 characters the excerpt shrinks
first (keeping its tail), then field values (longest first), then the
description, the footer, field names and finally the title.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from core.notify.http import UrlSink, redact_url, validate_url
from core.notify.http import describe_transport as _describe_transport
from core.notify.http import header as _header
from core.notify.http import one_line as _one_line
from core.notify.http import seconds as _seconds
from core.notify.message import Envelope, Message, Tone
from core.notify.outbox import Answer, Outcome

__all__ = ["DiscordSink", "classify", "redact_url", "render_payload", "validate_webhook_url"]

COLORS: Dict[Tone, int] = {
    Tone.SUCCESS: 0x2ECC71,
    Tone.FAILURE: 0xE74C3C,
    Tone.WARNING: 0xE67E22,
    Tone.INFO: 0x3498DB,
}

# Discord's documented limits (Message resource "Embed Limits"; Execute Webhook).
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELDS_LIMIT = 25
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
EMBED_TOTAL_LIMIT = 6000
USERNAME_LIMIT = 80
URL_LIMIT = 2048

ELLIPSIS = "…"
EMPTY_VALUE = "—"
_CODE_OPEN = "```\n"
_CODE_CLOSE = "\n```"
_ZWJ = "\u200d"

# Escaped anywhere / only at the start of a line (headers, quotes, lists).
_ALWAYS_SPECIAL = frozenset("\\*_~`|[]<")
_LINE_START_SPECIAL = frozenset("#>-")


_Row = Tuple[str, str, bool]


class _Formatted(str):
    """Text jobmon composed itself (description, footer, user name): sent without escaping."""


# --------------------------------------------------------------------------- text


def _escape_tokens(text: str) -> List[str]:
    """One token per source character, so truncation never splits an escape."""
    tokens = []
    line_start = True
    for ch in text:
        if ch in _ALWAYS_SPECIAL or (line_start and ch in _LINE_START_SPECIAL):
            tokens.append("\\" + ch)
        else:
            tokens.append(ch)
        if ch == "\n":
            line_start = True
        elif not ch.isspace():
            line_start = False
    return tokens


def _plain(text: str) -> bool:
    return not isinstance(text, _Formatted)


def _fit(text: str, limit: int) -> str:
    """Render ``text`` (escaped unless _Formatted) in at most ``limit`` chars, keeping the head."""
    if limit <= 0:
        return ""
    # Escaping only lengthens text, so limit + 1 source chars decide everything.
    view = text[: limit + 1]
    tokens = _escape_tokens(view) if _plain(text) else list(view)
    if sum(map(len, tokens)) <= limit:
        return "".join(tokens)
    kept: List[str] = []
    room = limit - len(ELLIPSIS)
    for token in tokens:
        if len(token) > room:
            break
        kept.append(token)
        room -= len(token)
    return "".join(kept) + ELLIPSIS


def _fit_tail(text: str, limit: int) -> str:
    """Keep the end of ``text`` in at most ``limit`` chars: a log's last lines matter most."""
    if len(text) <= limit:
        return text
    return ELLIPSIS + text[len(text) - (limit - len(ELLIPSIS)):]


def _neutralise_fences(text: str) -> str:
    """Put a zero-width joiner between adjacent backticks, so no ``` can form."""
    return re.sub(r"`(?=`)", "`" + _ZWJ, text)


def _water_fill(sources: List[str], budget: int, cap: int) -> int:
    """Largest per-item cap (1..cap) whose rendered total fits ``budget``; 1 if none does."""
    def total(c: int) -> int:
        return sum(len(_fit(s, c)) for s in sources)

    low, high = 1, cap
    while low < high:
        mid = (low + high + 1) // 2
        if total(mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


# ----------------------------------------------------------------------- payload


@dataclass(frozen=True)
class _Parts:
    """The embed's texts after truncation, with what the 6000 total counts."""

    title: str
    description: str
    excerpt_len: int
    fields: Tuple[_Row, ...]
    footer: str

    def size(self) -> int:
        return (
            len(self.title) + len(self.description) + len(self.footer)
            + sum(len(name) + len(value) for name, value, _ in self.fields)
        )


def _render_parts(message: Message, rows: List[_Row], excerpt: str, caps: Mapping[str, int]) -> _Parts:
    title = _fit(message.title, caps["title"])
    description = _fit(_Formatted(message.description), caps["description"])
    sep = "\n" if description else ""
    room = DESCRIPTION_LIMIT - len(description) - len(sep) - len(_CODE_OPEN) - len(_CODE_CLOSE)
    room = min(room, caps["excerpt"])
    tail = _fit_tail(excerpt, room) if excerpt and room > len(ELLIPSIS) else ""
    if tail:
        description += sep + _CODE_OPEN + tail + _CODE_CLOSE
    fields = tuple((_fit(name, caps["name"]), _fit(value, caps["value"]), inline) for name, value, inline in rows)
    footer = _fit(_Formatted(message.footer), caps["footer"])
    return _Parts(title, description, len(tail), fields, footer)


def render_payload(
    message: Message, *, username: str = "jobmon", now: Optional[datetime] = None
) -> Dict[str, Any]:
    """Build an execute-webhook body with one embed that Discord will accept whatever the input."""
    # Discord refuses empty (or blank) field names and values.
    rows: List[_Row] = [
        (f.name if f.name.strip() else EMPTY_VALUE, f.value if f.value.strip() else EMPTY_VALUE, f.inline)
        for f in message.fields[:FIELDS_LIMIT]
    ]
    excerpt = _neutralise_fences(message.excerpt.rstrip())
    caps = {
        "title": TITLE_LIMIT,
        "description": DESCRIPTION_LIMIT,
        "excerpt": DESCRIPTION_LIMIT,
        "name": FIELD_NAME_LIMIT,
        "value": FIELD_VALUE_LIMIT,
        "footer": FOOTER_LIMIT,
    }
    parts = _render_parts(message, rows, excerpt, caps)
    for step in ("excerpt", "value", "description", "footer", "name", "title"):
        excess = parts.size() - EMBED_TOTAL_LIMIT
        if excess <= 0:
            break
        if step in ("name", "value"):
            texts = [name if step == "name" else value for name, value, _ in parts.fields]
            used = sum(len(text) for text in texts)
            sources = [name if step == "name" else value for name, value, _ in rows]
            caps[step] = _water_fill(sources, used - excess, caps[step])
        else:
            current = {
                "excerpt": parts.excerpt_len,
                "description": len(parts.description),
                "footer": len(parts.footer),
                "title": len(parts.title),
            }[step]
            caps[step] = max(0, current - excess)
        parts = _render_parts(message, rows, excerpt, caps)

    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    embed: Dict[str, Any] = {"color": COLORS[message.tone], "timestamp": stamp.isoformat(timespec="seconds")}
    if parts.title:
        embed["title"] = parts.title
    if parts.description:
        embed["description"] = parts.description
    if parts.fields:
        embed["fields"] = [{"name": n, "value": v, "inline": inline} for n, v, inline in parts.fields]
    if parts.footer:
        embed["footer"] = {"text": parts.footer}
    # A malformed embed URL makes Discord reject the whole message, so it is dropped instead.
    if re.fullmatch(r"https?://\S+", message.url) and len(message.url) <= URL_LIMIT:
        embed["url"] = message.url

    payload: Dict[str, Any] = {"embeds": [embed], "allowed_mentions": {"parse": []}}
    name = _fit(_Formatted(username.strip()), USERNAME_LIMIT)
    if name:
        payload["username"] = name
    return payload


# -------------------------------------------------------------------------- URLs


def validate_webhook_url(url: str, *, name: str) -> str:
    """Return the URL without surrounding blanks, or raise ConfigError naming the key ``name``."""
    return validate_url(url, name=name, hint="copy it from Discord: channel settings > Integrations > Webhooks > "
                                             "Copy Webhook URL")


def _with_wait(url: str) -> str:
    """Add ``wait=true`` (keeping any other query) so Discord answers with the created message."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "wait"]
    query.append(("wait", "true"))
    return urlunsplit(parts._replace(query=urlencode(query)))


# ------------------------------------------------------------------------ sending


def _json_body(response: Any) -> Mapping[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _secrets_of(url: str) -> List[str]:
    """Parts of the URL that may be a token: longer non-numeric path segments and query values.

    Short ones are left alone, as masking them would garble ordinary words (real tokens are ~68 chars).
    """
    parts = urlsplit(url)
    candidates = parts.path.split("/") + [value for _, value in parse_qsl(parts.query)]
    return sorted({c for c in candidates if len(c) >= 6 and not c.isdigit() and c != "webhooks"}, key=len, reverse=True)


def _discord_error(response: Any, secrets: List[str]) -> str:
    """The server's explanation of a refusal on one line, with anything from the URL masked."""
    body = _json_body(response)
    message = str(body.get("message", "")).strip()
    if body.get("errors"):
        message += " " + json.dumps(body["errors"], separators=(",", ":"), ensure_ascii=False)
    # A proxy's error page may echo the request path, token included.
    message = message or str(getattr(response, "text", "") or "no explanation given")
    for secret in secrets:
        message = message.replace(secret, "****")
    return _one_line(message)


def _retry_after(response: Any) -> Optional[float]:
    """Seconds a 429 asks us to wait: the larger of header and body, so we never come back early."""
    candidates = (_header(response.headers, "Retry-After"), _json_body(response).get("retry_after"))
    asked = [s for s in map(_seconds, candidates) if s is not None]
    return max(asked) if asked else None


def classify(response: Any, secrets: List[str]) -> Outcome:
    """What one HTTP answer of Discord means for the message (delivered, retry later, gone for good)."""
    status = int(response.status_code)
    if status in (200, 204):
        message_id = _json_body(response).get("id") if status == 200 else None
        pace = 0.0  # an empty bucket means the next message to this webhook should wait
        if _header(response.headers, "X-RateLimit-Remaining") == "0":
            pace = _seconds(_header(response.headers, "X-RateLimit-Reset-After")) or 0.0
        return Outcome(Answer.DELIVERED, "delivered", message_id=str(message_id or ""), pace=pace)
    if status in (401, 403, 404):
        return Outcome(Answer.GONE, f"webhook deleted or invalid (HTTP {status}: {_discord_error(response, secrets)})")
    if status == 429:
        wait = _retry_after(response)
        if wait is None:
            return Outcome(Answer.RETRY, "rate limited without a retry time")
        return Outcome(Answer.RETRY, f"rate limited for {wait:g}s", retry_after=wait, pace=wait)
    if 500 <= status <= 599:
        return Outcome(Answer.RETRY, f"server error HTTP {status}")
    return Outcome(Answer.GONE, f"Discord refused the message (HTTP {status}): {_discord_error(response, secrets)}")


class DiscordSink(UrlSink):
    """A Discord webhook: one embed per message, posted with ``?wait=true`` so a dropped message is an error."""

    kind = "discord"

    def __init__(self, name: str, url: str, username: str = "jobmon",
                 post: Optional[Callable[..., Any]] = None) -> None:
        super().__init__(name, url, post)
        self.username = username

    def render(self, message: Message, envelope: Optional[Envelope] = None) -> Dict[str, Any]:
        return render_payload(message, username=self.username)

    def deliver(self, payload: Any, timeout: float) -> Outcome:
        try:
            target = _with_wait(self.url)
            secrets = _secrets_of(self.url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            return Outcome(Answer.GONE, f"not a usable webhook URL: {redact_url(self.url)}")
        from core.notify.http import default_post

        post = self._post or default_post()
        try:
            response = post(target, json=payload, timeout=timeout)
        except (OSError, ValueError) as exc:  # requests' exceptions derive from OSError too
            # requests' MissingSchema / InvalidURL, urllib3's LocationParseError (a host like `a..b`,
            # which is no OSError): retrying cannot help
            if isinstance(exc, ValueError):
                return Outcome(Answer.GONE, f"not a usable webhook URL: {redact_url(self.url)}")
            return Outcome(Answer.RETRY, _describe_transport(exc, timeout))
        return classify(response, secrets)

