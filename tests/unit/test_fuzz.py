"""Property-based fuzzing of the pure parsers: arbitrary text in, never an unplanned exception out.

Each parser is fed two kinds of input: fully arbitrary text (hypothesis' unicode text, bytes
decoded with replacement or surrogateescape, lone surrogates) and "structured noise", random
mixes of the delimiters and words that parser looks for, which reaches far deeper into its
branches than random characters do. Where a parser is allowed to refuse its input it must do so
with a JobmonError (PatternError for pattern files); anything else escaping is a bug.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.analysis.analyzer import MAX_LINE_CHARS as FINDING_MAX_CHARS
from core.analysis.analyzer import Analysis, analyze, is_wrapper, parse_patterns
from core.analysis.logtail import MAX_LINE_CHARS as TAIL_MAX_CHARS
from core.analysis.logtail import read_tail
from core.errors import JobmonError, PatternError
from core.slurm.jobscript import (
    JobOptions,
    expand_pattern,
    parse_directives,
    parse_job_id,
    parse_sbatch_options,
    split_submit_args,
    validate_job_id,
)
from core.slurm.model import AccountingRecord, JobInfo, JobState, QueueEntry
from core.slurm.parse import (
    SACCT_DELIMITER,
    SACCT_FIELDS,
    SQUEUE_COLUMNS,
    is_invalid_job_error,
    is_unavailable_error,
    parse_comments,
    parse_duration,
    parse_exit_code,
    parse_sacct,
    parse_scontrol_fields,
    parse_scontrol_show_job,
    parse_scontrol_show_jobs,
    parse_size,
    parse_squeue,
    parse_submit_lines,
    parse_table,
)
from tests.support import header_line

ROOT = Path(__file__).resolve().parents[2]
BUILTIN_PATTERNS = parse_patterns((ROOT / "patterns" / "error_patterns.json").read_text(encoding="utf-8"),
                                  "error_patterns.json")
PATTERN_IDS = [p.id for p in BUILTIN_PATTERNS]
LOG_FIXTURE_LINES = sorted({
    line
    for path in sorted((ROOT / "tests" / "fixtures" / "logs").glob("*.log"))
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
    if line.strip()
})

# Budgets: the whole file should stay well under 20 s on two cores. deadline=None because a
# slow CI machine must not turn a correct run into a flaky DeadlineExceeded.
FAST = settings(max_examples=100, deadline=None)
MEDIUM = settings(max_examples=60, deadline=None)
SLOW = settings(max_examples=40, deadline=None)

UNITS = ("", "K", "M", "G", "T", "P")


STATE_WORDS = [state.value for state in JobState]

# -- building blocks ------------------------------------------------------------------------
#: Characters that str.splitlines() treats as line ends, besides \n and \r.
ODD_LINE_ENDS = ["\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
#: Non-ASCII characters for which str.isdigit() (or \d) is true but int() may disagree.
ODD_DIGITS = ["\u00b2", "\u00b9", "\u0663", "\u0967", "\uff11", "\u2460", "\U0001d7ce"]

_digit_runs = st.builds(
    lambda digit, count: digit * count,
    st.sampled_from(list("0123456789") + ODD_DIGITS),
    st.integers(1, 5000),  # past float range (~309 digits) and Python's int-string limit (4300)
)
_numbers = st.one_of(
    st.integers(-(10 ** 30), 10 ** 30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
_common_tokens = [
    "|", "^|^", "^", "=", ":", ".", "_", "+", "[", "]", "%", "(", ")", ",", ";", "-", "/", "\\",
    "'", '"', "#", "*", "?", " ", "  ", "\t", "\n", "\r", "\r\n", "\x00", "\x1b[31m", "",
    "\ud800", "\udcff",  # lone surrogates: os.fsdecode and errors="surrogateescape" make these
    *ODD_LINE_ENDS, *ODD_DIGITS, *STATE_WORDS,
    "CANCELLED by 1234", "CANCELLED+", "by", "batch", "extern", "K", "M", "G", "T", "P", "k", "m",
    "16?", "NaN", "inf", "1e999", "0:125", "-1:-1",
]


def noise(extra: Sequence[str] = (), max_parts: int = 16) -> st.SearchStrategy[str]:
    """Random concatenations of delimiters, numbers, state words and `extra` parser keywords."""
    part = st.one_of(
        st.sampled_from(_common_tokens + list(extra)),
        st.text(max_size=6),
        _numbers,
        _digit_runs,
    )
    return st.lists(part, max_size=max_parts).map("".join)


# characters() never yields surrogates unless asked for category Cs explicitly.
_surrogate_text = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=60)
_replaced_bytes = st.binary(max_size=200).map(lambda b: b.decode("utf-8", errors="replace"))
_escaped_bytes = st.binary(max_size=200).map(lambda b: b.decode("utf-8", errors="surrogateescape"))


def any_text(extra: Sequence[str] = ()) -> st.SearchStrategy[str]:
    return st.one_of(noise(extra), st.text(), _surrogate_text, _replaced_bytes, _escaped_bytes)


# -- core.slurm.parse ------------------------------------------------------------------------------
#: Header lines squeue/sacct print for jobmon's formats (real captures), and column names to mix in.
_SQUEUE_HEADERS = [header_line(name) for name in ("squeue_itrM.txt", "squeue_itr.txt", "squeue_ik.txt")]
_SACCT_HEADERS = [header_line(name) for name in ("sacct_16_fields.txt", "sacct_15_fields.txt", "sacct_submitline.txt")]
_SQUEUE_TITLES = [title for _, title in SQUEUE_COLUMNS] + ["COMMENT", "PARTITION", "jobid", " STATE "]
_SACCT_NAMES = list(SACCT_FIELDS) + ["SubmitLine", "Account", "JOBID", " State "]


def _header(titles: Sequence[str], real: Sequence[str], delimiter: str) -> st.SearchStrategy[str]:
    """A real header line, or a random mix of known titles and noise joined by the delimiter."""
    made = st.lists(st.one_of(st.sampled_from(list(titles)), noise(max_parts=2)), max_size=8).map(delimiter.join)
    return st.one_of(st.sampled_from(list(real)), made.map(lambda line: line + "\n"))


def _squeue_rows() -> st.SearchStrategy[str]:
    cell = st.one_of(st.sampled_from(_common_tokens), noise(max_parts=3))
    row = st.lists(cell, max_size=6).map("|".join)
    body = st.lists(row, max_size=5).map("\n".join)
    return st.builds(str.__add__, _header(_SQUEUE_TITLES, _SQUEUE_HEADERS, "|"), body)


def _sacct_rows() -> st.SearchStrategy[str]:
    cell = st.one_of(st.sampled_from(_common_tokens + ["1", "1.batch", "1.0", "1_2.extern", "1.", ".1", "9" * 400]),
                     noise(max_parts=2))
    row = st.lists(cell, min_size=len(SACCT_FIELDS) - 1, max_size=len(SACCT_FIELDS) + 1)
    body = st.lists(row.map(SACCT_DELIMITER.join), max_size=4).map("\n".join)
    return st.builds(str.__add__, _header(_SACCT_NAMES, _SACCT_HEADERS, SACCT_DELIMITER), body)


@FAST
@given(st.one_of(any_text(), _squeue_rows(), _sacct_rows()), st.sampled_from(["|", SACCT_DELIMITER]))
def test_parse_table_rows_have_the_header_keys(text: str, delimiter: str) -> None:
    rows = parse_table(text, delimiter)
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(rows) <= max(len(lines) - 1, 0)
    if rows:
        keys = {name.strip().upper() for name in lines[0].split(delimiter)}
        assert all(set(row) == keys for row in rows)
        assert all(value == value.strip() for row in rows for value in row.values())


@FAST
@given(st.one_of(any_text(), _squeue_rows()))
def test_parse_squeue_never_raises(text: str) -> None:
    entries = parse_squeue(text)
    assert all(isinstance(entry, QueueEntry) for entry in entries)
    assert all(isinstance(entry.state, JobState) for entry in entries)
    assert all(entry.job_id for entry in entries)
    comments = parse_comments(text)
    assert all(isinstance(job_id, str) and isinstance(comment, str) for job_id, comment in comments)


@FAST
@given(st.one_of(any_text(), _sacct_rows()))
def test_parse_sacct_never_raises_and_folds_steps(text: str) -> None:
    records = parse_sacct(text)
    for record in records:
        assert isinstance(record, AccountingRecord)
        assert "." not in record.job_id, "step rows must fold into their job"
        assert isinstance(record.state, JobState)
        assert isinstance(record.exit_code, int) and isinstance(record.signal, int)
        assert record.max_rss_bytes is None or record.max_rss_bytes >= 0
        assert record.job_id_raw
        assert isinstance(record.real_req_mem, str) and isinstance(record.is_placeholder, bool)
    assert len({record.job_id for record in records}) == len(records)
    lines = parse_submit_lines(text)
    assert all(isinstance(job_id, str) and isinstance(line, str) for job_id, line in lines)


def _scontrol_text() -> st.SearchStrategy[str]:
    keys = ["JobId", "JobName", "JobState", "Reason", "UserId", "StdOut", "StdErr", "WorkDir", "Command",
            "Restarts", "ArrayJobId", "ArrayTaskId", "NodeList", "BatchHost", "TRES", "a:b/c_d", "1x"]
    pair = st.builds("{}={}".format, st.sampled_from(keys), noise(max_parts=5))
    separator = st.sampled_from([" ", "  ", "\t", "\n", "=", ""])
    return st.lists(st.tuples(pair, separator).map("".join), max_size=12).map("".join)


@FAST
@given(st.one_of(any_text(["JobId=", "Restarts=", "UserId=", "JobState="]), _scontrol_text()))
def test_parse_scontrol_never_raises(text: str) -> None:
    fields = parse_scontrol_fields(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
    info = parse_scontrol_show_job(text)
    assert info is None or isinstance(info, JobInfo)
    assert all(isinstance(job, JobInfo) for job in parse_scontrol_show_jobs(text))
    if info is not None:
        assert isinstance(info.state, JobState)
        assert info.job_id == fields["JobId"]
        assert (info.stdout, info.work_dir) == (fields.get("StdOut", ""), fields.get("WorkDir", ""))


@FAST
@given(any_text())
def test_parse_exit_code_never_raises(text: str) -> None:
    code, signal = parse_exit_code(text)
    assert type(code) is int and type(signal) is int


@FAST
@given(any_text(), st.sampled_from(UNITS + tuple(u.lower() for u in UNITS)))
def test_parse_size_never_raises(text: str, default_unit: str) -> None:
    size = parse_size(text, default_unit)
    assert size is None or (type(size) is int and size >= 0)


@pytest.mark.parametrize("call, text", [
    pytest.param(parse_size, "9" * 400, id="size-400-digits"),
    pytest.param(parse_size, "1" * 300 + "P", id="size-300-digits-P"),
    pytest.param(parse_size, "1" * 5000, id="size-5000-digits"),
    pytest.param(parse_size, "\u0661" * 400, id="size-400-arabic-indic-digits"),
    pytest.param(parse_duration, "1" * 400 + ":00", id="duration-400-digit-minutes"),
    pytest.param(parse_duration, "1" * 5000 + ":00", id="duration-5000-digit-minutes"),
    pytest.param(parse_duration, "1-" + "9" * 400 + ":00:00", id="duration-400-digit-hours"),
])
def test_huge_numbers(call, text: str) -> None:
    value = call(text)
    assert value is None or value >= 0


_duration_part = st.one_of(st.integers(0, 99).map(str), _digit_runs)
# [D-][H:]M:S[.f] with each field a small number or a digit run of any length.
_durations = st.builds(
    "{}{}{}:{}{}".format,
    st.one_of(st.just(""), _duration_part.map("{}-".format)),
    st.one_of(st.just(""), _duration_part.map("{}:".format)),
    _duration_part, _duration_part,
    st.one_of(st.just(""), _duration_part.map(".{}".format)),
)


@FAST
@given(st.one_of(any_text(["-", ":", "."]), _durations))
def test_parse_duration_never_raises(text: str) -> None:
    seconds = parse_duration(text)
    assert seconds is None or seconds >= 0


@FAST
@given(any_text())
def test_job_state_parse_and_error_classifiers_never_raise(text: str) -> None:
    assert isinstance(JobState.parse(text), JobState)
    assert is_unavailable_error(text) in (True, False)
    assert is_invalid_job_error(text) in (True, False)


@FAST
@given(st.sampled_from(STATE_WORDS), st.sampled_from(["", "+", " by 0", " by 4294967294", "+ by 12"]),
       st.sampled_from(["", " ", "\t", "\n"]), st.booleans())
def test_job_state_parse_first_word(word: str, suffix: str, padding: str, lower: bool) -> None:
    text = padding + (word.lower() if lower else word) + suffix + padding
    assert JobState.parse(text) is JobState(word)


# Round trip: well-formed sacct output built from random values parses back to those values.
# No "^" in cells: a cell ending in "^|" would run into the "^|^" delimiter (sacct's own limit).
_FIELD_CHARS = st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="^")


def _field() -> st.SearchStrategy[str]:
    """A sacct cell as sacct prints it: one line, no delimiter, no surrounding whitespace."""
    return st.text(_FIELD_CHARS, max_size=12).map(str.strip)


_rss = st.one_of(
    st.none(),
    st.builds(lambda n, half, unit: (n, half, unit), st.integers(0, 2 ** 40), st.booleans(), st.sampled_from(UNITS)),
)


def _rss_text(rss) -> str:
    if rss is None:
        return ""
    n, half, unit = rss
    return f"{n}{'.5' if half else ''}{unit}"


def _rss_bytes(rss) -> Optional[int]:
    if rss is None:
        return None
    n, half, unit = rss
    return (2 * n + half) * 1024 ** UNITS.index(unit) // 2


@st.composite
def _sacct_job(draw, job_id: str) -> dict:
    word = draw(st.sampled_from(STATE_WORDS))
    suffixes = ["", "+"]
    if word == "CANCELLED":
        suffixes.append(f" by {draw(st.integers(0, 2 ** 32))}")
    suffix = draw(st.sampled_from(suffixes))
    return {
        "JobID": job_id,
        "JobIDRaw": str(draw(st.integers(1, 10 ** 9))),
        "JobName": draw(_field()),
        "State": word + suffix,
        "ExitCode": (draw(st.integers(0, 255)), draw(st.integers(0, 255))),
        "Elapsed": draw(_field()),
        "Timelimit": draw(_field()),
        "MaxRSS": draw(_rss),
        "ReqMem": draw(_field()),
        "NodeList": draw(_field()),
        "Partition": draw(_field()),
        "WorkDir": draw(_field()),
        "Start": draw(_field()),
        "End": draw(_field()),
        "User": draw(_field()),
        "AllocCPUS": draw(st.integers(0, 4096)),
        "steps": draw(st.lists(
            st.tuples(st.sampled_from(["batch", "extern", "0", "1", "12"]), _rss), max_size=4,
            unique_by=lambda step: step[0],
        )),
    }


def _sacct_line(values: Dict[str, str], columns: Sequence[str] = SACCT_FIELDS) -> str:
    """One sacct line with these columns in this order; a column without a value is empty."""
    return SACCT_DELIMITER.join(values.get(column, "") for column in columns)


#: Columns sacct can print that jobmon does not ask for: the parser must skip them wherever they are.
_UNKNOWN_COLUMNS = ["Account", "QOS", "SubmitLine", "Comment"]


@st.composite
def _sacct_output(draw):
    job_ids = draw(st.lists(
        st.one_of(st.integers(1, 10 ** 9).map(str),
                  st.builds("{}_{}".format, st.integers(1, 10 ** 6), st.integers(0, 10 ** 4)),
                  st.builds("{}+{}".format, st.integers(1, 10 ** 6), st.integers(0, 9))),
        min_size=1, max_size=4, unique=True,
    ))
    # The columns in any order, with unknown ones anywhere: the header says which is which.
    extra = draw(st.lists(st.sampled_from(_UNKNOWN_COLUMNS), max_size=2, unique=True))
    columns = draw(st.permutations(list(SACCT_FIELDS) + extra))
    jobs = [draw(_sacct_job(job_id)) for job_id in job_ids]
    lines = []
    for job in jobs:
        code, signal = job["ExitCode"]
        noise_cells = {column: draw(_field()) for column in extra}
        lines.append(_sacct_line({
            **noise_cells, "JobID": job["JobID"], "JobIDRaw": job["JobIDRaw"], "JobName": job["JobName"],
            "State": job["State"], "ExitCode": f"{code}:{signal}", "Elapsed": job["Elapsed"],
            "Timelimit": job["Timelimit"], "MaxRSS": _rss_text(job["MaxRSS"]), "ReqMem": job["ReqMem"],
            "NodeList": job["NodeList"], "Partition": job["Partition"], "WorkDir": job["WorkDir"],
            "Start": job["Start"], "End": job["End"], "User": job["User"], "AllocCPUS": str(job["AllocCPUS"]),
        }, columns))
        for step, rss in job["steps"]:
            step_id = f"{job['JobID']}.{step}"
            lines.append(_sacct_line({
                "JobID": step_id, "JobIDRaw": step_id, "JobName": step, "State": job["State"].split(" ")[0],
                "ExitCode": "0:0", "Elapsed": job["Elapsed"], "MaxRSS": _rss_text(rss),
                "NodeList": job["NodeList"], "Start": job["Start"], "End": job["End"],
            }, columns))
    # sacct prints a job before its steps, but the parser must not depend on it.
    lines = draw(st.permutations(lines))
    header = SACCT_DELIMITER.join(columns)
    return jobs, "\n".join([header, *lines]) + draw(st.sampled_from(["", "\n"]))


@MEDIUM
@given(_sacct_output())
def test_parse_sacct_round_trip(generated) -> None:
    jobs, text = generated
    records = {record.job_id: record for record in parse_sacct(text)}
    assert sorted(records) == sorted(job["JobID"] for job in jobs)
    for job in jobs:
        record = records[job["JobID"]]
        step_sizes = [_rss_bytes(rss) for _, rss in job["steps"] if rss is not None]
        expected_rss = max(step_sizes) if step_sizes else _rss_bytes(job["MaxRSS"])
        assert record.max_rss_bytes == expected_rss
        assert record.state is JobState(job["State"].split(" ")[0].rstrip("+"))
        assert record.state_text == job["State"]
        assert (record.exit_code, record.signal) == job["ExitCode"]
        assert record.job_id_raw == job["JobIDRaw"]
        assert record.name == job["JobName"]
        assert (record.elapsed, record.time_limit, record.req_mem) == (job["Elapsed"], job["Timelimit"], job["ReqMem"])
        assert (record.nodes, record.partition, record.work_dir) == (job["NodeList"], job["Partition"], job["WorkDir"])
        assert (record.start, record.end, record.user) == (job["Start"], job["End"], job["User"])
        assert record.alloc_cpus == job["AllocCPUS"]


# squeue round trip: jobmon's columns in any order, unknown ones anywhere; a comment (which may hold
# `|`) is only ever the last column, as in `squeue -o '%i|%k'`.
_SQUEUE_WORD = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="|"),
                       max_size=12).map(str.strip)
_squeue_job_ids = st.one_of(
    st.integers(1, 10 ** 9).map(str),
    st.builds("{}_{}".format, st.integers(1, 10 ** 6), st.integers(0, 10 ** 4)),
    st.builds("{}_[{}-{}%{}]".format, st.integers(1, 10 ** 6), st.integers(0, 9), st.integers(10, 99),
              st.integers(1, 9)),
    st.builds("{}+{}".format, st.integers(1, 10 ** 6), st.integers(0, 9)),
)


@st.composite
def _squeue_output(draw):
    entries = [QueueEntry(job_id, draw(st.sampled_from(list(JobState))), *(draw(_SQUEUE_WORD) for _ in range(9)))
               for job_id in draw(st.lists(_squeue_job_ids, max_size=5, unique=True))]
    extra = draw(st.lists(st.sampled_from(["USER", "COMMENT"]), max_size=2, unique=True))
    titles = draw(st.permutations([title for _, title in SQUEUE_COLUMNS] + extra))
    lines = ["|".join(titles)]
    for entry in entries:
        cells = {"JOBID": entry.job_id, "STATE": entry.state.value, "REASON": entry.reason, "TIME": entry.time_used,
                 "TIME_LIMIT": entry.time_limit, "TIME_LEFT": entry.time_left, "START_TIME": entry.start_time,
                 "NODELIST": entry.nodes, "SUBMIT_TIME": entry.submit_time, "PARTITION": entry.partition,
                 "NAME": entry.name}
        lines.append("|".join(cells[title] if title in cells else draw(_SQUEUE_WORD) for title in titles))
    return entries, "\n".join(lines) + "\n"


@MEDIUM
@given(_squeue_output())
def test_parse_squeue_round_trip(generated) -> None:
    entries, text = generated
    assert parse_squeue(text) == entries


#: A comment as squeue prints it: one line, no surrounding whitespace, `|` allowed.
_COMMENT = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20).map(str.strip)


@MEDIUM
@given(st.lists(st.tuples(_squeue_job_ids, _COMMENT), max_size=5))
def test_parse_comments_round_trip_keeps_pipes_in_the_comment(pairs) -> None:
    text = header_line("squeue_ik.txt") + "".join(f"{job_id}|{comment}\n" for job_id, comment in pairs)
    assert parse_comments(text) == pairs


def test_parse_sacct_cancelled_by_uid_example() -> None:
    text = "\n".join([
        _sacct_line({name: name for name in SACCT_FIELDS}),
        _sacct_line({"JobID": "7", "JobIDRaw": "7", "JobName": "a|b", "State": "CANCELLED by 1000", "ExitCode": "0:15",
                     "ReqMem": "1G", "User": "u", "AllocCPUS": "2"}),
        _sacct_line({"JobID": "7.batch", "JobIDRaw": "7.batch", "JobName": "batch", "State": "CANCELLED",
                     "ExitCode": "0:15", "MaxRSS": "2G"}),
        _sacct_line({"JobID": "7.0", "JobIDRaw": "7.0", "JobName": "python", "State": "CANCELLED",
                     "ExitCode": "0:15", "MaxRSS": "3072K"}),
    ])
    [record] = parse_sacct(text)
    assert (record.job_id, record.name, record.state) == ("7", "a|b", JobState.CANCELLED)
    assert record.max_rss_bytes == 2 * 1024 ** 3
    assert (record.req_mem, record.user, record.alloc_cpus) == ("1G", "u", 2)


# -- core.analysis.analyzer --------------------------------------------------------------------------
_LOG_TOKENS = [
    "\r", "\x1b[31m", "\x1b[0m", "\x1b]0;title\x07", "\x1b", "\x07", "\x00", "\x7f", "\t", "|", " | ",
    "[rank3]:", "[default0]:", "[1,0]<stderr>:", "0: ", "gpu-node07: ", "2024-01-02 03:04:05,678 - ",
    "[W1121 19:43:12.123 12 socket.cpp:12] ", "| 450/1000 [01:02<01:16, 7.2it/s, loss=0.3]", "450it [01:02, 7.2it/s]",
    "Killed", "Traceback (most recent call last):", "CUDA out of memory", "slurmstepd: error: ",
    "oom-kill", "Bus error", "Segmentation fault", "NCCL", "\ufffd", "\u2028",
]
_log_line = st.one_of(
    st.sampled_from(LOG_FIXTURE_LINES),
    noise(_LOG_TOKENS + LOG_FIXTURE_LINES[:50], max_parts=12),
    _replaced_bytes,
    _surrogate_text,
)
# A line of `size` characters (1 KB to 100 KB) made of one repeated piece, between two random ones.
_huge_line = st.builds(
    lambda head, piece, size, tail: head + (piece * (size // max(len(piece), 1) + 1))[:size] + tail,
    _log_line, st.sampled_from(LOG_FIXTURE_LINES + _LOG_TOKENS + ["x", "ab\r", "| 1/2 [00:01<00:01, 1it/s]"]),
    st.integers(1000, 100_000), _log_line,
)
_log_lines = st.lists(st.one_of(_log_line, _huge_line), max_size=25)


def _check_analysis(result: Analysis, n_lines: int, first_line_no: int, max_findings: int) -> None:
    rank = {pattern_id: index for index, pattern_id in enumerate(PATTERN_IDS)}
    assert set(result.categories) <= set(PATTERN_IDS)
    assert len(set(result.categories)) == len(result.categories)
    by_id = {p.id: p for p in BUILTIN_PATTERNS}
    first_line = {f.category: f.line_no for f in reversed(result.findings)}
    if len(result.categories) < max_findings:  # none cut: every category found is here
        wraps = [is_wrapper(by_id[c], result.categories) for c in result.categories]
        assert wraps == sorted(wraps), "causes before the reports that wrap them"
        causes = [c for c, w in zip(result.categories, wraps) if not w]
        wrappers = [c for c, w in zip(result.categories, wraps) if w]
        assert [first_line[c] for c in causes] == sorted(first_line[c] for c in causes), "causes in time order"
        assert [rank[c] for c in wrappers] == sorted(rank[c] for c in wrappers), "wrappers in library order"
    assert len(result.findings) <= max_findings
    line_nos = [f.line_no for f in result.findings]
    assert line_nos == sorted(line_nos)
    assert len(set(line_nos)) == len(line_nos), "at most one finding per line"
    assert all(first_line_no <= n < first_line_no + n_lines for n in line_nos)
    assert all(f.category in rank and len(f.line) <= FINDING_MAX_CHARS for f in result.findings)
    assert set(result.categories) <= {f.category for f in result.findings}
    if result.categories:
        assert result.root_cause is not None and result.root_cause.category == result.categories[0]
    json.dumps(result.to_json_dict())


@SLOW
@given(_log_lines, st.integers(-5, 10 ** 6), st.integers(0, 60))
def test_analyze_builtin_patterns_on_arbitrary_lines(lines: List[str], first_line_no: int, max_findings: int) -> None:
    result = analyze(lines, BUILTIN_PATTERNS, first_line_no=first_line_no, max_findings=max_findings)
    _check_analysis(result, len(lines), first_line_no, max_findings)


@MEDIUM
@given(st.lists(st.sampled_from(LOG_FIXTURE_LINES), max_size=80), st.integers(0, 5))
def test_analyze_many_findings_respects_cap(lines: List[str], max_findings: int) -> None:
    result = analyze(iter(lines), BUILTIN_PATTERNS, max_findings=max_findings)
    _check_analysis(result, len(lines), 1, max_findings)


_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_REGEX_TOKENS = ["(", ")", "[", "]", "*", "+", "?", "{", "}", "\\", "a", "^", "$", "|", "(?", "(?P<x>", "(?P=x)",
                 "{2,1}", "{99999999999}", "{4294967296}", "\\1", "\\d", "\\", "(?i)", "(?u)", "(?L)", "(?<=a)",
                 "(?=", "\\N{LATIN SMALL LETTER A}", "\\N{nope}", "\\u12", "\\U00110000", ".", "-", "x*"]
_regex_source = st.one_of(noise(_REGEX_TOKENS, max_parts=10), st.text(max_size=10))
_entry = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.sampled_from(["cuda_oom", "x", "my_id", "Bad", "1a", ""]), _json_values),
        "severity": st.one_of(st.sampled_from(["critical", "error", "warning", "info", ""]), _json_values),
        "regexes": st.one_of(st.lists(_regex_source, max_size=3), _json_values),
        "exclude": st.one_of(st.lists(_regex_source, max_size=3), _json_values),
        "description": st.one_of(st.sampled_from(["d", " "]), _json_values),
        "hint": st.one_of(st.sampled_from(["h", ""]), _json_values),
        "_doc": _json_values,
        "extra": _json_values,
    },
)
_document = st.fixed_dictionaries(
    {},
    optional={
        "schema_version": st.one_of(st.sampled_from([1, 1.0, True, "1", 2]), _json_values),
        "patterns": st.one_of(st.lists(_entry, max_size=4), _json_values),
        "_comment": _json_values,
        "other": _json_values,
    },
)
_json_noise = [
    "{", "}", "[", "]", ",", ":", '"', '\\"', "\\u", "\\ud800", "true", "null", "NaN", "-Infinity", "1e999",
    '"schema_version"', '"patterns"', '"id"', '"regexes"', "1",
]
_pattern_texts = st.one_of(
    any_text(_json_noise),
    _json_values.map(json.dumps),
    _document.map(json.dumps),
    st.builds(lambda n, c: c * n, st.integers(1, 5000), st.sampled_from(["[", "{\"a\":", "[1,"])),  # deep nesting
    _digit_runs.map(lambda digits: f'{{"schema_version": {digits}, "patterns": []}}'),
)


@FAST
@given(_pattern_texts)
def test_parse_patterns_raises_only_pattern_error(text: str) -> None:
    try:
        patterns = parse_patterns(text, "fuzz.json")
    except PatternError as exc:
        assert str(exc).startswith("patterns file fuzz.json")
        return
    ids = [p.id for p in patterns]
    assert len(set(ids)) == len(ids)
    assert all(p.regexes for p in patterns)


def test_builtin_patterns_load() -> None:
    assert len(PATTERN_IDS) == len(set(PATTERN_IDS)) > 10


# -- core.slurm.jobscript -------------------------------------------------------------------------
_OPTION_WORDS = [
    "--", "-", ":", "--output", "--output=", "--out", "--o", "-o", "-ofoo.%j", "-e", "--error=e.%A_%a", "-J",
    "--job-name", "--chdir", "-D", "--array=1-3", "-a", "--parsable", "--pars", "-k", "-koff", "-Hvo", "--wrap",
    "--wrap=echo", "--exclusive", "--exclusive=user", "--no-kill", "--unknown", "--unknown=x", "-Z", "--=",
    "script.sh", "hetjob", "packjob", "--mem", "4G", "",
]
_argv = st.lists(st.one_of(st.sampled_from(_OPTION_WORDS), noise(_OPTION_WORDS, max_parts=4)), max_size=10)
_DIRECTIVE_TOKENS = ["#SBATCH", "#SBATCH ", "\n#SBATCH ", "\n", "#!/bin/bash\n", "# comment\n", "  ", "echo hi\n",
                     "'", '"', "\\", "#", "hetjob", "HetJob", *_OPTION_WORDS]


def _allowed(call, *args, **kwargs):
    """Run `call`; a JobmonError is an accepted refusal (returned as None), anything else fails the test."""
    try:
        return call(*args, **kwargs)
    except JobmonError:
        return None


@FAST
@given(any_text(_DIRECTIVE_TOKENS))
def test_parse_directives_raises_only_jobmon_error(text: str) -> None:
    args = _allowed(parse_directives, text)
    if args is not None:
        assert all(isinstance(arg, str) and arg for arg in args)
        assert isinstance(_allowed(parse_sbatch_options, args), (JobOptions, type(None)))


@FAST
@given(_argv)
def test_parse_sbatch_options_and_split_submit_args(argv: List[str]) -> None:
    options = _allowed(parse_sbatch_options, argv)
    assert options is None or isinstance(options, JobOptions)
    split = _allowed(split_submit_args, argv)
    if split is not None:
        flags, script, rest = split
        assert argv[:len(flags)] == flags
        assert argv[len(argv) - len(rest) - 1:] == [script, *rest]
        assert len(argv) - len(flags) - len(rest) - 1 in (0, 1)  # at most a dropped "--"


_PATTERN_TOKENS = ["%", "%%", "%j", "%J", "%A", "%a", "%5j", "%010a", "%99999x", "%x", "%u", "%N", "%n", "%t",
                   "%s", "%q", "%1", "\\", "\\\\", "slurm-", ".out", "/"]
_ids = st.one_of(st.integers(0, 10 ** 12).map(str), noise(max_parts=3))
# "%<width><letter>" fields with every kind of width: long, non-ASCII digits, missing letter.
_pattern_fields = st.builds("%{}{}".format, _digit_runs, st.sampled_from(["", "j", "a", "J", "x", "q", "%"]))
_file_patterns = st.one_of(
    any_text(_PATTERN_TOKENS),
    st.lists(st.one_of(_pattern_fields, st.sampled_from(_PATTERN_TOKENS)), max_size=6).map("".join),
)


@FAST
@given(_file_patterns, _ids, st.one_of(st.none(), _ids), st.one_of(st.none(), _ids),
       st.text(max_size=8), st.text(max_size=8), st.text(max_size=8))
def test_expand_pattern_raises_only_jobmon_error(pattern, job_id, array_job_id, array_task_id, name, user, node):
    result = _allowed(expand_pattern, pattern, job_id=job_id, array_job_id=array_job_id,
                      array_task_id=array_task_id, job_name=name, user=user, node=node)
    assert result is None or isinstance(result, str)


@FAST
@given(any_text(["Submitted batch job ", "sbatch: ", " on cluster ", ";", "sbatch: warning: x\n"]))
def test_parse_job_id_raises_only_jobmon_error(text: str) -> None:
    parsed = _allowed(parse_job_id, text)
    if parsed is not None:
        job_id, cluster = parsed
        assert job_id and job_id.isdigit()
        assert cluster is None or isinstance(cluster, str)


@FAST
@given(any_text())
def test_validate_job_id_raises_only_jobmon_error(text: str) -> None:
    job_id = _allowed(validate_job_id, text)
    if job_id is not None:
        assert job_id.isascii() and re.fullmatch(r"\d+(?:_\d+|\+\d+)?", job_id)


# -- core.analysis.logtail ---------------------------------------------------------------------------
_BYTE_TOKENS = [b"\n", b"\r\n", b"\r", b"\x00", b"x", b"line", b"\xff", b"\xe2\x82", b"\xe2\x82\xac",
                b"\xf0\x9f\x98\x80", b"\xed\xa0\x80", b"\n\n"]
_file_bytes = st.one_of(
    st.binary(max_size=400),
    st.lists(st.one_of(st.sampled_from(_BYTE_TOKENS), st.binary(max_size=5)), max_size=60).map(b"".join),
    st.builds(lambda piece, count: piece * count, st.sampled_from(_BYTE_TOKENS + [b"ab\n", b"long"]),
              st.integers(1, 5000)),
)


def _reference_lines(data: bytes) -> List[str]:
    """What read_tail should return when it reads the whole file, computed the simple way."""
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [(line[:-1] if line.endswith("\r") else line).replace("\x00", "") for line in lines]


# tmp_path is function-scoped, so hypothesis warns that it is shared by all examples: harmless
# here, since every example overwrites the same file before reading it.
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_file_bytes, st.integers(1, 40), st.one_of(st.integers(0, 300), st.integers(0, 20_000)))
def test_read_tail_random_bytes(tmp_path, data: bytes, max_lines: int, max_bytes: int) -> None:
    path = tmp_path / "job.out"
    path.write_bytes(data)
    tail = read_tail(str(path), max_lines=max_lines, max_bytes=max_bytes)
    assert len(tail.lines) <= max_lines
    assert tail.size == len(data)
    assert all("\n" not in line and "\x00" not in line for line in tail.lines)
    assert all(len(line) <= TAIL_MAX_CHARS + 40 for line in tail.lines)
    reference = _reference_lines(data)
    if any(len(line) > TAIL_MAX_CHARS for line in reference):
        return  # capped lines are checked by test_logtail; compare exactly only when nothing is cut
    if tail.whole:
        assert list(tail.lines) == reference
    elif len(tail.lines) >= 2:
        # Only a lone first line can be a partial one (cut by max_bytes); the rest is the file's end.
        assert list(tail.lines) == reference[-len(tail.lines):]


@pytest.mark.parametrize("name", ["missing.out", "."])
def test_read_tail_unreadable_path(tmp_path, name: str) -> None:
    assert read_tail(str(tmp_path / name)).lines == ()
