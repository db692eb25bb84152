"""What `jobmon doctor` reports: one verdict per check, with what to do about it."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Sequence


class Level(str, enum.Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it went, what was seen, and what to do (empty when OK)."""

    name: str
    level: Level
    detail: str
    advice: str = ""


def worst(checks: Sequence[Check]) -> Level:
    """FAIL if any check failed, else WARN if any warned, else OK."""
    levels = {check.level for check in checks}
    return Level.FAIL if Level.FAIL in levels else Level.WARN if Level.WARN in levels else Level.OK
