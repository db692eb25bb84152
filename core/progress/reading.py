"""What the monitor remembers of a job's progress: one progress line understood, and a sample of it.

Small and import-light on purpose: the job record holds these, so every daemon imports this
module, while the parsers (core.progress.parsers) are loaded only once a job runs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

#: The unit of a reading that counts epochs: its `done` is the number of epochs completed.
EPOCH = "epoch"


class Source(str, enum.Enum):
    """Which format a reading was parsed from."""

    TQDM = "tqdm"
    LIGHTNING = "lightning"
    HUGGINGFACE = "huggingface"
    KERAS = "keras"
    MEGATRON = "megatron"
    DEEPSPEED = "deepspeed"
    GENERIC = "generic"
    CUSTOM = "custom"


@dataclass(frozen=True)
class Reading:
    """One progress line understood.

    `done` and `total` count what the line counts (steps, batches, items, bytes) within the bar
    it shows; for a reading whose unit is "epoch", `done` is the number of epochs completed (the
    HuggingFace Trainer prints fractions: 0.5). `remaining` is the framework's own estimate in
    seconds for that bar (for Lightning and Keras: the current epoch only). `epoch` is 1-based.
    """

    done: float
    total: Optional[float]  # None when the bar has no total (tqdm without total, DeepSpeed step=N)
    unit: str  # "it", "step", "batch", "epoch", "iteration", "B" (tqdm unit-scaled bytes), ...
    source: Source
    remaining: Optional[float] = None
    epoch: Optional[int] = None
    epochs: Optional[int] = None

    @property
    def fraction(self) -> Optional[float]:
        """How much of the whole run is done, in [0, 1], or None when the log does not say.

        With an epoch counter: (epoch - 1 + done/total) / epochs; without one, done/total; for a
        reading that counts epochs, done/total; with epochs known but no total for the bar, the
        epochs completed.
        """
        inner: Optional[float] = None
        if self.total is not None and self.total > 0:
            inner = min(max(self.done / self.total, 0.0), 1.0)
        if self.unit == EPOCH:
            return inner
        if self.epoch is not None and self.epochs is not None and 1 <= self.epoch <= self.epochs:
            return (self.epoch - 1 + (inner or 0.0)) / self.epochs
        return inner


@dataclass(frozen=True)
class Sample:
    """Overall progress (0..1, or a count when the bar has no total) seen at a time (the log's mtime)."""

    at: float
    fraction: float
