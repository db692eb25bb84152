"""Read the end of a job log by seeking backwards: the cost depends on the tail, not the file size."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Tuple

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
MAX_LINE_CHARS = 8192
_BLOCK = 64 * 1024


@dataclass(frozen=True)
class Tail:
    """The end of a file; `whole` tells whether line 1 of `lines` is line 1 of the file."""

    lines: Tuple[str, ...]
    whole: bool
    size: int


def read_tail(path: str, max_lines: int = 500, max_bytes: int = DEFAULT_MAX_BYTES) -> Tail:
    """The last `max_lines` lines (at most `max_bytes` read), decoded leniently.

    Lines longer than MAX_LINE_CHARS keep their head and tail so one 200 MB line cannot blow up
    memory or the analyzer. A missing or unreadable file yields no lines.
    """
    position = end = 0
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            position = end
            chunks: List[bytes] = []
            newlines = 0
            read_total = 0
            while position > 0 and newlines <= max_lines and read_total < max_bytes:
                size = min(_BLOCK, position, max_bytes - read_total)
                position -= size
                handle.seek(position)
                chunk = handle.read(size)
                chunks.append(chunk)
                newlines += chunk.count(b"\n")
                read_total += len(chunk)
    except OSError:
        return Tail((), False, 0)
    data = b"".join(reversed(chunks))
    lines = _split(data.decode("utf-8", errors="replace"))
    if position > 0 and len(lines) > 1:
        lines = lines[1:]  # the first line was cut by where we started reading
    whole = position == 0 and len(lines) <= max_lines
    return Tail(tuple(_cap(line) for line in lines[-max_lines:]), whole, end)


def tail_of_text(text: str, max_lines: int = 500) -> Tail:
    """The last `max_lines` lines of text already read (standard input), cut as `read_tail` cuts a file."""
    lines = _split(text)
    return Tail(tuple(_cap(line) for line in lines[-max_lines:]), len(lines) <= max_lines, len(text))


def _split(text: str) -> List[str]:
    """Split on \n only: a progress bar's \r belongs to its line (the analyzer reads past it)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _cap(line: str) -> str:
    line = line.replace("\x00", "")
    if len(line) <= MAX_LINE_CHARS:
        return line
    half = MAX_LINE_CHARS // 2
    return f"{line[:half]} …[{len(line) - 2 * half} chars cut]… {line[-half:]}"
