"""Say why a job failed: match its log lines against an ordered library of error patterns.

Pure: no files, processes or network. The caller reads the log and the patterns file; this module
only turns text into findings, so it can be tested on literal lines captured from real jobs.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from core.analysis.finding import Finding
from core.analysis.lines import clean_line as clean_line  # re-exported: the analyzer's callers clean with it
from core.analysis.lines import clean_text, last_segment, strip_prefixes
from core.errors import PatternError

SCHEMA_VERSION = 1
SEVERITIES = ("critical", "error", "warning")
#: A finding shows at most this much of its line (a Discord embed has little room).
MAX_LINE_CHARS = 300
#: Only the first and last this-many characters of a huge line are matched, so that a 200 MB
#: line without a newline (a progress bar that never ended) costs the same as a short one.
WINDOW_CHARS = 4096

_ID = re.compile(r"[a-z][a-z0-9_]*\Z")
_ENTRY_KEYS = frozenset({"id", "severity", "regexes", "description", "hint", "exclude", "hang"})
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}


@dataclass(frozen=True)
class Pattern:
    """One kind of failure; a line is this kind if a regex matches and no exclude regex does."""

    id: str
    severity: str
    regexes: Tuple[re.Pattern[str], ...]
    description: str
    hint: str
    exclude: Tuple[re.Pattern[str], ...] = ()
    hang: bool = False  # seen while the job runs, it means the job is stuck: said at once, not at the end


@dataclass(frozen=True)
class Analysis:
    """Findings in line order; categories ordered by importance, so the likely root cause is first."""

    findings: Tuple[Finding, ...]
    categories: Tuple[str, ...]

    @property
    def root_cause(self) -> Optional[Finding]:
        """The earliest finding of the most important category, or None when nothing matched."""
        if not self.categories:
            return None
        return next(f for f in self.findings if f.category == self.categories[0])

    def to_json_dict(self) -> Dict[str, Any]:
        return {
            "categories": list(self.categories),
            "findings": [
                {"category": f.category, "severity": f.severity, "line_no": f.line_no, "line": f.line}
                for f in self.findings
            ],
        }


# -- the patterns file ----------------------------------------------------------------------
def parse_patterns(text: str, source: str) -> Tuple[Pattern, ...]:
    """Validate a patterns file and compile its regexes, keeping the file's order (= importance).

    Every problem raises PatternError with one line naming `source` and, for an entry, its index
    in the "patterns" array (counted from 0) and its id, so a user can fix their own file.
    """
    where = f"patterns file {source}"
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PatternError(f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise PatternError(f"{where}: invalid JSON: nested too deeply") from None
    except ValueError:  # json's other error: an integer past Python's 4300-digit limit
        raise PatternError(f"{where}: invalid JSON: a number has too many digits") from None
    if not isinstance(document, dict):
        raise PatternError(f"{where}: the top level must be an object, not {_json_type(document)}")
    unknown = sorted(k for k in document if k not in ("schema_version", "patterns") and not k.startswith("_"))
    if unknown:
        raise PatternError(f"{where}: unknown top-level key {unknown[0]!r} (prefix documentation keys with '_')")
    version = document.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise PatternError(f"{where}: 'schema_version' must be {SCHEMA_VERSION}, not {version!r}")
    entries = document.get("patterns")
    if not isinstance(entries, list):
        raise PatternError(f"{where}: 'patterns' must be an array, not {_json_type(entries)}")
    patterns: List[Pattern] = []
    first_index: Dict[str, int] = {}
    for index, entry in enumerate(entries):
        pattern = _parse_entry(entry, f"{where}: entry {index}")
        if pattern.id in first_index:
            raise PatternError(f"{where}: entry {index} ({pattern.id!r}): duplicate id, "
                               f"already used by entry {first_index[pattern.id]}")
        first_index[pattern.id] = index
        patterns.append(pattern)
    return tuple(patterns)


def _parse_entry(entry: object, where: str) -> Pattern:
    if not isinstance(entry, dict):
        raise PatternError(f"{where}: must be an object, not {_json_type(entry)}")
    if "id" not in entry:
        raise PatternError(f"{where}: missing field 'id'")
    pattern_id = entry["id"]
    if not isinstance(pattern_id, str) or not _ID.match(pattern_id):
        raise PatternError(f"{where}: 'id' must be a string of lowercase letters, digits and '_' "
                           f"starting with a letter, not {pattern_id!r}")
    where = f"{where} ({pattern_id!r})"
    unknown = sorted(k for k in entry if k not in _ENTRY_KEYS and not k.startswith("_"))
    if unknown:
        raise PatternError(f"{where}: unknown field {unknown[0]!r}")
    severity = _text(entry, "severity", where)
    if severity not in SEVERITIES:
        raise PatternError(f"{where}: unknown severity {severity!r} (use one of: {', '.join(SEVERITIES)})")
    regexes = _regexes(entry, "regexes", where)
    if not regexes:
        raise PatternError(f"{where}: 'regexes' must not be empty")
    hang = entry.get("hang", False)
    if not isinstance(hang, bool):
        raise PatternError(f"{where}: 'hang' must be true or false, not {_json_type(hang)}")
    return Pattern(
        id=pattern_id,
        severity=severity,
        regexes=regexes,
        description=_text(entry, "description", where),
        hint=_text(entry, "hint", where),
        exclude=_regexes(entry, "exclude", where) if "exclude" in entry else (),
        hang=hang,
    )


def _text(entry: Dict[str, object], key: str, where: str) -> str:
    if key not in entry:
        raise PatternError(f"{where}: missing field {key!r}")
    value = entry[key]
    if not isinstance(value, str):
        raise PatternError(f"{where}: {key!r} must be a string, not {_json_type(value)}")
    if not value.strip():
        raise PatternError(f"{where}: {key!r} must not be empty")
    return value


def _regexes(entry: Dict[str, object], key: str, where: str) -> Tuple[re.Pattern[str], ...]:
    if key not in entry:
        raise PatternError(f"{where}: missing field {key!r}")
    sources = entry[key]
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise PatternError(f"{where}: {key!r} must be an array of strings")
    return tuple(_compile(source, where) for source in sources)


def _compile(source: str, where: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(source)
    except re.error as exc:
        position = f" at position {exc.pos}" if exc.pos is not None else ""
        raise PatternError(f"{where}: invalid regex {source!r}: {exc.msg}{position}") from None
    except (RecursionError, OverflowError, ValueError) as exc:
        raise PatternError(f"{where}: invalid regex {source!r}: {exc}") from None
    if compiled.search("") is not None:
        # It would match every line (or veto every match, as an exclude).
        raise PatternError(f"{where}: regex {source!r} matches the empty string")
    return compiled


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def merge_patterns(builtin: Sequence[Pattern], user: Sequence[Pattern]) -> Tuple[Pattern, ...]:
    """The user's patterns combined with the built-in library.

    A user entry whose id is a built-in one replaces that entry in place, keeping its rank among
    the built-ins (so redefining `cuda_oom` does not push it above `slurm_oom`). User entries
    with new ids go before all built-ins, in the user's order: a project-specific message is
    more specific than any generic one.
    """
    replacement = {p.id: p for p in user}
    builtin_ids = {p.id for p in builtin}
    added = tuple(p for p in user if p.id not in builtin_ids)
    return added + tuple(replacement.get(p.id, p) for p in builtin)


# -- matching -------------------------------------------------------------------------------
def _views(raw: str) -> Tuple[Tuple[str, str], ...]:
    """(shown, matched) text for the head and, for a huge line, the tail of the line."""
    start, end = last_segment(raw)
    if end - start <= 2 * WINDOW_CHARS:
        shown = clean_text(raw[start:end])
        return ((shown, strip_prefixes(shown)),)
    head = clean_text(raw[start:start + WINDOW_CHARS])
    tail = clean_text(raw[end - WINDOW_CHARS:end])
    return ((head, strip_prefixes(head)), (tail, tail))


def _search(pattern: Pattern, text: str) -> Optional[re.Match[str]]:
    for regex in pattern.regexes:
        match = regex.search(text)
        if match is not None:
            return None if any(x.search(text) for x in pattern.exclude) else match
    return None


def _excerpt(text: str, start: int) -> str:
    """At most MAX_LINE_CHARS of `text`, from its start unless the match lies beyond that."""
    begin = 0 if start < MAX_LINE_CHARS - 100 else start - 100
    return text[begin:begin + MAX_LINE_CHARS]


def _classify(raw: str, patterns: Sequence[Pattern], line_no: int) -> Optional[Finding]:
    views = _views(raw)
    for pattern in patterns:
        for shown, matched in views:
            match = _search(pattern, matched) if matched else None
            if match is not None:
                line = _excerpt(shown, len(shown) - len(matched) + match.start())
                return Finding(pattern.id, pattern.severity, line_no, line, pattern.hint)
    return None


def analyze(
    lines: Iterable[str],
    patterns: Sequence[Pattern],
    first_line_no: int = 1,
    max_findings: int = 50,
) -> Analysis:
    """Classify each line by the first pattern (in library order) that matches it.

    Findings come in line order. Past `max_findings` the earliest finding of every category is
    still kept (the most important categories first if even those are too many), then the
    earliest of the rest. Categories come in pattern order, so a specific cause such as
    `cuda_oom` precedes the `python_traceback` that merely reports it.
    """
    if max_findings < 0:
        raise ValueError(f"max_findings must be at least 0, not {max_findings}")
    rank: Dict[str, int] = {}
    for index, pattern in enumerate(patterns):
        rank.setdefault(pattern.id, index)
    first_of: Dict[str, Finding] = {}
    others: List[Finding] = []
    for offset, raw in enumerate(lines):
        finding = _classify(raw, patterns, first_line_no + offset)
        if finding is None:
            continue
        if finding.category not in first_of:
            first_of[finding.category] = finding
        elif len(others) < max_findings:
            others.append(finding)
    leaders = sorted(first_of.values(), key=lambda f: rank[f.category])[:max_findings]
    kept = leaders + others[:max_findings - len(leaders)]
    return Analysis(
        findings=tuple(sorted(kept, key=lambda f: f.line_no)),
        categories=tuple(f.category for f in leaders),
    )
