"""A finding: one log line that matched an error pattern. Shared by the analyzer and the job record."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """A log line that matched a pattern; `line` is cleaned and at most the analyzer's MAX_LINE_CHARS long."""

    category: str
    severity: str = "error"
    line_no: int = 0
    line: str = ""
    hint: str = ""
