"""Slurm `--array` specs: read what the user wrote, and write task-id sets back as short specs.

Summaries ("failed: 3,17,42-45") and resubmitting failed tasks both need this, and neither should
have to ask Slurm. sbatch's syntax: comma-separated items `N`, `A-B` or `A-B:S`, then an optional
`%N` that caps how many tasks run at once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from core.errors import JobmonError

MAX_TASKS = 1_000_000
"""A spec naming more tasks is refused: far above any MaxArraySize, and expanding it costs memory."""

_ITEM = re.compile(r"(-?[0-9]+)(?:-(-?[0-9]+)(?::(-?[0-9]+))?)?")
_DIGITS = re.compile(r"[0-9]+")
_MAX_DIGITS = 18  # keeps int() far from Python's digit limit; no real task id comes close


@dataclass(frozen=True)
class ArraySpec:
    """The tasks a spec names, and its `%N` throttle (None when it has none)."""

    task_ids: Tuple[int, ...]  # sorted, unique
    max_running: Optional[int]


def parse_array_spec(spec: str) -> ArraySpec:
    """Expand an sbatch `--array` value; JobmonError names the spec and what is wrong with it.

    The task count is checked per item before that item is expanded, and again after, so a typo
    like `0-9999999999` costs nothing.
    """
    text = spec.strip()
    if not text:
        raise _spec_error(spec, "it is empty")
    body, percent, throttle_text = text.partition("%")
    max_running = None
    if percent:
        if not _DIGITS.fullmatch(throttle_text) or len(throttle_text) > _MAX_DIGITS:
            raise _spec_error(spec, f"throttle '%{throttle_text}' is not a whole number")
        max_running = int(throttle_text)
        if max_running < 1:
            raise _spec_error(spec, f"throttle '%{throttle_text}' must be at least 1")
    if not body:
        raise _spec_error(spec, "no task ids before '%'")
    ids: Set[int] = set()
    for item in body.split(","):
        first, last, step = _parse_item(spec, item)
        if (last - first) // step + 1 > MAX_TASKS:
            raise _spec_error(spec, f"item {item!r} names more than {MAX_TASKS:,} tasks")
        ids.update(range(first, last + 1, step))
        if len(ids) > MAX_TASKS:
            raise _spec_error(spec, f"it names more than {MAX_TASKS:,} tasks")
    return ArraySpec(tuple(sorted(ids)), max_running)


def _parse_item(spec: str, item: str) -> Tuple[int, int, int]:
    """One comma-separated item as (first, last, step)."""
    if not item:
        raise _spec_error(spec, "empty item (a stray comma?)")
    match = _ITEM.fullmatch(item)
    if not match:
        raise _spec_error(spec, f"item {item!r} is not N, A-B or A-B:S")
    first_text, last_text, step_text = match.groups()
    if any(len(group.lstrip("-")) > _MAX_DIGITS for group in match.groups() if group):
        raise _spec_error(spec, f"item {item!r}: number too large")
    first = int(first_text)
    last = first if last_text is None else int(last_text)
    step = 1 if step_text is None else int(step_text)
    if first < 0 or last < 0:
        raise _spec_error(spec, f"item {item!r}: task ids cannot be negative")
    if step <= 0:
        raise _spec_error(spec, f"item {item!r}: step must be positive")
    if last < first:
        raise _spec_error(spec, f"item {item!r}: range ends before it starts")
    return first, last, step


def _spec_error(spec: str, problem: str) -> JobmonError:
    shown = spec if len(spec) <= 80 else spec[:77] + "..."
    return JobmonError(f"bad --array spec {shown!r}: {problem}")


def compress_ids(ids: Iterable[int]) -> str:
    """The shortest spec (among those listing items in ascending order) for a non-empty id set.

    Items are single ids, runs `A-B` and strides `A-B:S` of 3 or more ids; a tie goes to the
    comma form, so two ids are always `a,b`. Never longer than the plain comma list, and
    `parse_array_spec(compress_ids(s)).task_ids == tuple(sorted(set(s)))`.
    """
    xs = _sorted_ids(ids)
    if not xs:
        raise ValueError("no task ids to compress")
    return _render(xs, 0, [start for _, start in _plan(xs, 0)])


def split_spec(ids: Iterable[int], max_length: int, throttle: Optional[int] = None) -> List[str]:
    """Specs for resubmitting `ids`, each (with its `%throttle`) at most `max_length` characters.

    Slurm limits an array twice: every id must be below MaxArraySize (default 1001; the caller
    checks that), and the command line has a length limit, which is why the caller picks
    `max_length` (10000 is a safe choice). Ids are taken in ascending order and cut into
    consecutive chunks, each as long as fits; each id lands in exactly one chunk. The throttle
    applies per submitted array, not across chunks.
    """
    if throttle is not None and throttle < 1:
        raise ValueError(f"throttle must be at least 1, not {throttle}")
    suffix = "" if throttle is None else f"%{throttle}"
    xs = _sorted_ids(ids)
    specs: List[str] = []
    base = 0
    while base < len(xs):
        starts: List[int] = []
        for length, start in _plan(xs, base):  # lengths never decrease, so stop at the first too long
            if length + len(suffix) > max_length:
                break
            starts.append(start)
        if not starts:
            raise ValueError(f"task id spec '{xs[base]}{suffix}' is longer than {max_length} characters")
        specs.append(_render(xs, base, starts) + suffix)
        base += len(starts)
    return specs


def _sorted_ids(ids: Iterable[int]) -> List[int]:
    xs = sorted(set(ids))
    if xs and xs[0] < 0:
        raise ValueError(f"task ids cannot be negative: {xs[0]}")
    return xs


def _plan(xs: Sequence[int], base: int) -> Iterator[Tuple[int, int]]:
    """For k = 1, 2, ...: the shortest spec length of xs[base:base+k], and where its last item starts.

    Dynamic programming over ascending segments, in O(1) per id: a stride item ending at id r has
    the difference of its last two ids, so its possible starts are the ids of the longest
    progression ending at r (minus the last two), and the best of them is kept as a running minimum.
    Starts are relative to `base`. A generator, so split_spec can stop as soon as a chunk is full.
    """
    best = [-1]  # best[k]: spec length of the first k ids; -1 because the first item has no comma
    widths: List[int] = []
    diff = 0  # difference of the progression that ends at the newest id
    run_best: Optional[Tuple[int, int]] = None  # min of best[j] + widths[j] over stride starts j
    for r in range(len(xs) - base):
        width = len(str(xs[base + r]))
        widths.append(width)
        length, start = best[r] + 1 + width, r
        if r >= 1:
            step = xs[base + r] - xs[base + r - 1]
            if step != diff:
                diff, run_best = step, None
            elif run_best is None or best[r - 2] + widths[r - 2] < run_best[0]:
                run_best = (best[r - 2] + widths[r - 2], r - 2)
            if run_best is not None:
                stride = run_best[0] + 2 + width + (1 + len(str(step)) if step > 1 else 0)
                if stride < length:
                    length, start = stride, run_best[1]
        best.append(length)
        yield length, start


def _render(xs: Sequence[int], base: int, starts: Sequence[int]) -> str:
    """Walk _plan's item starts back from the end of xs[base:base+len(starts)]."""
    items: List[str] = []
    end = len(starts)
    while end > 0:
        start = starts[end - 1]
        first, last = xs[base + start], xs[base + end - 1]
        if end - start == 1:
            items.append(str(first))
        else:
            step = xs[base + start + 1] - first
            items.append(f"{first}-{last}" if step == 1 else f"{first}-{last}:{step}")
        end = start
    return ",".join(reversed(items))


def format_task_counts(counts: Mapping[str, int]) -> str:
    """'995 COMPLETED, 3 FAILED, 2 OUT_OF_MEMORY': the biggest group first, zero counts left out."""
    negative = [state for state, count in counts.items() if count < 0]
    if negative:
        raise ValueError(f"negative task count for {negative[0]}")
    ordered = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    return ", ".join(f"{count} {state}" for state, count in ordered if count > 0) or "no tasks"
