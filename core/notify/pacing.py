"""Pace the messages that many jobmon processes post to one destination, shared through files.

Each job has its own monitor, so a burst of jobs ending together means as many processes
posting to the same webhook at once. Discord limits each webhook (its documented
advice: read the ``X-RateLimit-*`` headers rather than hard-coding numbers; commonly seen:
about 5 requests per 2 s per webhook, and about 30 messages per minute per channel). The
pacer keeps every process of one user within such limits, without a server:

* ``<folder>/pace-<key>.json``  the destination's pacing state, replaced atomically
  (temp file + ``os.replace``); ``<key>`` is the first 16 hex digits of the URL's SHA-256,
  and neither the file name nor its content holds the URL (it is a secret);
* ``<folder>/pace-<key>.lock``  a filelock guarding that state; never deleted.

``Pacer.run`` holds the destination's lock for the whole attempt: it waits until the
shared ``next_allowed_at`` (and until fewer than ``per_minute`` sends happened in the last
60 s), makes the attempt, records it (with the pause the service asked for), then releases.
Sends to one destination are thus serialised across processes: one at a time, in lock order,
which is the point. A process waits for the lock at most ``lock_timeout`` seconds and then
sends unpaced rather than never; a 429 is still answered by the outbox's retry after the
asked time. That also bounds the cost of a lock left behind by a killed process (filelock's
soft-lock fallback on NFS). Pacing is best effort in the same way when the folder is
unusable: a message is never lost or delayed forever because of pacing. Known limit:
waiters queue behind each other's pauses, so after a very long server-requested pause
(minutes) those still queued at ``lock_timeout`` go unpaced.

Times are ``time.time()`` (wall clock), the only clock comparable across processes and
reboots; a single wait is capped at ``MAX_PAUSE`` so a clock set back cannot wedge a daemon.

Nothing here prints; ``next_send_time``, ``parse_pace_state`` and ``record_send`` are pure.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

from core.files import atomic_write_text
from core.locking import file_lock
from core.notify.outbox import Outcome

SCHEMA_VERSION = 1
WINDOW = 60.0  # seconds covered by ``per_minute``
LOCK_TIMEOUT = 600.0
MAX_PAUSE = 600.0  # longest single wait

PaceState = Dict[str, Any]


def webhook_key(destination: str) -> str:
    """A name for the destination's files that does not reveal its URL."""
    return hashlib.sha256(destination.strip().encode("utf-8")).hexdigest()[:16]


def _finite(value: Any) -> Optional[float]:
    """``value`` as a finite float, or None (JSON may hold text, booleans, 1e999 or a 400-digit int)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def parse_pace_state(text: str) -> PaceState:
    """The pacing state in ``text``; anything unreadable counts as no state at all."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    state: PaceState = {}
    next_allowed = _finite(data.get("next_allowed_at"))
    if next_allowed is not None:
        state["next_allowed_at"] = next_allowed
    recent = data.get("recent")
    if isinstance(recent, list):
        times = sorted(t for t in map(_finite, recent) if t is not None)
        if times:
            state["recent"] = times
    return state


def next_send_time(state: PaceState, now: float, min_spacing: float, per_minute: int) -> float:
    """When the next message to the webhook may go: never before ``now``.

    The latest of: ``next_allowed_at`` (the last send plus its spacing or the server's
    hint), the most recent send plus ``min_spacing``, and, when ``per_minute`` sends
    already happened, the ``per_minute``-th most recent one plus 60 s (a sliding window).
    """
    at = now
    next_allowed = _finite(state.get("next_allowed_at"))
    if next_allowed is not None:
        at = max(at, next_allowed)
    recent: List[float] = sorted(t for t in map(_finite, state.get("recent") or []) if t is not None)
    if recent:
        at = max(at, recent[-1] + min_spacing)
    if per_minute >= 1 and len(recent) >= per_minute:
        at = max(at, recent[-per_minute] + WINDOW)
    return at


def record_send(state: PaceState, now: float, hint: float, min_spacing: float) -> PaceState:
    """The state after a send that ended at ``now``; ``hint`` is the server's requested pause.

    Sends older than the 60 s window are forgotten, and so are any "in the future" (the
    clock was set back): they would otherwise hold the webhook back for no reason.
    """
    recent = [t for t in map(_finite, state.get("recent") or []) if t is not None and now - WINDOW < t <= now]
    recent.append(now)
    pause = max(min_spacing, hint if math.isfinite(hint) and hint > 0 else 0.0)
    return {
        "schema_version": SCHEMA_VERSION,
        "next_allowed_at": now + pause,
        "recent": sorted(recent),
        "updated_at": now,
    }


def _hint_of(outcome: Optional[Outcome]) -> float:
    """The pause the server asked for (X-RateLimit-Reset-After on an empty bucket, or a 429)."""
    hint = _finite(outcome.pace) if outcome is not None else None
    return hint if hint is not None and hint > 0 else 0.0


class Pacer:
    """Spaces out posts to each destination across all processes sharing ``folder``.

    Build one wherever it is needed (it holds no open file and no lock between calls, so
    it is safe across ``fork()``). ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        folder: str,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        min_spacing: float = 0.5,
        per_minute: int = 25,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> None:
        if not (math.isfinite(min_spacing) and min_spacing >= 0):
            raise ValueError(f"min_spacing must be a number of seconds >= 0, got {min_spacing!r}")
        if isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute < 1:
            raise ValueError(f"per_minute must be a whole number >= 1, got {per_minute!r}")
        if not (math.isfinite(lock_timeout) and lock_timeout >= 0):
            raise ValueError(f"lock_timeout must be a number of seconds >= 0, got {lock_timeout!r}")
        self.folder = folder
        self.clock = clock
        self.sleep = sleep
        self.min_spacing = float(min_spacing)
        self.per_minute = per_minute
        self.lock_timeout = float(lock_timeout)

    def state_path(self, destination: str) -> str:
        return os.path.join(self.folder, f"pace-{webhook_key(destination)}.json")

    def lock_path(self, destination: str) -> str:
        return os.path.join(self.folder, f"pace-{webhook_key(destination)}.lock")

    def run(self, destination: str, attempt: Callable[[], Outcome]) -> Outcome:
        """Wait for the destination's turn, make the attempt once, record it, return its outcome.

        The destination's lock is held from before the wait until the attempt is recorded, so two
        processes never post to one destination at the same time. If the lock cannot be had
        within ``lock_timeout`` (or the folder is unusable), the attempt is made at once,
        unpaced and unrecorded: late pacing must not become a lost message.
        """
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            lock = file_lock(self.lock_path(destination), self.lock_timeout)  # a fresh object per call
            lock.acquire()
        except OSError:  # filelock's Timeout is an OSError too
            return attempt()
        try:
            return self._run_locked(destination, attempt)
        finally:
            lock.release()

    def _run_locked(self, destination: str, attempt: Callable[[], Outcome]) -> Outcome:
        path = self.state_path(destination)
        state = self._load(path)
        now = self.clock()
        wait = min(next_send_time(state, now, self.min_spacing, self.per_minute) - now, MAX_PAUSE)
        if wait > 0:
            self.sleep(wait)
        outcome: Optional[Outcome] = None
        try:
            outcome = attempt()
            return outcome
        finally:
            # Recorded even if the attempt raised: a request may have reached the service all the same.
            self._save(path, record_send(state, self.clock(), _hint_of(outcome), self.min_spacing))

    @staticmethod
    def _load(path: str) -> PaceState:
        try:
            with open(path, encoding="utf-8") as handle:
                return parse_pace_state(handle.read())
        except (OSError, UnicodeDecodeError):
            return {}

    @staticmethod
    def _save(path: str, state: PaceState) -> None:
        try:
            atomic_write_text(path, json.dumps(state, sort_keys=True))
        except OSError:
            pass  # the message went out; only the pacing of the next one is less exact
