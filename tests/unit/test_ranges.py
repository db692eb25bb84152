"""core.slurm.arrays: --array parsing, its errors, compression round trips and split bounds."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import JobmonError
from core.slurm.arrays import MAX_TASKS, ArraySpec, compress_ids, format_task_counts, parse_array_spec, split_spec

# --- parse_array_spec -------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, task_ids, max_running",
    [
        ("5", (5,), None),
        ("0", (0,), None),
        ("1,3,5-7", (1, 3, 5, 6, 7), None),
        ("0-15:4", (0, 4, 8, 12), None),
        ("0-14:4", (0, 4, 8, 12), None),
        ("3-3", (3,), None),
        ("1-3,10-20:5%2", (1, 2, 3, 10, 15, 20), 2),
        ("7,1,3-4,1", (1, 3, 4, 7), None),
        ("0-4,2-6", (0, 1, 2, 3, 4, 5, 6), None),
        ("010", (10,), None),
        (" 1-2 ", (1, 2), None),
    ],
)
def test_parse(spec, task_ids, max_running):
    assert parse_array_spec(spec) == ArraySpec(task_ids, max_running)


def test_parse_throttled_range():
    parsed = parse_array_spec("0-999%50")
    assert parsed.task_ids == tuple(range(1000))
    assert parsed.max_running == 50


def test_parse_accepts_exactly_the_task_limit():
    assert len(parse_array_spec(f"0-{MAX_TASKS - 1}").task_ids) == MAX_TASKS


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("%5", "no task ids"),
        ("1,,2", "empty item"),
        ("1,", "empty item"),
        ("-1", "negative"),
        ("2,-3-5", "negative"),
        ("1--5", "negative"),
        ("5-3", "ends before it starts"),
        ("1-5:0", "step must be positive"),
        ("1-5:-2", "step must be positive"),
        ("abc", "is not N, A-B or A-B:S"),
        ("1-3:", "is not N, A-B or A-B:S"),
        ("5:2", "is not N, A-B or A-B:S"),
        ("1-5:2:3", "is not N, A-B or A-B:S"),
        ("1 - 3", "is not N, A-B or A-B:S"),
        ("1;2", "is not N, A-B or A-B:S"),
        ("\u0663", "is not N, A-B or A-B:S"),  # Arabic-Indic 3: int() would take it, sbatch would not
        ("1-3%", "throttle"),
        ("1-3%x", "throttle"),
        ("1-3%2%3", "throttle"),
        ("1-3%0", "throttle '%0' must be at least 1"),
        ("1" * 40, "number too large"),
        (f"0-{MAX_TASKS}", f"item '0-{MAX_TASKS}' names more than 1,000,000 tasks"),  # counted, not expanded
        ("0-99999999999", "names more than 1,000,000 tasks"),
        (f"0-{MAX_TASKS - 1}:2,1-{MAX_TASKS - 1}:2,{MAX_TASKS}", "it names more than 1,000,000 tasks"),
    ],
)
def test_parse_errors_name_the_spec_and_the_problem(spec, problem):
    with pytest.raises(JobmonError) as caught:
        parse_array_spec(spec)
    message = str(caught.value)
    assert problem in message
    assert repr(spec) in message
    assert "\n" not in message


def test_parse_error_shortens_a_huge_spec():
    spec = ",".join(str(i) for i in range(10_000)) + ",x"
    message = str(pytest.raises(JobmonError, parse_array_spec, spec).value)
    assert len(message) < 200
    assert "'x'" in message


# --- compress_ids -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids, spec",
    [
        ({5}, "5"),
        ({1, 2}, "1,2"),
        ({9, 10}, "9,10"),
        ({1, 2, 3}, "1-3"),
        ({3, 17, 42, 43, 44, 45}, "3,17,42-45"),
        (range(8, 4999, 10), "8-4998:10"),
        ({0, 10, 20}, "0,10,20"),  # a tie with 0-20:10: the comma form wins
        ({100, 110, 120}, "100-120:10"),
        ({0, 1, 2, 3, 10, 20, 30, 40}, "0-3,10-40:10"),
        ({7, 8, 9, 10, 11, 15, 16, 17}, "7-11,15-17"),
        ([45, 44, 43, 42, 17, 3, 3], "3,17,42-45"),
        (set(range(0, 100, 2)) | {51}, "0-50:2,51,52-98:2"),
    ],
)
def test_compress_examples(ids, spec):
    assert compress_ids(ids) == spec


def test_compress_refuses_nothing_and_negatives():
    with pytest.raises(ValueError):
        compress_ids([])
    with pytest.raises(ValueError):
        compress_ids([3, -1])


def naive(ids) -> str:
    return ",".join(str(i) for i in sorted(set(ids)))


def shortest_ascending_spec_length(ids) -> int:
    """Quadratic reference: try every ascending segment that is a single id or a progression."""
    xs = sorted(set(ids))
    best = [0] + [None] * len(xs)
    for end in range(1, len(xs) + 1):
        candidates = []
        for start in range(end):
            segment = xs[start:end]
            steps = {b - a for a, b in zip(segment, segment[1:])}
            if len(steps) > 1:
                continue
            if len(segment) == 1:
                item = str(segment[0])
            else:
                step = steps.pop()
                item = f"{segment[0]}-{segment[-1]}" + (f":{step}" if step > 1 else "")
            candidates.append(best[start] + len(item) + (1 if start else 0))
        best[end] = min(candidates)
    return best[-1]


ID_SETS = st.sets(st.integers(0, 100_000), min_size=1, max_size=5000)


@st.composite
def patterned_ids(draw, max_id=100_000):
    """Unions of runs and strides plus a few stray ids: the shapes failed tasks really take."""
    ids = set(draw(st.lists(st.integers(0, max_id), max_size=20)))
    for _ in range(draw(st.integers(0, 8))):
        start = draw(st.integers(0, max_id))
        step = draw(st.sampled_from([1, 1, 2, 3, 10, 97]))
        count = draw(st.integers(1, 300))
        ids.update(range(start, min(start + step * count, max_id + 1), step))
    return ids or {draw(st.integers(0, max_id))}


@settings(max_examples=60, deadline=None)
@given(st.one_of(ID_SETS, patterned_ids()))
def test_compress_round_trips_and_beats_the_comma_list(ids):
    spec = compress_ids(ids)
    assert parse_array_spec(spec).task_ids == tuple(sorted(ids))
    assert len(spec) <= len(naive(ids))
    assert compress_ids(list(reversed(sorted(ids)))) == spec


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.sets(st.integers(0, 60), min_size=1, max_size=25), patterned_ids(max_id=200)))
def test_compress_is_as_short_as_any_ascending_spec(ids):
    if len(ids) > 60:
        ids = set(sorted(ids)[:60])
    assert len(compress_ids(ids)) == shortest_ascending_spec_length(ids)


def test_compress_handles_100k_ids():
    rng = random.Random(7)
    ids = set(rng.sample(range(1_000_000), 100_000)) | set(range(2_000_000, 2_300_000, 3))
    spec = compress_ids(ids)
    assert parse_array_spec(spec).task_ids == tuple(sorted(ids))
    assert "2000000-2299997:3" in spec


# --- split_spec -------------------------------------------------------------------------


def ids_of(spec: str):
    return parse_array_spec(spec).task_ids


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(ID_SETS, patterned_ids()),
    st.integers(12, 400),
    st.one_of(st.none(), st.integers(1, 999)),
)
def test_split_chunks_fit_cover_in_order_and_are_full(ids, max_length, throttle):
    specs = split_spec(ids, max_length, throttle)
    suffix = "" if throttle is None else f"%{throttle}"
    chunks = [ids_of(spec) for spec in specs]
    assert all(len(spec) <= max_length for spec in specs)
    assert all(spec.endswith(suffix) and parse_array_spec(spec).max_running == throttle for spec in specs)
    assert [i for chunk in chunks for i in chunk] == sorted(ids)
    for chunk, following in zip(chunks, chunks[1:]):
        assert len(compress_ids(chunk + following[:1]) + suffix) > max_length, "a chunk stopped early"


def test_split_keeps_a_spec_that_fits_whole():
    assert split_spec(range(1000), 10_000, 50) == ["0-999%50"]


def test_split_cuts_where_the_next_id_would_not_fit():
    assert split_spec([1, 5, 9, 30, 31, 33, 40], 8) == ["1,5,9,30", "31,33,40"]
    assert split_spec([100, 200, 300, 400, 1000, 1001, 1002], 14) == ["100-400:100", "1000-1002"]


def test_split_of_nothing_is_nothing():
    assert split_spec([], 100) == []


def test_split_refuses_a_limit_that_no_id_fits_and_a_bad_throttle():
    with pytest.raises(ValueError, match="longer than 4"):
        split_spec([12345], 4)
    with pytest.raises(ValueError, match="longer than 6"):
        split_spec([12345], 6, throttle=10)
    with pytest.raises(ValueError, match="throttle"):
        split_spec([1], 100, throttle=0)


def test_split_handles_100k_ids():
    rng = random.Random(11)
    ids = rng.sample(range(1_000_000), 100_000)
    specs = split_spec(ids, 10_000, throttle=20)
    assert len(specs) > 1
    assert all(len(spec) <= 10_000 for spec in specs)
    assert [i for spec in specs for i in ids_of(spec)] == sorted(ids)


# --- format_task_counts -----------------------------------------------------------------


@pytest.mark.parametrize(
    "counts, text",
    [
        ({"COMPLETED": 995, "FAILED": 3, "OUT_OF_MEMORY": 2}, "995 COMPLETED, 3 FAILED, 2 OUT_OF_MEMORY"),
        ({"OUT_OF_MEMORY": 2, "FAILED": 3, "COMPLETED": 995}, "995 COMPLETED, 3 FAILED, 2 OUT_OF_MEMORY"),
        ({"TIMEOUT": 4, "FAILED": 4, "CANCELLED": 9}, "9 CANCELLED, 4 FAILED, 4 TIMEOUT"),
        ({"COMPLETED": 10, "FAILED": 0}, "10 COMPLETED"),
        ({}, "no tasks"),
    ],
)
def test_format_task_counts(counts, text):
    assert format_task_counts(counts) == text


def test_format_task_counts_refuses_negative_counts():
    with pytest.raises(ValueError, match="FAILED"):
        format_task_counts({"COMPLETED": 1, "FAILED": -1})
