"""ETA from jobmon's own samples, the stall budget and time-limit thresholds: pure rules."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.progress.eta import estimate, format_span, rates
from core.progress.health import Activity, StallRule, Threshold, stall_budget, stalled_for
from core.progress.reading import Sample


def steady(start: float, every: float, step: float, count: int, first_gap: float = 0.0):
    """Samples of a run moving `step` per `every` seconds after a warm-up of `first_gap`."""
    samples, at, fraction = [], start, 0.0
    for n in range(count):
        samples.append(Sample(at, fraction))
        at += first_gap if n == 0 and first_gap else every
        fraction = round(fraction + step, 10)
    return samples


def test_a_steady_run_gets_a_confident_estimate_that_brackets_the_truth():
    samples = steady(0.0, 10.0, 0.05, 6)  # 5 % per 10 s: 25 % at t=50, the end at t=200
    found = estimate(samples)
    assert found is not None and found.confident
    assert found.low_at <= 200.0 <= found.high_at
    assert abs(found.end_at - 200.0) < 1.0


def test_the_warm_up_interval_is_left_out():
    samples = steady(0.0, 10.0, 0.05, 6, first_gap=300.0)  # compiling for 5 minutes before the first step
    assert rates(samples) == pytest.approx([0.005] * 4)  # not the 300 s of the first step
    found = estimate(samples)
    assert found is not None and abs(found.end_at - (samples[-1].at + 0.75 / 0.005)) < 1.0


def test_one_slow_interval_does_not_move_the_point_estimate_but_widens_the_range():
    samples = steady(0.0, 10.0, 0.05, 8)
    samples[5:] = [Sample(s.at + 40.0, s.fraction) for s in samples[5:]]  # one step took 50 s
    found = estimate(samples)
    assert found is not None and not found.confident
    assert abs(found.end_at - (samples[-1].at + (1 - samples[-1].fraction) / 0.005)) < 1.0
    assert found.high_at - found.end_at > 100


def test_no_estimate_before_progress_moved_twice_unless_the_framework_said():
    assert estimate([]) is None
    assert estimate([Sample(5.0, 0.1)]) is None
    own = estimate([Sample(5.0, 0.1)], remaining=(6.0, 100.0))
    assert own is not None and own.end_at == 106.0 and not own.confident
    assert own.low_at < 106.0 < own.high_at


def test_the_frameworks_remaining_time_is_the_point_estimate_when_given():
    found = estimate(steady(0.0, 10.0, 0.05, 6), remaining=(50.0, 170.0))
    assert found is not None and found.end_at == 220.0 and found.low_at <= 200.0 <= found.high_at


@given(st.lists(st.tuples(st.floats(0, 1e6), st.floats(0, 1)), max_size=40))
def test_estimates_are_ordered_whatever_the_samples(points):
    samples = [Sample(at, fraction) for at, fraction in sorted(points)]
    found = estimate(samples)
    if found is not None:
        assert found.low_at <= found.end_at <= found.high_at


def test_spans_read_like_a_person_says_them():
    assert [format_span(s) for s in (0, 44.6, 60, 719, 3600, 4320, 86400 * 3 + 7200, -5)] == \
        ["0s", "45s", "1m", "11m", "1h", "1h12m", "3d2h", "0s"]


RULE = StallRule(factor=5.0, floor=60.0, cap=3600.0, quiet=900.0)


def activity(samples, *, started=0.0, advanced=0.0, paused=0.0, grown=0.0) -> Activity:
    return Activity(samples, started, advanced or (samples[-1].at if samples else 0.0), paused, grown)


def test_the_stall_budget_is_learned_from_the_slowest_recent_interval_within_bounds():
    assert stall_budget(activity(steady(0.0, 30.0, 0.01, 5)), RULE) == 150.0
    assert stall_budget(activity(steady(0.0, 2.0, 0.01, 5)), RULE) == 60.0  # the floor
    assert stall_budget(activity(steady(0.0, 1000.0, 0.01, 5)), RULE) == 3600.0  # the cap


def test_before_the_second_sample_and_after_a_checkpoint_line_the_budget_is_the_cap():
    assert stall_budget(activity([Sample(10.0, 0.01)]), RULE) == 3600.0
    samples = steady(0.0, 30.0, 0.01, 5)
    assert stall_budget(activity(samples, paused=200.0), RULE) == 3600.0


def test_stalled_only_past_the_budget_counted_from_the_last_advance_or_pause():
    samples = steady(0.0, 30.0, 0.01, 5)  # last advance at 120, budget 150
    moving = activity(samples)
    assert stalled_for(moving, RULE, now=270.0) is None
    assert stalled_for(moving, RULE, now=271.0) == 151.0
    assert stalled_for(activity(samples, paused=200.0), RULE, now=1000.0) is None


def test_without_parseable_progress_a_job_is_stalled_when_no_log_grew_for_the_quiet_limit():
    assert stalled_for(activity([], started=100.0, grown=500.0), RULE, now=1400.0) is None
    assert stalled_for(activity([], started=100.0, grown=500.0), RULE, now=1401.0) == 901.0
    assert stalled_for(activity([], started=100.0), RULE, now=1001.0) == 901.0


def test_time_limit_thresholds_by_share_used_or_time_left():
    share, left = Threshold(fraction=0.8), Threshold(seconds_left=600.0)
    assert not share.crossed(used=2879.0, limit=3600.0) and share.crossed(used=2880.0, limit=3600.0)
    assert not left.crossed(used=2999.0, limit=3600.0) and left.crossed(used=3000.0, limit=3600.0)
    assert (share.label, left.label) == ("80%", "10m left")


def test_once_progress_reached_its_end_only_silent_logs_are_a_stall():
    samples = steady(0.0, 30.0, 0.25, 5)  # 100 % at 120 s
    done = Activity(samples, 0.0, 120.0, 0.0, 130.0, complete=True)
    assert stalled_for(done, RULE, now=1000.0) is None  # saving, evaluating: the logs still grew at 130 s
    assert stalled_for(done, RULE, now=1031.0) == 901.0


def test_polls_that_fall_between_steps_do_not_make_a_steady_run_look_erratic():
    # a step every 4 s, a poll every 6 s: the polls see 1 or 2 new steps by turns
    samples = [Sample(6.0 * n, (6 * n // 4) / 1000) for n in range(12)]
    single = rates(samples)
    assert max(single) / min(single) == pytest.approx(2.0)  # each interval alone swings
    found = estimate(samples)
    assert found is not None and found.confident
