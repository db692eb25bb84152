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
from core.analysis.jobend import JobEnd
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
_ENTRY_KEYS = frozenset({"id", "severity", "regexes", "description", "hint", "exclude", "hang", "survivable",
                         "wraps", "states"})
_STATE = re.compile(r"[A-Z][A-Z_]*\Z")
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
    #: Lines of this kind that a run survives (an out-of-memory caught and the batch skipped): a warning
    #: seen, never a failure finding.
    survivable: Tuple[re.Pattern[str], ...] = ()
    #: A report that wraps a cause printed elsewhere (a generic traceback, "Killed", a launcher's
    #: summary): ranked after every cause.
    wraps: bool = False
    #: A report of these causes only (a DataLoader worker's death wraps too_many_open_files): ranked
    #: after every cause when one of them was found too.
    wraps_ids: Tuple[str, ...] = ()
    #: Slurm final states that are this cause: a job that ended so has it as root cause whatever the log says.
    states: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Analysis:
    """Findings in line order; categories ordered by importance, so the likely root cause is first.

    `warnings` are scary lines that are not a failure: lines a run survives (see Pattern.survivable),
    and every finding of a job that ended cleanly. A finding with line_no 0 comes from Slurm's final
    state, not from a log line.
    """

    findings: Tuple[Finding, ...]
    categories: Tuple[str, ...]
    warnings: Tuple[Finding, ...] = ()

    @property
    def root_cause(self) -> Optional[Finding]:
        """The earliest finding of the most important category, or None when nothing matched."""
        if not self.categories:
            return None
        return next(f for f in self.findings if f.category == self.categories[0])

    def to_json_dict(self) -> Dict[str, Any]:
        return {
            "categories": list(self.categories),
            "findings": [_finding_json(f) for f in self.findings],
            "warnings": [_finding_json(f) for f in self.warnings],
        }


def _finding_json(finding: Finding) -> Dict[str, Any]:
    return {"category": finding.category, "severity": finding.severity, "line_no": finding.line_no,
            "line": finding.line}


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
    hang = _flag(entry, "hang", where)
    wraps = entry.get("wraps", False)
    if not isinstance(wraps, bool) and not (isinstance(wraps, list) and all(
            isinstance(i, str) and _ID.match(i) for i in wraps)):
        raise PatternError(f"{where}: 'wraps' must be true, false or an array of pattern ids")
    states = entry.get("states", [])
    if not isinstance(states, list) or not all(isinstance(s, str) and _STATE.match(s) for s in states):
        raise PatternError(f"{where}: 'states' must be an array of Slurm state names such as \"TIMEOUT\"")
    return Pattern(
        id=pattern_id,
        severity=severity,
        regexes=regexes,
        description=_text(entry, "description", where),
        hint=_text(entry, "hint", where),
        exclude=_regexes(entry, "exclude", where) if "exclude" in entry else (),
        hang=hang,
        survivable=_regexes(entry, "survivable", where) if "survivable" in entry else (),
        wraps=wraps is True,
        wraps_ids=tuple(wraps) if isinstance(wraps, list) else (),
        states=tuple(states),
    )


def _flag(entry: Dict[str, object], key: str, where: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise PatternError(f"{where}: {key!r} must be true or false, not {_json_type(value)}")
    return value


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
    with new ids go before all built-ins, in the user's order: on one line a project-specific
    message is more specific than any generic one (across lines the first error in time leads).
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


@dataclass(frozen=True)
class _Hit:
    pattern: Pattern
    regex: re.Pattern[str]
    match: re.Match[str]
    survived: bool  # a survivable regex matched too: a warning, not a failure


def _search(pattern: Pattern, text: str) -> Optional[_Hit]:
    for regex in pattern.regexes:
        match = regex.search(text)
        if match is not None:
            if any(x.search(text) for x in pattern.survivable):
                return _Hit(pattern, regex, match, survived=True)
            if any(x.search(text) for x in pattern.exclude):
                return None
            return _Hit(pattern, regex, match, survived=False)
    return None


def _excerpt(text: str, start: int) -> str:
    """At most MAX_LINE_CHARS of `text`, from its start unless the match lies beyond that."""
    begin = 0 if start < MAX_LINE_CHARS - 100 else start - 100
    return text[begin:begin + MAX_LINE_CHARS]


def _classify(raw: str, patterns: Sequence[Pattern], line_no: int) -> Optional[Tuple[Finding, _Hit]]:
    views = _views(raw)
    for pattern in patterns:
        for shown, matched in views:
            hit = _search(pattern, matched) if matched else None
            if hit is not None:
                line = _excerpt(shown, len(shown) - len(matched) + hit.match.start())
                return Finding(pattern.id, pattern.severity, line_no, line, pattern.hint), hit
    return None


def analyze(
    lines: Iterable[str],
    patterns: Sequence[Pattern],
    first_line_no: int = 1,
    max_findings: int = 50,
    outcome: Optional[JobEnd] = None,
) -> Analysis:
    """Classify each line by the first pattern (in library order) that matches it; order the causes.

    The root cause comes first (see `order_categories`): a cause Slurm's final state names, then the
    causes in the order they first appear (the first error in time, across ranks, not the last one
    printed; on one line the library order decides, so `cuda_oom` beats `cuda_error`), then the
    reports that wrap a cause (`wraps`: a generic traceback, "Killed", mpirun's abort) in library order.
    A job that ended cleanly (`outcome.is_clean`) gets no cause: its findings become warnings.

    Findings come in line order. Past `max_findings` the earliest finding of every category is
    still kept (the most important categories first if even those are too many), then the
    earliest of the rest; at most `max_findings` warnings are kept.
    """
    if max_findings < 0:
        raise ValueError(f"max_findings must be at least 0, not {max_findings}")
    by_id: Dict[str, Pattern] = {}
    for pattern in patterns:
        by_id.setdefault(pattern.id, pattern)
    first_of: Dict[str, Finding] = {}
    others: List[Finding] = []
    warnings: List[Finding] = []
    for offset, raw in enumerate(lines):
        classified = _classify(raw, patterns, first_line_no + offset)
        if classified is None:
            continue
        finding, hit = classified
        if hit.survived:
            if len(warnings) < max_findings:
                warnings.append(finding)
        elif finding.category not in first_of:
            first_of[finding.category] = finding
        elif len(others) < max_findings:
            others.append(finding)
    if outcome is not None and outcome.is_clean:
        seen = sorted(list(first_of.values()) + others + warnings, key=lambda f: f.line_no)
        return Analysis(findings=(), categories=(), warnings=tuple(seen[:max_findings]))
    if outcome is not None:
        for pattern in patterns:
            if outcome.state in pattern.states and pattern.id not in first_of:
                first_of[pattern.id] = Finding(pattern.id, pattern.severity, 0, f"Slurm: the job ended {outcome.state}",
                                               pattern.hint)
                break
    ordered = order_categories(first_of, by_id, outcome)[:max_findings]
    leaders = [first_of[category] for category in ordered]
    kept = leaders + others[:max_findings - len(leaders)]
    return Analysis(
        findings=tuple(sorted(kept, key=lambda f: f.line_no)),
        categories=tuple(ordered),
        warnings=tuple(warnings),
    )


def order_categories(
    first_of: Dict[str, Finding], by_id: Dict[str, Pattern], outcome: Optional[JobEnd] = None,
) -> List[str]:
    """The one ordering rule, most important first, given each category's first finding.

    1. a category whose pattern lists the job's final state (`states`: TIMEOUT is `slurm_timeout`);
    2. causes, by the line they first appear on (the first error in time), ties by library order;
    3. wrappers (`wraps`: reports of a cause printed elsewhere, or of the listed causes when one of
       them was found), by library order.
    """
    rank = {pattern_id: index for index, pattern_id in enumerate(by_id)}
    state = outcome.state if outcome is not None else None

    def key(category: str) -> Tuple[bool, bool, int, int]:
        pattern = by_id[category]
        named = state is not None and state in pattern.states
        wraps = is_wrapper(pattern, first_of)
        return (not named, wraps, 0 if wraps else first_of[category].line_no, rank[category])

    return sorted(first_of, key=key)


def is_wrapper(pattern: Pattern, found: Iterable[str]) -> bool:
    """Whether `pattern` reports a cause printed elsewhere, given the categories `found` in the same log."""
    return pattern.wraps or any(category in pattern.wraps_ids for category in found)


# -- explaining -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Explanation:
    """Why a category stands where it does: the pattern and regex that matched its first line, and the rule."""

    category: str
    line_no: int  # 0: named by Slurm's final state, no log line
    regex: str  # the regex that matched ("" for a finding from Slurm's state)
    library_rank: int  # the pattern's place in the library, from 0
    reason: str
    warning: bool = False


def explain(
    lines: Sequence[str], patterns: Sequence[Pattern], outcome: Optional[JobEnd] = None, first_line_no: int = 1,
    max_findings: int = 50,
) -> Tuple[Analysis, Tuple[Explanation, ...]]:
    """The analysis of `lines` and, for each category (root cause first) and each kind of warning, why."""
    analysis = analyze(lines, patterns, first_line_no, max_findings, outcome)
    by_id: Dict[str, Pattern] = {}
    for pattern in patterns:
        by_id.setdefault(pattern.id, pattern)
    rank = {pattern_id: index for index, pattern_id in enumerate(by_id)}
    found = set(analysis.categories)

    def regex_of(finding: Finding) -> str:
        index = finding.line_no - first_line_no
        if finding.line_no == 0 or not 0 <= index < len(lines):
            return ""
        classified = _classify(lines[index], patterns, finding.line_no)
        return classified[1].regex.pattern if classified is not None and classified[0] == finding else ""

    explained: List[Explanation] = []
    for position, category in enumerate(analysis.categories):
        pattern = by_id[category]
        finding = next(f for f in analysis.findings if f.category == category)
        if outcome is not None and outcome.state in pattern.states:
            reason = f"the job ended {outcome.state}, a state this pattern names ('states'): it leads"
        elif pattern.wraps:
            reason = "a report that wraps a cause printed elsewhere ('wraps'): after every cause, in library order"
        elif is_wrapper(pattern, found):
            wrapped = ", ".join(c for c in pattern.wraps_ids if c in found)
            reason = f"reports {wrapped}, also found ('wraps'): after every cause, in library order"
        else:
            reason = f"a cause first seen on line {finding.line_no}: causes come in the order they first appear"
        if position == 0:
            reason = "root cause: " + reason
        explained.append(Explanation(category, finding.line_no, regex_of(finding), rank[category], reason))
    if outcome is not None and outcome.is_clean:
        why = f"the job ended cleanly ({outcome.state}, exit code 0): nothing in its log is a failure"
    else:
        why = "the line also matches one of this pattern's 'survivable' regexes: the run went on"
    seen = set()
    for warning in analysis.warnings:
        if warning.category not in seen:
            seen.add(warning.category)
            explained.append(Explanation(warning.category, warning.line_no, regex_of(warning),
                                         rank[warning.category], why, warning=True))
    return analysis, tuple(explained)
