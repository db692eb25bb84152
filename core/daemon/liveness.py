"""Whether a job's monitor lives, and stopping one: the one home for both.

On the monitor's own host its pid and the process's start time decide: a pid that is gone (or
now belongs to another process) is DEAD at once, whatever the heartbeat says. A monitor being
started has no pid yet: SUSPECT until its claim's heartbeat runs out. On another host (a second
login node on a shared home) the pid cannot be checked, so only the heartbeat counts there.
"""
from __future__ import annotations

import enum
import os
import signal
from typing import Optional

from core.monitor.monitor import Identity
from core.state.model import JobRecord, MonitorInfo


class Health(str, enum.Enum):
    ALIVE = "ALIVE"
    DEAD = "DEAD"  # `jobmon recover` restarts it
    SUSPECT = "SUSPECT"  # being started (no pid written yet): DEAD once its claim's heartbeat runs out
    DONE = "DONE"
    CANCELLED = "CANCELLED"  # the user stopped monitoring
    UNREADABLE = "UNREADABLE"  # a corrupt state file


def this_host() -> str:
    """The host name a monitor records (what socket.gethostname() returns, without importing socket)."""
    return os.uname().nodename


def process_start_ticks(pid: int) -> Optional[int]:
    """Start time of a process in clock ticks since boot, so a recycled pid is not taken for ours."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        if fields[0] == "Z":
            return None  # a zombie has finished
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def this_process() -> Identity:
    """This process as a monitor or a deliverer records itself: host, pid and start time."""
    pid = os.getpid()
    return Identity(this_host(), pid, process_start_ticks(pid) or 0)


def is_process_alive(pid: int, start_ticks: int) -> bool:
    if pid <= 0:
        return False
    ticks = process_start_ticks(pid)
    return ticks is not None and (not start_ticks or ticks == start_ticks)


def monitor_health(record: JobRecord, host: str, now: float) -> Health:
    """ALIVE, DEAD, SUSPECT, DONE or CANCELLED (see the module's docstring)."""
    if record.cancelled:
        return Health.CANCELLED
    if record.done:
        return Health.DONE
    monitor = record.monitor
    stale = now > monitor.heartbeat_deadline
    if monitor.host and monitor.host != host:
        return Health.DEAD if stale else Health.ALIVE
    if monitor.pid <= 0:
        return Health.DEAD if stale else Health.SUSPECT
    return Health.ALIVE if is_process_alive(monitor.pid, monitor.start_ticks) else Health.DEAD


def is_local_and_alive(monitor: MonitorInfo) -> bool:
    return monitor.host == this_host() and is_process_alive(monitor.pid, monitor.start_ticks)


def stop_monitor(monitor: MonitorInfo) -> bool:
    """Ask the monitor process to stop (SIGTERM) if it runs on this host; True if it was signalled.

    The record's `stop_requested` is what stops a monitor anywhere: one on another host sees it at
    its next poll.
    """
    if not is_local_and_alive(monitor):
        return False
    try:
        os.kill(monitor.pid, signal.SIGTERM)
    except OSError:
        return False
    return True
