"""Is a running job stuck, will it hit its time limit: pure rules over what the monitor has seen.

A job is stalled when its progress has not moved for `factor` x the slowest recent interval
between two advances (learned from the samples), bounded by `floor` and `cap`. Before the first
advance, and after a line announcing a checkpoint, an evaluation or a save, the budget is `cap`:
those take long and are no sign of a hang. A job whose logs show no parseable progress is stalled
when none of its logs grew for `quiet`; so is one whose progress reached 100 % (what it does
after the last step has no steps).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from core.progress.eta import RECENT, format_span
from core.progress.reading import Sample


@dataclass(frozen=True)
class StallRule:
    factor: float = 5.0
    floor: float = 600.0
    cap: float = 7200.0
    quiet: float = 3600.0  # `stall_after`: for logs without parseable progress


@dataclass(frozen=True)
class Activity:
    """What a stall is judged on: the job's progress samples and when things last happened."""

    samples: Sequence[Sample]
    started_at: float  # first seen running
    advanced_at: float  # progress last moved (0: never)
    paused_at: float  # a checkpoint/eval/save line after the last advance (0: none)
    grown_at: float  # a log last grew (0: never)
    complete: bool = False  # the progress reached 100 % (what follows, saving or cleaning up, has no steps)


def stall_budget(activity: Activity, rule: StallRule) -> float:
    """How long progress may stand still before the job counts as stalled."""
    if activity.paused_at > activity.advanced_at or len(activity.samples) < 2:
        return rule.cap
    gaps = [b.at - a.at for a, b in zip(activity.samples, activity.samples[1:])][-RECENT:]
    return min(rule.cap, max(rule.floor, rule.factor * max(gaps)))


def stalled_for(activity: Activity, rule: StallRule, now: float) -> Optional[float]:
    """Seconds the job has been stuck when that is longer than its budget; None while it moves."""
    if activity.samples and not activity.complete:
        since = max(activity.advanced_at, activity.paused_at)
        budget = stall_budget(activity, rule)
    else:
        since = max(activity.grown_at, activity.started_at)
        budget = rule.quiet
    idle = now - since
    return idle if since and idle > budget else None


@dataclass(frozen=True)
class Threshold:
    """A time-limit warning point: a fraction of the limit used (0.8) or seconds left (600)."""

    fraction: Optional[float] = None
    seconds_left: Optional[float] = None

    @property
    def label(self) -> str:
        if self.fraction is not None:
            return f"{self.fraction * 100:g}%"
        return f"{format_span(self.seconds_left or 0.0)} left"

    def fires_at(self, limit: float) -> float:
        """The time used at which this threshold is crossed."""
        if self.fraction is not None:
            return self.fraction * limit
        return limit - (self.seconds_left or 0.0)

    def crossed(self, used: float, limit: float) -> bool:
        return used >= self.fires_at(limit)
