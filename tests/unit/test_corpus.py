"""The corpus of real job logs (tests/corpus) is well formed, and the analyzer meets its targets on it.

The scoring is bench/corpus.py's (`python3 bench/corpus.py` prints the same figures as a table).
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import sys
from types import ModuleType
from typing import Any, Dict, List

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus"
MANIFEST = CORPUS / "manifest.json"
PATTERNS_FILE = ROOT / "patterns" / "error_patterns.json"

MIN_CASES = 150
MIN_NEGATIVES = 15
MIN_PRIMARY_ACCURACY = 0.95
MIN_RECALL = 0.95
#: Where a case may come from: a public GitHub issue, pull request or file.
SOURCE = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+/(?:issues|pull|blob)/\S+\Z")
CASE_KEYS = {"file", "source", "primary", "expected", "forbidden", "outcome", "note"}


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("jobmon_bench_corpus", ROOT / "bench" / "corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench()


@pytest.fixture(scope="module")
def raw_cases() -> List[Dict[str, Any]]:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))["cases"]


@pytest.fixture(scope="module")
def pattern_ids() -> List[str]:
    return [entry["id"] for entry in json.loads(PATTERNS_FILE.read_text(encoding="utf-8"))["patterns"]]


# -- the manifest ----------------------------------------------------------------------------
def test_manifest_documents_itself():
    document = json.loads(MANIFEST.read_text(encoding="utf-8"))
    assert "real" in document["_doc"] and "no invented lines" in document["_doc"]


def test_every_case_has_only_known_fields_and_a_cited_source(raw_cases):
    for case in raw_cases:
        assert set(case) <= CASE_KEYS, case["file"]
        assert SOURCE.match(case["source"]), case["file"]


def test_every_listed_file_exists_and_every_file_is_listed(raw_cases):
    listed = [case["file"] for case in raw_cases]
    assert len(listed) == len(set(listed))
    on_disk = sorted(p.name for p in (CORPUS / "logs").iterdir())
    assert sorted(listed) == on_disk


def test_every_log_is_a_short_nonempty_tail(raw_cases):
    for case in raw_cases:
        text = (CORPUS / "logs" / case["file"]).read_text(encoding="utf-8")
        assert text.strip() and text.endswith("\n"), case["file"]
        assert len(text.splitlines()) <= 200, case["file"]


def test_every_category_named_exists_in_the_patterns_file(raw_cases, pattern_ids):
    for case in raw_cases:
        named = set(case["expected"]) | set(case["forbidden"]) | ({case["primary"]} - {None})
        assert named <= set(pattern_ids), (case["file"], sorted(named - set(pattern_ids)))


def test_expectations_are_consistent(raw_cases):
    for case in raw_cases:
        assert not set(case["expected"]) & set(case["forbidden"]), case["file"]
        if case["primary"] is None:
            assert case["expected"] == [], case["file"]
        else:
            assert case["expected"][0] == case["primary"], case["file"]


def test_the_corpus_is_big_enough_and_covers_every_category(raw_cases, pattern_ids):
    negatives = [case for case in raw_cases if case["primary"] is None]
    assert len(raw_cases) >= MIN_CASES
    assert len(negatives) >= MIN_NEGATIVES
    primaries = {case["primary"] for case in raw_cases}
    assert sorted(set(pattern_ids) - primaries) == []


# -- the analyzer on it ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def figures(bench):
    return bench.score(bench.load_manifest(), bench.load_library())


def misses(figures, failed) -> List[str]:
    return [f"{r.case.file}: got {list(r.categories)}" for r in figures.results if failed(r)]


def test_primary_cause_accuracy(figures):
    assert figures.primary_accuracy >= MIN_PRIMARY_ACCURACY, misses(figures, lambda r: not r.primary_ok)


def test_recall_of_expected_categories(figures):
    assert figures.recall >= MIN_RECALL, misses(figures, lambda r: len(r.found) < len(r.case.expected))


def test_no_forbidden_category_is_reported(figures):
    assert figures.forbidden_hits == 0, misses(figures, lambda r: r.forbidden_hits)


def test_every_successful_run_is_clean(figures):
    assert figures.clean_negatives == len(figures.negatives), misses(
        figures, lambda r: r.case.negative and r.categories)


def test_every_outcome_is_a_slurm_final_state(raw_cases):
    from core.slurm.model import FINAL_STATES, JobState

    finals = {state.value for state in FINAL_STATES} | {JobState.PREEMPTED.value}
    for case in raw_cases:
        if "outcome" in case:
            assert set(case["outcome"]) <= {"state", "exit_code", "signal"}, case["file"]
            assert case["outcome"]["state"] in finals, case["file"]


def test_the_log_alone_meets_the_targets_too(bench):
    """Slurm's outcome is often unknown (`jobmon analyze` on a file): it must not be what carries the figures."""
    alone = bench.score(bench.load_manifest(), bench.load_library(), outcomes=False)
    assert alone.primary_accuracy >= MIN_PRIMARY_ACCURACY and alone.recall >= MIN_RECALL
    assert alone.forbidden_hits == 0 and alone.clean_negatives == len(alone.negatives)


def test_a_caught_out_of_memory_and_the_transient_step_memory_warning_are_warnings_seen(figures):
    seen = {r.case.file: r.warnings for r in figures.negatives if r.warnings}
    assert seen.get("negative__galaxy_2359.log") == ("slurm_oom",)
    assert seen.get("negative__ray_5755.log") == ("cuda_oom",)
