"""core.chain.policy (the resubmission policy) and submitter's split_jobmon_flags / first_level.

All pure: literal ladders, literal argv lists, literal end states. Where a test cites sbatch's
behaviour, that is what the real Slurm here did.
"""
from __future__ import annotations

import json

import pytest

from core.chain.policy import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MEM_CAP,
    DEFAULT_STATE_ACTIONS,
    DEFAULT_TIME_CAP,
    Decision,
    Policy,
    action_for,
    apply_level,
    canonical_option,
    decide,
    double_size,
    format_minutes,
    load_ladder_text,
    memory_option,
    parse_ladder,
    parse_level,
    parse_policy,
    plan_array_round,
)
from core.chain.policy import parse_duration_any as duration
from core.chain.submitter import SubmitOptions, first_level, resubmit, split_jobmon_flags
from core.errors import ConfigError, JobmonError
from core.slurm.model import JobState, Submission
from core.state.model import Action, Attempt, Chain, JobRecord, Level, TaskOutcome, TaskTrack

ESCALATE_MEM, ESCALATE_TIME, RELAUNCH, STOP = Action.ESCALATE_MEM, Action.ESCALATE_TIME, Action.RELAUNCH, Action.STOP

CONFIG = "/home/alice/jobmon/config.json"
LADDER_FILE = "/home/alice/ladder.json"

L0 = Level(mem="1G", time="1:00:00")
L1 = Level(mem="4G", time="2:00:00", partition="big", gres="gpu:1", cpus=8)
L2 = Level(mem="16G", time="1-00:00:00", partition="huge")
LADDER = (L0, L1, L2)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


# --- parse_level / parse_ladder / load_ladder_text: valid ladders -------------------------------

@pytest.mark.parametrize("text, expected", [
    pytest.param('[{"mem": "1G", "time": "1:00:00"}, {"mem": "4G", "time": "2:00:00", "partition": "big",'
                 ' "gres": "gpu:1", "cpus": 8}, {"mem": "16G", "time": "1-00:00:00", "partition": "huge"}]',
                 LADDER, id="list-form-all-keys"),
    pytest.param('{"ladder": [{"mem": "1G", "time": "1:00:00"}, {"mem": "4G", "time": "2:00:00",'
                 ' "partition": "big", "gres": "gpu:1", "cpus": 8}, {"mem": "16G", "time": "1-00:00:00",'
                 ' "partition": "huge"}]}', LADDER, id="object-form"),
    pytest.param('[{"mem": "500m"}]', (Level(mem="500M"),), id="mem-upper-cased"),
    pytest.param('[{"mem": 4096}]', (Level(mem="4096"),), id="mem-number-is-MiB"),
    pytest.param('[{"mem": " 2G ", "partition": " gpu "}]', (Level(mem="2G", partition="gpu"),), id="trimmed"),
    pytest.param('[{"time": "60"}, {"time": "1-12"}, {"time": "1-12:30"}, {"time": "30:00"}]',
                 (Level(time="60"), Level(time="1-12"), Level(time="1-12:30"), Level(time="30:00")),
                 id="every-time-syntax"),
    pytest.param('[{"cpus": 0, "gres": "gpu:a100:2"}]', (Level(gres="gpu:a100:2"),), id="cpus-zero-means-keep"),
])
def test_load_ladder_text_valid(text, expected):
    assert load_ladder_text(text, LADDER_FILE) == expected


def level_data(level: Level) -> dict:
    """A level as a ladder file writes it: only the resources it sets."""
    return {key: value for key, value in vars(level).items() if value}


def test_parse_ladder_takes_python_data_and_object_form_alike():
    data = [level_data(level) for level in LADDER]
    assert parse_ladder(data, "x") == LADDER
    assert parse_ladder({"ladder": data}, "x") == LADDER


@pytest.mark.parametrize("text, fragments", [
    pytest.param('[{"mem": "1G"}', ["ladder file " + LADDER_FILE, "not valid JSON"], id="bad-json-names-file"),
    pytest.param("", ["ladder file " + LADDER_FILE, "not valid JSON"], id="empty-file"),
    pytest.param("[]", ["ladder file " + LADDER_FILE, "non-empty list"], id="empty-list"),
    pytest.param('{"ladder": []}', ["ladder file " + LADDER_FILE, "non-empty list"], id="empty-object-ladder"),
    pytest.param('{"levels": [{"mem": "1G"}]}', ["non-empty list"], id="object-without-ladder-key"),
    pytest.param('"4G"', ["non-empty list"], id="scalar"),
    pytest.param('["4G"]', ["level 0", "must be an object"], id="level-not-object"),
    pytest.param("[{}]", ["level 0", "must be an object"], id="empty-level"),
    pytest.param('[{"mem": "1G"}, {"memory": "2G"}]', ["level 1", "unknown key", "memory"], id="unknown-key"),
    pytest.param('[{"mem": "4 gigs"}]', ["level 0", "mem '4 gigs'"], id="mem-4-gigs"),
    pytest.param('[{"mem": "-4G"}]', ["level 0", "mem '-4G'"], id="mem-negative"),
    pytest.param('[{"mem": "4X"}]', ["level 0", "mem '4X'"], id="mem-bad-unit"),
    pytest.param('[{"mem": null}]', ["level 0", "mem"], id="mem-null"),
    pytest.param('[{"mem": "1G"}, {"time": "2h"}]', ["level 1", "time '2h'"], id="time-2h"),
    pytest.param('[{"time": "0"}]', ["level 0", "time '0'"], id="time-zero"),
    pytest.param('[{"time": "1:2:3:4"}]', ["level 0", "time '1:2:3:4'"], id="time-four-fields"),
    pytest.param('[{"time": "UNLIMITED"}]', ["level 0", "time 'UNLIMITED'"], id="time-word"),
    pytest.param('[{"cpus": -1}]', ["level 0", "cpus", "-1"], id="cpus-negative"),
    pytest.param('[{"cpus": true}]', ["level 0", "cpus", "True"], id="cpus-bool"),
    pytest.param('[{"cpus": "4"}]', ["level 0", "cpus", "'4'"], id="cpus-string"),
    pytest.param('[{"cpus": 2.5}]', ["level 0", "cpus", "2.5"], id="cpus-float"),
    # the real sbatch here: --mem=4.5G -> "sbatch: error: Invalid --mem specification"
    pytest.param('[{"mem": "4.5G"}]', ["level 0", "mem '4.5G'"], id="mem-fraction-sbatch-rejects"),
    pytest.param('[{"partition": null}]', ["level 0", "partition", "None"], id="partition-null-not---partition=None"),
    pytest.param('[{"gres": ["gpu:1"]}]', ["level 0", "gres", "['gpu:1']"], id="gres-list"),
    pytest.param('[{"partition": 5}]', ["level 0", "partition", "5"], id="partition-number"),
])
def test_load_ladder_text_errors(text, fragments):
    try:
        load_ladder_text(text, LADDER_FILE)
    except ConfigError as exc:
        message = str(exc)
    else:
        raise AssertionError("no ConfigError")
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_parse_level_names_where():
    with pytest.raises(ConfigError) as exc:
        parse_level({"mem": "1G", "cpu": 4}, "chain ladder")
    assert one_line(exc).startswith("chain ladder: unknown key(s) cpu")


# --- parse_policy ------------------------------------------------------------------------------

@pytest.mark.parametrize("section", [None, {}], ids=["absent", "empty"])
def test_parse_policy_defaults(section):
    policy = parse_policy(section, CONFIG)
    assert policy == Policy()
    assert (policy.ladder, policy.max_retries, policy.exit_codes) == ((), DEFAULT_MAX_RETRIES, {})
    assert policy.states == DEFAULT_STATE_ACTIONS
    assert (policy.mem_cap, policy.time_cap) == (DEFAULT_MEM_CAP, DEFAULT_TIME_CAP)


def test_parse_policy_full_section():
    policy = parse_policy({
        "max_retries": 5, "ladder": [{"mem": "1G"}, {"mem": "2G"}],
        "states": {"failed": "relaunch", "TIMEOUT": "stop"}, "exit_codes": {"42": "relaunch", "3": "escalate_time"},
        "caps": {"mem": "64g", "time": "2-00:00:00"},
    }, CONFIG)
    assert policy.ladder == (Level(mem="1G"), Level(mem="2G"))
    assert policy.max_retries == 5
    assert policy.states == {**DEFAULT_STATE_ACTIONS, "FAILED": RELAUNCH, "TIMEOUT": STOP}
    assert policy.exit_codes == {42: RELAUNCH, 3: ESCALATE_TIME}
    assert (policy.mem_cap, policy.time_cap) == ("64G", "2-00:00:00")


@pytest.mark.parametrize("retries", [0, 50])
def test_parse_policy_max_retries_bounds_accepted(retries):
    assert parse_policy({"max_retries": retries}, CONFIG).max_retries == retries


def test_command_line_ladder_and_max_retries_win_over_config():
    section = {"ladder": [{"mem": "1G"}], "max_retries": 5}
    policy = parse_policy(section, CONFIG, ladder=LADDER, max_retries=0)
    assert (policy.ladder, policy.max_retries) == (LADDER, 0)
    assert parse_policy(section, CONFIG).max_retries == 5


@pytest.mark.parametrize("section, kwargs, fragments", [
    pytest.param(["x"], {}, ["'escalation' must be an object"], id="section-not-object"),
    pytest.param({"max_retries": -1}, {}, ["escalation.max_retries", "-1"], id="retries-negative"),
    pytest.param({"max_retries": 51}, {}, ["escalation.max_retries", "51"], id="retries-above-50"),
    pytest.param({"max_retries": "3"}, {}, ["escalation.max_retries", "'3'"], id="retries-string"),
    pytest.param({"max_retries": True}, {}, ["escalation.max_retries", "True"], id="retries-bool"),
    pytest.param({"max_retries": 2.0}, {}, ["escalation.max_retries", "2.0"], id="retries-float"),
    pytest.param({}, {"max_retries": 51}, ["max_retries", "51"], id="command-line-retries-above-50"),
    pytest.param({"states": {"TIMEOUT": "retry"}}, {}, ["escalation.states.TIMEOUT", "'retry'"], id="bad-state-action"),
    pytest.param({"states": {"FAILED": None}}, {}, ["escalation.states.FAILED", "None"], id="null-state-action"),
    pytest.param({"exit_codes": {"abc": "stop"}}, {}, ["escalation.exit_codes", "'abc'"], id="exit-code-not-number"),
    pytest.param({"exit_codes": {"-1": "stop"}}, {}, ["escalation.exit_codes", "'-1'"], id="exit-code-negative"),
    pytest.param({"exit_codes": {"\u00b2": "stop"}}, {}, ["escalation.exit_codes"], id="exit-code-superscript"),
    pytest.param({"exit_codes": {"137": "kill"}}, {}, ["escalation.exit_codes", "'kill'"], id="bad-exit-code-action"),
    pytest.param({"caps": {"mem": "lots"}}, {}, ["escalation.caps", "mem 'lots'"], id="cap-mem"),
    pytest.param({"caps": {"mem": "4 gigs"}}, {}, ["escalation.caps", "mem '4 gigs'"], id="cap-mem-4-gigs"),
    pytest.param({"caps": {"time": "2h"}}, {}, ["escalation.caps", "time '2h'"], id="cap-time"),
    pytest.param({"ladder": []}, {}, ["escalation.ladder", "non-empty list"], id="config-ladder-empty"),
    pytest.param({"ladder": [{"gpu": 1}]}, {}, ["escalation.ladder: level 0", "gpu"], id="config-ladder-unknown-key"),
    pytest.param({"caps": "64G"}, {}, ["escalation.caps must be an object"], id="caps-not-object"),
    pytest.param({"states": ["TIMEOUT"]}, {}, ["escalation.states must be an object"], id="states-not-object"),
    pytest.param({"exit_codes": [137]}, {}, ["escalation.exit_codes must be an object"], id="exit-codes-not-object"),
])
def test_parse_policy_errors(section, kwargs, fragments):
    with pytest.raises(ConfigError) as exc:
        parse_policy(section, CONFIG, **kwargs)
    message = one_line(exc)
    assert message.startswith(CONFIG), message
    for fragment in fragments:
        assert fragment in message, message


# --- parse_duration_any ------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("60", 3600), ("0", 0), (" 90 ", 5400), ("1:30", 90), ("30:00", 1800), ("2:00:00", 7200),
    ("1-12", 129600), ("1-12:30", 131400), ("1-00:00:00", 86400), ("7-00:00:00", 604800), ("2-3:04:05", 183845),
])
def test_parse_duration_any(text, seconds):
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["junk", "", "2h", "1h30m", "1-", "x-12", "-5", "1:2:3:4", "1-2:3:4:5", "1.5",
                                  "UNLIMITED", "1-x", "\u00b2", "1-\u00b2", "\u00b2-1"])
def test_parse_duration_any_junk_is_none(text):
    assert duration(text) is None


# --- action_for --------------------------------------------------------------------------------

DEFAULT = Policy()


@pytest.mark.parametrize("state, exit_code, signal, categories, action, reason_has", [
    ("OUT_OF_MEMORY", 0, 125, ["slurm_oom"], ESCALATE_MEM, "OUT_OF_MEMORY"),
    ("OUT_OF_MEMORY", 0, 0, [], ESCALATE_MEM, "OUT_OF_MEMORY"),
    ("TIMEOUT", 0, 0, [], ESCALATE_TIME, "TIMEOUT"),
    ("NODE_FAIL", 0, 0, [], RELAUNCH, "NODE_FAIL"),
    ("BOOT_FAIL", 0, 0, [], RELAUNCH, "BOOT_FAIL"),
    ("PREEMPTED", 0, 0, [], RELAUNCH, "PREEMPTED"),
    ("FAILED", 1, 0, [], STOP, "FAILED"),
    ("FAILED", 1, 0, ["missing_module"], STOP, "FAILED"),
    ("CANCELLED", 0, 15, [], STOP, "CANCELLED"),
    ("DEADLINE", 0, 0, [], STOP, "DEADLINE"),
    ("COMPLETED", 0, 0, [], STOP, "completed"),
    ("FAILED", 137, 0, ["slurm_oom"], ESCALATE_MEM, "exit 137"),
    ("FAILED", 0, 9, ["slurm_oom"], ESCALATE_MEM, "memory"),
    ("FAILED", 137, 0, [], STOP, "FAILED"),  # killed, but nothing says it was for memory
    ("FAILED", 1, 0, ["slurm_oom"], STOP, "FAILED"),  # not killed by Slurm: exit 1 is the program's own
    ("FAILED", 137, 0, ["cuda_oom", "slurm_oom"], STOP, "CUDA"),
    ("FAILED", 1, 0, ["cuda_oom"], STOP, "CUDA"),
    ("OUT_OF_MEMORY", 0, 125, ["cuda_oom", "slurm_oom"], STOP, "CUDA"),
    ("TIMEOUT", 0, 0, ["cuda_oom"], STOP, "CUDA"),
    ("OUT_OF_MEMORY", 0, 125, ["slurm_oom", "cuda_oom"], ESCALATE_MEM, "OUT_OF_MEMORY"),  # CUDA OOM not the root cause
])
def test_action_for_default_policy(state, exit_code, signal, categories, action, reason_has):
    got, reason = action_for(JobState.parse(state), exit_code, signal, categories, DEFAULT)
    assert got == action
    assert reason_has in reason


def test_action_for_covers_every_default_state():
    for state, action in DEFAULT_STATE_ACTIONS.items():
        assert action_for(JobState.parse(state), 0, 0, [], DEFAULT)[0] == action


EXIT_POLICY = parse_policy({"exit_codes": {"137": "stop", "42": "relaunch", "3": "escalate_time", "0": "relaunch"}},
                           CONFIG)


@pytest.mark.parametrize("state, exit_code, categories, action", [
    pytest.param("FAILED", 137, ["slurm_oom"], STOP, id="override-beats-slurm-oom-rule"),
    pytest.param("FAILED", 42, [], RELAUNCH, id="failed-42-relaunch"),
    pytest.param("FAILED", 3, [], ESCALATE_TIME, id="failed-3-escalate-time"),
    pytest.param("FAILED", 1, [], STOP, id="unlisted-code"),
    pytest.param("FAILED", 42, ["cuda_oom"], STOP, id="cuda-oom-beats-override"),
    pytest.param("TIMEOUT", 42, [], ESCALATE_TIME, id="override-only-for-failed-timeout"),
    pytest.param("OUT_OF_MEMORY", 3, [], ESCALATE_MEM, id="override-only-for-failed-oom"),
    pytest.param("CANCELLED", 42, [], STOP, id="override-only-for-failed-cancelled"),
    pytest.param("COMPLETED", 0, [], STOP, id="completed-0-always-stops"),
])
def test_action_for_exit_code_overrides(state, exit_code, categories, action):
    got, reason = action_for(JobState.parse(state), exit_code, 0, categories, EXIT_POLICY)
    assert got == action
    if state == "FAILED" and exit_code in (42, 3, 137) and not categories[:1] == ["cuda_oom"]:
        assert f"exit code {exit_code}" in reason


STATE_POLICY = parse_policy({"states": {"timeout": "stop", "FAILED": "relaunch", "OUT_OF_MEMORY": "escalate_time",
                                        "CANCELLED": "relaunch"}}, CONFIG)


@pytest.mark.parametrize("state, exit_code, categories, action", [
    ("TIMEOUT", 0, [], STOP),
    ("FAILED", 1, [], RELAUNCH),
    ("OUT_OF_MEMORY", 0, ["slurm_oom"], ESCALATE_TIME),
    ("CANCELLED", 0, [], RELAUNCH),
    ("NODE_FAIL", 0, [], RELAUNCH),  # defaults not overridden stay
    ("FAILED", 1, ["cuda_oom"], STOP),
    ("FAILED", 137, ["slurm_oom"], ESCALATE_MEM),  # the Slurm-OOM rule comes before the state table
])
def test_action_for_state_overrides(state, exit_code, categories, action):
    assert action_for(JobState.parse(state), exit_code, 0, categories, STATE_POLICY)[0] == action


# --- decide ------------------------------------------------------------------------------------

def run(state, current, policy=DEFAULT, *, attempt=1, level_index=0, exit_code=0, signal=0, categories=()):
    return decide(state=JobState.parse(state), exit_code=exit_code, signal=signal, categories=list(categories),
                  attempt=attempt,
                  level_index=level_index, current=current, policy=policy)


@pytest.mark.parametrize("mem, cap, doubled", [
    ("100M", "256G", "200M"),
    ("100", "256G", "200M"),  # no unit: MiB, as sbatch reads it
    ("1G", "256G", "2048M"),
    ("3072M", "256G", "6144M"),
    ("1.5G", "256G", "3072M"),  # sacct's ReqMem may carry a fraction
    ("4096K", "256G", "8M"),
    ("200G", "256G", "262144M"),  # doubling past the cap stops at the cap
    ("3G", "4G", "4096M"),
])
def test_decide_default_doubles_memory(mem, cap, doubled):
    policy = parse_policy({"caps": {"mem": cap}}, CONFIG)
    decision = run("OUT_OF_MEMORY", Level(mem=mem, time="1:00:00"), policy, level_index=2)
    assert decision == Decision(ESCALATE_MEM, 3, Level(mem=doubled, time="1:00:00"), decision.reason)
    assert decision.resubmit


@pytest.mark.parametrize("mem, cap", [("256G", "256G"), ("300G", "256G"), ("4096M", "4G"), ("0", "256G")])
def test_decide_memory_at_cap_stops(mem, cap):
    policy = parse_policy({"caps": {"mem": cap}}, CONFIG)
    current = Level(mem=mem)
    decision = run("OUT_OF_MEMORY", current, policy, level_index=1)
    assert (decision.action, decision.level_index, decision.level) == (STOP, 1, current)
    assert not decision.resubmit
    assert f"cap ({cap.upper()})" in decision.reason


@pytest.mark.parametrize("mem, doubled", [("300K", "1M"), ("1K", "1M"), ("700K", "2M"), ("1537K", "4M")])
def test_double_size_rounds_up_to_whole_mib(mem, doubled):
    """Flooring once turned 300K into "0M", and --mem=0 asks Slurm for ALL of the node's memory."""
    assert double_size(mem, "256G") == doubled


@pytest.mark.parametrize("time, cap, doubled", [
    ("00:01:00", DEFAULT_TIME_CAP, "00:02:00"),
    ("12:00:00", DEFAULT_TIME_CAP, "1-00:00:00"),
    ("60", DEFAULT_TIME_CAP, "02:00:00"),
    ("1:30", DEFAULT_TIME_CAP, "00:03:00"),  # M:S
    ("00:00:31", DEFAULT_TIME_CAP, "00:02:00"),  # 62 s rounded up to whole minutes
    ("1-12", DEFAULT_TIME_CAP, "3-00:00:00"),
    ("4-00:00:00", DEFAULT_TIME_CAP, "7-00:00:00"),  # capped
    ("20:00:00", "1-00:00:00", "1-00:00:00"),
])
def test_decide_default_doubles_time(time, cap, doubled):
    policy = parse_policy({"caps": {"time": cap}}, CONFIG)
    decision = run("TIMEOUT", Level(mem="4G", time=time), policy)
    assert decision == Decision(ESCALATE_TIME, 1, Level(mem="4G", time=doubled), decision.reason)


@pytest.mark.parametrize("time, cap", [("7-00:00:00", DEFAULT_TIME_CAP), ("8-00:00:00", DEFAULT_TIME_CAP),
                                       ("1440", "1-00:00:00")])
def test_decide_time_at_cap_stops(time, cap):
    policy = parse_policy({"caps": {"time": cap}}, CONFIG)
    decision = run("TIMEOUT", Level(time=time), policy)
    assert (decision.action, decision.level) == (STOP, Level(time=time))
    assert f"time is at the cap ({cap})" in decision.reason


LADDER_POLICY = Policy(ladder=LADDER)


@pytest.mark.parametrize("state, level_index, action, next_index, next_level", [
    pytest.param("OUT_OF_MEMORY", 0, ESCALATE_MEM, 1, L1, id="oom-0-to-1-all-resources"),
    pytest.param("TIMEOUT", 0, ESCALATE_TIME, 1, L1, id="timeout-0-to-1"),
    pytest.param("OUT_OF_MEMORY", 1, ESCALATE_MEM, 2, L2, id="oom-1-to-2"),
    pytest.param("NODE_FAIL", 1, RELAUNCH, 1, L1, id="relaunch-keeps-level"),
    pytest.param("PREEMPTED", 2, RELAUNCH, 2, L2, id="relaunch-at-top-keeps-level"),
])
def test_decide_with_ladder(state, level_index, action, next_index, next_level):
    decision = run(state, LADDER[level_index], LADDER_POLICY, attempt=level_index + 1, level_index=level_index)
    assert (decision.action, decision.level_index, decision.level) == (action, next_index, next_level)


@pytest.mark.parametrize("state", ["OUT_OF_MEMORY", "TIMEOUT"])
def test_decide_top_of_ladder_stops(state):
    decision = run(state, L2, LADDER_POLICY, attempt=3, level_index=2)
    assert (decision.action, decision.level_index, decision.level) == (STOP, 2, L2)
    assert "ladder's top level" in decision.reason


@pytest.mark.parametrize("state, current", [("OUT_OF_MEMORY", Level(mem="1G")), ("TIMEOUT", Level(time="60")),
                                            ("NODE_FAIL", Level(mem="1G"))])
@pytest.mark.parametrize("max_retries, attempt, resubmit", [
    (2, 1, True), (2, 2, True), (2, 3, False), (2, 9, False), (0, 1, False), (1, 1, True), (1, 2, False),
])
def test_decide_max_retries(state, current, max_retries, attempt, resubmit):
    decision = run(state, current, Policy(max_retries=max_retries), attempt=attempt)
    assert decision.resubmit is resubmit
    if not resubmit:
        assert (decision.action, decision.level) == (STOP, current)
        assert f"already used its {max_retries} retries" in decision.reason


def test_decide_stop_reason_is_the_ending_not_the_retry_count():
    decision = run("COMPLETED", Level(mem="1G"), Policy(max_retries=1), attempt=5)
    assert (decision.action, decision.reason) == (STOP, "completed")
    cancelled = run("CANCELLED", Level(mem="1G"), LADDER_POLICY, signal=15)
    assert cancelled.action == STOP and "CANCELLED" in cancelled.reason


def test_decide_cuda_oom_is_never_escalated():
    decision = run("OUT_OF_MEMORY", L0, LADDER_POLICY, categories=["cuda_oom", "slurm_oom"])
    assert (decision.action, decision.level_index, decision.level) == (STOP, 0, L0)
    assert "CUDA" in decision.reason


@pytest.mark.parametrize("seconds, text", [
    (0, "00:00:00"), (1, "00:01:00"), (60, "00:01:00"), (60.001, "00:02:00"), (61, "00:02:00"),
    (3599, "01:00:00"), (3600, "01:00:00"), (86399, "1-00:00:00"), (86400, "1-00:00:00"),
    (86401, "1-00:01:00"), (7 * 86400 + 59 * 60, "7-00:59:00"), (36 * 3600, "1-12:00:00"),
])
def test_format_minutes_rounds_up(seconds, text):
    assert format_minutes(seconds) == text


def test_level_describe_is_the_one_way_resources_are_written():
    assert L1.describe() == "4G/2:00:00 on big gpu:1 8 CPUs"
    assert Level(time="60").describe() == "60" and Level(cpus=4).describe() == "same resources 4 CPUs"
    assert Level().describe() == "same resources"


# --- apply_level -------------------------------------------------------------------------------

KEEP_HEAD = ["-J", "name", "--array=0-3"]
KEEP_TAIL = ["--mail-type=END", "-o", "out-%j.log"]
FULL = Level(mem="8G", time="2:00:00", partition="gpu", gres="gpu:2", cpus=8)
FULL_FLAGS = ["--mem=8G", "--time=2:00:00", "--partition=gpu", "--gres=gpu:2", "--cpus-per-task=8"]


@pytest.mark.parametrize("replaced", [
    ["--mem=4G"], ["--mem", "4G"], ["--mem-per-cpu=2G"], ["--mem-per-cpu", "2G"], ["--mem-per-gpu=2G"],
    ["-t", "60"], ["-t60"], ["--time=1:00:00"], ["--time", "60"],
    ["-p", "gpu"], ["-pgpu"], ["--partition=x"], ["--partition", "x"],
    ["--gres=gpu:1"], ["--gres", "gpu:1"],
    ["-c", "4"], ["-c4"], ["--cpus-per-task=4"], ["--cpus-per-task", "4"],
    ["--mem=1G", "-t60", "-p", "a", "--gres", "gpu:1", "-c", "2", "--mem=2G", "--time=5"],
], ids=lambda args: " ".join(args))
def test_apply_level_removes_every_form_and_keeps_the_rest_in_order(replaced):
    flags = [*KEEP_HEAD, *replaced, *KEEP_TAIL]
    original = list(flags)
    assert apply_level(flags, FULL) == [*KEEP_HEAD, *KEEP_TAIL, *FULL_FLAGS]
    assert flags == original  # not mutated


@pytest.mark.parametrize("flags, level, mem_option, expected", [
    pytest.param(["--mem-per-cpu=2G", "-J", "x"], Level(mem="4G"), "--mem-per-cpu", ["-J", "x", "--mem-per-cpu=4G"],
                 id="mem-per-cpu-job"),
    pytest.param(["-J", "x"], Level(mem="4G"), "--mem-per-gpu", ["-J", "x", "--mem-per-gpu=4G"],
                 id="mem-option-from-script"),
    pytest.param(["--mem=4G", "-t", "60", "-J", "x"], Level(time="2:00:00"), "--mem",
                 ["--mem=4G", "-J", "x", "--time=2:00:00"], id="time-only-leaves-memory"),
    pytest.param(["--mem-per-cpu", "2G", "-t60"], Level(time="90"), "--mem-per-cpu",
                 ["--mem-per-cpu", "2G", "--time=90"], id="time-only-leaves-mem-per-cpu"),
    pytest.param(["-t60", "-pgpu", "-c", "4", "--mem", "4G"], Level(mem="8G"), "--mem",
                 ["-t60", "-pgpu", "-c", "4", "--mem=8G"], id="mem-only-leaves-time-partition-cpus"),
    pytest.param(["--time-min=30", "--mem-bind=local", "--gres-flags=enforce-binding", "--cpus-per-gpu=2",
                  "--cpu-freq=high", "-n", "4", "--partition-x"], FULL, "--mem",
                 ["--time-min=30", "--mem-bind=local", "--gres-flags=enforce-binding", "--cpus-per-gpu=2",
                  "--cpu-freq=high", "-n", "4", "--partition-x", *FULL_FLAGS], id="look-alike-options-kept"),
    pytest.param(["-J", "x", "--mem=1G"], Level(), "--mem", ["-J", "x", "--mem=1G"], id="empty-level-no-change"),
    pytest.param([], Level(cpus=4, gres="gpu:1"), "--mem", ["--gres=gpu:1", "--cpus-per-task=4"], id="no-flags"),
])
def test_apply_level_cases(flags, level, mem_option, expected):
    assert apply_level(flags, level, mem_option) == expected


def test_resubmission_never_mixes_memory_options():
    """sbatch here: `#SBATCH --mem-per-cpu=200M` plus `--mem=300M` -> fatal: mutually exclusive."""
    directives, cli = ["--mem-per-cpu=200M", "-t", "10"], ["-J", "x"]
    option = memory_option([*directives, *cli])
    current = first_level(Policy(), [*directives, *cli])
    decision = run("OUT_OF_MEMORY", current)
    flags = apply_level(cli, decision.level, option)
    assert flags == ["-J", "x", "--mem-per-cpu=400M", "--time=10"]
    assert not any(arg.startswith("--mem=") for arg in flags)


@pytest.mark.parametrize("flags, expected", [
    pytest.param(["--mem-per-c=2G", "-J", "x"], ["-J", "x", "--mem=8G", "--time=02:00:00"], id="mem-per-cpu-prefix"),
    pytest.param(["--ti", "60", "--part=big"], ["--mem=8G", "--time=02:00:00", "--partition=gpu"], id="time-partition"),
    pytest.param(["--cpus-per=4", "--gre", "gpu:2"], ["--mem=8G", "--time=02:00:00", "--partition=gpu",
                                                      "--gres=gpu:1", "--cpus-per-task=8"], id="cpus-gres"),
    pytest.param(["--mem-per=2G"], ["--mem-per=2G", "--mem=8G", "--time=02:00:00"], id="ambiguous-kept"),
])
def test_apply_level_understands_the_abbreviations_sbatch_accepts(flags, expected):
    level = Level(mem="8G", time="02:00:00", partition="gpu" if "--part=big" in flags or "--gre" in flags else "",
                  gres="gpu:1" if "--gre" in flags else "", cpus=8 if "--gre" in flags else 0)
    assert apply_level(flags, level) == expected


@pytest.mark.parametrize("name, canonical", [
    ("--mem-per-c", "--mem-per-cpu"), ("--mem-per-g", "--mem-per-gpu"), ("--mem", "--mem"), ("--mem-per", "--mem-per"),
    ("--arr", "--array"), ("--part", "--partition"), ("--mem-bind", "--mem-bind"), ("-t", "-t"), ("--", "--"),
])
def test_canonical_option(name, canonical):
    assert canonical_option(name) == canonical


def test_memory_option_and_first_level_read_abbreviations():
    args = ["--mem-per-c=300M", "--ti=30"]
    assert memory_option(args) == "--mem-per-cpu"
    assert first_level(Policy(), args) == Level(mem="300M", time="30")


class RecordingSlurm:
    def __init__(self):
        self.argv = []

    def submit(self, argv):
        self.argv.append(list(argv))
        return Submission(job_id="900", cluster="")

    def show_job(self, job_id):
        return None


def test_resubmitting_array_tasks_replaces_the_array_spec_and_tags_the_attempt():
    record = JobRecord(job_id="100", script="/w/sweep.sbatch", sbatch_args=["--arr=0-999%50", "--mem", "1G", "-J", "s"],
                       script_args=["--lr", "3"], submit_dir="/w", array_spec="0-999%50", chain=Chain())
    slurm = RecordingSlurm()
    assert resubmit(slurm, record, Level(mem="2G"), "jobmon-chain:100:2", tasks="8-998:10%50") == ("900", "", "")
    assert slurm.argv == [["-J", "s", "--mem=2G", "--array=8-998:10%50", "--chdir=/w/", "--comment=jobmon-chain:100:2",
                           "/w/sweep.sbatch", "--lr", "3"]]


# --- memory_option -----------------------------------------------------------------------------

@pytest.mark.parametrize("args, option", [
    ([], "--mem"),
    (["-J", "x", "-t", "60"], "--mem"),
    (["--mem=4G"], "--mem"),
    (["--mem", "4G"], "--mem"),
    (["--mem-per-cpu=2G"], "--mem-per-cpu"),
    (["--mem-per-cpu", "2G"], "--mem-per-cpu"),
    (["--mem-per-gpu=8G"], "--mem-per-gpu"),
    (["--mem-per-cpu=1G", "-J", "x", "--mem=4G"], "--mem"),  # last wins
    (["--mem=4G", "--mem-per-gpu=8G", "--mem-per-cpu", "1G"], "--mem-per-cpu"),
    (["--mem-per-cpu=1G", "--mem-bind=local"], "--mem-per-cpu"),  # --mem-bind is not a memory size
    (["--mem-bind=local"], "--mem"),
])
def test_memory_option_last_wins(args, option):
    assert memory_option(args) == option


# --- split_jobmon_flags ------------------------------------------------------------------------

@pytest.mark.parametrize("argv, options, rest", [
    pytest.param(["train.sbatch"], SubmitOptions(), ["train.sbatch"], id="no-jobmon-flags"),
    pytest.param(["--escalate", "-p", "gpu", "train.sbatch", "--lr", "3"], SubmitOptions(True),
                 ["-p", "gpu", "train.sbatch", "--lr", "3"], id="escalate"),
    pytest.param(["--escalate", "--ladder", "l.json", "--mem=1G", "t.sbatch"], SubmitOptions(True, "l.json"),
                 ["--mem=1G", "t.sbatch"], id="ladder-space"),
    pytest.param(["--escalate", "--ladder=l.json", "t.sbatch"], SubmitOptions(True, "l.json"), ["t.sbatch"],
                 id="ladder-equals"),
    pytest.param(["--escalate", "--max-retries", "2", "t.sbatch"], SubmitOptions(True, "", 2), ["t.sbatch"],
                 id="max-retries-space"),
    pytest.param(["--escalate", "--max-retries=2", "t.sbatch"], SubmitOptions(True, "", 2), ["t.sbatch"],
                 id="max-retries-equals"),
    pytest.param(["--max-retries=0", "--ladder", "l.json", "--escalate", "t.sbatch"], SubmitOptions(True, "l.json", 0),
                 ["t.sbatch"], id="any-order-zero-retries"),
    pytest.param(["-J", "x", "--escalate", "t.sbatch"], SubmitOptions(), ["-J", "x", "--escalate", "t.sbatch"],
                 id="escalate-after-an-sbatch-flag-is-left-for-sbatch-which-rejects-it"),
    pytest.param(["t.sbatch", "--escalate", "--max-retries", "2"], SubmitOptions(),
                 ["t.sbatch", "--escalate", "--max-retries", "2"], id="after-the-script-they-are-script-args"),
    pytest.param(["--escalate", "--", "t.sbatch", "--escalate"], SubmitOptions(True), ["--", "t.sbatch", "--escalate"],
                 id="double-dash-left-for-sbatch"),
    pytest.param(["--escalate=yes", "t.sbatch"], SubmitOptions(), ["--escalate=yes", "t.sbatch"],
                 id="escalate-takes-no-value-left-for-sbatch"),
    pytest.param([], SubmitOptions(), [], id="empty"),
])
def test_split_jobmon_flags(argv, options, rest):
    original = list(argv)
    assert split_jobmon_flags(argv) == (options, rest)
    assert argv == original


@pytest.mark.parametrize("argv, fragment", [
    pytest.param(["--ladder", "l.json", "t.sbatch"], "only make sense with --escalate", id="ladder-without-escalate"),
    pytest.param(["--ladder=l.json", "t.sbatch"], "only make sense with --escalate", id="ladder-eq-without-escalate"),
    pytest.param(["--max-retries", "2", "t.sbatch"], "only make sense with --escalate", id="retries-without-escalate"),
    pytest.param(["--escalate", "--max-retries", "abc", "t.sbatch"], "'abc' is not a whole number", id="retries-abc"),
    pytest.param(["--escalate", "--max-retries=-1", "t.sbatch"], "'-1' is not a whole number", id="retries-negative"),
    pytest.param(["--escalate", "--max-retries=", "t.sbatch"], "'' is not a whole number", id="retries-empty"),
    pytest.param(["--escalate", "--max-retries", "1.5", "t.sbatch"], "'1.5'", id="retries-fraction"),
    pytest.param(["--escalate", "--ladder"], "--ladder needs a value", id="ladder-last"),
    pytest.param(["--escalate", "--max-retries"], "--max-retries needs a value", id="retries-last"),
    pytest.param(["--escalate", "--max-retries", "\u00b2", "t.sbatch"], "not a whole number",
                 id="retries-superscript-two-isdigit-but-not-int"),
])
def test_split_jobmon_flags_errors(argv, fragment):
    with pytest.raises(JobmonError) as exc:
        split_jobmon_flags(argv)
    assert fragment in one_line(exc)


# --- first_level -------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [[], ["--mem=2G", "-t", "30"]])
def test_first_level_with_a_ladder_is_level_0(args):
    assert first_level(LADDER_POLICY, args) == L0


@pytest.mark.parametrize("args, level", [
    pytest.param([], Level(), id="nothing-asked"),
    pytest.param(["--mem=2G"], Level(mem="2G"), id="mem-equals"),
    pytest.param(["--mem-per-cpu", "500m"], Level(mem="500M"), id="mem-per-cpu-space"),
    pytest.param(["--mem-per-gpu=8G", "-p", "gpu"], Level(mem="8G"), id="mem-per-gpu-partition-ignored"),
    pytest.param(["-t", "30"], Level(time="30"), id="t-space"),
    pytest.param(["--time=1:00:00"], Level(time="1:00:00"), id="time-equals"),
    pytest.param(["--time", "1-12"], Level(time="1-12"), id="time-space"),
    pytest.param(["--mem=1G", "-t", "10", "-J", "x", "--mem=3G", "--time=20"], Level(mem="3G", time="20"),
                 id="command-line-after-directives-wins"),
    pytest.param(["--time-min=5", "--mem-bind=local"], Level(), id="look-alikes-ignored"),
    pytest.param(["-t30"], Level(time="30"), id="t-attached"),
    pytest.param(["-t", "5", "-t1-00:00:00"], Level(time="1-00:00:00"), id="t-attached-last-wins"),
])
def test_first_level_without_ladder_reads_the_args(args, level):
    assert first_level(DEFAULT, args) == level


def test_ladder_file_round_trip_through_json():
    text = json.dumps({"ladder": [level_data(level) for level in LADDER]})
    assert load_ladder_text(text, LADDER_FILE) == LADDER


def test_an_array_task_escalates_from_what_it_ran_with_not_from_another_submission():
    """Round 2 ran task 1 at 2G (job 600) and task 3 at 1G with more time (job 601): both OOM again."""
    tracks = {"1": TaskTrack(level_index=1, level=Level(mem="2048M")),
              "3": TaskTrack(level_index=1, level=Level(time="02:00:00"))}
    chain = Chain(attempts=[Attempt(job_id="500")], round=2, max_retries=3, tasks=tracks)
    tasks = [TaskOutcome(task_id="1", job_id="600_1", state=JobState.OUT_OF_MEMORY, req_mem="2048M",
                         time_limit="01:00:00"),
             TaskOutcome(task_id="3", job_id="601_3", state=JobState.OUT_OF_MEMORY, req_mem="1G",
                         time_limit="02:00:00")]
    plan = plan_array_round(chain, tasks, {})
    assert sorted((s.tasks, s.level) for s in plan.submissions) == [
        ("1", Level(mem="4096M")), ("3", Level(mem="2048M", time="02:00:00"))]
    assert plan.retried == (1, 3) and plan.not_retried == {}
