"""The analyzer's contract on small hand-made pattern sets: cleaning, ordering, caps, validation."""
from __future__ import annotations

import dataclasses
import json
import random
import re
from typing import Sequence

import pytest

from core.analysis.analyzer import (
    MAX_LINE_CHARS,
    Analysis,
    Finding,
    Pattern,
    analyze,
    clean_line,
    merge_patterns,
    parse_patterns,
)
from core.analysis.jobend import JobEnd
from core.errors import PatternError


def pattern(pattern_id: str, *regexes: str, exclude: Sequence[str] = (), severity: str = "error",
            survivable: Sequence[str] = (), wraps: bool = False, states: Sequence[str] = ()) -> Pattern:
    return Pattern(
        id=pattern_id,
        severity=severity,
        regexes=tuple(re.compile(r) for r in regexes),
        description=f"{pattern_id} happened",
        hint=f"fix {pattern_id}",
        exclude=tuple(re.compile(r) for r in exclude),
        survivable=tuple(re.compile(r) for r in survivable),
        wraps=wraps,
        states=tuple(states),
    )


OOM = pattern("oom", r"out of memory", severity="critical")
KILLED = pattern("killed", r"^Killed$", wraps=True)
TRACEBACK = pattern("traceback", r"Traceback \(most recent call last\):", wraps=True)
LIBRARY = (OOM, KILLED, TRACEBACK)


# -- clean_line ------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("plain line\n", "plain line"),
    ("\x1b[1;31mRuntimeError\x1b[0m: boom", "RuntimeError: boom"),
    ("\x1b]0;window title\x07after title", "after title"),
    ("\x1b[2K\x1b[1A\x1b[38;5;196mcursor moves and 256 colours", "cursor moves and 256 colours"),
    ("first\rsecond\rthird", "third"),
    ("the error\r\n", "the error"),
    ("the error\r   \r", "the error"),
    ("Epoch 1:  45%|████▌  | 450/1000 [01:02<01:16]\rTraceback (most recent call last):",
     "Traceback (most recent call last):"),
    ("Epoch 1:  45%|████▌  | 450/1000 [01:02<01:16, 7.2it/s, loss=0.3]Traceback (most recent call last):",
     "Traceback (most recent call last):"),
    ("1200it [01:02, 19.2it/s]Killed", "Killed"),
    ("Epoch 1:  45%|████▌  | 450/1000 [01:02<01:16]", ""),
    ("tab\tand\x00nul", "tab\tand nul"),
    ("[rank3]: keeps the rank", "[rank3]: keeps the rank"),
    ("", ""),
])
def test_clean_line(raw, expected):
    assert clean_line(raw) == expected


# -- analyze: which pattern, which order -----------------------------------------------------
def test_first_matching_pattern_wins_and_wrappers_follow_the_cause_in_pattern_order():
    lines = [
        "Traceback (most recent call last):",
        "  File 'train.py', line 3",
        "RuntimeError: out of memory (Traceback (most recent call last): quoted)",
        "Killed",
    ]
    analysis = analyze(lines, LIBRARY)
    assert [(f.line_no, f.category) for f in analysis.findings] == [(1, "traceback"), (3, "oom"), (4, "killed")]
    assert analysis.categories == ("oom", "killed", "traceback")
    assert analysis.root_cause == analysis.findings[1]


DISK = pattern("disk", r"No space left on device")
TIMEOUT = pattern("timeout", r"DUE TO TIME LIMIT", states=("TIMEOUT",))
CAUGHT_OOM = pattern("oom", r"out of memory", severity="critical", survivable=(r"skipping batch",))
WORKER = pattern("worker", r"DataLoader worker \(pid \d+\) is killed", wraps=False)


def test_causes_come_in_time_order_not_library_order():
    lines = ["OSError: [Errno 28] No space left on device", "Traceback (most recent call last):",
             "RuntimeError: out of memory"]
    analysis = analyze(lines, (OOM, DISK) + LIBRARY[1:])
    assert analysis.categories == ("disk", "oom", "traceback")
    assert analysis.root_cause is not None and analysis.root_cause.line_no == 1


def test_a_wrapper_printed_first_still_ranks_after_the_cause():
    assert analyze(["Killed", "Traceback (most recent call last):", "out of memory"], LIBRARY).categories == (
        "oom", "killed", "traceback")


def test_a_wrapper_of_listed_causes_wraps_only_when_one_of_them_was_found():
    worker = dataclasses.replace(WORKER, wraps_ids=("disk",))
    library = (worker, DISK, OOM)
    lines = ["DataLoader worker (pid 12) is killed", "No space left on device", "out of memory"]
    assert analyze(lines, library).categories == ("disk", "oom", "worker")
    assert analyze([lines[0], lines[2]], library).categories == ("worker", "oom")


def test_the_final_state_names_the_root_cause_even_when_a_traceback_follows():
    lines = ["slurmstepd: error: *** JOB 7 ON n1 CANCELLED AT 2024-04-20T09:09:37 DUE TO TIME LIMIT ***",
             "Traceback (most recent call last):", "RuntimeError: out of memory"]
    analysis = analyze(lines, (OOM, TIMEOUT) + LIBRARY[1:], outcome=JobEnd("TIMEOUT"))
    assert analysis.categories == ("timeout", "oom", "traceback")
    assert analysis.root_cause is not None and analysis.root_cause.line_no == 1
    # without the outcome the log alone decides: the banner is the first error in time here too
    assert analyze(lines[1:], (OOM, TIMEOUT) + LIBRARY[1:]).categories == ("oom", "traceback")


def test_a_final_state_without_its_banner_adds_a_finding_from_slurm():
    analysis = analyze(["RuntimeError: out of memory"], (OOM, TIMEOUT), outcome=JobEnd("TIMEOUT", 0, 15))
    assert analysis.categories == ("timeout", "oom")
    root = analysis.root_cause
    assert root is not None and (root.line_no, root.line, root.hint) == (0, "Slurm: the job ended TIMEOUT",
                                                                         "fix timeout")


def test_a_state_no_pattern_names_changes_nothing():
    lines = ["Killed", "out of memory"]
    assert analyze(lines, LIBRARY, outcome=JobEnd("FAILED", 1)) == analyze(lines, LIBRARY)


def test_a_clean_end_has_no_cause_only_warnings():
    lines = ["Epoch 3 out of memory", "Traceback (most recent call last):", "done"]
    analysis = analyze(lines, LIBRARY, outcome=JobEnd("COMPLETED", 0, 0))
    assert analysis.categories == () and analysis.findings == () and analysis.root_cause is None
    assert [(f.line_no, f.category) for f in analysis.warnings] == [(1, "oom"), (2, "traceback")]
    assert analyze(lines, LIBRARY, outcome=JobEnd("COMPLETED", 1)).categories == ("oom", "traceback")


def test_a_survivable_line_is_a_warning_whatever_the_outcome():
    lines = ["WARNING: ran out of memory, skipping batch", "loss 0.3", "out of memory"]
    analysis = analyze(lines, (CAUGHT_OOM,))
    assert [(f.line_no, f.category) for f in analysis.warnings] == [(1, "oom")]
    assert [f.line_no for f in analysis.findings] == [3] and analysis.categories == ("oom",)
    assert analyze(lines[:2], (CAUGHT_OOM,)).categories == ()


def test_finding_carries_severity_hint_and_cleaned_line():
    analysis = analyze(["\x1b[31m[rank1]: RuntimeError: out of memory\x1b[0m\n"], LIBRARY, first_line_no=41)
    assert analysis.findings == (
        Finding(category="oom", severity="critical", line_no=41,
                line="[rank1]: RuntimeError: out of memory", hint="fix oom"),
    )


@pytest.mark.parametrize("line", [
    "Killed", "[rank0]: Killed", "[rank0]:Killed", "0: Killed", "gpu-node07: Killed", "[default1]:Killed",
    "[1,0]<stderr>:Killed", "2026-11-21 19:43:12,123 Killed", "[2026-11-21T19:43:12.784] Killed",
    "0: [rank2]: Killed",
])
def test_anchored_regex_sees_the_message_without_launcher_prefixes(line):
    assert analyze([line], LIBRARY).categories == ("killed",)


@pytest.mark.parametrize("line", ["Killed by the user", "RuntimeError: Killed", "[W123 x.cpp:1] Killed"])
def test_anchored_regex_still_anchors(line):
    assert analyze([line], LIBRARY).categories == ()


def test_exclude_vetoes_only_its_own_pattern():
    retry = pattern("oom", r"out of memory", exclude=[r"\bretrying\b"])
    catch_all = pattern("memory_word", r"memory")
    analysis = analyze(["out of memory, retrying with a smaller batch", "out of memory"], (retry, catch_all))
    assert [(f.line_no, f.category) for f in analysis.findings] == [(1, "memory_word"), (2, "oom")]


def test_nothing_found():
    analysis = analyze(["all good", "", "\r"], LIBRARY)
    assert analysis == Analysis(findings=(), categories=())
    assert analysis.root_cause is None


def test_accepts_any_iterable_of_lines():
    assert analyze(iter(["Killed"]), LIBRARY).categories == ("killed",)


def test_root_cause_is_earliest_finding_of_most_important_category():
    lines = ["Killed", "out of memory", "out of memory", "Traceback (most recent call last):"]
    assert analyze(lines, LIBRARY).root_cause.line_no == 2


# -- analyze: caps ---------------------------------------------------------------------------
def test_cap_keeps_first_finding_of_every_category():
    lines = ["Traceback (most recent call last):"] * 100 + ["Killed", "out of memory"]
    analysis = analyze(lines, LIBRARY, max_findings=5)
    assert [f.line_no for f in analysis.findings] == [1, 2, 3, 101, 102]
    assert analysis.categories == ("oom", "killed", "traceback")


def test_cap_below_category_count_keeps_the_most_important():
    lines = ["Traceback (most recent call last):", "Killed", "out of memory"]
    analysis = analyze(lines, LIBRARY, max_findings=2)
    assert [f.category for f in analysis.findings] == ["killed", "oom"]
    assert analysis.categories == ("oom", "killed")


def test_cap_of_zero_and_negative():
    assert analyze(["Killed"], LIBRARY, max_findings=0) == Analysis((), ())
    with pytest.raises(ValueError):
        analyze(["Killed"], LIBRARY, max_findings=-1)


def test_shown_line_is_capped_and_shows_the_match():
    head = "x" * 1000
    analysis = analyze([f"{head} out of memory {head}"], LIBRARY)
    line = analysis.findings[0].line
    assert len(line) == MAX_LINE_CHARS
    assert "out of memory" in line


# -- huge and hostile input ------------------------------------------------------------------
def test_five_megabyte_line_is_matched_at_its_ends_only():
    filler = "█" * (5 * 1024 * 1024)
    lines = [
        f"out of memory {filler}",
        f"{filler} Traceback (most recent call last):",
        f"{filler[:len(filler) // 2]} out of memory {filler[:len(filler) // 2]}",
    ]
    analysis = analyze(lines, LIBRARY)
    assert [(f.line_no, f.category) for f in analysis.findings] == [(1, "oom"), (2, "traceback")]
    assert all(len(f.line) <= MAX_LINE_CHARS for f in analysis.findings)


def test_five_megabyte_line_of_regex_bait_is_harmless():
    bait = "[rank1]:\x1b[0;" + "0: " * 10 + "| 1/2 [01:" + "out of memor" * 400_000
    assert analyze([bait, bait + "\r"], LIBRARY).categories == ()


def test_random_text_never_raises():
    rng = random.Random(1234)
    alphabet = "\r\n\t\x00\x1b[]()|:;0123456789 aKilledTrace█é中\u2028\ud800\U0001f600"
    for _ in range(500):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 200)))
        analysis = analyze([line], LIBRARY)
        json.dumps(analysis.to_json_dict())


# -- Analysis --------------------------------------------------------------------------------
def test_to_json_dict_shape():
    analysis = analyze(["Killed", "out of memory"], LIBRARY)
    assert analysis.to_json_dict() == {
        "categories": ["oom", "killed"],
        "findings": [
            {"category": "killed", "severity": "error", "line_no": 1, "line": "Killed"},
            {"category": "oom", "severity": "critical", "line_no": 2, "line": "out of memory"},
        ],
        "warnings": [],
    }


def test_results_are_frozen():
    analysis = analyze(["Killed"], LIBRARY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        analysis.categories = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        analysis.findings[0].line = ""  # type: ignore[misc]


# -- parse_patterns --------------------------------------------------------------------------
def entry(**fields: object) -> dict:
    base = {"id": "cuda_oom", "severity": "critical", "regexes": ["CUDA out of memory"],
            "description": "the GPU is full", "hint": "use a smaller batch"}
    base.update(fields)
    return {key: value for key, value in base.items() if value is not None}


def document(*entries: object, **top: object) -> str:
    body = {"schema_version": 1, "patterns": list(entries)}
    body.update(top)
    return json.dumps(body)


def test_parse_valid_file():
    text = document(entry(_note="kept out"), entry(id="killed", severity="warning", regexes=["^Killed$"],
                                                   exclude=["Killed 0"]), _doc="comments are fine")
    cuda, killed = parse_patterns(text, "/x/p.json")
    assert (cuda.id, cuda.severity, cuda.exclude) == ("cuda_oom", "critical", ())
    assert [r.pattern for r in cuda.regexes] == ["CUDA out of memory"]
    assert (killed.id, [r.pattern for r in killed.exclude]) == ("killed", ["Killed 0"])


def test_parse_empty_pattern_list():
    assert parse_patterns(document(), "p.json") == ()


PREFIX = "patterns file /x/p.json"


@pytest.mark.parametrize("text, message", [
    ('{"schema_version": 1,\n "patterns": [}', f"{PREFIX}: invalid JSON at line 2, column 15: Expecting value"),
    ("[" * 100_000, f"{PREFIX}: invalid JSON: nested too deeply"),
    ("[]", f"{PREFIX}: the top level must be an object, not an array"),
    ('{"patterns": []}', f"{PREFIX}: 'schema_version' must be 1, not None"),
    ('{"schema_version": 2, "patterns": []}', f"{PREFIX}: 'schema_version' must be 1, not 2"),
    ('{"schema_version": true, "patterns": []}', f"{PREFIX}: 'schema_version' must be 1, not True"),
    ('{"schema_version": 1}', f"{PREFIX}: 'patterns' must be an array, not null"),
    ('{"schema_version": 1, "patterns": {}}', f"{PREFIX}: 'patterns' must be an array, not an object"),
    (document(pattern=[]), f"{PREFIX}: unknown top-level key 'pattern' (prefix documentation keys with '_')"),
    (document("cuda_oom"), f"{PREFIX}: entry 0: must be an object, not a string"),
    (document(entry(id=None)), f"{PREFIX}: entry 0: missing field 'id'"),
    (document(entry(id="CUDA OOM")), f"{PREFIX}: entry 0: 'id' must be a string of lowercase letters, digits "
                                     "and '_' starting with a letter, not 'CUDA OOM'"),
    (document(entry(), entry(id="x", hint=None)), f"{PREFIX}: entry 1 ('x'): missing field 'hint'"),
    (document(entry(description=7)), f"{PREFIX}: entry 0 ('cuda_oom'): 'description' must be a string, not "
                                     "a number"),
    (document(entry(hint="  ")), f"{PREFIX}: entry 0 ('cuda_oom'): 'hint' must not be empty"),
    (document(entry(severity="fatal")), f"{PREFIX}: entry 0 ('cuda_oom'): unknown severity 'fatal' (use one "
                                        "of: critical, error, warning)"),
    (document(entry(regexes="CUDA")), f"{PREFIX}: entry 0 ('cuda_oom'): 'regexes' must be an array of strings"),
    (document(entry(regexes=[])), f"{PREFIX}: entry 0 ('cuda_oom'): 'regexes' must not be empty"),
    (document(entry(exclude=[1])), f"{PREFIX}: entry 0 ('cuda_oom'): 'exclude' must be an array of strings"),
    (document(entry(id="a"), entry(id="b"), entry(id="c"), entry(regexes=["abc("])),
     f"{PREFIX}: entry 3 ('cuda_oom'): invalid regex 'abc(': missing ), unterminated subpattern at position 3"),
    (document(entry(exclude=["[unclosed"])),
     f"{PREFIX}: entry 0 ('cuda_oom'): invalid regex '[unclosed': unterminated character set at position 0"),
    (document(entry(regexes=["x*"])), f"{PREFIX}: entry 0 ('cuda_oom'): regex 'x*' matches the empty string"),
    (document(entry(exclude=["|no"])), f"{PREFIX}: entry 0 ('cuda_oom'): regex '|no' matches the empty string"),
    (document(entry(), entry(id="x"), entry()),
     f"{PREFIX}: entry 2 ('cuda_oom'): duplicate id, already used by entry 0"),
    (document(entry(regex=["typo"])), f"{PREFIX}: entry 0 ('cuda_oom'): unknown field 'regex'"),
    (document(entry(wraps="yes")), f"{PREFIX}: entry 0 ('cuda_oom'): 'wraps' must be true, false or an array "
                                   "of pattern ids"),
    (document(entry(wraps=["Bad Id"])), f"{PREFIX}: entry 0 ('cuda_oom'): 'wraps' must be true, false or an "
                                        "array of pattern ids"),
    (document(entry(states="TIMEOUT")), f"{PREFIX}: entry 0 ('cuda_oom'): 'states' must be an array of Slurm "
                                        "state names such as \"TIMEOUT\""),
    (document(entry(states=["timeout"])), f"{PREFIX}: entry 0 ('cuda_oom'): 'states' must be an array of Slurm "
                                          "state names such as \"TIMEOUT\""),
    (document(entry(survivable=["x*"])), f"{PREFIX}: entry 0 ('cuda_oom'): regex 'x*' matches the empty string"),
    (document(entry(hang="yes")), f"{PREFIX}: entry 0 ('cuda_oom'): 'hang' must be true or false, not a string"),
])
def test_parse_errors_name_file_and_entry_in_one_line(text, message):
    with pytest.raises(PatternError) as caught:
        parse_patterns(text, "/x/p.json")
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_the_ordering_keys_are_read():
    text = document(entry(wraps=True, states=["TIMEOUT"], survivable=["caught"]), entry(id="x", wraps=["cuda_oom"]))
    first, second = parse_patterns(text, "p.json")
    assert (first.wraps, first.wraps_ids, first.states, [r.pattern for r in first.survivable]) == (
        True, (), ("TIMEOUT",), ["caught"])
    assert (second.wraps, second.wraps_ids, second.states, second.survivable) == (False, ("cuda_oom",), (), ())


def test_multiline_regex_is_reported_on_one_line():
    with pytest.raises(PatternError) as caught:
        parse_patterns(document(entry(regexes=["a\n("])), "p.json")
    assert "\n" not in str(caught.value)


# -- merge_patterns --------------------------------------------------------------------------
def test_merge_puts_new_user_patterns_first_and_replaces_builtins_in_place():
    user_killed = pattern("killed", r"^Killed\b")
    mine = pattern("my_dataset_corrupt", r"CRC mismatch in shard")
    mine_too = pattern("my_quota", r"over quota")
    merged = merge_patterns(LIBRARY, (mine, user_killed, mine_too))
    assert [p.id for p in merged] == ["my_dataset_corrupt", "my_quota", "oom", "killed", "traceback"]
    assert merged[3] is user_killed


def test_merge_without_user_patterns_is_the_builtin_library():
    assert merge_patterns(LIBRARY, ()) == LIBRARY


def test_user_pattern_outranks_builtins_on_the_same_line_and_takes_its_turn_in_time():
    merged = merge_patterns(LIBRARY, (pattern("shard_crc", r"CRC mismatch"),))
    assert analyze(["CRC mismatch in shard 7: out of memory"], merged).categories == ("shard_crc",)
    assert analyze(["out of memory", "CRC mismatch in shard 7"], merged).categories == ("oom", "shard_crc")


# -- purity ----------------------------------------------------------------------------------


