"""When will it finish: an estimate from jobmon's own timestamped progress samples.

Robust to warm-up and to one slow step: the first interval (start-up, compilation, data loading)
is left out once there are others, and the rate is the median of the recent intervals' rates; the
range spans the slowest and fastest of them, widened by how coarsely the samples were taken.
A framework's own `remaining` (tqdm, Keras, Lightning) is used for the point estimate when the log
carries one that covers the whole run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from core.progress.reading import Sample

#: The recent intervals an estimate uses, and how many make one stretch a rate is measured over.
RECENT = 8
SPAN = 3
#: An estimate is confident with at least this many intervals whose stretches' rates agree within SPREAD.
CONFIDENT_INTERVALS = 4
SPREAD = 1.5


@dataclass(frozen=True)
class Estimate:
    """When the run is expected to reach 100 %, as absolute times, and whether to trust it."""

    end_at: float
    low_at: float
    high_at: float
    confident: bool


def rates(samples: Sequence[Sample], span: int = 1) -> List[float]:
    """Progress per second over the recent stretches of `span` intervals, the warm-up interval left out
    when others exist."""
    recent = list(samples[1:] if len(samples) > 2 else samples)[-(RECENT + 1):]
    found = [(b.fraction - a.fraction) / (b.at - a.at) for a, b in zip(recent, recent[span:]) if b.at > a.at]
    return [rate for rate in found if rate > 0]


def estimate(samples: Sequence[Sample], remaining: Optional[Tuple[float, float]] = None,
             now: Optional[float] = None) -> Optional[Estimate]:
    """The expected end from the samples (oldest first); None until progress has moved twice.

    The point estimate uses the median rate of single intervals (one slow step does not move it);
    the range and the confidence use stretches of SPAN intervals, whose rates do not swing with
    where the polls fell between two steps. `remaining` is the framework's own (seen at, seconds
    left), when it printed one for the whole run. At `now`, an estimate whose samples stopped coming
    (a stall) moves with the time: what is left still takes as long from now, and is not trusted.
    """
    own_end = remaining[0] + remaining[1] if remaining is not None else None
    single = rates(samples)
    if not single:
        if remaining is None or own_end is None:
            return None
        return Estimate(own_end, remaining[0] + remaining[1] * 0.8, remaining[0] + remaining[1] * 1.25, False)
    intervals = min(len(samples) - 1, RECENT + 1) - (1 if len(samples) > 2 else 0)
    stretched = rates(samples, span=max(1, min(SPAN, intervals - 1))) or single
    last = samples[-1]
    left = max(0.0, 1.0 - last.fraction)
    fastest, slowest = max(stretched), min(stretched)
    gaps = [b.at - a.at for a, b in zip(samples, samples[1:])][-RECENT:]
    end = own_end if own_end is not None else last.at + left / _median(single)
    confident = intervals >= CONFIDENT_INTERVALS and fastest <= slowest * SPREAD
    base = last.at
    if now is not None and now - last.at > 2 * _median(gaps):  # no progress for a while: it ages
        base, confident = now, False
        end = max(end, now + left / _median(single))
    low = min(end, base + left / fastest * 0.9)
    high = max(end, base + left / slowest * 1.1 + _median(gaps))
    return Estimate(end, low, high, confident)


def format_span(seconds: float) -> str:
    """`45s`, `12m`, `1h12m`, `3d4h`: two units at most, as a person says it."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
