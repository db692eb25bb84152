"""How a job ended, as the analyzer needs it: Slurm's state word, exit code and signal. Pure leaf.

The analysis layer may not import the Slurm adapter, so the outcome it reads is this small value;
the one definition of a clean end lives here and `core.slurm.model` re-exports it.
"""
from __future__ import annotations

from dataclasses import dataclass


def is_clean_end(state: str, exit_code: int, signal: int) -> bool:
    """The one definition of success: COMPLETED with exit code 0 and no signal."""
    return state == "COMPLETED" and exit_code == 0 and signal == 0


@dataclass(frozen=True)
class JobEnd:
    """A job's final state (Slurm's first word: "TIMEOUT", "OUT_OF_MEMORY"...), exit code and signal."""

    state: str
    exit_code: int = 0
    signal: int = 0

    @property
    def is_clean(self) -> bool:
        return is_clean_end(self.state, self.exit_code, self.signal)
