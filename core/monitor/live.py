"""What a running job's logs say now: progress, pauses, fresh lines; folded into its LiveState.

At each poll of a running job the monitor follows its logs (core.progress.follow reads only what
was added), and `advance` turns the new text into the next LiveState: the newest progress reading,
a sample when progress moved, when a log last grew, a checkpoint/eval/save line. Pure apart from
`observe`, which reads the files. The parsers and line cleaning are imported only once a log has
grown: the daemon of a job that writes nothing stays small.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

from core.progress.eta import Estimate, estimate
from core.progress.follow import Followed, FollowedLog, follow
from core.progress.health import Activity
from core.progress.reading import Reading, Sample
from core.state.model import MAX_SAMPLES, JobRecord, LiveState

#: The newest lines of each log a poll looks for progress in (the newest reading wins).
CANDIDATES = 200
#: Log lines kept for a stall message and the detail view.
LAST_LINES = 8
MAX_LINE = 300


@dataclass(frozen=True)
class Observed:
    """One poll's look at the logs: the next state, the lines added since the last poll (raw), read errors."""

    live: LiveState
    fresh: Tuple[str, ...] = ()
    errors: Tuple[str, ...] = ()


def follows_logs(record: JobRecord) -> bool:
    """Progress is read from the logs of a single job (an array's tasks each have their own)."""
    return not record.array_spec and len(record.targets) == 1


def observe(record: JobRecord, run_start: str, now: float, custom: Sequence[re.Pattern[str]] = ()) -> Observed:
    """Read what the running job's logs gained and fold it into the LiveState of this run."""
    live = record.live
    if live is None or live.target != record.target or live.run_start != run_start:
        live = new_run(record, run_start, now)
    return advance(live, follow(live.logs, now), now, custom)


def new_run(record: JobRecord, run_start: str, now: float) -> LiveState:
    """A fresh LiveState for a new run. A log the previous run wrote to and that was appended to since
    (`--open-mode=append`, or the same `-o` without `%j` for a chain's next attempt) is read from where
    the previous run stopped: its old lines (an old hang, old progress) are not this run's."""
    before = {log.path: log for log in (record.live.logs if record.live is not None else [])}
    logs = []
    for path in record.log_paths:
        old = before.get(path)
        logs.append(replace(old, grown_at=0.0) if old is not None and _still_growing_from(old) else FollowedLog(path))
    return LiveState(target=record.target, run_start=run_start, started_at=now, logs=logs)


def _still_growing_from(log: FollowedLog) -> bool:
    try:
        info = os.stat(log.path)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (log.device, log.inode) and info.st_size >= log.offset


def current(record: JobRecord) -> Optional[LiveState]:
    """The record's LiveState if it is about the Slurm job watched now (not a previous attempt's)."""
    live = record.live
    return live if live is not None and live.target == record.target else None


def advance(live: LiveState, followed: Followed, now: float, custom: Sequence[re.Pattern[str]] = ()) -> Observed:
    """The LiveState after reading `followed` at `now` (a new object; `live` is left as it was)."""
    new = replace(live, logs=list(followed.logs), samples=list(live.samples), notes=list(live.notes),
                  last_lines=list(live.last_lines))
    if not followed.chunks:
        return Observed(new, (), followed.errors)
    new.grown_at = now
    from core.analysis.lines import last_complete_frame, shown_text  # loaded once a log has something to read
    from core.progress.parsers import announces_pause, latest

    fresh: List[str] = []
    candidates: List[str] = []
    for chunk in followed.chunks:
        fresh.extend(line for line in chunk.lines if line.strip())
        candidates.extend(chunk.lines[-CANDIDATES:])  # raw: the parsers pick a bar's whole frames themselves
        if chunk.pending:
            candidates.append(last_complete_frame(chunk.pending, terminated=False))
    at = min(now, max(chunk.modified_at for chunk in followed.chunks))
    reading = latest(candidates, live.reading, custom)
    if reading is not None:
        _note_reading(new, reading, at, now)
    pause_at = max((i for i, line in enumerate(candidates) if announces_pause(line)), default=-1)
    if pause_at >= 0 and latest(candidates[pause_at + 1:], None, custom) is None:
        new.paused_at = now  # nothing moved since the announcement
    shown = [text.strip() for text in map(shown_text, fresh[-LAST_LINES:]) if text.strip()]
    new.last_lines = [line[:MAX_LINE] for line in (new.last_lines + shown)[-LAST_LINES:]]
    return Observed(new, tuple(fresh), followed.errors)


def _note_reading(live: LiveState, reading: Reading, at: float, now: float) -> None:
    previous = live.reading
    live.reading, live.read_at = reading, at
    if previous is not None and not _moved(previous, reading):
        return
    live.advanced_before, live.advanced_at = live.advanced_at, now
    value = reading.fraction if reading.fraction is not None else reading.done
    if live.samples and previous is not None and (previous.total != reading.total
                                                  or value < live.samples[-1].fraction):
        live.samples = []  # another bar (evaluation, a new epoch without a counter): a new series
    at = max(at, live.samples[-1].at) if live.samples else at
    live.samples = (live.samples + [Sample(at, value)])[-MAX_SAMPLES:]


def _moved(previous: Reading, reading: Reading) -> bool:
    return (reading.done, reading.total, reading.epoch) != (previous.done, previous.total, previous.epoch)


def activity(live: LiveState) -> Activity:
    complete = live.reading is not None and (live.reading.fraction or 0.0) >= 1.0
    return Activity(live.samples, live.started_at, live.advanced_at, live.paused_at, live.grown_at, complete)


def eta_of(live: Optional[LiveState], now: float) -> Optional[Estimate]:
    """When the run should reach 100 %, as seen at `now` (None without a total or before progress moved)."""
    if live is None or live.reading is None or live.reading.fraction is None:
        return None
    reading = live.reading
    whole_run = reading.epoch is None or reading.epoch == reading.epochs  # else `remaining` is this epoch's
    if whole_run and reading.remaining is not None:
        return estimate(live.samples, (live.read_at, reading.remaining), now)
    return estimate(live.samples, now=now)


def open_stall(notes: Sequence[str]) -> Optional[int]:
    """The number of the stall this run is in (said, not yet resumed), if any."""
    said = [int(note.split(":")[1]) for note in notes if note.startswith("stalled:")]
    if said and f"resumed:{said[-1]}" not in notes:
        return said[-1]
    return None


def health_flags(live: Optional[LiveState]) -> List[str]:
    """What `status` flags about a running job: STALLED, HUNG, TIME! (a time-limit warning was given), MEM!
    (near its memory limit), GPU-idle, DISK! (little free space), CKPT-stale (no new checkpoint)."""
    if live is None:
        return []
    flags = []
    if open_stall(live.notes) is not None:
        flags.append("STALLED")
    if "hang" in live.notes:
        flags.append("HUNG")
    if any(note.startswith("time:") for note in live.notes):
        flags.append("TIME!")
    for note, flag in (("memory", "MEM!"), ("gpu_idle", "GPU-idle"), ("disk:low", "DISK!"),
                       ("checkpoint_stale", "CKPT-stale")):
        if note in live.notes:
            flags.append(flag)
    return flags
