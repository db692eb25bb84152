"""A message as plain text within a size budget: for ntfy, e-mail and Slack's notification fallback.

The budget is met by cutting the log excerpt first (keeping its last lines), then everything else
from the end; it never fails. `size` measures what the service counts (characters, or UTF-8 bytes).
"""
from __future__ import annotations

from typing import Callable, List

from core.notify.http import ELLIPSIS, fit_bytes, fit_tail
from core.notify.message import Message

EXCERPT_HEADING = "Last log lines:"


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def field_lines(message: Message) -> List[str]:
    """`Name: value` per field (a multi-line value starts on its own line)."""
    lines = []
    for field in message.fields:
        value = field.value.strip() or "—"
        lines.append(f"{field.name}:\n{value}" if "\n" in value else f"{field.name}: {value}")
    return lines


def compose(message: Message, excerpt: str, *, title: bool) -> str:
    parts = [message.title] if title else []
    if message.description:
        parts.append(message.description)
    if message.fields:
        parts.append("\n".join(field_lines(message)))
    if excerpt:
        parts.append(f"{EXCERPT_HEADING}\n{excerpt}")
    if message.footer:
        parts.append(message.footer)
    return "\n\n".join(parts)


def render_text(message: Message, limit: int, *, title: bool = False,
                size: Callable[[str], int] = utf8_size) -> str:
    """The message as text of at most `limit` (as `size` counts): the excerpt's tail shrinks first."""
    excerpt = message.excerpt.rstrip()
    text = compose(message, excerpt, title=title)
    if size(text) <= limit:
        return text
    without = compose(message, "", title=title)
    overhead = size(without) + size(f"\n\n{EXCERPT_HEADING}\n") + size(ELLIPSIS)
    room = limit - overhead
    if excerpt and room > 0:
        # Characters may take several bytes: shrink until it fits (a few rounds at most).
        keep = min(len(excerpt), room)
        while keep > 0:
            text = compose(message, fit_tail(excerpt, keep + len(ELLIPSIS)), title=title)
            if size(text) <= limit:
                return text
            keep -= max(1, size(text) - limit)
    if size(without) <= limit:
        return without
    if size is utf8_size:
        return fit_bytes(without, limit)
    return without[: max(0, limit - len(ELLIPSIS))] + ELLIPSIS
