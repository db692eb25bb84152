"""Automatic resubmission policy: more memory after OUT_OF_MEMORY, more time after TIMEOUT, a plain
relaunch after transient failures, nothing after the user's own errors. Pure functions.

A ladder is an ordered list of levels (`mem`, `time`, `partition`, `gres`, `cpus`); attempt 1 runs
at level 0. Without a ladder, the default doubles memory on OOM and time on TIMEOUT up to caps.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from core.errors import ConfigError
from core.outcome import failed_tasks_text, headline_state
from core.slurm.arrays import compress_ids, parse_array_spec, split_spec
from core.slurm.efficiency import spread as efficiency_spread
from core.slurm.model import JobState, is_clean_end, is_sigkilled, member_suffix
from core.slurm.parse import explicit_time_limit, parse_duration, parse_size
from core.state.model import (
    Action,
    Attempt,
    Chain,
    FinalRecord,
    Level,
    PendingSubmission,
    Round,
    TaskOutcome,
    TaskTrack,
)

ACTIONS = tuple(action.value for action in Action)
DEFAULT_STATE_ACTIONS = {
    "OUT_OF_MEMORY": Action.ESCALATE_MEM, "TIMEOUT": Action.ESCALATE_TIME,
    "NODE_FAIL": Action.RELAUNCH, "BOOT_FAIL": Action.RELAUNCH, "PREEMPTED": Action.RELAUNCH,
}
DEFAULT_MAX_RETRIES = 3
DEFAULT_MEM_CAP = "256G"
DEFAULT_TIME_CAP = "7-00:00:00"
MEM_OPTIONS = ("--mem", "--mem-per-cpu", "--mem-per-gpu")
LEVEL_KEYS = ("mem", "time", "partition", "gres", "cpus")

_TIME_RE = re.compile(r"^(?:\d+-)?\d+(?::\d+){0,2}$", re.ASCII)
_SIZE_RE = re.compile(r"^\d+[KMGT]?$", re.ASCII | re.IGNORECASE)  # sbatch refuses --mem=4.5G


@dataclass(frozen=True)
class Policy:
    ladder: Tuple[Level, ...] = ()
    max_retries: int = DEFAULT_MAX_RETRIES
    states: Dict[str, Action] = field(default_factory=lambda: dict(DEFAULT_STATE_ACTIONS))
    exit_codes: Dict[int, Action] = field(default_factory=dict)
    mem_cap: str = DEFAULT_MEM_CAP
    time_cap: str = DEFAULT_TIME_CAP


@dataclass(frozen=True)
class Decision:
    action: Action
    level_index: int
    level: Level
    reason: str

    @property
    def resubmit(self) -> bool:
        return self.action is not Action.STOP

    def submission(self, tasks: str = "") -> PendingSubmission:
        return PendingSubmission(level_index=self.level_index, level=self.level, action=self.action, tasks=tasks)


# -- parsing and validation --------------------------------------------------------------------
def parse_level(data: Any, where: str) -> Level:
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: a level must be an object with any of mem, time, partition, gres, cpus")
    unknown = set(data) - set(LEVEL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; use mem, time, partition, gres, cpus")
    for key in ("partition", "gres"):
        if not isinstance(data.get(key, ""), str):
            raise ConfigError(f"{where}: {key} must be a string, got {data[key]!r}")
    mem, time, partition, gres = (str(data.get(key, "")).strip() for key in ("mem", "time", "partition", "gres"))
    if mem and not _SIZE_RE.match(mem):
        raise ConfigError(f"{where}: mem {mem!r} is not a Slurm size like 4G or 500M")
    if time and (not _TIME_RE.match(time) or not parse_duration_any(time)):
        raise ConfigError(f"{where}: time {time!r} is not a Slurm time like 60, 2:00:00 or 1-00:00:00")
    cpus = data.get("cpus", 0)
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 0:
        raise ConfigError(f"{where}: cpus must be a positive integer, got {cpus!r}")
    return Level(mem=mem.upper(), time=time, partition=partition, gres=gres, cpus=cpus)


def parse_ladder(data: Any, source: str) -> Tuple[Level, ...]:
    """A ladder is a JSON list of levels (or an object with a "ladder" list)."""
    if isinstance(data, dict):
        data = data.get("ladder")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{source}: a ladder is a non-empty list of levels, e.g. "
                          '[{"mem": "1G", "time": "1:00:00"}, {"mem": "4G", "time": "2:00:00"}]')
    return tuple(parse_level(level, f"{source}: level {index}") for index, level in enumerate(data))


def load_ladder_text(text: str, source: str) -> Tuple[Level, ...]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"ladder file {source} is not valid JSON: {exc}") from None
    return parse_ladder(data, f"ladder file {source}")


def parse_policy(
    section: Any, source: str, *, ladder: Tuple[Level, ...] = (), max_retries: Optional[int] = None,
) -> Policy:
    """config.json's "escalation" section; `ladder`/`max_retries` from the command line win."""
    section = section or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: 'escalation' must be an object")
    where = f"{source}: escalation"
    if not ladder and section.get("ladder") is not None:
        ladder = parse_ladder(section["ladder"], f"{where}.ladder")
    retries = section.get("max_retries", DEFAULT_MAX_RETRIES) if max_retries is None else max_retries
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 50:
        raise ConfigError(f"{where}.max_retries must be an integer from 0 to 50, got {retries!r}")
    for key in ("states", "exit_codes", "caps"):
        if not isinstance(section.get(key) or {}, dict):
            raise ConfigError(f"{where}.{key} must be an object, got {type(section[key]).__name__}")
    states = dict(DEFAULT_STATE_ACTIONS)
    for state, action in (section.get("states") or {}).items():
        if action not in ACTIONS:
            raise ConfigError(f"{where}.states.{state}: {action!r} is not one of {', '.join(ACTIONS)}")
        states[str(state).upper()] = Action(action)
    exit_codes = {}
    for code, action in (section.get("exit_codes") or {}).items():
        if not str(code).isdecimal() or action not in ACTIONS:
            raise ConfigError(
                f"{where}.exit_codes: {code!r} -> {action!r}: use a number and one of {', '.join(ACTIONS)}")
        exit_codes[int(code)] = Action(action)
    caps = section.get("caps") or {}
    mem_cap, time_cap = str(caps.get("mem", DEFAULT_MEM_CAP)), str(caps.get("time", DEFAULT_TIME_CAP))
    parse_level({"mem": mem_cap, "time": time_cap}, f"{where}.caps")
    return Policy(ladder=ladder, max_retries=retries, states=states, exit_codes=exit_codes,
                  mem_cap=mem_cap.upper(), time_cap=time_cap)


def parse_duration_any(text: str) -> Optional[float]:
    """Slurm time syntax: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S` (a bare number is minutes)."""
    text = text.strip()
    if text.isdecimal():
        return int(text) * 60.0
    if "-" in text:
        days, _, rest = text.partition("-")
        if not days.isdecimal():
            return None
        parts = rest.split(":")
        while len(parts) < 3:
            parts.append("0")
        seconds = parse_duration(":".join(parts))
        return None if seconds is None else int(days) * 86400 + seconds
    return parse_duration(text)


# -- the decision ------------------------------------------------------------------------------
def action_for(
    state: JobState, exit_code: int, signal: int, categories: Sequence[str], policy: Policy,
) -> Tuple[Action, str]:
    """(action, why) for one ended attempt."""
    if is_clean_end(state, exit_code, signal):
        return Action.STOP, "completed"
    if categories and categories[0] == "cuda_oom":
        return Action.STOP, "CUDA out of memory: more host memory cannot fix it (reduce batch size or use a bigger GPU)"
    if state is JobState.FAILED and exit_code in policy.exit_codes:
        action = policy.exit_codes[exit_code]
        return action, f"exit code {exit_code} is set to {action.value}"
    if is_sigkilled(state, exit_code, signal) and "slurm_oom" in categories:
        return Action.ESCALATE_MEM, "killed for exceeding its memory (exit 137, Slurm OOM message)"
    action = policy.states.get(state.value, Action.STOP)
    if action is Action.STOP:
        return action, f"{state.value}: no retry for this ending"
    return action, f"{state.value} is set to {action.value}"


def double_size(text: str, cap: str) -> Optional[str]:
    """Twice `text` (Slurm size) in MiB, at most `cap`; None when already at the cap."""
    current, limit = parse_size(text, "M"), parse_size(cap, "M")
    if not current or not limit or current >= limit:
        return None
    return f"{-(-min(current * 2, limit) // (1024 * 1024))}M"  # rounded up: --mem=0 would mean the whole node


def double_time(text: str, cap: str) -> Optional[str]:
    current, limit = parse_duration_any(text), parse_duration_any(cap)
    if not current or not limit or current >= limit:
        return None
    return format_minutes(min(current * 2, limit))


def format_minutes(seconds: float) -> str:
    """Slurm's `D-HH:MM:SS`, rounded up to whole minutes (Slurm's own granularity)."""
    minutes = int(-(-seconds // 60))
    days, rest = divmod(minutes, 1440)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def decide(
    *, state: JobState, exit_code: int, signal: int, categories: Sequence[str], attempt: int, level_index: int,
    current: Level, policy: Policy,
) -> Decision:
    """What to do after attempt number `attempt` (1-based) ended, running at `current` resources."""
    action, why = action_for(state, exit_code, signal, categories, policy)
    if action is Action.STOP:
        return Decision(Action.STOP, level_index, current, why)
    if attempt > policy.max_retries:
        used = f"{why}, but the chain already used its {policy.max_retries} retries"
        return Decision(Action.STOP, level_index, current, used)
    if action is Action.RELAUNCH:
        return Decision(Action.RELAUNCH, level_index, current, why)
    if policy.ladder:
        if level_index + 1 >= len(policy.ladder):
            return Decision(Action.STOP, level_index, current, f"{why}, but this was the ladder's top level")
        return Decision(action, level_index + 1, policy.ladder[level_index + 1], why)
    if action is Action.ESCALATE_MEM:
        mem = double_size(current.mem, policy.mem_cap)
        if mem is None:
            return Decision(Action.STOP, level_index, current, f"{why}, but memory is at the cap ({policy.mem_cap})")
        return Decision(action, level_index + 1, replace(current, mem=mem), why)
    time = double_time(current.time, policy.time_cap)
    if time is None:
        return Decision(Action.STOP, level_index, current, f"{why}, but time is at the cap ({policy.time_cap})")
    return Decision(action, level_index + 1, replace(current, time=time), why)


# -- the new command line ----------------------------------------------------------------------
_VALUE_OPTIONS = {
    "mem": ("--mem", "--mem-per-cpu", "--mem-per-gpu"),
    "time": ("-t", "--time"),
    "partition": ("-p", "--partition"),
    "gres": ("--gres",),
    "cpus": ("-c", "--cpus-per-task"),
    "array": ("-a", "--array"),
}
_LONG_OPTIONS = tuple(option for options in _VALUE_OPTIONS.values() for option in options if option.startswith("--"))
#: An array round's spec is split into several submissions beyond this length (2,335 characters
#: were accepted by the local Slurm 22.05; Slurm documents no limit of its own).
ARRAY_SPEC_MAX_LENGTH = 10000


def canonical_option(name: str) -> str:
    """sbatch accepts unambiguous prefixes of long options (`--mem-per-c`): name the option meant.

    sbatch already accepted the command line, so a prefix of exactly one of these options can
    only mean that one. Anything else comes back unchanged.
    """
    if not name.startswith("--") or name in _LONG_OPTIONS or len(name) < 3:
        return name
    matches = [option for option in _LONG_OPTIONS if option.startswith(name)]
    return matches[0] if len(matches) == 1 else name


def memory_option(args: Sequence[str]) -> str:
    """Which memory option the job uses (the last one given); sbatch refuses to mix them."""
    chosen = "--mem"
    for arg in args:
        name = canonical_option(arg.split("=", 1)[0])
        if name in MEM_OPTIONS:
            chosen = name
    return chosen


def without_options(sbatch_flags: Sequence[str], names: Sequence[str]) -> List[str]:
    """The flags minus every option of these kinds (`mem`, `time`, ...), in any spelling sbatch takes."""
    drop = {option for name in names for option in _VALUE_OPTIONS[name]}
    result: List[str] = []
    skip_next = False
    for arg in sbatch_flags:
        if skip_next:
            skip_next = False
            continue
        name = canonical_option(arg.split("=", 1)[0])
        if name in drop:
            skip_next = "=" not in arg
            continue
        if len(name) > 2 and not name.startswith("--") and name[:2] in drop:  # -t60, -pbig
            continue
        result.append(arg)
    return result


def apply_level(sbatch_flags: Sequence[str], level: Level, mem_option: str = "--mem") -> List[str]:
    """The original flags without the ones the level sets, then the level's flags (they win)."""
    result = without_options(sbatch_flags, [name for name in LEVEL_KEYS if getattr(level, name)])
    if level.mem:
        result.append(f"{mem_option}={level.mem}")
    if level.time:
        result.append(f"--time={level.time}")
    if level.partition:
        result.append(f"--partition={level.partition}")
    if level.gres:
        result.append(f"--gres={level.gres}")
    if level.cpus:
        result.append(f"--cpus-per-task={level.cpus}")
    return result


# -- a chain's next step -----------------------------------------------------------------------
def chain_policy(chain: Chain, config_section: Any) -> Policy:
    """config.json's escalation section, with the chain's own ladder and retry budget (from `submit`)."""
    return parse_policy(config_section, "config.json", ladder=tuple(chain.ladder), max_retries=chain.max_retries)


def _filled(asked: Level, req_mem: str, time_limit: str) -> Level:
    """What the job really ran with: sacct's values where the job asked for nothing explicit."""
    return replace(asked, mem=asked.mem or req_mem, time=asked.time or explicit_time_limit(time_limit))


def _ask_only_changed(decision: Decision, asked: Level, policy: Policy) -> Decision:
    """Without a ladder the next level changes one resource; sacct's values for the rest stay sacct's."""
    if not decision.resubmit or policy.ladder:
        return decision
    if decision.action is Action.ESCALATE_MEM:
        return replace(decision, level=replace(asked, mem=decision.level.mem))
    if decision.action is Action.ESCALATE_TIME:
        return replace(decision, level=replace(asked, time=decision.level.time))
    return replace(decision, level=asked)


def decide_next_attempt(chain: Chain, final: FinalRecord, categories: Sequence[str], config_section: Any) -> Decision:
    """The decision for a (non-array) chain whose current attempt just ended."""
    policy = chain_policy(chain, config_section)
    decision = decide(state=final.state, exit_code=final.exit_code, signal=final.signal, categories=categories,
                      attempt=len(chain.attempts), level_index=chain.level_index,
                      current=_filled(chain.level, final.req_mem, final.time_limit),
                      policy=policy)
    return _ask_only_changed(decision, chain.level, policy)


@dataclass(frozen=True)
class RoundPlan:
    """What follows an array round: the submissions of the next round and the tasks left as they are."""

    submissions: Tuple[PendingSubmission, ...]
    retried: Tuple[int, ...]
    not_retried: Dict[str, Tuple[int, ...]]  # why -> task ids

    def describe(self) -> str:
        parts = [f"task(s) {s.tasks} → {s.level.describe()} ({s.action.value})" for s in self.submissions]
        parts += [f"not retried: task(s) {compress_ids(ids)} ({why})" for why, ids in self.not_retried.items()]
        return "; ".join(parts) or "every task completed"


def plan_array_round(
    chain: Chain, tasks: Sequence[TaskOutcome], config_section: Any, *,
    throttle: Optional[int] = None, max_spec_length: int = ARRAY_SPEC_MAX_LENGTH,
) -> RoundPlan:
    """Decide per failed task of the round that just ended; group the retries by their next level.

    Every task in round r has run r times, so r is each task's attempt number. Each group becomes
    one submission, or several when its spec is longer than `max_spec_length`.
    """
    policy = chain_policy(chain, config_section)
    base = chain.attempts[0]
    groups: Dict[Tuple[int, Level], Tuple[Decision, List[int]]] = {}
    not_retried: Dict[str, List[int]] = {}
    for task in tasks:
        if not task.is_failure:
            continue
        track = chain.tasks.get(task.task_id)
        asked = track.level if track is not None else base.resources
        index = track.level_index if track is not None else base.level_index
        decision = _ask_only_changed(decide(
            state=task.state, exit_code=task.exit_code, signal=task.signal, categories=task.categories,
            attempt=chain.round, level_index=index, current=_filled(asked, task.req_mem, task.time_limit),
            policy=policy,
        ), asked, policy)
        if not decision.resubmit:
            not_retried.setdefault(decision.reason, []).append(int(task.task_id))
            continue
        groups.setdefault((decision.level_index, decision.level), (decision, []))[1].append(int(task.task_id))
    submissions = []
    for key in sorted(groups, key=lambda k: (k[0], _level_order(k[1]))):
        decision, ids = groups[key]
        submissions += [decision.submission(spec) for spec in split_spec(ids, max_spec_length, throttle)]
    retried = tuple(sorted(i for _, ids in groups.values() for i in ids))
    return RoundPlan(tuple(submissions), retried, {why: tuple(ids) for why, ids in not_retried.items()})


def _level_order(level: Level) -> Tuple[Tuple[str, str], ...]:
    """A stable order of levels for the submissions of a round: by the resources they set, by name."""
    return tuple(sorted((name, str(getattr(level, name))) for name in LEVEL_KEYS if getattr(level, name)))


def close_attempt(chain: Chain, final: FinalRecord, categories: Sequence[str], decision: str) -> None:
    """Write how the chain's current attempt ended (core-hours: CPUs x elapsed)."""
    attempt = chain.attempts[-1]
    attempt.state, attempt.exit_code, attempt.elapsed = final.state, final.exit_code, final.elapsed
    attempt.categories = list(categories[:3])
    attempt.decision = decision
    attempt.core_hours = core_hours(final.alloc_cpus, [final.elapsed])
    attempt.efficiency = final.efficiency


def core_hours(cpus: int, elapsed: Sequence[str]) -> float:
    """CPUs x the summed elapsed times, in hours (what `report` and the chain's message call waste)."""
    return round(cpus * sum(parse_duration(e) or 0.0 for e in elapsed) / 3600.0, 4)


def _ran_in(task: TaskOutcome, attempt: Attempt) -> bool:
    """Whether this submission ran the task (a task sacct never reported is placed by the spec)."""
    if task.job_id:
        return member_suffix(task.job_id, attempt.job_id) is not None
    return task.task_id.isdecimal() and int(task.task_id) in parse_array_spec(attempt.tasks).task_ids


def drop_refused(ended: Round, refusals: Sequence[Tuple[str, str]]) -> None:
    """Tasks whose resubmission sbatch refused (why, spec) were not retried after all."""
    retried = set(parse_array_spec(ended.retried_tasks).task_ids) if ended.retried_tasks else set()
    for why, spec in refusals:
        ids = parse_array_spec(spec).task_ids
        retried.difference_update(ids)
        ended.not_retried[f"resubmission refused by sbatch: {why}"] = compress_ids(ids)
    ended.retried_tasks = compress_ids(retried) if retried else ""


def close_round(chain: Chain, tasks: Sequence[TaskOutcome], final: FinalRecord, plan: RoundPlan) -> None:
    """Write how an array round ended: per submission, per retried task, and the round's summary.

    An array attempt's `core_hours` counts its failed tasks only (CPUs x elapsed): the waste.
    """
    jobs = [attempt for attempt in chain.attempts if attempt.round == chain.round]
    decision = plan.describe()
    for attempt in jobs:
        own = [t for t in tasks if _ran_in(t, attempt)] if len(jobs) > 1 else list(tasks)
        failed = [t for t in own if t.is_failure]
        attempt.task_counts = dict(Counter(t.state.value for t in own))
        attempt.state = headline_state(attempt.task_counts) if own else JobState.UNKNOWN
        attempt.failed_tasks = failed_tasks_text(own)
        attempt.exit_code = max((t.exit_code for t in failed), default=0)
        attempt.elapsed = max((t.elapsed for t in own), key=lambda e: parse_duration(e) or 0.0, default="")
        attempt.categories = list(dict.fromkeys(c for t in failed for c in t.categories))[:3]
        attempt.decision = decision
        attempt.core_hours = core_hours(final.alloc_cpus, [t.elapsed for t in failed])
        attempt.efficiency_spread = efficiency_spread([t.efficiency for t in own if t.job_id])
    for submission in plan.submissions:
        for task_id in parse_array_spec(submission.tasks).task_ids:
            track = chain.tasks.setdefault(str(task_id), TaskTrack())
            track.level_index, track.level = submission.level_index, submission.level
    for task in tasks:
        if task.task_id in chain.tasks:
            chain.tasks[task.task_id].runs.append(f"{task.job_id} {task.state.value}")
    chain.rounds.append(Round(
        number=chain.round, jobs=[a.job_id for a in jobs], task_counts=dict(Counter(t.state.value for t in tasks)),
        failed_tasks=failed_tasks_text(tasks),
        retried_tasks=compress_ids(plan.retried) if plan.retried else "", decision=decision,
        not_retried={why: compress_ids(ids) for why, ids in plan.not_retried.items()},
    ))
