"""Follow a job's logs while it runs: each poll reads only what was added since the last one.

The cost of a poll follows the logs' growth, never their size: a log that grew by more than
MAX_READ since the last poll is read from its last MAX_READ bytes only. A log that was replaced
(another inode) or truncated is read again from its start; a missing log is waited for, but one
that vanished after it was seen, or that is no regular file (`-o /dev/null`), is reported as an
error: what cannot be read is never taken for a job that stopped writing. What is
read is split into complete lines and the unterminated end (`pending`: a progress bar redraws
itself with `\\r` and writes no newline until it is done), which is kept, bounded, for the next poll.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

#: The most one log is read per poll; anything before it is skipped (its progress is superseded).
MAX_READ = 2 * 1024 * 1024
#: The unterminated end of a log kept between polls (a progress bar's frames; the rest is dropped).
MAX_PENDING = 4 * 1024


@dataclass(frozen=True)
class FollowedLog:
    """Where reading one log stopped: the file's identity, the offset read up to, its unended last line."""

    path: str
    device: int = 0
    inode: int = 0
    offset: int = 0
    pending: str = ""
    grown_at: float = 0.0  # when it last grew (0: never seen)


@dataclass(frozen=True)
class Chunk:
    """What one poll read from one log: complete lines, and the unterminated end as it is now."""

    path: str
    lines: Tuple[str, ...]
    pending: str
    skipped: int = 0  # bytes jumped over because the log grew by more than MAX_READ
    restarted: bool = False  # the log was replaced or truncated: read again from its start
    modified_at: float = 0.0  # the file's mtime when read


@dataclass(frozen=True)
class Followed:
    logs: Tuple[FollowedLog, ...]
    chunks: Tuple[Chunk, ...]
    errors: Tuple[str, ...] = ()  # logs that exist but could not be read: never mistaken for a stall


def follow(logs: Sequence[FollowedLog], now: float) -> Followed:
    """Read what each log gained since its offset."""
    updated: List[FollowedLog] = []
    chunks: List[Chunk] = []
    errors: List[str] = []
    for log in logs:
        try:
            new, chunk = _read(log, now)
        except FileNotFoundError:
            new, chunk = log, None
            if log.inode:  # it was there: deleted or moved while the job may still write to it
                errors.append(f"{log.path}: no longer there (deleted or moved)")
        except OSError as exc:
            errors.append(f"{log.path}: {exc.strerror or exc}")
            new, chunk = log, None
        updated.append(new)
        if chunk is not None:
            chunks.append(chunk)
    return Followed(tuple(updated), tuple(chunks), tuple(errors))


def _read(log: FollowedLog, now: float) -> Tuple[FollowedLog, Optional[Chunk]]:
    with open(log.path, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):  # /dev/null, a fifo: nothing to learn from, and it never grows
            raise OSError("not a regular file")
        restarted = bool(log.inode) and ((info.st_dev, info.st_ino) != (log.device, log.inode)
                                         or info.st_size < log.offset)
        offset = 0 if restarted else log.offset
        pending = "" if restarted else log.pending
        size = info.st_size
        if size == offset:
            return replace(log, device=info.st_dev, inode=info.st_ino, offset=offset, pending=pending), None
        start = max(offset, size - MAX_READ)
        if start > offset:
            pending = ""  # the line it belonged to ends somewhere in what is skipped
        handle.seek(start)
        data = handle.read(size - start)
    data = data[:_complete_utf8(data)]  # a character cut by the writer's flush is read whole next time
    if not data:  # only such a cut character: nothing new yet
        return replace(log, device=info.st_dev, inode=info.st_ino, offset=offset, pending=pending), None
    text = pending + data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    rest = lines.pop()
    if start > offset and lines:
        lines = lines[1:]  # its first line was cut by where reading started
    new = FollowedLog(log.path, info.st_dev, info.st_ino, start + len(data), rest[-MAX_PENDING:], now)
    chunk = Chunk(log.path, tuple(line.rstrip("\r") for line in lines), new.pending, start - offset, restarted,
                  min(info.st_mtime, now))
    return new, chunk


def _complete_utf8(data: bytes) -> int:
    """The length of `data` without a UTF-8 sequence cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: how long its sequence should be
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= needed else len(data) - back
    return len(data)
