#!/usr/bin/env python3
"""Score the error analyzer on the corpus of real job logs in tests/corpus, printed as one table.

    python3 bench/corpus.py             # the figures
    python3 bench/corpus.py --misses    # and every case that missed, with what the analyzer said

Runs on the system python3 (standard library only), from the checkout. Each case of
tests/corpus/manifest.json is a real log tail cited to its public source, with the categories the
analyzer must report (`expected`), those it must not (`forbidden`: the plausible false positives)
and the root cause it must put first (`primary`; null for a negative: a run that succeeded and
must get no finding at all). Figures:

- primary accuracy: cases whose first category is the expected primary (a negative counts as
  right when nothing is reported);
- recall: expected categories reported, over all expected categories;
- forbidden hits: forbidden categories reported (the target is none);
- clean negatives: negatives with no finding;
- throughput: log lines analyzed per second over the whole corpus (best of several rounds).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.analysis.analyzer import Pattern, analyze, parse_patterns  # noqa: E402
from core.analysis.jobend import JobEnd  # noqa: E402

CORPUS = os.path.join(ROOT, "tests", "corpus")
MANIFEST = os.path.join(CORPUS, "manifest.json")
PATTERNS = os.path.join(ROOT, "patterns", "error_patterns.json")
ROUNDS = 5


@dataclass(frozen=True)
class Case:
    file: str
    source: str
    primary: Optional[str]
    expected: Tuple[str, ...]
    forbidden: Tuple[str, ...]
    outcome: Optional[JobEnd] = None  # how Slurm ended the job, where the source says so

    @property
    def negative(self) -> bool:
        return self.primary is None


@dataclass(frozen=True)
class Result:
    case: Case
    categories: Tuple[str, ...]
    warnings: Tuple[str, ...] = ()

    @property
    def primary_ok(self) -> bool:
        if self.case.negative:
            return not self.categories
        return bool(self.categories) and self.categories[0] == self.case.primary

    @property
    def found(self) -> Tuple[str, ...]:
        return tuple(c for c in self.case.expected if c in self.categories)

    @property
    def forbidden_hits(self) -> Tuple[str, ...]:
        return tuple(c for c in self.case.forbidden if c in self.categories)


@dataclass(frozen=True)
class Score:
    results: Tuple[Result, ...]
    lines: int
    seconds: float

    @property
    def positives(self) -> Tuple[Result, ...]:
        return tuple(r for r in self.results if not r.case.negative)

    @property
    def negatives(self) -> Tuple[Result, ...]:
        return tuple(r for r in self.results if r.case.negative)

    @property
    def primary_accuracy(self) -> float:
        return sum(r.primary_ok for r in self.results) / len(self.results)

    @property
    def recall(self) -> float:
        expected = sum(len(r.case.expected) for r in self.results)
        return sum(len(r.found) for r in self.results) / expected if expected else 1.0

    @property
    def forbidden_hits(self) -> int:
        return sum(len(r.forbidden_hits) for r in self.results)

    @property
    def clean_negatives(self) -> int:
        return sum(not r.categories for r in self.negatives)

    @property
    def negatives_with_warnings(self) -> int:
        return sum(bool(r.warnings) for r in self.negatives)

    @property
    def with_outcome(self) -> int:
        return sum(r.case.outcome is not None for r in self.results)

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else float("inf")


def load_manifest(path: str = MANIFEST) -> Tuple[Case, ...]:
    with open(path, encoding="utf-8") as handle:
        document: Dict[str, Any] = json.load(handle)
    return tuple(
        Case(file=c["file"], source=c["source"], primary=c.get("primary"),
             expected=tuple(c.get("expected", ())), forbidden=tuple(c.get("forbidden", ())),
             outcome=_outcome(c.get("outcome")))
        for c in document["cases"]
    )


def _outcome(data: Optional[Dict[str, Any]]) -> Optional[JobEnd]:
    if data is None:
        return None
    return JobEnd(state=data["state"], exit_code=data.get("exit_code", 0), signal=data.get("signal", 0))


def load_library(path: str = PATTERNS) -> Tuple[Pattern, ...]:
    with open(path, encoding="utf-8") as handle:
        return parse_patterns(handle.read(), path)


def read_lines(case: Case) -> List[str]:
    """The log as jobmon's reader splits it (splitlines: progress bars' \\r also split)."""
    with open(os.path.join(CORPUS, "logs", case.file), encoding="utf-8", errors="replace") as handle:
        return handle.read().splitlines()


def score(cases: Sequence[Case], library: Sequence[Pattern], rounds: int = 1, outcomes: bool = True) -> Score:
    """The analyzer on every case, given the case's outcome where the manifest has one (`outcomes`)."""
    logs = [read_lines(case) for case in cases]
    results: Tuple[Result, ...] = ()
    best = float("inf")
    for _ in range(max(1, rounds)):
        started = time.perf_counter()
        analyses = [analyze(lines, library, outcome=case.outcome if outcomes else None)
                    for case, lines in zip(cases, logs)]
        best = min(best, time.perf_counter() - started)
        results = tuple(Result(case, a.categories, tuple(dict.fromkeys(f.category for f in a.warnings)))
                        for case, a in zip(cases, analyses))
    return Score(results, sum(len(lines) for lines in logs), best)


def print_report(figures: Score, misses: bool) -> None:
    from sandbox import print_table  # bench/sandbox.py: the table printer both benchmarks use

    positives, negatives = figures.positives, figures.negatives
    rows = [
        (1, "cases", [f"{len(figures.results)}", f"{len(positives)} failures, {len(negatives)} negatives"], ""),
        (2, "cases with Slurm's outcome", [f"{figures.with_outcome}", ""],
         "the analyzer is given the final state, exit code and signal the source reports"),
        (3, "primary accuracy", [f"{figures.primary_accuracy:.1%}", ">= 95 %"],
         "the first category is the expected root cause (a negative: no category at all)"),
        (4, "recall of expected categories", [f"{figures.recall:.1%}", ">= 95 %"], ""),
        (5, "forbidden categories reported", [f"{figures.forbidden_hits}", "0"], ""),
        (6, "clean negatives", [f"{figures.clean_negatives}/{len(negatives)}", "all"], ""),
        (7, "negatives with warnings seen", [f"{figures.negatives_with_warnings}/{len(negatives)}", ""],
         "scary lines of a run that went on (a caught out-of-memory, a NaN loss in a completed run)"),
        (8, "throughput", [f"{figures.lines_per_second:,.0f} lines/s", ""],
         f"{figures.lines} lines, best of {ROUNDS} rounds, built-in library"),
    ]
    print_table("jobmon analyzer on the corpus of real logs (tests/corpus)", ["measure", "value", "target"], rows)
    if misses:
        for result in figures.results:
            problems = []
            if not result.primary_ok:
                problems.append(f"primary {result.categories[:1] or '-'} != {result.case.primary}")
            missing = [c for c in result.case.expected if c not in result.categories]
            if missing:
                problems.append(f"missing {missing}")
            if result.forbidden_hits:
                problems.append(f"forbidden {list(result.forbidden_hits)}")
            if problems:
                print(f"{result.case.file}: {'; '.join(problems)}; got {list(result.categories)}")
        for result in figures.negatives:
            if result.warnings:
                print(f"{result.case.file}: warnings seen {list(result.warnings)}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--misses", action="store_true", help="list every case that missed a target")
    args = parser.parse_args(argv)
    figures = score(load_manifest(), load_library(), rounds=ROUNDS)
    print_report(figures, args.misses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
