"""Events: what a monitor has to say, each with a stable key so it is said once.

An event is produced by a check or a step of the monitor, written to the job's outbox (with its
message) before anything is sent, and delivered once to every sink its route names. Producing the
same event again (after a crash, on the next poll) changes nothing: the key is already there.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Tuple

from core.notify.message import Message


class EventKind(str, enum.Enum):
    FINAL = "final"  # the job's (or chain's) story is told
    ESCALATION = "escalation"  # a chain resubmitted a job with more resources
    ROUND = "round"  # an array chain resubmitted some of its tasks
    FIRST_FAILURE = "first_failure"  # an array's first failed task, before the summary
    START = "start"  # the job started running (notify.on_start)
    PROGRESS = "progress"  # another step of progress (notify.progress_every)
    STALLED = "stalled"  # progress stopped for longer than its budget
    RESUMED = "resumed"  # a stalled job moves again
    HANG = "hang"  # a known hang signature in the log while the job runs
    TIME_LIMIT = "time_limit"  # a share of the time limit used, or projected to run past it
    MEMORY = "memory"  # MaxRSS approaches the memory request (health.memory_warn)
    CPU_LOW = "cpu_low"  # most of the allocated CPUs sit idle (health.cpu_low_warn)
    GPU_IDLE = "gpu_idle"  # the GPU at 0 % for health.gpu_idle_after
    DISK = "disk"  # little free space where the job writes (health.disk_free_warn, then under 1 %)
    CHECKPOINT_STALE = "checkpoint_stale"  # nothing new in health.watch_files for checkpoint_stale_after


class Route(str, enum.Enum):
    """Which sinks hear an event: config maps each route to sinks (`discord.success_webhook` ...)."""

    SUCCESS = "success"  # clean completions only
    ERROR = "error"  # everything else


@dataclass(frozen=True)
class RouteFacts:
    """What routing may look at: the event's kind and route, the job's state and name (config `notify.routes`)."""

    kind: EventKind
    route: Route
    state: str = ""
    name: str = ""


@dataclass(frozen=True)
class Event:
    kind: EventKind
    sequence: int  # the n-th event of its kind for this job: attempt or round number, 1 otherwise
    route: Route
    message: Message
    notes: Tuple[str, ...] = ()  # for a check that says a thing once per run: what it must remember having said

    def key(self, job_id: str) -> str:
        """`123:final:1`, `123:escalation:2`: the same event always gets the same key."""
        return event_key(job_id, self.kind, self.sequence)


def event_key(job_id: str, kind: EventKind, sequence: int) -> str:
    return f"{job_id}:{kind.value}:{sequence}"
