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

#: The recent intervals an estimate uses.
RECENT = 8
#: An estimate is confident with at least this many intervals whose rates agree within SPREAD.
CONFIDENT_INTERVALS = 3
SPREAD = 1.5


@dataclass(frozen=True)
class Estimate:
    """When the run is expected to reach 100 %, as absolute times, and whether to trust it."""

    end_at: float
    low_at: float
    high_at: float
    confident: bool


def rates(samples: Sequence[Sample]) -> List[float]:
    """Progress per second over the recent intervals, the warm-up interval left out when others exist."""
    pairs = list(zip(samples, samples[1:]))
    if len(pairs) > 1:
        pairs = pairs[1:]
    found = [(b.fraction - a.fraction) / (b.at - a.at) for a, b in pairs[-RECENT:] if b.at > a.at]
    return [rate for rate in found if rate > 0]


def estimate(samples: Sequence[Sample], remaining: Optional[Tuple[float, float]] = None) -> Optional[Estimate]:
    """The expected end from the samples (oldest first); None until progress has moved twice.

    `remaining` is the framework's own (seen at, seconds left), when it printed one for the whole run.
    """
    own_end = remaining[0] + remaining[1] if remaining is not None else None
    found = rates(samples)
    if not found:
        if remaining is None or own_end is None:
            return None
        return Estimate(own_end, remaining[0] + remaining[1] * 0.8, remaining[0] + remaining[1] * 1.25, False)
    last = samples[-1]
    left = max(0.0, 1.0 - last.fraction)
    median, fastest, slowest = _median(found), max(found), min(found)
    gaps = [b.at - a.at for a, b in zip(samples, samples[1:])][-RECENT:]
    jitter = _median(gaps)
    end = own_end if own_end is not None else last.at + left / median
    confident = len(found) >= CONFIDENT_INTERVALS and fastest <= slowest * SPREAD
    low = min(end, last.at + left / fastest * 0.9)
    high = max(end, last.at + left / slowest * 1.1 + jitter)
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
